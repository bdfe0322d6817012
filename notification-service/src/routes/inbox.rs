//! `/v1/me/inbox…`: a user's in-app inbox (user tokens; the user is the `sub`, and every
//! query names it — an item of someone else is a 404 like one that does not exist).
//! `GET /v1/me/inbox/changes` is what the bff's streams read; it is not in the public route
//! table.

use api::inbox::{
    ChangesQuery, InboxChanges, InboxCounts, InboxPage, InboxQuery, MAX_PAGE, Mark, Marked,
};
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::{get, post},
};
use common::{
    auth::{Principal, Role},
    problem::ApiError,
};
use uuid::Uuid;

use crate::{
    AppState,
    inbox::{self, Filter},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/me/inbox", get(list))
        .route("/v1/me/inbox/counts", get(counts))
        .route("/v1/me/inbox/changes", get(changes))
        .route("/v1/me/inbox/read-all", post(read_all))
        .route("/v1/me/inbox/seen-all", post(seen_all))
        .route("/v1/me/inbox/{id}/{mark}", post(mark))
}

/// The user of a user token.
fn user_of(principal: &Principal) -> Result<Uuid, ApiError> {
    principal.require(&[Role::User])?;
    Uuid::parse_str(principal.subject())
        .map_err(|_| ApiError::forbidden("this token's subject is not a user id"))
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<InboxQuery>,
) -> Result<Json<InboxPage>, ApiError> {
    let user = user_of(&principal)?;
    let filter = match q.status.as_deref() {
        None => Filter::Inbox,
        Some("unread") => Filter::Unread,
        Some("read") => Filter::Read,
        Some("archived") => Filter::Archived,
        // api::inbox::STATUSES, as the document lists them.
        Some(_) => {
            return Err(ApiError::invalid_field(
                "status",
                "must be one of unread, read, archived",
            ));
        }
    };
    let limit: i64 = match q.limit.as_deref() {
        None => 20,
        Some(l) => l
            .parse()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| {
                ApiError::invalid_field("limit", "must be a whole number from 1 to 100")
            })?,
    };
    let before = match q.cursor.as_deref() {
        None | Some("") => None,
        // The document's pattern, then the number (the pattern keeps it within i64).
        Some(c) => Some(
            Some(c)
                .filter(|c| api::rules::INBOX_CURSOR.is_match(c))
                .and_then(|c| c.parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::invalid_field("cursor", "is not a cursor this API gave out")
                })?,
        ),
    };
    Ok(Json(
        inbox::list(&state, user, filter, before, limit).await?,
    ))
}

async fn counts(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<InboxCounts>, ApiError> {
    let user = user_of(&principal)?;
    Ok(Json(inbox::counts(&state, user).await?))
}

async fn changes(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<ChangesQuery>,
) -> Result<Json<InboxChanges>, ApiError> {
    let user = user_of(&principal)?;
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(a) => Some(
            a.parse::<i64>()
                .ok()
                .filter(|a| *a >= 0)
                .ok_or_else(|| ApiError::invalid_field("after", "must be a change number"))?,
        ),
    };
    Ok(Json(inbox::changes(&state, user, after).await?))
}

async fn read_all(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<InboxCounts>, ApiError> {
    let user = user_of(&principal)?;
    Ok(Json(inbox::mark_all(&state, user, Mark::Read).await?))
}

async fn seen_all(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<InboxCounts>, ApiError> {
    let user = user_of(&principal)?;
    Ok(Json(inbox::mark_all(&state, user, Mark::Seen).await?))
}

async fn mark(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, verb)): Path<(String, String)>,
) -> Result<Json<Marked>, ApiError> {
    let user = user_of(&principal)?;
    let mark =
        Mark::parse_verb(&verb).ok_or_else(|| ApiError::not_found("no route matches this path"))?;
    // Not a UUID: no such item.
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("no such item in your inbox"))?;
    Ok(Json(inbox::mark(&state, user, id, mark).await?))
}
