//! Writing a planned notification and reading it back.

use api::notifications::{
    AttemptView, ChannelStatus, DeliveryCounts, DeliveryView, HistoryItem, INLINE_DELIVERIES,
    NotificationView,
};
use chrono::{DateTime, Utc};
use common::{events::Content, outbox::OutboxMessage};
use sqlx::PgConnection;
use uuid::Uuid;

pub use crate::planned::NewNotification;
use crate::views::{notification_status, notification_status_counted};

/// Writes the notification, its deliveries and their outbox rows (`outbox_rows`, built by
/// `crate::planned::dispatch_rows`) — three statements, however many recipients. Call inside
/// a transaction. Returns false (and writes nothing) when a notification with this id exists
/// already.
pub async fn insert(
    conn: &mut PgConnection,
    n: &NewNotification<'_>,
    outbox_rows: &[OutboxMessage],
) -> anyhow::Result<bool> {
    let inserted = insert_notifications(conn, &[n], true).await? == 1;
    if !inserted {
        return Ok(false);
    }
    insert_deliveries(conn, n, None, n.created_at, outbox_rows).await?;
    Ok(true)
}

/// Writes several new notifications (fresh ids) with their deliveries and the outbox rows
/// built for them (`crate::planned::dispatch_rows`, in each request's own context so each row carries its
/// request id and trace) in the same three statements as one: what group commit writes for
/// concurrent requests (`crate::intake`). Call inside a transaction.
pub async fn insert_many(
    conn: &mut PgConnection,
    ns: &[&NewNotification<'_>],
    outbox_rows: &[OutboxMessage],
) -> anyhow::Result<()> {
    insert_notifications(conn, ns, false).await?;
    let all: Vec<(&NewNotification<'_>, Option<Uuid>, DateTime<Utc>)> =
        ns.iter().map(|n| (*n, None, n.created_at)).collect();
    write_deliveries(conn, &all, outbox_rows).await
}

/// The notifications' rows; returns how many were written (`skip_existing`: an id that exists
/// is left alone instead of failing the statement).
async fn insert_notifications(
    conn: &mut PgConnection,
    ns: &[&NewNotification<'_>],
    skip_existing: bool,
) -> anyhow::Result<u64> {
    let conflict = if skip_existing {
        "ON CONFLICT (id) DO NOTHING"
    } else {
        ""
    };
    let written = sqlx::query(&format!(
        "INSERT INTO notifications (id, created_by, category, priority, content, send_at, ttl_seconds, created_at,
                                    localized, template, fallback, digest, cap)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[],
                              $7::int[], $8::timestamptz[], $9::jsonb[], $10::text[], $11::jsonb[], $12::jsonb[],
                              $13::jsonb[])
         {conflict}"
    ))
    .bind(ns.iter().map(|n| n.id).collect::<Vec<_>>())
    .bind(ns.iter().map(|n| n.created_by).collect::<Vec<_>>())
    .bind(ns.iter().map(|n| n.request.category.as_str()).collect::<Vec<_>>())
    .bind(ns.iter().map(|n| n.request.priority.as_str()).collect::<Vec<_>>())
    .bind(
        ns.iter()
            .map(|n| sqlx::types::Json(&n.request.content))
            .collect::<Vec<_>>(),
    )
    .bind(ns.iter().map(|n| n.request.send_at).collect::<Vec<_>>())
    .bind(
        ns.iter()
            .map(|n| n.request.ttl_seconds.map(|t| t as i32))
            .collect::<Vec<_>>(),
    )
    .bind(ns.iter().map(|n| n.created_at).collect::<Vec<_>>())
    .bind(
        ns.iter()
            .map(|n| n.request.localized.as_ref().map(sqlx::types::Json))
            .collect::<Vec<_>>(),
    )
    .bind(
        ns.iter()
            .map(|n| n.request.template.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        ns.iter()
            .map(|n| n.request.fallback.as_ref().map(sqlx::types::Json))
            .collect::<Vec<_>>(),
    )
    .bind(
        ns.iter()
            .map(|n| n.request.digest.as_ref().map(sqlx::types::Json))
            .collect::<Vec<_>>(),
    )
    .bind(
        ns.iter()
            .map(|n| n.request.cap.as_ref().map(sqlx::types::Json))
            .collect::<Vec<_>>(),
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(written)
}

/// Writes `n.deliveries` (of the existing notification `n.id`) and the outbox rows of those
/// to dispatch; `fallback_of` links them to the dead delivery they replace.
pub async fn insert_deliveries(
    conn: &mut PgConnection,
    n: &NewNotification<'_>,
    fallback_of: Option<Uuid>,
    now: DateTime<Utc>,
    outbox_rows: &[OutboxMessage],
) -> anyhow::Result<()> {
    write_deliveries(conn, &[(n, fallback_of, now)], outbox_rows).await
}

/// The deliveries of several notifications, and the outbox rows: two statements.
async fn write_deliveries(
    conn: &mut PgConnection,
    items: &[(&NewNotification<'_>, Option<Uuid>, DateTime<Utc>)],
    outbox_rows: &[OutboxMessage],
) -> anyhow::Result<()> {
    // Deliveries folded into digests join (or open) their windows first: they carry its id.
    let ns: Vec<(&NewNotification<'_>, DateTime<Utc>)> =
        items.iter().map(|(n, _, at)| (*n, *at)).collect();
    let digests = super::digests::fold(conn, &ns).await?;
    let digests = &digests;
    let deliveries: Vec<delivery::insert::NewDelivery<'_>> = items
        .iter()
        .flat_map(|(n, fallback_of, at)| {
            n.deliveries
                .iter()
                .map(move |d| delivery::insert::NewDelivery {
                    id: d.id,
                    notification_id: n.id,
                    channel: d.channel,
                    lane: d.lane,
                    user_id: d.user_id,
                    recipient: &d.recipient,
                    address: d.address.as_deref(),
                    start: d.status,
                    reason: d.reason,
                    locale: d.locale.as_deref(),
                    created_at: *at,
                    fallback_of: *fallback_of,
                    digest_id: digests.get(&d.id).copied(),
                })
        })
        .collect();
    delivery::insert::insert(conn, &deliveries, outbox_rows).await
}

/// The categories of notifications `ids` (those that exist).
pub async fn categories(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> sqlx::Result<std::collections::HashMap<Uuid, String>> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, category FROM notifications WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().collect())
}

/// The content of notifications `ids` (those that exist) and their renderings per locale: what
/// dispatches written by reference are filled in with (`crate::stored_content`).
pub async fn contents(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> sqlx::Result<std::collections::HashMap<Uuid, (Content, Option<Localized>)>> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(
        Uuid,
        sqlx::types::Json<Content>,
        Option<sqlx::types::Json<Localized>>,
    )> = sqlx::query_as("SELECT id, content, localized FROM notifications WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, c, l)| (id, (c.0, l.map(|l| l.0))))
        .collect())
}

/// A notification's renderings, by locale.
pub type Localized = std::collections::BTreeMap<String, Content>;

/// The service that sent notification `id`.
pub async fn owner(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT created_by FROM notifications WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

#[derive(sqlx::FromRow)]
struct NotificationRow {
    id: Uuid,
    created_by: String,
    category: String,
    priority: String,
    created_at: DateTime<Utc>,
    send_at: Option<DateTime<Utc>>,
    /// What it folded, when it is a digest's own notification.
    g_id: Option<Uuid>,
    g_key: Option<String>,
    g_channel: Option<String>,
    g_items: Option<i32>,
    g_opened_at: Option<DateTime<Utc>>,
    g_closes_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: Uuid,
    notification_id: Uuid,
    channel: String,
    lane: String,
    recipient: serde_json::Value,
    address: Option<String>,
    status: String,
    reason: Option<String>,
    attempts: i32,
    last_error: Option<serde_json::Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    fallback_of: Option<Uuid>,
    a_attempt: Option<i32>,
    a_outcome: Option<String>,
    a_provider: Option<String>,
    a_provider_message_id: Option<String>,
    a_error_code: Option<String>,
    a_error_message: Option<String>,
    a_duration_ms: Option<i64>,
    a_at: Option<DateTime<Utc>>,
    g_id: Option<Uuid>,
    g_state: Option<String>,
    g_closes_at: Option<DateTime<Utc>>,
    g_notification_id: Option<Uuid>,
}

impl From<DeliveryRow> for DeliveryView {
    fn from(r: DeliveryRow) -> Self {
        let last_attempt = match (
            r.a_attempt,
            r.a_outcome,
            r.a_provider,
            r.a_duration_ms,
            r.a_at,
        ) {
            (Some(attempt), Some(outcome), Some(provider), Some(duration_ms), Some(at)) => {
                Some(AttemptView {
                    attempt,
                    outcome,
                    provider,
                    provider_message_id: r.a_provider_message_id,
                    error: r.a_error_code.map(
                        |code| serde_json::json!({ "code": code, "message": r.a_error_message }),
                    ),
                    duration_ms,
                    at,
                })
            }
            _ => None,
        };
        DeliveryView {
            id: r.id,
            notification_id: r.notification_id,
            channel: r.channel,
            lane: r.lane,
            recipient: r.recipient,
            address: r.address,
            status: r.status,
            reason: r.reason,
            attempts: r.attempts,
            last_error: r.last_error,
            last_attempt,
            created_at: r.created_at,
            updated_at: r.updated_at,
            sent_at: r.sent_at,
            fallback_of: r.fallback_of,
            digest: match (r.g_id, r.g_state, r.g_closes_at) {
                (Some(id), Some(state), Some(closes_at)) => Some(api::digests::DigestLink {
                    id,
                    state,
                    closes_at,
                    notification_id: r.g_notification_id,
                }),
                _ => None,
            },
        }
    }
}

/// A delivery view with its last attempt; callers add the `WHERE`.
const DELIVERY_SELECT: &str =
    "SELECT d.id, d.notification_id, d.channel, d.lane, d.recipient, d.address, d.status, d.reason,
        d.attempts, d.last_error, d.created_at, d.updated_at, d.sent_at, d.fallback_of,
        a.attempt AS a_attempt, a.outcome AS a_outcome, a.provider AS a_provider,
        a.provider_message_id AS a_provider_message_id, a.error_code AS a_error_code,
        a.error_message AS a_error_message, a.duration_ms AS a_duration_ms, a.at AS a_at,
        g.id AS g_id, g.state AS g_state, g.closes_at AS g_closes_at,
        g.notification_id AS g_notification_id
 FROM deliveries d
 LEFT JOIN LATERAL (
     SELECT * FROM attempts WHERE delivery_id = d.id ORDER BY attempt DESC LIMIT 1
 ) a ON true
 LEFT JOIN digests g ON g.id = d.digest_id";

/// The deliveries with these ids (any order).
pub async fn deliveries(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<DeliveryView>> {
    let rows: Vec<DeliveryRow> = sqlx::query_as(&format!("{DELIVERY_SELECT} WHERE d.id = ANY($1)"))
        .bind(ids)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// A notification and its owner, or `None`: its first [`INLINE_DELIVERIES`] deliveries and
/// the counts of all of them, and a send to a topic's fan-out (four statements, however many
/// deliveries it has).
pub async fn fetch(
    conn: &mut PgConnection,
    id: Uuid,
) -> sqlx::Result<Option<(String, NotificationView)>> {
    // One snapshot for the three reads: the counts and the inline deliveries must agree (a
    // delivery sent between two statements would otherwise be counted `sent` and shown
    // `queued`).
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let found = fetch_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(found)
}

async fn fetch_in(
    conn: &mut PgConnection,
    id: Uuid,
) -> sqlx::Result<Option<(String, NotificationView)>> {
    let Some(n): Option<NotificationRow> = sqlx::query_as(
        "SELECT n.id, n.created_by, n.category, n.priority, n.created_at, n.send_at,
                g.id AS g_id, g.key AS g_key, g.channel AS g_channel, g.items AS g_items,
                g.opened_at AS g_opened_at, g.closes_at AS g_closes_at
         FROM notifications n LEFT JOIN digests g ON g.notification_id = n.id
         WHERE n.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let mut deliveries = deliveries_after(conn, id, None, INLINE_DELIVERIES as i64 + 1).await?;
    let deliveries_next_cursor = more_after(&mut deliveries, INLINE_DELIVERIES);
    let counted = counts(conn, &[id]).await?.remove(&id).unwrap_or_default();
    let fanout = super::fanouts::view(conn, id).await?;
    let digest = match (
        n.g_id,
        n.g_key,
        n.g_channel,
        n.g_items,
        n.g_opened_at,
        n.g_closes_at,
    ) {
        (Some(id), Some(key), Some(channel), Some(items), Some(opened_at), Some(closes_at)) => {
            Some(api::digests::DigestSummary {
                id,
                key,
                channel,
                items,
                opened_at,
                closes_at,
            })
        }
        _ => None,
    };
    let mut view = NotificationView {
        id: n.id,
        status: counted.status.into(),
        category: n.category,
        priority: n.priority,
        created_at: n.created_at,
        send_at: n.send_at,
        delivery_counts: counted.counts,
        deliveries,
        deliveries_next_cursor,
        fanout: None,
        digest,
    };
    if let Some(fanout) = fanout {
        crate::views::with_fanout(&mut view, fanout);
    }
    Ok(Some((n.created_by, view)))
}

/// Keeps the first `limit` of `page` (fetched with one more than `limit`); the cursor to the
/// rest when there was more.
pub fn more_after(page: &mut Vec<DeliveryView>, limit: usize) -> Option<String> {
    if page.len() > limit {
        page.truncate(limit);
        page.last().map(|d| d.id.to_string())
    } else {
        None
    }
}

/// Notification `id`'s deliveries in id order after `after`, at most `limit`.
pub async fn deliveries_after(
    conn: &mut PgConnection,
    id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<DeliveryView>> {
    let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
        "{DELIVERY_SELECT} WHERE d.notification_id = $1 AND ($2::uuid IS NULL OR d.id > $2)
         ORDER BY d.id LIMIT $3"
    ))
    .bind(id)
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// A notification's deliveries counted, and the status derived from them.
#[derive(Debug, Default)]
pub struct Counted {
    pub counts: DeliveryCounts,
    pub status: &'static str,
}

/// The delivery counts of each of `ids` (one statement). A dead delivery that a fallback
/// delivery replaced is counted, but the notification's status goes by its replacement.
pub async fn counts(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> sqlx::Result<std::collections::HashMap<Uuid, Counted>> {
    let rows: Vec<(Uuid, String, String, bool, i64)> = sqlx::query_as(
        "SELECT d.notification_id, d.channel, d.status,
                EXISTS (SELECT 1 FROM deliveries f WHERE f.fallback_of = d.id) AS replaced,
                count(*)
         FROM deliveries d WHERE d.notification_id = ANY($1)
         GROUP BY 1, 2, 3, 4",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    let mut by_id: std::collections::HashMap<Uuid, (DeliveryCounts, Vec<(String, i64)>)> =
        std::collections::HashMap::new();
    for (id, channel, status, replaced, n) in rows {
        let (counts, live) = by_id.entry(id).or_default();
        counts.add(&channel, &status, n);
        if !replaced {
            live.push((status, n));
        }
    }
    Ok(by_id
        .into_iter()
        .map(|(id, (counts, live))| {
            let status = notification_status_counted(live.iter().map(|(s, n)| (s.as_str(), *n)));
            (id, Counted { counts, status })
        })
        .collect())
}

/// The content stored with a notification (used when a retry rebuilds a dispatch).
pub type StoredContent = sqlx::types::Json<Content>;

#[derive(sqlx::FromRow)]
struct HistoryRow {
    id: Uuid,
    category: String,
    created_at: DateTime<Utc>,
    channels: Vec<String>,
    statuses: Vec<String>,
    reasons: Vec<Option<String>>,
}

/// A user's notifications, newest first, `limit` of them after `before` (keyset pagination on
/// `(created_at, id)`: ids are not all time-ordered — the welcome notification's is derived
/// from the user id).
pub async fn history(
    conn: &mut PgConnection,
    user_id: Uuid,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<HistoryItem>> {
    let rows: Vec<HistoryRow> = sqlx::query_as(
        "SELECT n.id, n.category, n.created_at,
                array_agg(d.channel ORDER BY d.id) AS channels, array_agg(d.status ORDER BY d.id) AS statuses,
                array_agg(d.reason ORDER BY d.id) AS reasons
         FROM deliveries d JOIN notifications n ON n.id = d.notification_id
         WHERE d.user_id = $1 AND ($2::timestamptz IS NULL OR (n.created_at, n.id) < ($2, $3))
         GROUP BY n.id
         ORDER BY n.created_at DESC, n.id DESC
         LIMIT $4",
    )
    .bind(user_id)
    .bind(before.map(|b| b.0))
    .bind(before.map(|b| b.1))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| HistoryItem {
            id: r.id,
            category: r.category,
            status: notification_status(r.statuses.iter().map(String::as_str)).into(),
            created_at: r.created_at,
            deliveries: r
                .channels
                .into_iter()
                .zip(r.statuses)
                .zip(r.reasons)
                .map(|((channel, status), reason)| ChannelStatus {
                    channel,
                    status,
                    reason,
                })
                .collect(),
        })
        .collect())
}
