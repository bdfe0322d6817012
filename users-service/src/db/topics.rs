//! Topics and their subscriptions. A topic's `subscribers` count is kept by the statements
//! that add and remove subscriptions, in the same transaction: reading it is O(1).

use api::topics::{MyTopic, TopicView};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

const TOPIC_COLUMNS: &str = "key, name, open, subscribers, created_at";

#[derive(sqlx::FromRow)]
struct TopicRow {
    key: String,
    name: Option<String>,
    open: bool,
    subscribers: i64,
    created_at: DateTime<Utc>,
}

impl From<TopicRow> for TopicView {
    fn from(r: TopicRow) -> Self {
        TopicView {
            key: r.key,
            name: r.name,
            open: r.open,
            subscribers: r.subscribers,
            created_at: r.created_at,
        }
    }
}

/// Creates the topic or changes what is given; true when it was created.
pub async fn upsert(
    conn: &mut PgConnection,
    key: &str,
    name: Option<&str>,
    open: Option<bool>,
    created_by: &str,
) -> sqlx::Result<(TopicView, bool)> {
    let (created, row): (bool, TopicRow) = {
        let r: (bool, String, Option<String>, bool, i64, DateTime<Utc>) = sqlx::query_as(
            "INSERT INTO topics (key, name, open, created_by) VALUES ($1, $2, coalesce($3, false), $4)
             ON CONFLICT (key) DO UPDATE
                SET name = coalesce($2, topics.name), open = coalesce($3, topics.open),
                    updated_at = now()
             RETURNING (xmax = 0), key, name, open, subscribers, created_at",
        )
        .bind(key)
        .bind(name)
        .bind(open)
        .bind(created_by)
        .fetch_one(&mut *conn)
        .await?;
        (
            r.0,
            TopicRow {
                key: r.1,
                name: r.2,
                open: r.3,
                subscribers: r.4,
                created_at: r.5,
            },
        )
    };
    Ok((row.into(), created))
}

pub async fn get(conn: &mut PgConnection, key: &str) -> sqlx::Result<Option<TopicView>> {
    let row: Option<TopicRow> = sqlx::query_as(&format!(
        "SELECT {TOPIC_COLUMNS} FROM topics WHERE key = $1"
    ))
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(Into::into))
}

/// The topic's id, created (closed) when it does not exist; its row is locked until the
/// transaction ends, so its count changes in order.
pub async fn lock_or_create(
    conn: &mut PgConnection,
    key: &str,
    created_by: &str,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO topics (key, created_by) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET updated_at = now()
         RETURNING id",
    )
    .bind(key)
    .bind(created_by)
    .fetch_one(&mut *conn)
    .await
}

/// The topic's id, its row locked until the transaction ends.
pub async fn lock(conn: &mut PgConnection, key: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT id FROM topics WHERE key = $1 FOR UPDATE")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
}

/// Up to `limit` of `ids` that are no user.
pub async fn unknown_users(
    conn: &mut PgConnection,
    ids: &[Uuid],
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT DISTINCT u FROM unnest($1::uuid[]) AS u
         WHERE NOT EXISTS (SELECT 1 FROM users WHERE id = u) LIMIT $2",
    )
    .bind(ids)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
}

/// Subscribes `ids` (existing users) to topic `topic` (locked by the caller); returns how
/// many were not subscribed before and the topic's count after. In id order, so concurrent
/// calls wait for each other instead of deadlocking.
pub async fn subscribe(
    conn: &mut PgConnection,
    topic: i64,
    ids: &[Uuid],
) -> sqlx::Result<(u64, i64)> {
    let added = sqlx::query(
        "INSERT INTO topic_subscriptions (topic_id, user_id)
         SELECT $1, u FROM (SELECT DISTINCT u FROM unnest($2::uuid[]) AS u) AS d ORDER BY u
         ON CONFLICT DO NOTHING",
    )
    .bind(topic)
    .bind(ids)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let count = add_to_count(conn, &[topic], added as i64).await?;
    Ok((added, count))
}

/// Unsubscribes `ids` from topic `topic` (locked by the caller); returns how many were
/// subscribed and the topic's count after.
pub async fn unsubscribe(
    conn: &mut PgConnection,
    topic: i64,
    ids: &[Uuid],
) -> sqlx::Result<(u64, i64)> {
    let removed =
        sqlx::query("DELETE FROM topic_subscriptions WHERE topic_id = $1 AND user_id = ANY($2)")
            .bind(topic)
            .bind(ids)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    let count = add_to_count(conn, &[topic], -(removed as i64)).await?;
    Ok((removed, count))
}

/// Adds `n` to the counts of `topics`; the count of the last one.
async fn add_to_count(conn: &mut PgConnection, topics: &[i64], n: i64) -> sqlx::Result<i64> {
    let counts: Vec<i64> = sqlx::query_scalar(
        "UPDATE topics SET subscribers = subscribers + $2, updated_at = now()
         WHERE id = ANY($1) RETURNING subscribers",
    )
    .bind(topics)
    .bind(n)
    .fetch_all(&mut *conn)
    .await?;
    Ok(counts.last().copied().unwrap_or(0))
}

