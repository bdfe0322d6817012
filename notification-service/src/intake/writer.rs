//! Group commit: concurrent accepted requests written in one transaction.
//!
//! A request's notification, deliveries and outbox rows were one transaction each — five
//! round trips to Postgres and a WAL flush per request, which is what bounded intake (the
//! profile: notification-service's time went to sending statements and waiting for their
//! answers, not to its own code). Here a small request, once planned, is handed to a writer;
//! each writer takes what is waiting (nothing is held back to wait for company: an idle
//! service writes a lone request at once) and writes the batch with the same three
//! statements as one request, plus one for idempotency keys, in one transaction. Every
//! request is answered only after that transaction committed, so `202` still means durable.
//!
//! A batch that fails is written again one request per transaction, so one request's problem
//! is never another's; a request with many deliveries does not join a batch (it would make its
//! companions wait for its large statements).
//!
//! The welcome and channel fallback are written one at a time ([`write_once`], [`add_to`]):
//! they come from Kafka events, one consumer slot each, never many at once.

use chrono::{DateTime, Utc};
use common::{
    group_commit::{GroupCommit, Unanswered, together_or_alone},
    problem::ApiError,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    db::{self, idempotency as idem, notifications::NewNotification},
    planned::{FanoutStep, NewFanout, Step},
    planning::PlannedDelivery,
    request::SendRequest,
};

/// How accepted requests are written (`[intake]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default)]
pub struct IntakeConfig {
    /// Write concurrent requests together (off: one transaction per request).
    pub group_commit: bool,
    /// Transactions in flight at once (each holds a pool connection while it writes).
    pub writers: usize,
    /// At most this many requests per transaction.
    pub max_batch: usize,
    /// A request with more deliveries than this is written on its own.
    pub max_batched_deliveries: usize,
    /// An `Idempotency-Key` claimed by a request that has not finished after this many
    /// seconds (its instance died mid-request) may be claimed by a retry. Longer than any
    /// request can take (the edge's timeout is 30 s).
    pub abandoned_claim_secs: f64,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        Self {
            group_commit: true,
            writers: 3,
            max_batch: 128,
            max_batched_deliveries: 64,
            abandoned_claim_secs: 60.0,
        }
    }
}

/// A planned request, ready to write.
pub struct Planned {
    pub id: Uuid,
    pub created_by: String,
    pub request: SendRequest,
    pub deliveries: Vec<PlannedDelivery>,
    pub created_at: DateTime<Utc>,
    /// The Idempotency-Key claimed for it and the response to store with it.
    pub idempotency: Option<(String, serde_json::Value)>,
    /// Its dispatches' outbox rows, built in the request's own context (request id, trace),
    /// and a fan-out's first step.
    pub outbox: Vec<common::outbox::OutboxMessage>,
    /// A send to a topic: its fan-out, written with it.
    pub fanout: Option<NewFanout>,
}

impl Planned {
    /// A planned request; its outbox rows are built here, so call it in the request's task.
    pub fn new(
        created_by: &str,
        request: SendRequest,
        deliveries: Vec<PlannedDelivery>,
        created_at: DateTime<Utc>,
    ) -> anyhow::Result<Self> {
        let mut p = Self {
            id: Uuid::now_v7(),
            created_by: created_by.to_owned(),
            request,
            deliveries,
            created_at,
            idempotency: None,
            outbox: Vec::new(),
            fanout: None,
        };
        p.outbox = crate::planned::dispatch_rows(&p.notification())?;
        Ok(p)
    }

    /// Makes it a send to a topic: its fan-out is written with it, with the first step's
    /// message.
    pub fn with_fanout(mut self, fanout: NewFanout) -> anyhow::Result<Self> {
        let split = FanoutStep {
            schema: common::events::SCHEMA,
            notification_id: self.id,
            step: Step::Split,
        };
        self.outbox.push(split.row()?);
        self.fanout = Some(fanout);
        Ok(self)
    }

    pub fn notification(&self) -> NewNotification<'_> {
        NewNotification {
            id: self.id,
            created_by: &self.created_by,
            request: &self.request,
            deliveries: &self.deliveries,
            created_at: self.created_at,
        }
    }
}

