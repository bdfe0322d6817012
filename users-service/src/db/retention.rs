//! What `users` keeps, and for how long, of the tables that only grow (run by
//! `common::retention`).

use std::time::Duration;

use common::retention::{RetentionConfig, Rule};
use serde::Deserialize;

/// `[retention]`: each table's age limit, and how often and how much is purged
/// (`[retention.purge]`, `common::retention`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RetentionSettings {
    pub purge: RetentionConfig,
    /// The bot's update ids are kept this long to take each once (Telegram gives up retrying a
    /// webhook after a day).
    pub telegram_updates_secs: u64,
    /// Link codes are kept this long after they expired (used or not).
    pub telegram_link_codes_secs: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            purge: RetentionConfig::default(),
            telegram_updates_secs: 2 * 86_400,
            telegram_link_codes_secs: 86_400,
        }
    }
}

impl RetentionSettings {
    /// The rules for these settings.
    pub fn rules(&self) -> Vec<Rule> {
        let secs = Duration::from_secs;
        vec![
            Rule {
                name: "telegram_updates",
                sql: "DELETE FROM telegram_updates WHERE update_id IN (
                          SELECT update_id FROM telegram_updates
                          WHERE received_at < now() - make_interval(secs => $2)
                          LIMIT $1)",
                older_than: secs(self.telegram_updates_secs),
            },
            Rule {
                name: "telegram_link_codes",
                sql: "DELETE FROM telegram_link_codes WHERE code IN (
                          SELECT code FROM telegram_link_codes
                          WHERE expires_at < now() - make_interval(secs => $2)
                          LIMIT $1)",
                older_than: secs(self.telegram_link_codes_secs),
            },
        ]
    }
}
