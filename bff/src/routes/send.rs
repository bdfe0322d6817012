//! `POST /v1/notifications`: forwarded like any route, and an `Idempotency-Key` request that
//! completed (202) is answered again from Redis without reaching notification-service
//! (which keeps its own record in Postgres for requests that reach it: decision 0004).
//!
//! `POST /v1/notifications/batch`: forwarded, its rate limit counted per notification — a
//! batch of 100 costs what 100 single sends cost, so batching is faster but never a way
//! around a service's limit.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use common::{auth::Role, http::RawBody, idempotency, problem::ApiError};

use crate::{AppState, rate_limit::Caller, upstream::Service};

const PATH: &str = "/v1/notifications";

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
    let forward = |body| {
        state.upstream.forward(
            Service::Notifications,
            Method::POST,
            PATH,
            &caller.0,
            &headers,
            body,
        )
    };
    let (Some(key), Some(cache)) = (key, state.idempotency.as_ref()) else {
        return forward(body).await;
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
    let resp = forward(body).await?;
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

const BATCH_PATH: &str = "/v1/notifications/batch";

pub async fn send_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Service])?;
    // `Caller` counted the request once; the rest of its items now.
    let items = batch_items(&body);
    if items > 1 {
        crate::rate_limit::admit(&state, &caller.0, items - 1).await?;
    }
    state
        .upstream
        .forward(
            Service::Notifications,
            Method::POST,
            BATCH_PATH,
            &caller.0,
            &headers,
            body,
        )
        .await
}

/// How many notifications a batch body holds, without building them (1 for a body that is not
/// a batch: the service answers for it).
fn batch_items(body: &[u8]) -> u64 {
    #[derive(serde::Deserialize)]
    struct Count {
        notifications: Vec<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Count>(body).map_or(1, |c| c.notifications.len() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_batch_counts_its_items_and_anything_else_counts_once() {
        let body = br#"{"notifications": [{"recipients": [{"email": "a@b.c"}]}, 5, null]}"#;
        assert_eq!(super::batch_items(body), 3);
        assert_eq!(super::batch_items(br#"{"notifications": 5}"#), 1);
        assert_eq!(super::batch_items(b"not json"), 1);
    }
}
