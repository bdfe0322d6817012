//! `POST /v1/notifications` (send), `GET /v1/notifications` (a service's own, filtered),
//! `GET /v1/notifications/{id}` and `POST /v1/notifications/{id}/cancel`.

use api::{
    admin::{DeliveryPage, NotificationPage, NotificationQuery},
    notifications::{DeliveriesQuery, MAX_DELIVERY_PAGE},
};
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{get, post},
};
use axum::{
    http::{HeaderMap, HeaderValue},
    response::{IntoResponse, Response},
};
use common::{
    auth::{Principal, Role},
    http::RawBody,
    idempotency,
    problem::{ApiError, FieldError},
};
use uuid::Uuid;

use crate::{AppState, db::notifications as db, request::SendBody, views::NotificationView};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/notifications", post(send).get(list))
        .route(
            "/v1/notifications/batch",
            post(send_batch).layer(axum::extract::DefaultBodyLimit::max(
                api::notifications::MAX_BATCH_BYTES,
            )),
        )
        .route("/v1/notifications/{id}", get(show))
        .route("/v1/notifications/{id}/deliveries", get(deliveries))
        .route("/v1/notifications/{id}/cancel", post(cancel))
}

/// Accepts a notification: 202 only after it, its deliveries and their outbox rows are
/// committed.
#[tracing::instrument(skip_all, fields(caller = %principal.subject(), notification_id))]
async fn send(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Service])?;
    let key_header = headers
        .get(idempotency::HEADER)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let key = idempotency::parse_key(key_header)?;
    let body: SendBody = common::http::parse_json(&bytes)?;
    let key = key.map(|key| crate::intake::Keyed {
        key,
        hash: idempotency::body_hash(&bytes),
        field: "Idempotency-Key",
    });
    match crate::intake::submit(&state, &principal, body, key).await? {
        crate::intake::Submitted::Accepted(view) => {
            Ok((StatusCode::ACCEPTED, Json(view)).into_response())
        }
        crate::intake::Submitted::Replayed(response) => Ok(replayed(response)),
    }
}

/// Accepts up to 1,000 notifications in one request: one answer per item (`crate::intake`).
#[tracing::instrument(skip_all, fields(caller = %principal.subject()))]
async fn send_batch(
    State(state): State<AppState>,
    principal: Principal,
    RawBody(bytes): RawBody,
) -> Result<Json<api::notifications::BatchAnswer>, ApiError> {
    principal.require(&[Role::Service])?;
    let body: api::notifications::BatchBody = common::http::parse_json(&bytes)?;
    crate::intake::submit_batch(&state, &principal, body)
        .await
        .map(Json)
}

/// The stored answer of an earlier request with the same key.
fn replayed(response: serde_json::Value) -> Response {
    let mut resp = (StatusCode::ACCEPTED, Json(response)).into_response();
    resp.headers_mut()
        .insert(idempotency::REPLAYED, HeaderValue::from_static("true"));
    resp
}

/// `GET /v1/notifications`: a service's own notifications (an address filter matches only
/// addresses it gave); an admin's, everyone's — the admin search's filters and pages. Items
/// carry delivery counts, not deliveries.
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<NotificationQuery>,
) -> Result<Json<NotificationPage>, ApiError> {
    principal.require(&[Role::Service, Role::Admin])?;
    let owner = (principal.role() != Role::Admin).then(|| principal.subject());
    super::admin::search(&state, &q, owner).await.map(Json)
}

/// The notification with its first deliveries and the counts of all. The owning service and
/// admins only; anyone else gets 404 (existence is not revealed).
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<NotificationView>, ApiError> {
    principal.require(&[Role::Service, Role::Admin])?;
    let id =
        Uuid::parse_str(&id).map_err(|_| ApiError::not_found("no notification has this id"))?;
    let mut conn = state.pool.acquire().await?;
    match db::fetch(&mut conn, id).await? {
        Some((_, view)) if principal.role() == Role::Admin => Ok(Json(view)),
        Some((owner, view)) if owner == principal.subject() => {
            Ok(Json(crate::views::for_service(view)))
        }
        _ => Err(ApiError::not_found("no notification has this id")),
    }
}

