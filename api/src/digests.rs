//! Digests and frequency caps (decision 0030): a send's `digest` and `cap`, what history shows
//! of a digest, and the rules admins set per category.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::rules::{DIGEST_KEY, DIGEST_WINDOW, DURATION, seconds};

/// Fold this send into one message per recipient, channel and `key`: every send with the same
/// key inside the window (opened by the first) becomes one delivery at the window's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DigestBody {
    /// 1-128 visible ASCII characters.
    #[schema(example = "comments")]
    pub key: String,
    /// 1s to 7d (`30s`, `10m`, `2h`, `1d`).
    #[schema(example = "10m")]
    pub window: String,
}

impl DigestBody {
    /// The window in seconds, and the field that is wrong otherwise.
    pub fn check(&self) -> Result<i64, (&'static str, &'static str)> {
        if !DIGEST_KEY.is_match(&self.key) {
            return Err(("digest.key", "must be 1-128 visible ASCII characters"));
        }
        seconds(&DIGEST_WINDOW, &self.window).ok_or((
            "digest.window",
            "must be like 30s, 10m, 2h or 1d (1s to 7d)",
        ))
    }
}

/// Most deliveries a cap lets through in its window.
pub const MAX_CAP_LIMIT: u32 = 100_000;

/// At most `limit` deliveries per user and channel per `window` (fixed windows: `1h` is each
/// clock hour, `1d` each UTC day).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapBody {
    #[schema(minimum = 1, maximum = 100_000, example = 3)]
    pub limit: u32,
    /// 1s to 31d.
    #[schema(example = "1h")]
    pub window: String,
}

impl CapBody {
    /// `(limit, window seconds)`, or the field that is wrong (under `prefix`).
    pub fn check(&self) -> Result<(i32, i64), (&'static str, &'static str)> {
        if !(1..=MAX_CAP_LIMIT).contains(&self.limit) {
            return Err(("limit", "must be between 1 and 100000"));
        }
        let window = seconds(&DURATION, &self.window)
            .ok_or(("window", "must be like 30s, 15m, 1h or 7d (at most 31d)"))?;
        Ok((self.limit as i32, window))
    }

    /// The body of a stored cap.
    pub fn stored(limit: i32, window_seconds: i64) -> Self {
        Self {
            limit: limit.max(0) as u32,
            window: window_text(window_seconds),
        }
    }
}

/// `seconds` in the largest unit that divides it (`600` → `10m`).
pub fn window_text(seconds: i64) -> String {
    match seconds {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// On a delivery folded into a digest (`status: digested`): the digest that carries it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DigestLink {
    pub id: Uuid,
    /// `open` (still collecting), `closing`, `closed` (sent as `notification_id`), `failed`.
    #[schema(example = "open")]
    pub state: String,
    pub closes_at: DateTime<Utc>,
    /// The digest's own notification (its deliveries are what the recipient gets), once closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_id: Option<Uuid>,
}

/// On a digest's own notification: what it folded.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DigestSummary {
    pub id: Uuid,
    pub key: String,
    pub channel: String,
    /// Notifications folded in.
    pub items: i32,
    pub opened_at: DateTime<Utc>,
    pub closes_at: DateTime<Utc>,
}

/// One notification folded into a digest.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DigestItem {
    pub notification_id: Uuid,
    pub delivery_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// The item's subject (or the start of its text) in the recipient's locale.
    pub summary: String,
}

/// Most items `GET /v1/admin/digests/{id}` lists (`items` counts them all).
pub const MAX_LISTED_ITEMS: usize = 200;

/// `GET /v1/admin/digests/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DigestView {
    pub id: Uuid,
    pub created_by: String,
    pub key: String,
    pub channel: String,
    pub category: String,
    pub recipient: serde_json::Value,
    pub window: String,
    pub items: i32,
    #[schema(example = "closed")]
    pub state: String,
    pub opened_at: DateTime<Utc>,
    pub closes_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_id: Option<Uuid>,
    /// Why it could not be sent (`failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The folded notifications in the order they came (the first 200).
    pub folded: Vec<DigestItem>,
}

/// `PUT /v1/admin/categories/{category}`: the category's rules (absent: none).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryRulesBody {
    /// Sends of this category without their own `digest` are digested with this window (key:
    /// the category). 1s to 7d.
    #[schema(example = "1h")]
    pub digest_window: Option<String>,
    /// At most this many deliveries of this category per user and channel per window.
    pub cap: Option<CapBody>,
}

/// A category's rules as stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CategoryRules {
    pub category: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest_window: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<CapBody>,
    pub updated_at: DateTime<Utc>,
}

/// `GET /v1/admin/categories` and `GET /v1/me/delivery-rules`: the deployment's cap and every
/// category's rules.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryRules {
    /// The deployment's cap: every category (except urgent and mandatory ones) counts in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<CapBody>,
    /// Categories never capped nor digested (urgent sends are never either).
    pub exempt_categories: Vec<String>,
    pub categories: Vec<CategoryRules>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_print_in_their_largest_unit() {
        assert_eq!(window_text(600), "10m");
        assert_eq!(window_text(7200), "2h");
        assert_eq!(window_text(86_400 * 7), "7d");
        assert_eq!(window_text(90), "90s");
    }

    #[test]
    fn digest_and_cap_bodies_say_which_field_is_wrong() {
        let d = |key: &str, window: &str| DigestBody {
            key: key.into(),
            window: window.into(),
        };
        assert_eq!(d("comments", "10m").check(), Ok(600));
        assert_eq!(d("", "10m").check().unwrap_err().0, "digest.key");
        assert_eq!(d("a b", "10m").check().unwrap_err().0, "digest.key");
        assert_eq!(d("k", "8d").check().unwrap_err().0, "digest.window");
        let c = |limit, window: &str| CapBody {
            limit,
            window: window.into(),
        };
        assert_eq!(c(3, "1h").check(), Ok((3, 3600)));
        assert_eq!(c(0, "1h").check().unwrap_err().0, "limit");
        assert_eq!(c(3, "32d").check().unwrap_err().0, "window");
    }
}
