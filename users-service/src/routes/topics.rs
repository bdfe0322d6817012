//! Topics: `PUT`/`GET /v1/topics/{key}`, `PUT`/`DELETE /v1/topics/{key}/subscribers`
//! (services and admins), `GET`/`PUT`/`DELETE /v1/me/topics` (a user follows open topics and
//! leaves any), `GET /v1/admin/topics`.
//!
//! Subscribe and unsubscribe touch one row per user and the topic's count, in one
//! transaction; the topic row is locked first, so concurrent changes of one topic keep its
//! count exact.

use api::topics::{
    MAX_KEYS_PER_CALL, MAX_NAME_CHARS, MAX_OFFERED_TOPICS, MAX_SUBSCRIBERS_PER_CALL,
    MAX_TOPICS_PER_USER, MyTopics, SubscribersBody, SubscribersChanged, TopicBody, TopicKeysBody,
    TopicPage, TopicQuery, TopicView,
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
    let name = body.name.as_deref().map(str::trim);
    let mut conn = state.pool.acquire().await?;
    let (view, created) = db::upsert(&mut conn, key, name, body.open, principal.subject()).await?;
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

/// Subscribes users (creating the topic, closed, if it does not exist). Every id must be a
/// user: otherwise 404 naming the first unknown ones, and nothing changes.
async fn add_subscribers(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
    AppJson(body): AppJson<SubscribersBody>,
) -> Result<Json<SubscribersChanged>, ApiError> {
    principal.require(MANAGERS)?;
    let key = key(&raw)?;
    check_ids(&body)?;
    let mut tx = state.pool.begin().await?;
    let unknown = db::unknown_users(&mut tx, &body.user_ids, 10).await?;
    if !unknown.is_empty() {
        let named: Vec<String> = unknown.iter().map(ToString::to_string).collect();
        return Err(ApiError::not_found(format!(
            "no user has these ids: {}{}; nothing was changed",
            named.join(", "),
            if unknown.len() == 10 { ", …" } else { "" }
        )));
    }
    let topic = db::lock_or_create(&mut tx, key, principal.subject()).await?;
    let (changed, subscribers) = db::subscribe(&mut tx, topic, &body.user_ids).await?;
    tx.commit().await?;
    tracing::info!(
        topic = key,
        added = changed,
        subscribers,
        "subscribers added"
    );
    Ok(Json(SubscribersChanged {
        changed,
        subscribers,
    }))
}

/// Unsubscribes users; ids that were not subscribed are not counted.
async fn remove_subscribers(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
    AppJson(body): AppJson<SubscribersBody>,
) -> Result<Json<SubscribersChanged>, ApiError> {
    principal.require(MANAGERS)?;
    let key = key(&raw)?;
    check_ids(&body)?;
    let mut tx = state.pool.begin().await?;
    let topic = db::lock(&mut tx, key).await?.ok_or_else(no_topic)?;
    let (changed, subscribers) = db::unsubscribe(&mut tx, topic, &body.user_ids).await?;
    tx.commit().await?;
    tracing::info!(
        topic = key,
        removed = changed,
        subscribers,
        "subscribers removed"
    );
    Ok(Json(SubscribersChanged {
        changed,
        subscribers,
    }))
}

/// The caller's topics and the open ones they could follow.
async fn my_topics(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<MyTopics>, ApiError> {
    let me = super::me::me(&principal)?;
    let mut conn = state.pool.acquire().await?;
    super::me::existing(&mut conn, me).await?;
    let topics = db::of_user(&mut conn, me, MAX_OFFERED_TOPICS).await?;
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

/// Follows open topics. A key that names no topic is a 404, a closed topic a 403 (each
/// naming them), and nothing changes; past the most topics a user may follow, 409.
async fn follow(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(body): AppJson<TopicKeysBody>,
) -> Result<Json<MyTopics>, ApiError> {
    let me = super::me::me(&principal)?;
    let keys = check_keys(body)?;
    let mut tx = state.pool.begin().await?;
    super::me::existing(&mut tx, me).await?;
    let found = db::by_keys(&mut tx, &keys).await?;
    let missing: Vec<&str> = keys
        .iter()
        .filter(|key| !found.iter().any(|(_, k, _)| k == *key))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::not_found(format!(
            "no topic has these keys: {}; nothing was changed",
            missing.join(", ")
        )));
    }
    let closed: Vec<&str> = found
        .iter()
        .filter(|(_, _, open)| !open)
        .map(|(_, k, _)| k.as_str())
        .collect();
    if !closed.is_empty() {
        return Err(ApiError::forbidden(format!(
            "these topics are not open to follow (a service manages their subscribers): {}; nothing was changed",
            closed.join(", ")
        )));
    }
    let ids: Vec<i64> = found.iter().map(|(id, _, _)| *id).collect();
    db::follow(&mut tx, me, &ids).await?;
    if db::followed_count(&mut tx, me).await? > MAX_TOPICS_PER_USER {
        return Err(ApiError::conflict(
            "too_many_topics",
            format!("a user may follow at most {MAX_TOPICS_PER_USER} topics; nothing was changed"),
        ));
    }
    let topics = db::of_user(&mut tx, me, MAX_OFFERED_TOPICS).await?;
    tx.commit().await?;
    Ok(Json(MyTopics { topics }))
}

/// Leaves topics (open or closed: a user can always leave); keys the user does not follow
/// change nothing.
async fn unfollow(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(body): AppJson<TopicKeysBody>,
) -> Result<Json<MyTopics>, ApiError> {
    let me = super::me::me(&principal)?;
    let keys = check_keys(body)?;
    let mut tx = state.pool.begin().await?;
    super::me::existing(&mut tx, me).await?;
    db::unfollow(&mut tx, me, &keys).await?;
    let topics = db::of_user(&mut tx, me, MAX_OFFERED_TOPICS).await?;
    tx.commit().await?;
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
