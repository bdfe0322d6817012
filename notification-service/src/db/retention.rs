//! What `notify` keeps, and for how long, of the tables that only grow (run by
//! `common::retention`; the notifications, deliveries and attempts are the history and are
//! kept).

use std::time::Duration;

use common::retention::{RetentionConfig, Rule};
use serde::Deserialize;

/// `[retention]`: each table's age limit, and how often and how much is purged
/// (`[retention.purge]`, `common::retention`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RetentionSettings {
    pub purge: RetentionConfig,
    /// Matched delivery receipts are kept this long (a replayed callback within it is refused
    /// as a replay; Twilio retries a callback for far less).
    pub receipts_secs: u64,
    /// A receipt whose attempt never showed up is matched for this long, then dropped (the
    /// stuck scan looks no further back).
    pub unmatched_receipts_secs: u64,
    /// Bounce report ids are kept this long to refuse replays (a report older than
    /// `bounces.tolerance_secs` is refused as stale anyway).
    pub bounce_reports_secs: u64,
    /// Skipped events are listed this long.
    pub skipped_events_secs: u64,
    /// A frequency cap's counter is kept this long after its window ended (it counts
    /// nothing after that).
    pub cap_counts_secs: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            purge: RetentionConfig::default(),
            receipts_secs: 7 * 86_400,
            unmatched_receipts_secs: delivery::receipts::UNMATCHED_WINDOW.as_secs(),
            bounce_reports_secs: 2 * 86_400,
            skipped_events_secs: 30 * 86_400,
            cap_counts_secs: 3600,
        }
    }
}

impl RetentionSettings {
    /// The rules for these settings.
    pub fn rules(&self) -> Vec<Rule> {
        let secs = Duration::from_secs;
        vec![
            Rule {
                name: "receipts",
                sql: "DELETE FROM receipts WHERE ctid IN (
                          SELECT ctid FROM receipts
                          WHERE delivery_id IS NOT NULL
                            AND received_at < now() - make_interval(secs => $2)
                          LIMIT $1)",
                older_than: secs(self.receipts_secs),
            },
            Rule {
                name: "receipts_unmatched",
                sql: "DELETE FROM receipts WHERE ctid IN (
                          SELECT ctid FROM receipts
                          WHERE delivery_id IS NULL
                            AND received_at < now() - make_interval(secs => $2)
                          LIMIT $1)",
                older_than: secs(self.unmatched_receipts_secs),
            },
            Rule {
                name: "bounce_reports",
                sql: "DELETE FROM bounce_reports WHERE id IN (
                          SELECT id FROM bounce_reports
                          WHERE received_at < now() - make_interval(secs => $2)
                          LIMIT $1)",
                older_than: secs(self.bounce_reports_secs),
            },
            Rule {
                name: "skipped_events",
                sql: "DELETE FROM skipped_events WHERE id IN (
                          SELECT id FROM skipped_events
                          WHERE skipped_at < now() - make_interval(secs => $2)
                          LIMIT $1)",
                older_than: secs(self.skipped_events_secs),
            },
            Rule {
                name: "cap_counts",
                sql: "DELETE FROM cap_counts WHERE ctid IN (
                          SELECT ctid FROM cap_counts
                          WHERE window_start < now() - make_interval(secs => $2)
                            AND window_start + make_interval(secs => window_seconds)
                                < now() - make_interval(secs => $2)
                          LIMIT $1)",
                older_than: secs(self.cap_counts_secs),
            },
        ]
    }
}