/// `GET /v1/notifications/{id}/deliveries`: the notification's deliveries in id order, a page
/// at a time (the owning service, with users' addresses hidden, and admins).
async fn deliveries(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    principal.require(&[Role::Service, Role::Admin])?;
    let mut errors = Vec::new();
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_DELIVERY_PAGE).contains(&limit) {
        errors.push(FieldError::new(
            "limit",
            format!("must be from 1 to {MAX_DELIVERY_PAGE}"),
        ));
    }
    let cursor = q.cursor.as_deref().filter(|c| !c.is_empty());
    let after = cursor
        .filter(|c| api::rules::DELIVERY_CURSOR.is_match(c))
        .and_then(|c| Uuid::parse_str(c).ok());
    if cursor.is_some() && after.is_none() {
        errors.push(FieldError::new(
            "cursor",
            "is not a cursor this API gave out",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let id =
        Uuid::parse_str(&id).map_err(|_| ApiError::not_found("no notification has this id"))?;
    let mut conn = state.pool.acquire().await?;
    match db::owner(&mut conn, id).await? {
        Some(owner) if principal.role() == Role::Admin || owner == principal.subject() => {}
        _ => return Err(ApiError::not_found("no notification has this id")),
    }
    let mut items = db::deliveries_after(&mut conn, id, after, limit + 1).await?;
    let next_cursor = db::more_after(&mut items, limit as usize);
    if principal.role() != Role::Admin {
        items = items
            .into_iter()
            .map(crate::views::delivery_for_service)
            .collect();
    }
    Ok(Json(DeliveryPage { items, next_cursor }))
}

/// Most deliveries a cancel's 409 names one by one (the detail counts them all).
const MAX_NAMED_DISPATCHED: usize = 100;

/// `POST /v1/notifications/{id}/cancel` (owning service, admin): cancels every delivery not yet
/// handed to Kafka (scheduled, deferred by quiet hours, or waiting for a retry). 200 when
/// nothing had been dispatched; 409 naming the deliveries that were (the rest are cancelled).
async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<NotificationView>, ApiError> {
    principal.require(&[Role::Service, Role::Admin])?;
    let id =
        Uuid::parse_str(&id).map_err(|_| ApiError::not_found("no notification has this id"))?;
    let mut tx = state.pool.begin().await?;
    let owner = crate::db::notifications::owner(&mut tx, id).await?;
    match owner {
        Some(owner) if principal.role() == Role::Admin || owner == principal.subject() => {}
        _ => return Err(ApiError::not_found("no notification has this id")),
    }
    // A send to a topic: its fan-out stops first (a chunk being written commits before this,
    // and its deliveries are cancelled below with the rest).
    crate::db::fanouts::cancel(&mut tx, id).await?;
    let outcome = match delivery::cancel::cancel(&mut tx, id).await {
        Ok(o) => o,
        Err(e) if delivery::cancel::is_lock_timeout(&e) => {
            return Err(ApiError::conflict(
                "dispatch_in_progress",
                "a delivery of this notification is being handed to Kafka right now (slowly: Kafka may be unavailable); nothing was cancelled, retry",
            )
            .with_header(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("2"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    tracing::info!(notification_id = %id, cancelled = outcome.cancelled.len(), dispatched = outcome.dispatched.len(), "cancel");
    if !outcome.dispatched.is_empty() {
        let errors = outcome
            .dispatched
            .iter()
            .take(MAX_NAMED_DISPATCHED)
            .map(|(d, status)| {
                common::problem::FieldError::new(
                    format!("deliveries.{d}"),
                    format!("already dispatched (status {status})"),
                )
            })
            .collect();
        let mut err = ApiError::conflict(
            "already_dispatched",
            format!(
                "{} deliveries were already dispatched and cannot be cancelled (the first {MAX_NAMED_DISPATCHED} are named); {} were cancelled",
                outcome.dispatched.len(),
                outcome.cancelled.len()
            ),
        );
        err.errors = errors;
        return Err(err);
    }
    let mut conn = state.pool.acquire().await?;
    let (_, view) = db::fetch(&mut conn, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no notification has this id"))?;
    Ok(Json(match principal.role() {
        Role::Admin => view,
        _ => crate::views::for_service(view),
    }))
}
