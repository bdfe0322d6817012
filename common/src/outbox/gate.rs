//! A relay's gate: the last look at a due row before it is published, for the service that owns
//! the rows' meaning (notification-service re-checks a delivery before each attempt, decision
//! 0026). The relay stays plumbing: it hands the locked rows over, and carries out what the
//! gate says, in the transaction that locked them.

use std::{collections::BTreeMap, future::Future, pin::Pin, time::Duration};

use sqlx::PgConnection;

/// A due row as the gate sees it.
#[derive(Debug, Clone)]
pub struct GateRow {
    pub id: i64,
    /// Unprefixed.
    pub topic: String,
    pub key: String,
    pub payload: String,
    pub headers: BTreeMap<String, String>,
    /// It was written to be published later than when it was written (a scheduled send, a
    /// quiet-hours deferral, a retry): the world may have changed since.
    pub deferred: bool,
}

/// What to do with one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Publish it as it is.
    Publish,
    /// Publish this payload instead (the row keeps the original, for inspection).
    PublishAs(String),
    /// Never publish it: the row is deleted (the gate wrote the state that says why, in the
    /// same transaction).
    Drop,
    /// Not now: the row is due again after this long (the gate could not decide, e.g. a
    /// dependency is away). Nothing is lost.
    Defer(Duration),
}

/// The future a [`Gate`] returns.
pub type Verdicts<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Vec<Verdict>>> + Send + 'a>>;

/// Decides, per due row, whether it is published. One call per batch; `conn` is the relay's
/// transaction (what the gate writes commits with the rows' fate, or not at all). Returns one
/// verdict per row, in order. An error fails the batch (nothing published, retried).
pub trait Gate: Send + Sync + 'static {
    fn admit<'a>(&'a self, conn: &'a mut PgConnection, rows: &'a [GateRow]) -> Verdicts<'a>;
}
