//! `GET /v1/admin/suppressions` (newest first, keyset-paginated, by channel or address) and
//! `DELETE /v1/admin/suppressions/{id}` (the address is sent to again; its soft-bounce count
//! starts over).

use api::admin::{SuppressionPage, SuppressionQuery};
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{delete, get},
};
use common::{
    auth::{Principal, Role},
    events::Channel,
    problem::{ApiError, FieldError},
};
use uuid::Uuid;

use crate::{
    AppState,
    db::suppressions as db,
    routes::admin::{cursor_of, page_args},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/suppressions", get(list))
        .route("/v1/admin/suppressions/{id}", delete(remove))
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<SuppressionQuery>,
) -> Result<Json<SuppressionPage>, ApiError> {
    principal.require(&[Role::Admin])?;
    let mut errors = Vec::new();
    if q.channel
        .as_deref()
        .is_some_and(|c| Channel::parse(c).is_none())
    {
        errors.push(FieldError::new("channel", "is not a channel"));
    }
    if q.address
        .as_deref()
        .is_some_and(|a| a.chars().count() > api::rules::MAX_ADDRESS_CHARS)
    {
        errors.push(FieldError::new("address", "must be at most 320 characters"));
    }
    let (limit, cursor) = page_args(q.limit, q.cursor.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let mut conn = state.pool.acquire().await?;
    let mut items = db::list(
        &mut conn,
        q.channel.as_deref(),
        q.address.as_deref(),
        cursor,
        limit + 1,
    )
    .await?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(|s| cursor_of(s.created_at, s.id))
    } else {
        None
    };
    Ok(Json(SuppressionPage { items, next_cursor }))
}

async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(&[Role::Admin])?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("no suppression has this id"))?;
    let mut conn = state.pool.acquire().await?;
    if db::remove(&mut conn, id).await? {
        tracing::info!(actor = %principal.subject(), %id, "suppression removed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no suppression has this id"))
    }
}
