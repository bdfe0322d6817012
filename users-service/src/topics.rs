//! Topics, the use cases (decision 0028): what each change checks and writes, in one
//! transaction each. The routes (`routes::topics`) parse and call these; the queries are in
//! `db::topics`.
//!
//! Subscribe and unsubscribe touch one row per user and the topic's count; the topic row is
//! locked first, so concurrent changes of one topic keep its count exact.

use api::topics::{
    MAX_OFFERED_TOPICS, MAX_TOPICS_PER_USER, MyTopic, SubscribersChanged, TopicView,
};
use common::problem::ApiError;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::db::{self, topics as q};

/// Creates the topic (true) or changes its name or openness (false).
pub async fn put(
    pool: &PgPool,
    key: &str,
    name: Option<&str>,
    open: Option<bool>,
    by: &str,
) -> Result<(TopicView, bool), ApiError> {
    let mut conn = pool.acquire().await?;
    Ok(q::upsert(&mut conn, key, name.map(str::trim), open, by).await?)
}

/// Subscribes users (creating the topic, closed, if it does not exist). Every id must be a
/// user: otherwise 404 naming the first unknown ones, and nothing changes.
pub async fn subscribe(
    pool: &PgPool,
    key: &str,
    ids: &[Uuid],
    by: &str,
) -> Result<SubscribersChanged, ApiError> {
    let mut tx = pool.begin().await?;
    let unknown = q::unknown_users(&mut tx, ids, 10).await?;
    if !unknown.is_empty() {
        let named: Vec<String> = unknown.iter().map(ToString::to_string).collect();
        return Err(ApiError::not_found(format!(
            "no user has these ids: {}{}; nothing was changed",
            named.join(", "),
            if unknown.len() == 10 { ", …" } else { "" }
        )));
    }
    let topic = q::lock_or_create(&mut tx, key, by).await?;
    let (changed, subscribers) = q::subscribe(&mut tx, topic, ids).await?;
    tx.commit().await?;
    tracing::info!(
        topic = key,
        added = changed,
        subscribers,
        "subscribers added"
    );
    Ok(SubscribersChanged {
        changed,
        subscribers,
    })
}

/// Unsubscribes users; ids that were not subscribed are not counted. 404 when no topic has
/// this key.
pub async fn unsubscribe(
    pool: &PgPool,
    key: &str,
    ids: &[Uuid],
) -> Result<SubscribersChanged, ApiError> {
    let mut tx = pool.begin().await?;
    let topic = q::lock(&mut tx, key)
        .await?
        .ok_or_else(|| ApiError::not_found("no topic has this key"))?;
    let (changed, subscribers) = q::unsubscribe(&mut tx, topic, ids).await?;
    tx.commit().await?;
    tracing::info!(
        topic = key,
        removed = changed,
        subscribers,
        "subscribers removed"
    );
    Ok(SubscribersChanged {
        changed,
        subscribers,
    })
}

/// A user's topics and the open ones they could follow.
pub async fn of_user(pool: &PgPool, me: Uuid) -> Result<Vec<MyTopic>, ApiError> {
    let mut conn = pool.acquire().await?;
    existing(&mut conn, me).await?;
    Ok(q::of_user(&mut conn, me, MAX_OFFERED_TOPICS).await?)
}

/// Follows open topics (`keys` deduplicated). Keys that name no topic are a 404, closed
/// topics a 403 (each naming them), and nothing changes; past the most topics a user may
/// follow, 409. The user's topics after the change.
pub async fn follow(pool: &PgPool, me: Uuid, keys: &[String]) -> Result<Vec<MyTopic>, ApiError> {
    let mut tx = pool.begin().await?;
    existing(&mut tx, me).await?;
    let found = q::by_keys(&mut tx, keys).await?;
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
    q::follow(&mut tx, me, &ids).await?;
    if q::followed_count(&mut tx, me).await? > MAX_TOPICS_PER_USER {
        return Err(ApiError::conflict(
            "too_many_topics",
            format!("a user may follow at most {MAX_TOPICS_PER_USER} topics; nothing was changed"),
        ));
    }
    after_change(tx, me).await
}

/// Leaves topics (open or closed: a user can always leave); keys the user does not follow
/// change nothing. The user's topics after the change.
pub async fn unfollow(pool: &PgPool, me: Uuid, keys: &[String]) -> Result<Vec<MyTopic>, ApiError> {
    let mut tx = pool.begin().await?;
    existing(&mut tx, me).await?;
    q::unfollow(&mut tx, me, keys).await?;
    after_change(tx, me).await
}

/// The user's topics as the change left them, then the commit.
async fn after_change(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    me: Uuid,
) -> Result<Vec<MyTopic>, ApiError> {
    let topics = q::of_user(&mut tx, me, MAX_OFFERED_TOPICS).await?;
    tx.commit().await?;
    Ok(topics)
}

/// 404 unless the user exists.
async fn existing(conn: &mut PgConnection, me: Uuid) -> Result<(), ApiError> {
    db::user(conn, me)
        .await?
        .map(drop)
        .ok_or_else(|| ApiError::not_found("no such user"))
}
