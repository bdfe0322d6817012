//! The in-app inbox (decision 0029): the use cases of channel `in_app`.
//!
//! - [`deliver`]: an `in_app` dispatch (from `notify.dispatch.in_app.*`, consumed here as a
//!   worker would) becomes an item in the user's inbox, with the change logged, the counts
//!   moved and the attempt's `sent` status event queued in the outbox — one transaction, so
//!   a delivery is `sent` exactly when its item is stored. A dispatch handled twice stores
//!   nothing twice (the item's id is the delivery's).
//! - [`mark`], [`mark_all`]: seen, read, archived, clicked; the counts move in the same
//!   transaction ([`crate::db::inbox`] serialises a user's changes).
//! - [`list`], [`counts`], [`changes`]: reads; `changes` is what a stream replays after a
//!   `Last-Event-ID`.
//!
//! After each change commits, [`Bus::signal`] publishes it on Redis pub/sub; every bff holds
//! one subscription and hands it to that user's open streams. A signal can be lost (Redis
//! away): streams notice a gap in the sequence, or the bff re-reads every stream when its
//! subscription comes back, from the change log here.

use std::time::Instant;

use api::inbox::{
    InboxChanges, InboxCounts, InboxEvent, InboxItem, InboxPage, InboxSignal, MAX_EVENTS, Mark,
    Marked,
};
use chrono::Utc;
use common::{
    events::{Channel, DispatchMessage, ErrorInfo, Outcome, SCHEMA, STATUS_TOPIC, StatusEvent},
    outbox::OutboxMessage,
    problem::ApiError,
    redis::RedisConfig,
};
use serde::Deserialize;
use uuid::Uuid;

use crate::{AppState, db::inbox as db};

pub use db::Filter;

/// The provider name of in-app attempts (in the attempt log).
pub const PROVIDER: &str = "inbox";
/// A signal larger than this goes without its event (the streams read the change log).
const MAX_SIGNAL_BYTES: usize = 8 * 1024;

/// `[inbox]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboxConfig {
    /// Items older than this are deleted (per deployment).
    pub retention_days: u32,
    /// Changes older than this are no longer replayed: a stream resuming from one gets a
    /// `reset` (reload the list) instead.
    pub changes_retention_hours: u32,
    /// In-app dispatches stored at once.
    pub concurrency: usize,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            retention_days: 90,
            changes_retention_hours: 72,
            concurrency: 16,
        }
    }
}

/// Where changes are published for the bff's streams (Redis pub/sub).
pub struct Bus {
    redis: redis::aio::ConnectionManager,
    channel: String,
}

impl Bus {
    pub fn new(redis: redis::aio::ConnectionManager, cfg: &RedisConfig) -> Self {
        Self {
            redis,
            channel: api::inbox::signal_channel(cfg),
        }
    }

    /// Publishes a committed change (best effort: a lost signal is found by the streams).
    pub async fn signal(&self, user_id: Uuid, event: &InboxEvent) {
        let mut s = InboxSignal {
            user_id,
            seq: event.seq,
            event: Some(event.clone()),
        };
        let mut payload = serde_json::to_string(&s).unwrap_or_default();
        if payload.len() > MAX_SIGNAL_BYTES {
            s.event = None;
            payload = serde_json::to_string(&s).unwrap_or_default();
        }
        let mut conn = self.redis.clone();
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(payload)
            .query_async(&mut conn)
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, user_id = %user_id, seq = event.seq, "inbox change not published; streams will read it from the change log");
        }
    }
}

/// Stores an `in_app` dispatch as its user's item and queues the attempt's status event.
pub async fn deliver(state: &AppState, msg: &DispatchMessage) -> anyhow::Result<()> {
    let started = Instant::now();
    let user = msg
        .recipient
        .user_id
        .or_else(|| Uuid::parse_str(&msg.recipient.address).ok());
    let failure = match user {
        _ if msg.channel != Channel::InApp => Some(("wrong_channel", "not an in-app dispatch")),
        None => Some(("no_user", "an in-app delivery needs a user")),
        Some(_) if msg.not_after.is_some_and(|t| t < Utc::now()) => Some((
            "expired",
            "the notification's TTL passed before it reached the inbox",
        )),
        Some(_) => None,
    };
    let mut tx = state.pool.begin().await?;
    let stored = match (failure, user) {
        (None, Some(user_id)) => {
            db::store(
                &mut tx,
                &db::NewItem {
                    id: msg.delivery_id,
                    user_id,
                    notification_id: msg.notification_id,
                    subject: msg.content.subject.as_deref(),
                    text: &msg.content.text,
                    data: msg.content.data.as_ref(),
                },
            )
            .await?
        }
        _ => None,
    };
    let status = StatusEvent {
        schema: SCHEMA,
        delivery_id: msg.delivery_id,
        attempt: msg.attempt,
        channel: Channel::InApp,
        outcome: if failure.is_some() {
            Outcome::PermanentFailure
        } else {
            Outcome::Sent
        },
        provider: PROVIDER.into(),
        provider_message_id: None,
        error: failure.map(|(code, message)| ErrorInfo {
            code: code.into(),
            message: message.into(),
        }),
        retry_after_ms: None,
        at: Utc::now(),
        duration_ms: started.elapsed().as_millis() as u64,
    };
    let row = OutboxMessage::new(STATUS_TOPIC, msg.delivery_id.to_string(), &status)?;
    common::outbox::enqueue(&mut tx, &[row]).await?;
    tx.commit().await?;
    if let (Some(event), Some(user)) = (stored, user) {
        state.inbox.signal(user, &event).await;
    }
    Ok(())
}

