//! Fan-out of a send to a topic (decision 0028): the consumer of `notify.fanout`.
//!
//! A send naming `{"topic": key}` is accepted at once (intake writes the notification, its
//! fan-out row and a `split` step in one transaction). Then, each step a message:
//! - **split**: users-service counts the topic's subscribers as of acceptance and gives every
//!   `chunk_size`-th user id; the fan-out records the count and writes one `chunk` message per
//!   range in one transaction (split before: nothing).
//! - **chunk** `(after, until]`: users-service answers the range's subscribers with their
//!   delivery profiles in one call; they go through [`intake::accept`] like any user
//!   recipient (preferences, quiet hours, suppression, opt-outs) and are written with the
//!   chunk's claim and the fan-out's progress in one transaction
//!   ([`intake::writer`](crate::intake)), so a chunk handled twice writes nothing twice.
//!
//! Chunks are keyed by notification and index, so they spread over the topic's partitions:
//! more instances plan one fan-out faster. No step holds more than one chunk in memory.
//!
//! Who is reached: the subscribers as of acceptance (`subscribed_at <= as_of`) who are still
//! subscribed when their chunk is planned. Someone who follows the topic during the fan-out
//! is not reached by it; someone who leaves before their chunk is planned is not reached.

use std::{collections::HashMap, sync::Arc};

use api::topics::{BoundsRequest, ChunkRequest};
use chrono::Utc;
use common::{
    events::Priority,
    kafka::runner::{HandleError, MessageHandler},
    outbox::OutboxMessage,
};
use rdkafka::{Message, message::OwnedMessage};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    AppState,
    db::fanouts as db,
    intake::{self, Accepted, ChunkOf, Origin},
    planned::{FanoutStep, Step},
    request::{Recipient, SendRequest},
};

/// `[fanout]`: how sends to topics are planned.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FanoutConfig {
    /// Subscribers per chunk (one users-service call and one transaction each; at most 1,000).
    pub chunk_size: u32,
    /// Steps this instance handles at once.
    pub concurrency: usize,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            chunk_size: 1000,
            concurrency: 4,
        }
    }
}

pub struct FanoutHandler {
    pub state: AppState,
    pub cfg: Arc<FanoutConfig>,
}

impl MessageHandler for FanoutHandler {
    async fn handle(&self, raw: &OwnedMessage) -> Result<(), HandleError> {
        let step: FanoutStep = match serde_json::from_slice(raw.payload().unwrap_or_default()) {
            Ok(s) => s,
            Err(e) => {
                let why = format!("undecodable fan-out step: {e}");
                return crate::skip::skip(&self.state, raw, "fanout", &why).await;
            }
        };
        let id = step.notification_id;
        let result = match step.step {
            Step::Split => self.split(id).await.map(|()| None),
            Step::Chunk {
                index,
                after,
                until,
            } => self.chunk(id, index, after, until).await,
        };
        match result {
            Ok(None) => Ok(()),
            // Retried, it would hold this consumer slot for ever: recorded and skipped.
            Ok(Some(never)) => crate::skip::skip(&self.state, raw, "fanout", &never).await,
            Err(e) => Err(HandleError::Retry(e)),
        }
    }
}

impl FanoutHandler {
    /// Counts the subscribers as of acceptance and writes one message per chunk.
    async fn split(&self, id: Uuid) -> anyhow::Result<()> {
        let state = &self.state;
        let mut conn = state.pool.acquire().await?;
        let Some(fanout) = db::get(&mut conn, id).await? else {
            anyhow::bail!("fan-out {id} has no row (its notification is not committed?)");
        };
        drop(conn);
        if fanout.state != "splitting" {
            return Ok(());
        }
        let every = self.cfg.chunk_size.clamp(1, 1000);
        let req = BoundsRequest {
            as_of: fanout.as_of,
            every,
        };
        let token = state.users.service_token().map_err(away)?;
        let bounds = state
            .users
            .topic_bounds(&token, &fanout.topic, &req)
            .await
            .map_err(away)?
            // A topic that is gone has no subscribers.
            .unwrap_or(api::topics::Bounds {
                subscribers: 0,
                bounds: Vec::new(),
            });
        let chunks = chunk_count(bounds.subscribers, every);
        let messages = (0..chunks)
            .map(|i| {
                let index = i as usize;
                FanoutStep {
                    schema: common::events::SCHEMA,
                    notification_id: id,
                    step: Step::Chunk {
                        index: i,
                        after: index
                            .checked_sub(1)
                            .and_then(|p| bounds.bounds.get(p).copied()),
                        // The last chunk is open-ended: whatever the count missed is in it.
                        until: (i + 1 < chunks)
                            .then(|| bounds.bounds.get(index).copied())
                            .flatten(),
                    },
                }
                .row()
            })
            .collect::<anyhow::Result<Vec<OutboxMessage>>>()?;
        let mut tx = state.pool.begin().await?;
        if !db::split(&mut tx, id, bounds.subscribers, chunks).await? {
            return Ok(());
        }
        common::outbox::enqueue(&mut tx, &messages).await?;
        tx.commit().await?;
        tracing::info!(notification_id = %id, topic = fanout.topic, subscribers = bounds.subscribers, chunks, "fan-out split");
        Ok(())
    }

