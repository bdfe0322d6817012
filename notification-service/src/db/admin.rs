//! The admin API's reads: notification search, one delivery's attempts and re-drives, stats.

use std::collections::BTreeMap;

use api::{
    admin::{AttemptEvent, Latency, NotificationQuery, RedriveView, StatsBucket},
    notifications::{AttemptView, NotificationSummary},
};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

#[derive(sqlx::FromRow)]
struct SummaryRow {
    id: Uuid,
    category: String,
    priority: String,
    created_at: DateTime<Utc>,
    send_at: Option<DateTime<Utc>>,
    channel: Option<String>,
    status: Option<String>,
    replaced: Option<bool>,
    n: Option<i64>,
}

/// The notifications matching every filter of `q` (and sent by `owner`, when given), newest
/// first, after `cursor`, at most `limit`, each with its delivery counts: one statement per
/// page however many deliveries the notifications have. The SQL holds only the filters given,
/// so each combination gets a plan on its own index.
///
/// With an `owner` (a service searching its own), an address in `recipient` matches only
/// deliveries to addresses the service gave itself: one resolved from a user's profile must
/// not be confirmable by guessing it.
pub async fn search(
    conn: &mut PgConnection,
    q: &NotificationQuery,
    owner: Option<&str>,
    cursor: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<NotificationSummary>> {
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(
        "WITH page AS (SELECT n.id, n.category, n.priority, n.created_at, n.send_at
                       FROM notifications n WHERE true",
    );
    if let Some(o) = owner {
        sql.push(" AND n.created_by = ").push_bind(o.to_owned());
    }
    if let Some(c) = &q.category {
        sql.push(" AND n.category = ").push_bind(c.clone());
    }
    if let Some(s) = q.since {
        sql.push(" AND n.created_at >= ").push_bind(s);
    }
    if let Some(u) = q.until {
        sql.push(" AND n.created_at < ").push_bind(u);
    }
    if let Some((at, id)) = cursor {
        sql.push(" AND (n.created_at, n.id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    if q.status.is_some() || q.channel.is_some() || q.recipient.is_some() {
        sql.push(" AND EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id");
        if let Some(s) = &q.status {
            sql.push(" AND d.status = ").push_bind(s.clone());
        }
        if let Some(c) = &q.channel {
            sql.push(" AND d.channel = ").push_bind(c.clone());
        }
        if let Some(r) = &q.recipient {
            match Uuid::parse_str(r) {
                Ok(user) => sql.push(" AND d.user_id = ").push_bind(user),
                Err(_) => {
                    if owner.is_some() {
                        sql.push(" AND d.user_id IS NULL");
                    }
                    sql.push(" AND d.address = ").push_bind(r.clone())
                }
            };
        }
        sql.push(")");
    }
    sql.push(" ORDER BY n.created_at DESC, n.id DESC LIMIT ")
        .push_bind(limit);
    sql.push(
        ")
         SELECT p.id, p.category, p.priority, p.created_at, p.send_at,
                c.channel, c.status, c.replaced, c.n
         FROM page p
         LEFT JOIN LATERAL (
             SELECT d.channel, d.status,
                    EXISTS (SELECT 1 FROM deliveries f WHERE f.fallback_of = d.id) AS replaced,
                    count(*) AS n
             FROM deliveries d WHERE d.notification_id = p.id
             GROUP BY 1, 2, 3
         ) c ON true
         ORDER BY p.created_at DESC, p.id DESC",
    );
    let rows: Vec<SummaryRow> = sql.build_query_as().fetch_all(conn).await?;
    let mut items: Vec<(NotificationSummary, Vec<(String, i64)>)> = Vec::new();
    for r in rows {
        if items.last().is_none_or(|(n, _)| n.id != r.id) {
            items.push((
                NotificationSummary {
                    id: r.id,
                    status: String::new(),
                    category: r.category,
                    priority: r.priority,
                    created_at: r.created_at,
                    send_at: r.send_at,
                    delivery_counts: Default::default(),
                },
                Vec::new(),
            ));
        }
        let (summary, live) = items.last_mut().expect("pushed above");
        if let (Some(channel), Some(status), Some(n)) = (r.channel, r.status, r.n) {
            summary.delivery_counts.add(&channel, &status, n);
            if r.replaced != Some(true) {
                live.push((status, n));
            }
        }
    }
    Ok(items
        .into_iter()
        .map(|(mut summary, live)| {
            summary.status = delivery::status::notification_status_counted(
                live.iter().map(|(s, n)| (s.as_str(), *n)),
            )
            .into();
            summary
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    attempt: i32,
    outcome: String,
    provider: String,
    provider_message_id: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
    duration_ms: i64,
    at: DateTime<Utc>,
}

/// Every attempt of a delivery, oldest first.
pub async fn attempts(conn: &mut PgConnection, delivery: Uuid) -> sqlx::Result<Vec<AttemptView>> {
    let rows: Vec<AttemptRow> = sqlx::query_as(
        "SELECT attempt, outcome, provider, provider_message_id, error_code, error_message, duration_ms, at
         FROM attempts WHERE delivery_id = $1 ORDER BY attempt",
    )
    .bind(delivery)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(AttemptRow::view).collect())
}

impl AttemptRow {
    fn view(self) -> AttemptView {
        AttemptView {
            attempt: self.attempt,
            outcome: self.outcome,
            provider: self.provider,
            provider_message_id: self.provider_message_id,
            error: self
                .error_code
                .map(|code| serde_json::json!({ "code": code, "message": self.error_message })),
            duration_ms: self.duration_ms,
            at: self.at,
        }
    }
}

/// A position in the attempts feed: (recorded_at, delivery_id, attempt).
pub type FeedPosition = (DateTime<Utc>, Uuid, i32);

#[derive(sqlx::FromRow)]
struct FeedRow {
    delivery_id: Uuid,
    notification_id: Uuid,
    channel: String,
    address: Option<String>,
    status: String,
    recorded_at: DateTime<Utc>,
    #[sqlx(flatten)]
    attempt: AttemptRow,
}

/// Attempts recorded after `after`, oldest first, at most `limit`, leaving out the last
/// `settle` of them: an attempt whose transaction commits later than its `recorded_at`
/// (`now()` at insert) would otherwise land behind a cursor already handed out.
pub async fn attempts_after(
    conn: &mut PgConnection,
    after: FeedPosition,
    settle: std::time::Duration,
    limit: i64,
) -> sqlx::Result<Vec<AttemptEvent>> {
    let rows: Vec<FeedRow> = sqlx::query_as(
        "SELECT a.delivery_id, d.notification_id, d.channel, d.address, d.status, a.recorded_at,
                a.attempt, a.outcome, a.provider, a.provider_message_id, a.error_code,
                a.error_message, a.duration_ms, a.at
         FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
         WHERE (a.recorded_at, a.delivery_id, a.attempt) > ($1, $2, $3)
           AND a.recorded_at < now() - make_interval(secs => $4)
         ORDER BY a.recorded_at, a.delivery_id, a.attempt
         LIMIT $5",
    )
    .bind(after.0)
    .bind(after.1)
    .bind(after.2)
    .bind(settle.as_secs_f64())
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| AttemptEvent {
            delivery_id: r.delivery_id,
            notification_id: r.notification_id,
            channel: r.channel,
            address: r.address,
            status: r.status,
            recorded_at: r.recorded_at,
            attempt: r.attempt.view(),
        })
        .collect())
}

/// The database's clock less `settle`: where a feed without a position starts.
pub async fn feed_start(
    conn: &mut PgConnection,
    settle: std::time::Duration,
) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar("SELECT now() - make_interval(secs => $1)")
        .bind(settle.as_secs_f64())
        .fetch_one(conn)
        .await
}

#[derive(sqlx::FromRow)]
struct RedriveRow {
    from_attempt: i32,
    to_attempt: i32,
    kind: String,
    actor: String,
    detail: Option<String>,
    at: DateTime<Utc>,
}

/// Every re-drive of a delivery, oldest first.
pub async fn redrives(conn: &mut PgConnection, delivery: Uuid) -> sqlx::Result<Vec<RedriveView>> {
    let rows: Vec<RedriveRow> = sqlx::query_as(
        "SELECT from_attempt, to_attempt, kind, actor, detail, at FROM redrives
         WHERE delivery_id = $1 ORDER BY at, id",
    )
    .bind(delivery)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| RedriveView {
            from_attempt: r.from_attempt,
            to_attempt: r.to_attempt,
            kind: r.kind,
            actor: r.actor,
            detail: r.detail,
            at: r.at,
        })
        .collect())
}

