//! The status consumer: events applied to their deliveries by `delivery::apply`, concurrent
//! ones in one transaction (group commit, like intake), so a delivery costs the database a
//! share of five statements and one WAL flush instead of six statements and a flush of its own.

use std::sync::Arc;

use common::{
    events::StatusEvent,
    group_commit::{GroupCommit, Unanswered, together_or_alone},
    kafka::runner::{HandleError, MessageHandler},
};
use delivery::apply::apply_many;
use rdkafka::{Message, message::OwnedMessage};
use sqlx::PgPool;

use crate::{config::RetryConfig, metrics::Metrics};

/// How status events are written (`[apply]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default)]
pub struct ApplyConfig {
    /// Apply concurrent events together, one transaction per batch (off: one per event).
    pub group_commit: bool,
    /// Transactions in flight at once.
    pub writers: usize,
    /// At most this many events per transaction.
    pub max_batch: usize,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        Self {
            group_commit: true,
            writers: 2,
            max_batch: 128,
        }
    }
}

struct Inner {
    pool: PgPool,
    retry: RetryConfig,
    metrics: Arc<Metrics>,
}

pub struct StatusHandler {
    inner: Arc<Inner>,
    /// `None`: group commit is off.
    writers: Option<GroupCommit<StatusEvent, anyhow::Result<Applied>>>,
}

pub use delivery::apply::Applied;

impl StatusHandler {
    /// A handler on `pool`; with group commit on, its writers start here (in a runtime).
    pub fn new(
        pool: PgPool,
        retry: RetryConfig,
        apply: &ApplyConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let inner = Arc::new(Inner {
            pool,
            retry,
            metrics,
        });
        let writers = apply.group_commit.then(|| {
            let inner = inner.clone();
            GroupCommit::start(apply.writers, apply.max_batch, move |events| {
                let inner = inner.clone();
                async move { inner.apply_batch(events).await }
            })
        });
        Self { inner, writers }
    }

    /// Records the attempt and moves the delivery on, once committed. Idempotent.
    pub async fn apply(&self, ev: &StatusEvent) -> anyhow::Result<Applied> {
        match &self.writers {
            Some(writers) => match writers.submit(ev.clone()).await {
                Ok(applied) => applied,
                Err(Unanswered::Closed(ev)) => self.inner.apply_alone(&ev).await,
                Err(Unanswered::WriterStopped) => {
                    anyhow::bail!("the status writer stopped before answering")
                }
            },
            None => self.inner.apply_alone(ev).await,
        }
    }
}

impl Inner {
    async fn apply_alone(&self, ev: &StatusEvent) -> anyhow::Result<Applied> {
        let mut tx = self.pool.begin().await?;
        let applied = apply_many(
            &mut tx,
            std::slice::from_ref(ev),
            &self.retry,
            &*self.metrics,
        )
        .await?
        .remove(0);
        tx.commit().await?;
        Ok(applied)
    }

    /// One transaction for the batch; if it fails, one per event (so one event's trouble is
    /// never another's).
    async fn apply_batch(&self, events: Vec<StatusEvent>) -> Vec<anyhow::Result<Applied>> {
        let together = async {
            let mut tx = self.pool.begin().await?;
            let applied = apply_many(&mut tx, &events, &self.retry, &*self.metrics).await?;
            tx.commit().await?;
            Ok(applied.into_iter().map(Ok).collect())
        };
        together_or_alone(events.len(), "status events", together, |i| {
            self.apply_alone(&events[i])
        })
        .await
    }
}

impl MessageHandler for StatusHandler {
    async fn handle(&self, raw: &OwnedMessage) -> Result<(), HandleError> {
        let ev: StatusEvent = serde_json::from_slice(raw.payload().unwrap_or_default())
            .map_err(|e| HandleError::Skip(anyhow::anyhow!("undecodable status event: {e}")))?;
        match self.apply(&ev).await {
            Ok(Applied::UnknownDelivery) => Err(HandleError::Skip(anyhow::anyhow!(
                "status event for unknown delivery {}",
                ev.delivery_id
            ))),
            Ok(applied) => {
                tracing::info!(delivery_id = %ev.delivery_id, attempt = ev.attempt, ?applied, "status applied");
                Ok(())
            }
            // Database trouble: keep the event (offset not stored) and try again.
            Err(e) => Err(HandleError::Retry(e)),
        }
    }
}