/// The writers; cheap to clone.
#[derive(Clone)]
pub struct Intake {
    /// `None`: group commit is off.
    writers: Option<GroupCommit<Planned, Result<(), ApiError>>>,
    pool: PgPool,
    max_batched_deliveries: usize,
    abandoned_claim_secs: f64,
}

impl Intake {
    /// Starts the writers on `pool`. They stop when every `Intake` handle is dropped.
    pub fn start(pool: PgPool, cfg: &IntakeConfig) -> Self {
        if !cfg.group_commit {
            return Self {
                writers: None,
                pool,
                max_batched_deliveries: 0,
                abandoned_claim_secs: cfg.abandoned_claim_secs,
            };
        }
        let batch_pool = pool.clone();
        let writers = GroupCommit::start(cfg.writers, cfg.max_batch, move |batch| {
            let pool = batch_pool.clone();
            async move { write_batch(&pool, batch).await }
        });
        Self {
            writers: Some(writers),
            pool,
            max_batched_deliveries: cfg.max_batched_deliveries,
            abandoned_claim_secs: cfg.abandoned_claim_secs,
        }
    }

    /// `intake.abandoned_claim_secs`.
    pub fn abandoned_claim_secs(&self) -> f64 {
        self.abandoned_claim_secs
    }

    /// Writes `p` durably (with its idempotency key completed); returns once committed.
    pub async fn write(&self, p: Planned) -> Result<(), ApiError> {
        let writers = match &self.writers {
            Some(writers) if p.deliveries.len() <= self.max_batched_deliveries => writers,
            _ => return write_one(&self.pool, &p).await,
        };
        match writers.submit(p).await {
            Ok(answer) => answer,
            // The writers are gone (shutting down): write it here.
            Err(Unanswered::Closed(p)) => write_one(&self.pool, &p).await,
            Err(Unanswered::WriterStopped) => Err(ApiError::from(anyhow::anyhow!(
                "the intake writer stopped before answering"
            ))),
        }
    }
}

/// One transaction for the whole batch; on failure, one per request.
async fn write_batch(pool: &PgPool, batch: Vec<Planned>) -> Vec<Result<(), ApiError>> {
    let together = async {
        let planned: Vec<&Planned> = batch.iter().collect();
        write_together(pool, &planned).await?;
        Ok(batch.iter().map(|_| Ok(())).collect())
    };
    together_or_alone(batch.len(), "requests", together, |i| {
        write_one(pool, &batch[i])
    })
    .await
}

async fn write_together(pool: &PgPool, planned: &[&Planned]) -> anyhow::Result<()> {
    let notifications: Vec<NewNotification<'_>> =
        planned.iter().map(|p| p.notification()).collect();
    let refs: Vec<&NewNotification<'_>> = notifications.iter().collect();
    let rows: Vec<common::outbox::OutboxMessage> = planned
        .iter()
        .flat_map(|p| p.outbox.iter().cloned())
        .collect();
    let fanouts: Vec<(Uuid, &NewFanout)> = planned
        .iter()
        .filter_map(|p| p.fanout.as_ref().map(|f| (p.id, f)))
        .collect();
    let mut tx = pool.begin().await?;
    db::notifications::insert_many(&mut tx, &refs, &rows).await?;
    db::fanouts::insert(&mut tx, &fanouts).await?;
    let keyed: Vec<(&str, &str, Uuid, &serde_json::Value)> = planned
        .iter()
        .filter_map(|p| {
            p.idempotency
                .as_ref()
                .map(|(k, r)| (p.created_by.as_str(), k.as_str(), p.id, r))
        })
        .collect();
    idem::complete(&mut tx, &keyed).await?;
    tx.commit().await?;
    Ok(())
}

/// The request in a transaction of its own (a lost database connection still answers 503:
/// `ApiError`'s conversion finds the `sqlx::Error` in the chain).
async fn write_one(pool: &PgPool, p: &Planned) -> Result<(), ApiError> {
    Ok(write_together(pool, &[p]).await?)
}

