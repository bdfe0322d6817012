//! What a scenario measured (written as JSON, read back by the report).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{LoadChannel, Scenario};
use crate::procs::ProcessSeries;

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub(super) fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let q = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: h.max() as f64 / 1000.0,
        }
    }
}

/// The deliveries of the accepted notifications, as the platform recorded them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Accounting {
    /// Recipients × accepted requests.
    pub expected: u64,
    /// In a terminal status (sent, dead, suppressed, cancelled, expired).
    pub terminal: u64,
    pub by_status: BTreeMap<String, u64>,
    /// expected − terminal: planned but never terminal, or never planned at all.
    pub lost: u64,
    /// Of the lost: a row exists but is still open / no row at all.
    pub open: u64,
    pub missing: u64,
    /// Deliveries that needed more than one dispatch (a retry, or a re-drive of a message the
    /// stuck scan judged lost): with providers that never fail, each is a message Kafka lost.
    pub redispatched: u64,
    /// Notifications with a lost delivery (at most 100).
    pub lost_notifications: Vec<String>,
    /// Seconds from the end of the load until everything was terminal (`None`: it was not).
    pub settled_after_s: Option<f64>,
}

/// One scenario's result (`<out>/<name>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub name: String,
    pub scenario: Scenario,
    pub channel: LoadChannel,
    /// Requests per second asked for.
    pub rate: f64,
    pub duration_s: u64,
    pub recipients_per_request: usize,
    pub pause_workers: bool,
    /// Unix time the load started.
    pub started_at: f64,
    pub accepted: u64,
    pub refused: u64,
    pub unanswered: u64,
    pub skipped: u64,
    /// Accepted requests per second of the load, and their accept latency.
    pub accepted_per_s: f64,
    pub accept_ms: Percentiles,
    /// How fast refusals (503 `overloaded`, 429) were answered.
    #[serde(default)]
    pub refuse_ms: Percentiles,
    pub accepted_by_second: Vec<u64>,
    pub accept_p50_by_second: Vec<f64>,
    pub accept_p99_by_second: Vec<f64>,
    pub deliveries: Accounting,
    /// Deliveries sent per second: over the load, and from the first accept to the last send.
    pub sent_per_s_during_load: f64,
    pub sent_per_s_overall: f64,
    /// Per second since the load started, by `sent_at`.
    pub sent_by_second: Vec<u64>,
    /// Accept → sent of the measured deliveries (the urgent ones in `urgent-under-bulk`).
    pub accept_to_sent_ms: Percentiles,
    /// (quantile, ms) points of the accept → sent distribution.
    pub accept_to_sent_cdf: Vec<(f64, f64)>,
    /// Accept → sent p99 of the deliveries accepted in each second.
    pub accept_to_sent_p99_by_second: Vec<f64>,
    /// `urgent-under-bulk`: the backlog.
    pub backlog: Option<Backlog>,
    /// Once a second: unpublished outbox rows, open (not terminal) deliveries.
    pub outbox_unpublished_by_second: Vec<i64>,
    pub open_deliveries_by_second: Vec<i64>,
    pub processes: BTreeMap<String, ProcessSeries>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Backlog {
    pub deliveries: u64,
    /// Seconds to get the backlog accepted.
    pub accepted_in_s: f64,
    /// The slowest 1,000-recipient request of the backlog, ms.
    pub max_request_ms: f64,
    /// Seconds from the first backlog request until its last delivery was sent.
    pub drained_in_s: Option<f64>,
    pub accept_to_sent_ms: Percentiles,
    /// `topic`: seconds to subscribe the subscribers through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribed_in_s: Option<f64>,
    /// `topic`: seconds from acceptance until the fan-out planned its last chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_in_s: Option<f64>,
    /// `topic`: each process's mean CPU (% of one core) while the fan-out planned.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub planning_cpu_percent: BTreeMap<String, f64>,
}
