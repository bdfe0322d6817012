//! Response shapes of the public contract (ARCHITECTURE.md §5).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A notification with every delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotificationView {
    pub id: Uuid,
    pub status: String,
    pub category: String,
    pub priority: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<DateTime<Utc>>,
    pub deliveries: Vec<DeliveryView>,
}

impl NotificationView {
    /// What the calling service may see: the addresses it gave itself, not those resolved from
    /// a user's profile (a user's email, phone or device token is not the sender's to read).
    /// Admins see everything; a user sees their own history elsewhere.
    pub fn for_service(mut self) -> Self {
        for d in &mut self.deliveries {
            if d.recipient.get("user_id").is_some() {
                d.address = None;
            }
        }
        self
    }
}

/// One recipient × channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryView {
    pub id: Uuid,
    pub notification_id: Uuid,
    pub channel: String,
    pub lane: String,
    pub recipient: serde_json::Value,
    pub address: Option<String>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Provider attempts recorded so far.
    pub attempts: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<serde_json::Value>,
    /// The most recent attempt, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<AttemptView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
    /// The dead delivery this one replaces (channel fallback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_of: Option<Uuid>,
}

/// One provider attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptView {
    pub attempt: i32,
    pub outcome: String,
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
    pub duration_ms: i64,
    pub at: DateTime<Utc>,
}

/// A notification's status, derived from its deliveries' statuses.
pub fn notification_status<'a>(statuses: impl IntoIterator<Item = &'a str>) -> &'static str {
    let (mut total, mut open, mut pending, mut ok, mut failed, mut cancelled) = (0, 0, 0, 0, 0, 0);
    for s in statuses {
        total += 1;
        match s {
            "pending" => {
                open += 1;
                pending += 1
            }
            "queued" | "sending" | "retrying" => open += 1,
            "sent" | "suppressed" => ok += 1,
            "dead" | "expired" => failed += 1,
            "cancelled" => cancelled += 1,
            _ => open += 1,
        }
    }
    match () {
        _ if total > 0 && cancelled == total => "cancelled",
        _ if open > 0 && pending == open && ok + failed == 0 => "scheduled",
        _ if open > 0 => "in_progress",
        _ if failed == 0 => "completed",
        _ if ok == 0 => "failed",
        _ => "partially_failed",
    }
}

#[cfg(test)]
mod tests {
    use super::notification_status as st;

    #[test]
    fn derived_status() {
        assert_eq!(st(["queued", "sent"]), "in_progress");
        assert_eq!(st(["pending", "pending"]), "scheduled");
        assert_eq!(st(["sent", "suppressed"]), "completed");
        assert_eq!(st(["dead", "sent"]), "partially_failed");
        assert_eq!(st(["dead", "expired"]), "failed");
        assert_eq!(st(["cancelled"]), "cancelled");
    }
}
