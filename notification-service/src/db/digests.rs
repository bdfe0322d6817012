//! Digests (migration 0018, decision 0030): folding sends into the open window of their
//! (service, channel, recipient, key), and closing it exactly once.
//!
//! - **Fold** ([`fold`]) runs in the transaction that writes the folded deliveries: one upsert
//!   for every window they join. The partial unique index `digests_one_open` makes concurrent
//!   first sends (two bff, two instances) open one window; the one that opened it queues the
//!   close (`notify.digest`, due at `closes_at`) in the same transaction, so the close exists
//!   exactly when the window does, whatever crashes after.
//! - **Close**: [`begin_close`] moves `open → closing` in a transaction of its own — it waits
//!   for any fold holding the row and, once committed, no send joins (a later one opens a new
//!   window). The items are then stable; [`finish`] marks it `closed` with its notification
//!   in the transaction that writes that notification, only from `closing`: a close handled
//!   twice writes one digest.

use std::collections::BTreeMap;

use api::digests::{DigestItem, DigestView};
use chrono::{DateTime, Utc};
use common::{
    events::{Channel, Content},
    outbox::OutboxMessage,
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::planned::NewNotification;

/// The `notify.digest` message: close digest `digest_id`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CloseStep {
    pub schema: u32,
    pub digest_id: Uuid,
}

impl CloseStep {
    pub fn row(&self, due: DateTime<Utc>) -> anyhow::Result<OutboxMessage> {
        Ok(OutboxMessage::new(
            common::events::DIGEST_TOPIC,
            self.digest_id.to_string(),
            self,
        )?
        .available_at(Some(due)))
    }
}

/// The window a folded delivery joins.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct WindowKey<'a> {
    created_by: &'a str,
    channel: &'a str,
    recipient_key: String,
    key: &'a str,
}

struct Joining<'a> {
    user_id: Option<Uuid>,
    recipient: &'a serde_json::Value,
    category: &'a str,
    template: Option<&'a str>,
    window_seconds: i64,
    opened_at: DateTime<Utc>,
    items: i32,
}