    /// Plans one chunk's subscribers through intake; `Some(why)` when it can never be
    /// written (intake refused it as a request error).
    async fn chunk(
        &self,
        id: Uuid,
        index: i32,
        after: Option<Uuid>,
        until: Option<Uuid>,
    ) -> anyhow::Result<Option<String>> {
        let state = &self.state;
        let mut conn = state.pool.acquire().await?;
        let fanout = db::get(&mut conn, id).await?;
        let source = db::chunk_source(&mut conn, id, index).await?;
        drop(conn);
        let (Some(fanout), Some(source)) = (fanout, source) else {
            anyhow::bail!("fan-out {id} has no row");
        };
        if fanout.state != "planning" || source.done {
            return Ok(None);
        }
        let req = ChunkRequest {
            as_of: fanout.as_of,
            after,
            until,
            exclude: fanout.exclude.clone(),
        };
        let token = state.users.service_token().map_err(away)?;
        let profiles: HashMap<Uuid, api::profiles::DeliveryProfile> = state
            .users
            .topic_chunk(&token, &fanout.topic, &req)
            .await
            .map_err(away)?
            .into_iter()
            .map(|p| (p.user_id, p))
            .collect();
        let mut recipients: Vec<Recipient> =
            profiles.keys().map(|id| Recipient::User(*id)).collect();
        recipients.sort_unstable_by_key(|r| match r {
            Recipient::User(id) => *id,
            _ => Uuid::nil(),
        });
        let subscribers = recipients.len();
        let request = SendRequest {
            recipients,
            category: source.category,
            priority: Priority::parse(&source.priority).unwrap_or_default(),
            channels: fanout.channels(),
            content: source.content.0,
            send_at: source.send_at,
            ttl_seconds: source.ttl_seconds.map(i64::from),
            template: source.template,
            data: None,
            localized: source.localized.map(|l| l.0),
            fallback: source.fallback.map(|f| f.0),
            digest: source.digest.map(|d| d.0),
            cap: source.cap.map(|c| c.0),
        };
        let origin = Origin::TopicChunk {
            chunk: ChunkOf {
                notification_id: id,
                index,
                created_by: &source.created_by,
                created_at: source.created_at,
                subscribers,
            },
            profiles: &profiles,
        };
        match intake::accept(state, origin, request, Utc::now()).await {
            Ok(Accepted::Written { deliveries, .. }) => {
                state.metrics.fanout_planned(subscribers, deliveries);
                tracing::debug!(notification_id = %id, index, subscribers, deliveries, "fan-out chunk planned");
                Ok(None)
            }
            Ok(other) => {
                tracing::info!(notification_id = %id, index, ?other, "fan-out chunk not written");
                Ok(None)
            }
            Err(e) if e.status.is_client_error() => Ok(Some(format!(
                "fan-out chunk {index} of {id} cannot be planned: {}",
                e.detail
            ))),
            Err(e) => Err(anyhow::anyhow!("fan-out chunk {index} of {id}: {e}")),
        }
    }
}

/// A dependency's refusal, retried in place.
fn away(e: common::problem::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", e.status, e.detail)
}

/// Chunks of `every` for `subscribers` (none for none).
fn chunk_count(subscribers: i64, every: u32) -> i32 {
    let every = i64::from(every.max(1));
    ((subscribers + every - 1) / every) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_split_into_whole_chunks() {
        assert_eq!(chunk_count(0, 1000), 0);
        assert_eq!(chunk_count(1, 1000), 1);
        assert_eq!(chunk_count(1000, 1000), 1);
        assert_eq!(chunk_count(1001, 1000), 2);
        assert_eq!(chunk_count(1_000_000, 1000), 1000);
    }
}
