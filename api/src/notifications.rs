//! `POST /v1/notifications`, `GET /v1/notifications/{id}`, `POST …/cancel`, and a user's
//! history (`GET /v1/me/notifications`).

use chrono::{DateTime, Utc};
use common::events::Priority;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Most recipients in one request.
pub const MAX_RECIPIENTS: usize = 1000;

/// A notification to send: to 1..=1000 recipients, either `content` or a `template` rendered
/// with `data`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    #[schema(min_items = 1, max_items = 1000)]
    pub recipients: Vec<RecipientBody>,
    /// 1-64 characters of a-z, 0-9, `_`, `.`, `-`.
    #[schema(example = "billing", pattern = "^[a-z0-9_.-]{1,64}$")]
    pub category: String,
    #[serde(default)]
    pub priority: Priority,
    /// Only these channels for `user_id` recipients (default: every channel the user's
    /// preferences allow); a recipient given by address is reached on its own channel.
    #[schema(example = json!(["email"]), min_items = 1)]
    pub channels: Option<Vec<String>>,
    /// A template name (instead of `content`).
    #[schema(pattern = "^[a-z0-9_.-]{1,64}$")]
    pub template: Option<String>,
    /// The template's variables (an object).
    pub data: Option<serde_json::Value>,
    pub content: Option<ContentBody>,
    /// Not before this instant (RFC 3339).
    pub send_at: Option<DateTime<Utc>>,
    /// Not after `send_at` (or acceptance) plus this many seconds.
    #[schema(minimum = 1)]
    pub ttl_seconds: Option<i64>,
    /// When a user's delivery ends `dead`, the next channel of this list is planned for them
    /// (2 to 5 channels, in order).
    #[schema(example = json!(["push", "sms"]), min_items = 2, max_items = 5)]
    pub fallback: Option<Vec<String>>,
    /// Fold into one message per recipient, channel and key (not with `send_at`; never for
    /// urgent sends). Default: the category's digest window, when admins set one.
    pub digest: Option<crate::digests::DigestBody>,
    /// A cap stricter than the category's and the deployment's: at most `limit` deliveries of
    /// this category per user and channel per `window` (urgent and mandatory sends are exempt).
    pub cap: Option<crate::digests::CapBody>,
}

/// Exactly one of the fields must be set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientBody {
    pub user_id: Option<Uuid>,
    pub email: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    /// `{platform: fcm | apns, token}`.
    pub device: Option<serde_json::Value>,
    /// `{url}`.
    pub webhook: Option<serde_json::Value>,
    /// `{chat_id}`.
    pub telegram: Option<serde_json::Value>,
    /// Every subscriber of this topic (its key), as of acceptance: at most one topic per
    /// request. The send is answered at once and fanned out in chunks (see `fanout`); a user
    /// also named directly is reached once.
    #[schema(pattern = "^[a-z0-9_.-]{1,64}$")]
    pub topic: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentBody {
    /// One line (email only).
    pub subject: Option<String>,
    /// Must not be blank.
    #[schema(min_length = 1)]
    pub text: String,
    pub html: Option<String>,
}

/// Most deliveries a notification's view carries inline; the rest are paged at
/// `GET /v1/notifications/{id}/deliveries` (a response stays bounded however many recipients
/// and channels a notification has).
pub const INLINE_DELIVERIES: usize = 100;

/// A notification with its first deliveries and the counts of all of them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Notification)]
pub struct NotificationView {
    pub id: Uuid,
    /// Derived from its deliveries' statuses.
    #[schema(example = "in_progress")]
    pub status: String,
    pub category: String,
    pub priority: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<DateTime<Utc>>,
    /// Every delivery counted by status and channel.
    pub delivery_counts: DeliveryCounts,
    /// The first 100 deliveries (in id order); `deliveries_next_cursor` pages the rest.
    #[schema(max_items = 100)]
    pub deliveries: Vec<DeliveryView>,
    /// Present when there are more than the inline deliveries: pass it as `cursor` to
    /// `GET /v1/notifications/{id}/deliveries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries_next_cursor: Option<String>,
    /// A send to a topic: how far its fan-out is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fanout: Option<FanoutView>,
    /// A digest's own notification: what it folded (`GET /v1/admin/digests/{id}` lists them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<crate::digests::DigestSummary>,
}

/// The fan-out of a send to a topic: the topic's subscribers as of acceptance, planned in
/// chunks through the one intake pipeline. `delivery_counts` counts what was planned so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Fanout)]
pub struct FanoutView {
    pub topic: String,
    /// `splitting` (counting the subscribers), `planning`, `done` or `cancelled`.
    #[schema(example = "planning")]
    pub state: String,
    /// Subscribers as of acceptance (known once split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    /// Subscribers planned so far (each into one delivery per channel, or a suppressed one
    /// with its reason). Below `total` at the end when some left before their chunk.
    pub planned: i64,
    /// Chunks in all (known once split), and those planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<i32>,
    pub chunks_done: i32,
}

/// A notification in a list: its counts, no delivery inline (one notification may have
/// thousands).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotificationSummary {
    pub id: Uuid,
    /// Derived from its deliveries' statuses.
    #[schema(example = "in_progress")]
    pub status: String,
    pub category: String,
    pub priority: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<DateTime<Utc>>,
    pub delivery_counts: DeliveryCounts,
}