/// The topics a user follows, then (at most `offered`) open ones they do not, each by key.
pub async fn of_user(
    conn: &mut PgConnection,
    user: Uuid,
    offered: i64,
) -> sqlx::Result<Vec<MyTopic>> {
    type Row = (String, Option<String>, bool, Option<DateTime<Utc>>);
    let following: Vec<Row> = sqlx::query_as(
        "SELECT t.key, t.name, t.open, s.subscribed_at
         FROM topic_subscriptions s JOIN topics t ON t.id = s.topic_id
         WHERE s.user_id = $1 ORDER BY t.key",
    )
    .bind(user)
    .fetch_all(&mut *conn)
    .await?;
    let open: Vec<Row> = sqlx::query_as(
        "SELECT t.key, t.name, t.open, NULL::timestamptz FROM topics t
         WHERE t.open AND NOT EXISTS
            (SELECT 1 FROM topic_subscriptions s WHERE s.topic_id = t.id AND s.user_id = $1)
         ORDER BY t.key LIMIT $2",
    )
    .bind(user)
    .bind(offered)
    .fetch_all(&mut *conn)
    .await?;
    Ok(following
        .into_iter()
        .chain(open)
        .map(|(key, name, open, followed_at)| MyTopic {
            key,
            name,
            open,
            following: followed_at.is_some(),
            followed_at,
        })
        .collect())
}

/// Topics by key: `(id, key, open)` of those that exist.
pub async fn by_keys(
    conn: &mut PgConnection,
    keys: &[String],
) -> sqlx::Result<Vec<(i64, String, bool)>> {
    sqlx::query_as("SELECT id, key, open FROM topics WHERE key = ANY($1) ORDER BY id")
        .bind(keys)
        .fetch_all(&mut *conn)
        .await
}

/// Subscribes `user` to `topics` (ids); the ids of those newly followed (counted).
pub async fn follow(conn: &mut PgConnection, user: Uuid, topics: &[i64]) -> sqlx::Result<Vec<i64>> {
    let added: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO topic_subscriptions (topic_id, user_id)
         SELECT t, $2 FROM unnest($1::bigint[]) AS t ORDER BY t
         ON CONFLICT DO NOTHING RETURNING topic_id",
    )
    .bind(topics)
    .bind(user)
    .fetch_all(&mut *conn)
    .await?;
    if !added.is_empty() {
        add_to_count(conn, &added, 1).await?;
    }
    Ok(added)
}

/// Unsubscribes `user` from the topics `keys`; how many they followed.
pub async fn unfollow(conn: &mut PgConnection, user: Uuid, keys: &[String]) -> sqlx::Result<u64> {
    let removed: Vec<i64> = sqlx::query_scalar(
        "DELETE FROM topic_subscriptions s USING topics t
         WHERE t.id = s.topic_id AND t.key = ANY($1) AND s.user_id = $2
         RETURNING s.topic_id",
    )
    .bind(keys)
    .bind(user)
    .fetch_all(&mut *conn)
    .await?;
    if !removed.is_empty() {
        add_to_count(conn, &removed, -1).await?;
    }
    Ok(removed.len() as u64)
}

/// How many topics `user` follows.
pub async fn followed_count(conn: &mut PgConnection, user: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM topic_subscriptions WHERE user_id = $1")
        .bind(user)
        .fetch_one(&mut *conn)
        .await
}

/// A page of topics by key, after `after`.
pub async fn page(
    conn: &mut PgConnection,
    after: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<TopicView>> {
    let rows: Vec<TopicRow> = sqlx::query_as(&format!(
        "SELECT {TOPIC_COLUMNS} FROM topics WHERE $1::text IS NULL OR key > $1
         ORDER BY key LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// A fan-out's split: the topic's subscribers as of `as_of`, and every `every`-th user id in
/// id order (one index scan; nothing is held in memory but the bounds).
pub async fn bounds(
    conn: &mut PgConnection,
    key: &str,
    as_of: DateTime<Utc>,
    every: i64,
) -> sqlx::Result<Option<(i64, Vec<Uuid>)>> {
    let Some(id): Option<i64> = sqlx::query_scalar("SELECT id FROM topics WHERE key = $1")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM topic_subscriptions WHERE topic_id = $1 AND subscribed_at <= $2",
    )
    .bind(id)
    .bind(as_of)
    .fetch_one(&mut *conn)
    .await?;
    let bounds: Vec<Uuid> = sqlx::query_scalar(
        "SELECT user_id FROM (
            SELECT user_id, row_number() OVER (ORDER BY user_id) AS n
            FROM topic_subscriptions WHERE topic_id = $1 AND subscribed_at <= $2) AS numbered
         WHERE n % $3 = 0 ORDER BY user_id",
    )
    .bind(id)
    .bind(as_of)
    .bind(every)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some((total, bounds)))
}

/// The subscribers of a fan-out's chunk: `after < user_id <= until`, subscribed at or before
/// `as_of` (and still subscribed), but those in `exclude`; at most `limit`, in id order.
pub async fn chunk(
    conn: &mut PgConnection,
    key: &str,
    as_of: DateTime<Utc>,
    after: Option<Uuid>,
    until: Option<Uuid>,
    exclude: &[Uuid],
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT s.user_id FROM topic_subscriptions s JOIN topics t ON t.id = s.topic_id
         WHERE t.key = $1 AND s.subscribed_at <= $2
           AND ($3::uuid IS NULL OR s.user_id > $3) AND ($4::uuid IS NULL OR s.user_id <= $4)
           AND NOT (s.user_id = ANY($5))
         ORDER BY s.user_id LIMIT $6",
    )
    .bind(key)
    .bind(as_of)
    .bind(after)
    .bind(until)
    .bind(exclude)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
}
