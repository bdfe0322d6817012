//! Internal endpoints for notification-service (not routed by nginx or the bff).

use api::{
    profiles::{ProfilesRequest, ProfilesResponse},
    topics::{Bounds, BoundsRequest, Chunk, ChunkRequest, MAX_CHUNK, TopicInfo},
};
use axum::{
    Json, Router,
    extract::{Path, State},
    routing::{get, post},
};
use common::{
    auth::{Principal, Role},
    http::AppJson,
    problem::ApiError,
};

use crate::{AppState, db};

/// Most user ids one batch may ask for.
pub const MAX_BATCH: usize = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/internal/v1/profiles/batch", post(profiles))
        .route("/internal/v1/topics/{key}", get(topic))
        .route("/internal/v1/topics/{key}/bounds", post(bounds))
        .route("/internal/v1/topics/{key}/chunk", post(chunk))
}

/// 403 unless the caller is a service named in `internal_callers`.
fn internal_caller(state: &AppState, principal: &Principal) -> Result<(), ApiError> {
    principal.require(&[Role::Service])?;
    if state
        .internal_callers
        .iter()
        .any(|c| c == principal.subject())
    {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "`{}` may not call internal endpoints; only {}",
        principal.subject(),
        state.internal_callers.join(", ")
    )))
}

/// Delivery profiles of up to 1,000 users in one call (one query).
async fn profiles(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(body): AppJson<ProfilesRequest>,
) -> Result<Json<ProfilesResponse>, ApiError> {
    internal_caller(&state, &principal)?;
    if body.user_ids.len() > MAX_BATCH {
        return Err(ApiError::invalid_field(
            "user_ids",
            format!("at most {MAX_BATCH} ids per call"),
        ));
    }
    let mut conn = state.pool.acquire().await?;
    let profiles = db::profiles(&mut conn, &body.user_ids, &state.mandatory_categories).await?;
    Ok(Json(ProfilesResponse { profiles }))
}

fn no_topic() -> ApiError {
    ApiError::not_found("no topic has this key")
}

/// A topic's key and subscriber count (a send to it is refused when it does not exist).
async fn topic(
    State(state): State<AppState>,
    principal: Principal,
    Path(key): Path<String>,
) -> Result<Json<TopicInfo>, ApiError> {
    internal_caller(&state, &principal)?;
    let mut conn = state.pool.acquire().await?;
    let t = db::topics::get(&mut conn, &key)
        .await?
        .ok_or_else(no_topic)?;
    Ok(Json(TopicInfo {
        key: t.key,
        subscribers: t.subscribers,
    }))
}

/// How a fan-out splits a topic's subscribers as of its acceptance.
async fn bounds(
    State(state): State<AppState>,
    principal: Principal,
    Path(key): Path<String>,
    AppJson(body): AppJson<BoundsRequest>,
) -> Result<Json<Bounds>, ApiError> {
    internal_caller(&state, &principal)?;
    if body.every == 0 || body.every as usize > MAX_BATCH {
        return Err(ApiError::invalid_field(
            "every",
            format!("must be from 1 to {MAX_BATCH}"),
        ));
    }
    let mut conn = state.pool.acquire().await?;
    let (subscribers, bounds) =
        db::topics::bounds(&mut conn, &key, body.as_of, i64::from(body.every))
            .await?
            .ok_or_else(no_topic)?;
    Ok(Json(Bounds {
        subscribers,
        bounds,
    }))
}

/// One chunk of a fan-out: its subscribers with their delivery profiles, in one call.
async fn chunk(
    State(state): State<AppState>,
    principal: Principal,
    Path(key): Path<String>,
    AppJson(body): AppJson<ChunkRequest>,
) -> Result<Json<Chunk>, ApiError> {
    internal_caller(&state, &principal)?;
    let mut conn = state.pool.acquire().await?;
    let ids = db::topics::chunk(
        &mut conn,
        &key,
        body.as_of,
        body.after,
        body.until,
        &body.exclude,
        MAX_CHUNK as i64,
    )
    .await?;
    let profiles = db::profiles(&mut conn, &ids, &state.mandatory_categories).await?;
    Ok(Json(Chunk { profiles }))
}