/// How many deliveries a notification has, per status and per channel × status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryCounts {
    pub total: i64,
    #[schema(example = json!({"sent": 2, "suppressed": 1}))]
    pub by_status: std::collections::BTreeMap<String, i64>,
    #[schema(example = json!({"email": {"sent": 2}, "sms": {"suppressed": 1}}))]
    pub by_channel: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>,
}

impl DeliveryCounts {
    /// Counts `n` more deliveries of `channel` in `status`.
    pub fn add(&mut self, channel: &str, status: &str, n: i64) {
        self.total += n;
        *self.by_status.entry(status.to_owned()).or_default() += n;
        *self
            .by_channel
            .entry(channel.to_owned())
            .or_default()
            .entry(status.to_owned())
            .or_default() += n;
    }
}

/// `GET /v1/notifications/{id}/deliveries`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// 1..=500, default 100.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `deliveries_next_cursor` of the notification, or `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Most deliveries in one page of `GET /v1/notifications/{id}/deliveries`.
pub const MAX_DELIVERY_PAGE: i64 = 500;

/// One recipient × channel.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Delivery)]
pub struct DeliveryView {
    pub id: Uuid,
    pub notification_id: Uuid,
    pub channel: String,
    pub lane: String,
    pub recipient: serde_json::Value,
    pub address: Option<String>,
    #[schema(example = "sent")]
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
    /// `digested`: the digest that carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<crate::digests::DigestLink>,
}

/// One provider attempt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Attempt)]
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

/// `GET /v1/me/notifications`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// 1..=100, default 20.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One notification in a user's history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryItem {
    pub id: Uuid,
    pub category: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub deliveries: Vec<ChannelStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChannelStatus {
    pub channel: String,
    pub status: String,
    /// Why it was not sent, when it was not: `opted_out`, `no_contact`, `bounced`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

crate::page!(
    /// A page of a user's history.
    HistoryPage of HistoryItem
);

/// What a delivery receipt did (`POST /v1/receipts/…`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReceiptAnswer {
    /// `applied` (the delivery moved), `ignored` (it was not `sent`: re-driven or settled),
    /// `unmatched` (no attempt has this message id yet; applied once it has).
    pub outcome: String,
    pub delivery_id: Option<Uuid>,
}

/// A bounce or complaint report (`POST /v1/bounces`), signed per Standard Webhooks.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BounceReport {
    /// `hard_bounce` (suppressed at once), `soft_bounce` (counted; suppressed at the
    /// threshold) or `complaint` (suppressed at once).
    #[schema(
        example = "hard_bounce",
        pattern = "^(hard_bounce|soft_bounce|complaint)$"
    )]
    pub r#type: String,
    /// The address that bounced.
    pub email: String,
    /// What the mail system said (`550 5.1.1 user unknown`).
    pub detail: Option<String>,
}

/// What a bounce report did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BounceAnswer {
    /// Whether the address is suppressed now.
    pub suppressed: bool,
    /// Soft bounces counted so far for the address (soft bounces only).
    pub soft_bounces: Option<i32>,
}

/// Most notifications in one `POST /v1/notifications/batch`.
pub const MAX_BATCH_ITEMS: usize = 1000;
/// Most recipients over all the notifications of one batch.
pub const MAX_BATCH_RECIPIENTS: usize = 10_000;
/// The largest batch body (nginx, the bff and notification-service take this much on the
/// batch route; every other route keeps `http.body_limit_bytes`).
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// The whole-request limits of a batch (REST and gRPC): 1 to [`MAX_BATCH_ITEMS`] items and at
/// most [`MAX_BATCH_RECIPIENTS`] recipients over all of them. The error names `notifications`.
pub fn check_batch_size(
    items: usize,
    recipients: usize,
) -> Result<(), common::problem::FieldError> {
    use common::problem::FieldError;
    if !(1..=MAX_BATCH_ITEMS).contains(&items) {
        return Err(FieldError::new(
            "notifications",
            format!("must hold 1 to {MAX_BATCH_ITEMS} notifications"),
        ));
    }
    if recipients > MAX_BATCH_RECIPIENTS {
        return Err(FieldError::new(
            "notifications",
            format!(
                "hold {recipients} recipients in all; at most {MAX_BATCH_RECIPIENTS} per batch"
            ),
        ));
    }
    Ok(())
}

/// `POST /v1/notifications/batch`: up to 1,000 notifications, each the body of a single send
/// plus its own optional `idempotency_key` (the document gives each item's exact schema).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = BatchRequest)]
pub struct BatchBody {
    #[schema(min_items = 1, max_items = 1000, value_type = Vec<Object>)]
    pub notifications: Vec<serde_json::Value>,
}

/// One answer per item of the batch, in the items' order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = BatchAnswer)]
pub struct BatchAnswer {
    pub results: Vec<BatchResult>,
}

/// What became of one item: `202` accepted, `200` the replay of an earlier item or request
/// with the same idempotency key and body, or the 4xx (or 503) a single send would have got,
/// with its problem.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchResult {
    #[schema(example = 202)]
    pub status: u16,
    /// The notification's id (accepted or replayed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<common::problem::Problem>,
}
