use axum::{
    Router,
    extract::State,
    http::{HeaderMap, Method},
    response::Response,
    routing::post,
};
use common::{
    auth::{Principal, Role},
    http::RawBody,
    problem::ApiError,
};

use crate::{AppState, upstream::Service};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/users", post(register))
}

/// `POST /v1/users` (service, admin): register a user.
async fn register(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Service, Role::Admin])?;
    state
        .upstream
        .forward(
            Service::Users,
            Method::POST,
            "/v1/users",
            &principal,
            &headers,
            body,
        )
        .await
}
