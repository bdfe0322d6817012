use axum::{
    extract::{Path, State},
    http::{HeaderMap, Method},
    response::Response,
};
use common::{auth::Role, http::RawBody, problem::ApiError};

use crate::{AppState, openapi::schema, rate_limit::Caller, upstream::Service};

/// Send a notification (service). 202 only after it is committed.
#[utoipa::path(post, path = "/v1/notifications", tag = "notifications", security(("bearer" = [])),
    request_body = schema::SendNotification,
    responses(
        (status = 202, body = schema::Notification),
        (status = 400, body = schema::Problem), (status = 401, body = schema::Problem),
        (status = 403, body = schema::Problem), (status = 413, body = schema::Problem),
        (status = 422, body = schema::Problem), (status = 429, body = schema::Problem),
        (status = 503, body = schema::Problem)))]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Service])?;
    state
        .upstream
        .forward(
            Service::Notifications,
            Method::POST,
            "/v1/notifications",
            &caller.0,
            &headers,
            body,
        )
        .await
}

/// A notification with every delivery (owning service, admin).
#[utoipa::path(get, path = "/v1/notifications/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = String, Path, description = "notification id")),
    responses(
        (status = 200, body = schema::Notification),
        (status = 401, body = schema::Problem), (status = 403, body = schema::Problem),
        (status = 404, body = schema::Problem)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Service, Role::Admin])?;
    let id = super::path_id(&id, "notification")?;
    let path = format!("/v1/notifications/{id}");
    state
        .upstream
        .forward(
            Service::Notifications,
            Method::GET,
            &path,
            &caller.0,
            &headers,
            Default::default(),
        )
        .await
}