/// What a write outside group commit did.
pub enum Written {
    Yes,
    /// Written before (an event handled twice).
    Before,
    /// Not written, and why.
    NotNow(&'static str),
}

/// A notification with a given id (the welcome's, derived from the user's), written unless it
/// exists: one transaction.
pub async fn write_once(
    pool: &PgPool,
    id: Uuid,
    request: &SendRequest,
    deliveries: &[PlannedDelivery],
    now: DateTime<Utc>,
) -> anyhow::Result<Written> {
    let n = NewNotification {
        id,
        created_by: "notification-service",
        request,
        deliveries,
        created_at: now,
    };
    let rows = crate::planned::dispatch_rows(&n)?;
    let mut tx = pool.begin().await?;
    let written = db::notifications::insert(&mut tx, &n, &rows).await?;
    tx.commit().await?;
    Ok(if written {
        Written::Yes
    } else {
        Written::Before
    })
}

/// Deliveries added to the notification of the dead delivery `of`, linked to it, once: the
/// dead row is locked and claimed in the same transaction (re-driven meanwhile: not written;
/// a delivery already linked to it: written before).
pub async fn add_to(
    pool: &PgPool,
    dead: &delivery::LockedDelivery,
    of: Uuid,
    request: &SendRequest,
    deliveries: &[PlannedDelivery],
    now: DateTime<Utc>,
) -> anyhow::Result<Written> {
    use delivery::fallback::Claim;
    let n = NewNotification {
        id: dead.notification_id,
        created_by: &dead.created_by,
        request,
        deliveries,
        created_at: dead.created_at,
    };
    let rows = crate::planned::dispatch_rows(&n)?;
    let mut tx = pool.begin().await?;
    match delivery::fallback::claim(&mut tx, of).await? {
        Claim::NotDead => return Ok(Written::NotNow("no longer dead (re-driven)")),
        Claim::AlreadyPlanned => return Ok(Written::Before),
        Claim::Ready => {}
    }
    db::notifications::insert_deliveries(&mut tx, &n, Some(of), now, &rows).await?;
    tx.commit().await?;
    Ok(Written::Yes)
}

/// One chunk of a fan-out (`crate::fanout`): its place, and its notification as accepted.
pub struct ChunkOf<'a> {
    pub notification_id: Uuid,
    pub index: i32,
    pub created_by: &'a str,
    pub created_at: DateTime<Utc>,
    /// Subscribers in the chunk (its progress).
    pub subscribers: usize,
}

/// A chunk's deliveries added to its notification, once: claimed, written and counted in one
/// transaction (written before: nothing; the fan-out cancelled meanwhile: rolled back).
pub async fn write_chunk(
    pool: &PgPool,
    chunk: &ChunkOf<'_>,
    request: &SendRequest,
    deliveries: &[PlannedDelivery],
    now: DateTime<Utc>,
) -> anyhow::Result<Written> {
    let n = NewNotification {
        id: chunk.notification_id,
        created_by: chunk.created_by,
        request,
        deliveries,
        created_at: chunk.created_at,
    };
    let rows = crate::planned::dispatch_rows(&n)?;
    let mut tx = pool.begin().await?;
    let id = chunk.notification_id;
    if !db::fanouts::claim_chunk(
        &mut tx,
        id,
        chunk.index,
        chunk.subscribers,
        deliveries.len(),
    )
    .await?
    {
        return Ok(Written::Before);
    }
    db::notifications::insert_deliveries(&mut tx, &n, None, now, &rows).await?;
    if !db::fanouts::chunk_planned(&mut tx, id, chunk.subscribers).await? {
        return Ok(Written::NotNow("the fan-out was cancelled"));
    }
    tx.commit().await?;
    Ok(Written::Yes)
}

/// A digest's own notification (`crate::digest`), written with the digest marked `closed`
/// in one transaction: closed before (a close handled twice) writes nothing.
pub async fn write_digest(
    pool: &PgPool,
    folded: &crate::folding::Folded<'_>,
    request: &SendRequest,
    deliveries: &[PlannedDelivery],
    now: DateTime<Utc>,
) -> anyhow::Result<Written> {
    let n = NewNotification {
        id: Uuid::now_v7(),
        created_by: &folded.digest.created_by,
        request,
        deliveries,
        created_at: now,
    };
    let rows = crate::planned::dispatch_rows(&n)?;
    let mut tx = pool.begin().await?;
    db::notifications::insert(&mut tx, &n, &rows).await?;
    if !db::digests::finish(&mut tx, folded.digest.id, n.id).await? {
        return Ok(Written::Before);
    }
    tx.commit().await?;
    Ok(Written::Yes)
}
