use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, Method},
    response::Response,
    routing::{get, post},
};
use common::{
    auth::{Principal, Role},
    http::RawBody,
    problem::ApiError,
};

use crate::{AppState, upstream::Service};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/notifications", post(send))
        .route("/v1/notifications/{id}", get(show))
}

/// `POST /v1/notifications` (service): send.
async fn send(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Service])?;
    state
        .upstream
        .forward(
            Service::Notifications,
            Method::POST,
            "/v1/notifications",
            &principal,
            &headers,
            body,
        )
        .await
}

/// `GET /v1/notifications/{id}` (owning service, admin).
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Service, Role::Admin])?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ApiError::not_found("no notification has this id"));
    }
    let path = format!("/v1/notifications/{id}");
    state
        .upstream
        .forward(
            Service::Notifications,
            Method::GET,
            &path,
            &principal,
            &headers,
            Default::default(),
        )
        .await
}