/// `{channel: {status: count}}` of the deliveries created in the last `window_secs`, and
/// the suppressed ones among them by reason — one scan of the window.
pub async fn counts(
    conn: &mut PgConnection,
    window_secs: i64,
) -> sqlx::Result<(
    BTreeMap<String, BTreeMap<String, i64>>,
    BTreeMap<String, i64>,
)> {
    let suppressed = delivery::Status::Suppressed.as_str();
    let rows: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT channel, status, CASE WHEN status = $2 THEN coalesce(reason, 'unknown') END,
                count(*)
         FROM deliveries
         WHERE created_at >= now() - make_interval(secs => $1)
         GROUP BY 1, 2, 3",
    )
    .bind(window_secs as f64)
    .bind(suppressed)
    .fetch_all(conn)
    .await?;
    let mut counts: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    let mut reasons: BTreeMap<String, i64> = BTreeMap::new();
    for (channel, status, reason, n) in rows {
        *counts
            .entry(channel)
            .or_default()
            .entry(status)
            .or_default() += n;
        if let Some(reason) = reason {
            *reasons.entry(reason).or_default() += n;
        }
    }
    Ok((counts, reasons))
}

/// The counts of [`counts`] per `bucket_secs` bucket (aligned to the epoch), oldest first.
pub async fn series(
    conn: &mut PgConnection,
    window_secs: i64,
    bucket_secs: i64,
) -> sqlx::Result<Vec<StatsBucket>> {
    let rows: Vec<(DateTime<Utc>, String, String, i64)> = sqlx::query_as(
        "SELECT to_timestamp(floor(extract(epoch FROM created_at) / $2) * $2) AS at,
                channel, status, count(*)
         FROM deliveries
         WHERE created_at >= now() - make_interval(secs => $1)
         GROUP BY 1, 2, 3 ORDER BY 1",
    )
    .bind(window_secs as f64)
    .bind(bucket_secs as f64)
    .fetch_all(conn)
    .await?;
    let mut out: Vec<StatsBucket> = Vec::new();
    for (at, channel, status, n) in rows {
        if out.last().is_none_or(|b| b.at != at) {
            out.push(StatsBucket {
                at,
                counts: BTreeMap::new(),
            });
        }
        let bucket = out.last_mut().expect("pushed above");
        bucket.counts.entry(channel).or_default().insert(status, n);
    }
    Ok(out)
}

/// Accept → sent latency percentiles (ms) of the deliveries sent in the last `window_secs`.
pub async fn latency(conn: &mut PgConnection, window_secs: i64) -> sqlx::Result<Latency> {
    let (p50, p95, p99): (Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.95) WITHIN GROUP (ORDER BY ms),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
         FROM (SELECT (extract(epoch FROM (sent_at - created_at)) * 1000)::float8 AS ms FROM deliveries
               WHERE status = $2 AND created_at >= now() - make_interval(secs => $1)) s",
    )
    .bind(window_secs as f64)
    .bind(delivery::Status::Sent.as_str())
    .fetch_one(conn)
    .await?;
    Ok(Latency { p50, p95, p99 })
}