/// Folds the `digested` deliveries of `ns` (each written at its instant: a window it opens
/// starts then) into their open windows (opening those that are not) and returns each folded
/// delivery's digest id. One statement for every window, in key order (two transactions
/// joining the same windows lock them in the same order).
pub async fn fold(
    conn: &mut PgConnection,
    ns: &[(&NewNotification<'_>, DateTime<Utc>)],
) -> anyhow::Result<BTreeMap<Uuid, Uuid>> {
    let mut windows: BTreeMap<WindowKey<'_>, Joining<'_>> = BTreeMap::new();
    let mut members: Vec<(Uuid, WindowKey<'_>)> = Vec::new();
    for (n, at) in ns {
        let Some(spec) = &n.request.digest else {
            continue;
        };
        // A notification is one item of a window, however many of its deliveries join it
        // (a push to two devices).
        let mut seen = std::collections::BTreeSet::new();
        for d in n
            .deliveries
            .iter()
            .filter(|d| d.status == delivery::insert::Start::Digested)
        {
            let key = WindowKey {
                created_by: n.created_by,
                channel: d.channel.as_str(),
                recipient_key: match d.user_id {
                    Some(u) => u.to_string(),
                    None => d.address.clone().unwrap_or_default(),
                },
                key: &spec.key,
            };
            members.push((d.id, key.clone()));
            if !seen.insert(key.clone()) {
                continue;
            }
            windows
                .entry(key)
                .and_modify(|j| j.items += 1)
                .or_insert(Joining {
                    user_id: d.user_id,
                    recipient: &d.recipient,
                    category: &n.request.category,
                    template: n.request.template.as_deref(),
                    window_seconds: spec.window_seconds,
                    opened_at: *at,
                    items: 1,
                });
        }
    }
    if windows.is_empty() {
        return Ok(BTreeMap::new());
    }
    let fresh: Vec<Uuid> = windows.keys().map(|_| Uuid::now_v7()).collect();
    /// A window's id and key, whether this statement opened it, and its end.
    type Joined = (Uuid, String, String, String, String, bool, DateTime<Utc>);
    let rows: Vec<Joined> = sqlx::query_as(
        "INSERT INTO digests (id, created_by, channel, recipient_key, key, user_id, recipient, category,
                              template, window_seconds, opened_at, closes_at, items, state)
         SELECT id, created_by, channel, recipient_key, key, user_id, recipient, category, template,
                window_seconds, opened_at, opened_at + make_interval(secs => window_seconds), items, 'open'
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[], $7::jsonb[],
                     $8::text[], $9::text[], $10::int[], $11::timestamptz[], $12::int[], $13::int[])
              AS u(id, created_by, channel, recipient_key, key, user_id, recipient, category, template,
                   window_seconds, opened_at, items, ord)
         ORDER BY ord
         ON CONFLICT (created_by, channel, recipient_key, key) WHERE state = 'open'
         DO UPDATE SET items = digests.items + EXCLUDED.items
         RETURNING id, created_by, channel, recipient_key, key, (xmax = 0) AS opened, closes_at",
    )
    .bind(&fresh)
    .bind(windows.keys().map(|k| k.created_by).collect::<Vec<_>>())
    .bind(windows.keys().map(|k| k.channel).collect::<Vec<_>>())
    .bind(
        windows
            .keys()
            .map(|k| k.recipient_key.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(windows.keys().map(|k| k.key).collect::<Vec<_>>())
    .bind(windows.values().map(|j| j.user_id).collect::<Vec<_>>())
    .bind(windows.values().map(|j| j.recipient).collect::<Vec<_>>())
    .bind(windows.values().map(|j| j.category).collect::<Vec<_>>())
    .bind(windows.values().map(|j| j.template).collect::<Vec<_>>())
    .bind(
        windows
            .values()
            .map(|j| j.window_seconds as i32)
            .collect::<Vec<_>>(),
    )
    .bind(windows.values().map(|j| j.opened_at).collect::<Vec<_>>())
    .bind(windows.values().map(|j| j.items).collect::<Vec<_>>())
    .bind((0..windows.len() as i32).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let mut ids: BTreeMap<(String, String, String, String), Uuid> = BTreeMap::new();
    let mut closes = Vec::new();
    for (id, created_by, channel, recipient_key, key, opened, closes_at) in rows {
        if opened {
            closes.push(
                CloseStep {
                    schema: common::events::SCHEMA,
                    digest_id: id,
                }
                .row(closes_at)?,
            );
        }
        ids.insert((created_by, channel, recipient_key, key), id);
    }
    common::outbox::enqueue(&mut *conn, &closes).await?;
    members
        .into_iter()
        .map(|(delivery, k)| {
            let id = ids
                .get(&(
                    k.created_by.to_owned(),
                    k.channel.to_owned(),
                    k.recipient_key.clone(),
                    k.key.to_owned(),
                ))
                .copied()
                .ok_or_else(|| anyhow::anyhow!("a digest window was not returned"))?;
            Ok((delivery, id))
        })
        .collect()
}

/// A digest as its close reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Digest {
    pub id: Uuid,
    pub created_by: String,
    pub channel: String,
    pub user_id: Option<Uuid>,
    pub recipient: serde_json::Value,
    pub key: String,
    pub category: String,
    pub template: Option<String>,
    pub window_seconds: i32,
    pub opened_at: DateTime<Utc>,
    pub closes_at: DateTime<Utc>,
    pub items: i32,
    pub state: String,
}

impl Digest {
    pub fn channel(&self) -> Option<Channel> {
        Channel::parse(&self.channel)
    }
}

const DIGEST_COLUMNS: &str = "id, created_by, channel, user_id, recipient, key, category, template,
    window_seconds, opened_at, closes_at, items, state";

/// Moves digest `id` from `open` to `closing` (committed before this returns: no send joins
/// it after). `None` when it is closed or failed already (or does not exist).
pub async fn begin_close(pool: &sqlx::PgPool, id: Uuid) -> sqlx::Result<Option<Digest>> {
    let mut tx = pool.begin().await?;
    let row: Option<Digest> = sqlx::query_as(&format!(
        "UPDATE digests SET state = 'closing' WHERE id = $1 AND state IN ('open', 'closing')
         RETURNING {DIGEST_COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// One folded notification, as a digest renders it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Item {
    pub notification_id: Uuid,
    pub delivery_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub locale: Option<String>,
    pub content: sqlx::types::Json<Content>,
    pub localized: Option<sqlx::types::Json<BTreeMap<String, Content>>>,
}

impl Item {
    /// The item's content in `locale` (as its own delivery would have been sent).
    pub fn content_for(&self, locale: Option<&str>) -> &Content {
        delivery::dispatch::content_for(
            &self.content.0,
            self.localized.as_ref().map(|l| &l.0),
            locale.or(self.locale.as_deref()),
        )
    }
}

/// The first `limit` notifications folded into digest `id`, in the order they came (how many
/// there are is the digest's `items`: each fold counts its notification once).
pub async fn items(conn: &mut PgConnection, id: Uuid, limit: i64) -> sqlx::Result<Vec<Item>> {
    sqlx::query_as(
        "SELECT DISTINCT ON (n.created_at, n.id) n.id AS notification_id, d.id AS delivery_id,
                n.created_at, d.locale, n.content, n.localized
         FROM deliveries d JOIN notifications n ON n.id = d.notification_id
         WHERE d.digest_id = $1
         ORDER BY n.created_at, n.id, d.id
         LIMIT $2",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The last notification folded into digest `id`.
pub async fn last_item(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Item>> {
    sqlx::query_as(
        "SELECT n.id AS notification_id, d.id AS delivery_id, n.created_at, d.locale, n.content,
                n.localized
         FROM deliveries d JOIN notifications n ON n.id = d.notification_id
         WHERE d.digest_id = $1
         ORDER BY n.created_at DESC, n.id DESC, d.id LIMIT 1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Marks digest `id` closed by notification `notification_id` (written in this transaction);
/// false when it was not `closing` (closed before: the caller rolls back).
pub async fn finish(
    conn: &mut PgConnection,
    id: Uuid,
    notification_id: Uuid,
) -> sqlx::Result<bool> {
    let n = sqlx::query(
        "UPDATE digests SET state = 'closed', notification_id = $2, closed_at = now()
         WHERE id = $1 AND state = 'closing'",
    )
    .bind(id)
    .bind(notification_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Marks digest `id` failed with why (it can never be rendered or written).
pub async fn fail(pool: &sqlx::PgPool, id: Uuid, error: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE digests SET state = 'failed', error = $2, closed_at = now()
         WHERE id = $1 AND state IN ('open', 'closing')",
    )
    .bind(id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// `GET /v1/admin/digests/{id}`: the digest and the first folded notifications.
pub async fn view(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<DigestView>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: Uuid,
        created_by: String,
        key: String,
        channel: String,
        category: String,
        recipient: serde_json::Value,
        window_seconds: i32,
        items: i32,
        state: String,
        opened_at: DateTime<Utc>,
        closes_at: DateTime<Utc>,
        closed_at: Option<DateTime<Utc>>,
        notification_id: Option<Uuid>,
        error: Option<String>,
    }
    let Some(r): Option<Row> = sqlx::query_as(
        "SELECT id, created_by, key, channel, category, recipient, window_seconds, items, state,
                opened_at, closes_at, closed_at, notification_id, error
         FROM digests WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let items = items(conn, id, api::digests::MAX_LISTED_ITEMS as i64).await?;
    let folded = items
        .iter()
        .map(|i| {
            let c = i.content_for(None);
            let summary = c
                .subject
                .clone()
                .unwrap_or_else(|| c.text.chars().take(120).collect());
            DigestItem {
                notification_id: i.notification_id,
                delivery_id: i.delivery_id,
                created_at: i.created_at,
                summary,
            }
        })
        .collect();
    Ok(Some(DigestView {
        id: r.id,
        created_by: r.created_by,
        key: r.key,
        channel: r.channel,
        category: r.category,
        recipient: r.recipient,
        window: api::digests::window_text(i64::from(r.window_seconds)),
        items: r.items,
        state: r.state,
        opened_at: r.opened_at,
        closes_at: r.closes_at,
        closed_at: r.closed_at,
        notification_id: r.notification_id,
        error: r.error,
        folded,
    }))
}
