//! `GET /v1/me/notifications`: a user's own history (user tokens; the user is the `sub`).

use api::notifications::{HistoryPage, HistoryQuery};
use axum::{
    Json, Router,
    extract::{Query, State},
    routing::get,
};
use common::{
    auth::{Principal, Role},
    problem::ApiError,
};
use uuid::Uuid;

use crate::{AppState, db::notifications as db};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/me/notifications", get(history))
}

async fn history(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    principal.require(&[Role::User])?;
    let user = Uuid::parse_str(principal.subject())
        .map_err(|_| ApiError::forbidden("this token's subject is not a user id"))?;
    let limit: i64 = match q.limit.as_deref() {
        None => 20,
        Some(l) => l
            .parse()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| {
                ApiError::invalid_field("limit", "must be a whole number from 1 to 100")
            })?,
    };
    let before = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(super::admin::parse_cursor(c).ok_or_else(|| {
            ApiError::invalid_field("cursor", "is not a cursor this API gave out")
        })?),
    };
    let mut conn = state.pool.acquire().await?;
    let items = db::history(&mut conn, user, before, limit + 1).await?;
    let mut items = items;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items
            .last()
            .map(|i| super::admin::cursor_of(i.created_at, i.id))
    } else {
        None
    };
    Ok(Json(HistoryPage { items, next_cursor }))
}
