use axum::{
    extract::State,
    http::{HeaderMap, Method},
    response::Response,
};
use common::{auth::Role, http::RawBody, problem::ApiError};

use crate::{AppState, openapi::schema, rate_limit::Caller, upstream::Service};

/// Register a user (service, admin). Emits `user.registered`; the user gets the `welcome`
/// notification on the channels they have.
#[utoipa::path(post, path = "/v1/users", tag = "users", security(("bearer" = [])),
    request_body = schema::RegisterUser,
    responses(
        (status = 201, body = schema::Registered),
        (status = 401, body = schema::Problem), (status = 403, body = schema::Problem),
        (status = 422, body = schema::Problem), (status = 429, body = schema::Problem)))]
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    caller
        .forward(
            &state,
            &[Role::Service, Role::Admin],
            Service::Users,
            Method::POST,
            "/v1/users",
            &headers,
            body,
        )
        .await
}
