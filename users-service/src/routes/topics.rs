//! Topics: `PUT`/`GET /v1/topics/{key}`, `PUT`/`DELETE /v1/topics/{key}/subscribers`
//! (services and admins), `GET`/`PUT`/`DELETE /v1/me/topics` (a user follows open topics and
//! leaves any), `GET /v1/admin/topics`.
//! Each parses and checks its input, then calls its use case in `crate::topics`.

use api::topics::{
    MAX_KEYS_PER_CALL, MAX_NAME_CHARS, MAX_SUBSCRIBERS_PER_CALL, MyTopics, SubscribersBody,
    SubscribersChanged, TopicBody, TopicKeysBody, TopicPage, TopicQuery, TopicView,
};
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{get, put},
};
use common::{
    address::parse_name,
    auth::{Principal, Role},
    http::AppJson,
    problem::{ApiError, FieldError},
};

use crate::{AppState, db::topics as db};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/topics/{key}", put(put_topic).get(get_topic))
        .route(
            "/v1/topics/{key}/subscribers",
            put(add_subscribers).delete(remove_subscribers).layer(
                axum::extract::DefaultBodyLimit::max(api::topics::MAX_SUBSCRIBERS_BYTES),
            ),
        )
        .route("/v1/me/topics", get(my_topics).put(follow).delete(unfollow))
        .route("/v1/admin/topics", get(list))
}

const MANAGERS: &[Role] = &[Role::Service, Role::Admin];

/// A topic key from a path: anything that cannot be one names no topic.
fn key(raw: &str) -> Result<&str, ApiError> {
    parse_name(raw).map_err(|_| ApiError::not_found("no topic has this key"))
}

fn no_topic() -> ApiError {
    ApiError::not_found("no topic has this key")
}

/// Creates the topic (201) or changes its name or openness (200).
async fn put_topic(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
    AppJson(body): AppJson<TopicBody>,
) -> Result<(StatusCode, Json<TopicView>), ApiError> {
    principal.require(MANAGERS)?;
    let key = key(&raw)?;
    if let Some(name) = body.name.as_deref()
        && (name.chars().count() > MAX_NAME_CHARS || !api::rules::DISPLAY_NAME.is_match(name))
    {
        return Err(ApiError::invalid_field(
            "name",
            format!("must be 1-{MAX_NAME_CHARS} characters, not blank, without control characters"),
        ));
    }
    let (view, created) = crate::topics::put(
        &state.pool,
        key,
        body.name.as_deref(),
        body.open,
        principal.subject(),
    )
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

async fn get_topic(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
) -> Result<Json<TopicView>, ApiError> {
    principal.require(MANAGERS)?;
    let key = key(&raw)?;
    let mut conn = state.pool.acquire().await?;
    db::get(&mut conn, key)
        .await?
        .map(Json)
        .ok_or_else(no_topic)
}

/// 1 to 10,000 user ids, or 422.
fn check_ids(body: &SubscribersBody) -> Result<(), ApiError> {
    if body.user_ids.is_empty() || body.user_ids.len() > MAX_SUBSCRIBERS_PER_CALL {
        return Err(ApiError::invalid_field(
            "user_ids",
            format!("must hold 1 to {MAX_SUBSCRIBERS_PER_CALL} user ids"),
        ));
    }
    Ok(())
}

/// Subscribes users (`crate::topics::subscribe`).
async fn add_subscribers(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
    AppJson(body): AppJson<SubscribersBody>,
) -> Result<Json<SubscribersChanged>, ApiError> {
    principal.require(MANAGERS)?;
    let key = key(&raw)?;
    check_ids(&body)?;
    crate::topics::subscribe(&state.pool, key, &body.user_ids, principal.subject())
        .await
        .map(Json)
}

/// Unsubscribes users (`crate::topics::unsubscribe`).
async fn remove_subscribers(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
    AppJson(body): AppJson<SubscribersBody>,
) -> Result<Json<SubscribersChanged>, ApiError> {
    principal.require(MANAGERS)?;
    let key = key(&raw)?;
    check_ids(&body)?;
    crate::topics::unsubscribe(&state.pool, key, &body.user_ids)
        .await
        .map(Json)
}

/// The caller's topics and the open ones they could follow.
async fn my_topics(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<MyTopics>, ApiError> {
    let me = super::me::me(&principal)?;
    let topics = crate::topics::of_user(&state.pool, me).await?;
    Ok(Json(MyTopics { topics }))
}

/// 1 to 100 well-formed keys, deduplicated, or 422.
fn check_keys(body: TopicKeysBody) -> Result<Vec<String>, ApiError> {
    if body.keys.is_empty() || body.keys.len() > MAX_KEYS_PER_CALL {
        return Err(ApiError::invalid_field(
            "keys",
            format!("must hold 1 to {MAX_KEYS_PER_CALL} topic keys"),
        ));
    }
    let errors: Vec<FieldError> = body
        .keys
        .iter()
        .enumerate()
        .filter_map(|(i, k)| {
            parse_name(k)
                .err()
                .map(|rule| FieldError::new(format!("keys[{i}]"), rule))
        })
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let mut keys = body.keys;
    keys.sort_unstable();
    keys.dedup();
    Ok(keys)
}

/// Follows open topics (`crate::topics::follow`).
async fn follow(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(body): AppJson<TopicKeysBody>,
) -> Result<Json<MyTopics>, ApiError> {
    let me = super::me::me(&principal)?;
    let keys = check_keys(body)?;
    let topics = crate::topics::follow(&state.pool, me, &keys).await?;
    Ok(Json(MyTopics { topics }))
}

/// Leaves topics (`crate::topics::unfollow`).
async fn unfollow(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(body): AppJson<TopicKeysBody>,
) -> Result<Json<MyTopics>, ApiError> {
    let me = super::me::me(&principal)?;
    let keys = check_keys(body)?;
    let topics = crate::topics::unfollow(&state.pool, me, &keys).await?;
    Ok(Json(MyTopics { topics }))
}

/// Every topic, by key, a page at a time (admins).
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<TopicQuery>,
) -> Result<Json<TopicPage>, ApiError> {
    principal.require(&[Role::Admin])?;
    let mut errors = Vec::new();
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        errors.push(FieldError::new("limit", "must be from 1 to 200"));
    }
    let cursor = q.cursor.as_deref().filter(|c| !c.is_empty());
    if let Some(c) = cursor
        && !api::rules::NAME_CURSOR.is_match(c)
    {
        errors.push(FieldError::new(
            "cursor",
            "is not a cursor this API gave out",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let mut conn = state.pool.acquire().await?;
    let mut items = db::page(&mut conn, cursor, limit + 1).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|t| t.key.clone())
    } else {
        None
    };
    Ok(Json(TopicPage { items, next_cursor }))
}
