use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use common::{auth::Role, http::RawBody, idempotency, problem::ApiError};

use crate::{AppState, openapi::schema, rate_limit::Caller, upstream::Service};

/// Send a notification (service). 202 only after it is committed.
#[utoipa::path(post, path = "/v1/notifications", tag = "notifications", security(("bearer" = [])),
    request_body = schema::SendNotification,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Same key and body within 24 h: the original answer again; different body: 422; first still running: 409")),
    responses(
        (status = 202, body = schema::Notification),
        (status = 400, body = schema::Problem), (status = 401, body = schema::Problem),
        (status = 403, body = schema::Problem), (status = 413, body = schema::Problem),
        (status = 409, body = schema::Problem),
        (status = 422, body = schema::Problem), (status = 429, body = schema::Problem),
        (status = 503, body = schema::Problem)))]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Service])?;
    let key_header = headers
        .get(idempotency::HEADER)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let key = idempotency::parse_key(key_header)?;
    let (Some(key), Some(cache)) = (key, state.idempotency.as_ref()) else {
        return state
            .upstream
            .forward(
                Service::Notifications,
                Method::POST,
                "/v1/notifications",
                &caller.0,
                &headers,
                body,
            )
            .await;
    };
    let sub = caller.0.subject().to_owned();
    let hash = idempotency::body_hash(&body);
    if let Some(entry) = cache.get(&sub, &key).await {
        if entry.hash != hash {
            return Err(ApiError::invalid_field(
                "Idempotency-Key",
                "was already used with a different request body",
            ));
        }
        let mut resp = (StatusCode::ACCEPTED, Json(entry.body)).into_response();
        resp.headers_mut()
            .insert(idempotency::REPLAYED, HeaderValue::from_static("true"));
        return Ok(resp);
    }
    let resp = state
        .upstream
        .forward(
            Service::Notifications,
            Method::POST,
            "/v1/notifications",
            &caller.0,
            &headers,
            body,
        )
        .await?;
    if resp.status() != StatusCode::ACCEPTED {
        return Ok(resp);
    }
    let (parts, upstream_body) = resp.into_parts();
    let bytes = axum::body::to_bytes(upstream_body, 16 * 1024 * 1024)
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("reading the upstream answer: {e}")))?;
    if let Ok(json) = serde_json::from_slice(&bytes) {
        cache
            .put(&sub, &key, &crate::idempotency::Entry { hash, body: json })
            .await;
    }
    Ok(Response::from_parts(parts, axum::body::Body::from(bytes)))
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
    let id = super::path_id(&id, "notification")?;
    let path = format!("/v1/notifications/{id}");
    caller
        .forward(
            &state,
            &[Role::Service, Role::Admin],
            Service::Notifications,
            Method::GET,
            &path,
            &headers,
            Default::default(),
        )
        .await
}

/// Cancel every delivery not yet dispatched (owning service, admin). 409 names the deliveries
/// that were already dispatched.
#[utoipa::path(post, path = "/v1/notifications/{id}/cancel", tag = "notifications", security(("bearer" = [])),
    params(("id" = String, Path, description = "notification id")),
    responses(
        (status = 200, body = schema::Notification),
        (status = 401, body = schema::Problem), (status = 403, body = schema::Problem),
        (status = 404, body = schema::Problem), (status = 409, body = schema::Problem)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = super::path_id(&id, "notification")?;
    let path = format!("/v1/notifications/{id}/cancel");
    caller
        .forward(
            &state,
            &[Role::Service, Role::Admin],
            Service::Notifications,
            Method::POST,
            &path,
            &headers,
            Default::default(),
        )
        .await
}
