//! `POST /v1/notifications` (send) and `GET /v1/notifications/{id}`.

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use common::{
    auth::{Principal, Role},
    http::AppJson,
    problem::ApiError,
};
use uuid::Uuid;

use crate::{
    AppState,
    db::notifications::{self as db, NewNotification},
    planning,
    request::{Recipient, SendBody},
    views::NotificationView,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/notifications", post(send))
        .route("/v1/notifications/{id}", get(show))
}

/// Accepts a notification: 202 only after it, its deliveries and their outbox rows are
/// committed.
#[tracing::instrument(skip_all, fields(caller = %principal.subject(), notification_id))]
async fn send(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(body): AppJson<SendBody>,
) -> Result<(StatusCode, Json<NotificationView>), ApiError> {
    principal.require(&[Role::Service])?;
    let now = chrono::Utc::now();
    let req = body.validate(&state.planning, now)?;

    let user_ids: Vec<Uuid> = req
        .recipients
        .iter()
        .filter_map(|r| match r {
            Recipient::User(id) => Some(*id),
            Recipient::Email(_) => None,
        })
        .collect();
    let profiles = if user_ids.is_empty() {
        HashMap::new()
    } else {
        state
            .users
            .profiles(&principal.token, &user_ids)
            .await?
            .into_iter()
            .map(|p| (p.user_id, p))
            .collect()
    };

    let deliveries = planning::plan(&req, &profiles, &state.planning, now);
    let notification = NewNotification {
        id: Uuid::now_v7(),
        created_by: principal.subject(),
        request: &req,
        deliveries: &deliveries,
        created_at: now,
    };
    tracing::Span::current().record("notification_id", tracing::field::display(notification.id));

    let mut tx = state.pool.begin().await?;
    db::insert(&mut tx, &notification).await?; // a fresh v7 id: always written
    tx.commit().await?;
    tracing::info!(deliveries = deliveries.len(), "notification accepted");
    Ok((StatusCode::ACCEPTED, Json(notification.view())))
}

/// The notification with every delivery. The owning service and admins only; anyone else
/// gets 404 (existence is not revealed).
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
        Some((owner, view)) if principal.role() == Role::Admin || owner == principal.subject() => {
            Ok(Json(view))
        }
        _ => Err(ApiError::not_found("no notification has this id")),
    }
}