/// Marks one of `user`'s items (404 when the user has no such item).
pub async fn mark(state: &AppState, user: Uuid, id: Uuid, mark: Mark) -> Result<Marked, ApiError> {
    let mut tx = state.pool.begin().await?;
    let answer = match db::mark(&mut tx, user, id, mark).await? {
        db::MarkResult::NotFound => {
            return Err(ApiError::not_found("no such item in your inbox"));
        }
        db::MarkResult::Unchanged(item, counts) => (Marked { item, counts }, None),
        db::MarkResult::Changed(event) => (
            Marked {
                item: event.item.clone().expect("a mark's change has its item"),
                counts: event.counts,
            },
            Some(event),
        ),
    };
    tx.commit().await?;
    if let Some(event) = answer.1 {
        state.inbox.signal(user, &event).await;
    }
    Ok(answer.0)
}

/// Marks every unread item read (`Mark::Read`) or every unseen one seen (`Mark::Seen`).
pub async fn mark_all(state: &AppState, user: Uuid, mark: Mark) -> Result<InboxCounts, ApiError> {
    let mut tx = state.pool.begin().await?;
    let (event, counts) = db::mark_all(&mut tx, user, mark).await?;
    tx.commit().await?;
    if let Some(event) = event {
        state.inbox.signal(user, &event).await;
    }
    Ok(counts)
}

/// A page of `user`'s items older than `before`, newest first.
pub async fn list(
    state: &AppState,
    user: Uuid,
    filter: Filter,
    before: Option<i64>,
    limit: i64,
) -> Result<InboxPage, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let mut items: Vec<InboxItem> = db::list(&mut conn, user, filter, before, limit + 1).await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|i| i.seq.to_string())
    } else {
        None
    };
    Ok(InboxPage { items, next_cursor })
}

/// `user`'s counts (one row).
pub async fn counts(state: &AppState, user: Uuid) -> Result<InboxCounts, ApiError> {
    let mut conn = state.pool.acquire().await?;
    Ok(db::counts(&mut conn, user).await?.0)
}

/// The changes after `after`, oldest first (a `reset` when they are no longer all kept);
/// `None`: none, only the counts and the latest change's number (a stream starting now).
pub async fn changes(
    state: &AppState,
    user: Uuid,
    after: Option<i64>,
) -> Result<InboxChanges, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let (counts, last_seq) = db::counts(&mut conn, user).await?;
    let after = after.unwrap_or(last_seq);
    if after >= last_seq {
        return Ok(InboxChanges {
            events: Vec::new(),
            more: false,
            reset: after > last_seq,
            counts,
            last_seq,
        });
    }
    let mut events = db::changes(&mut conn, user, after, MAX_EVENTS + 1).await?;
    // The change right after `after` was purged: what was missed cannot be replayed.
    if events.first().is_none_or(|e| e.seq != after + 1) {
        return Ok(InboxChanges {
            events: Vec::new(),
            more: false,
            reset: true,
            counts,
            last_seq,
        });
    }
    let more = events.len() as i64 > MAX_EVENTS;
    events.truncate(MAX_EVENTS as usize);
    Ok(InboxChanges {
        events,
        more,
        reset: false,
        counts,
        last_seq,
    })
}

/// Purges items and changes past their retention, a slice at a time, until `shutdown`.
pub fn spawn_purge(
    pool: sqlx::PgPool,
    cfg: InboxConfig,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(300));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    let now = Utc::now();
                    let before = now - chrono::Duration::days(i64::from(cfg.retention_days));
                    let events_before =
                        now - chrono::Duration::hours(i64::from(cfg.changes_retention_hours));
                    match db::purge(&pool, before, events_before, 100).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(purged = n, "inbox items past retention deleted"),
                        Err(e) => tracing::warn!(error = %e, "inbox purge failed"),
                    }
                }
            }
        }
    })
}

/// The consumer of `notify.dispatch.in_app.*`: notification-service is the in-app channel's
/// worker.
pub struct InboxHandler {
    pub state: AppState,
}

impl common::kafka::runner::MessageHandler for InboxHandler {
    async fn handle(
        &self,
        raw: &rdkafka::message::OwnedMessage,
    ) -> Result<(), common::kafka::runner::HandleError> {
        use rdkafka::Message;
        let msg: DispatchMessage = match serde_json::from_slice(raw.payload().unwrap_or_default()) {
            Ok(m) => m,
            Err(e) => {
                let why = format!("undecodable in-app dispatch: {e}");
                return crate::skip::skip(&self.state, raw, "in_app", &why).await;
            }
        };
        deliver(&self.state, &msg)
            .await
            .map_err(common::kafka::runner::HandleError::Retry)
    }
}
