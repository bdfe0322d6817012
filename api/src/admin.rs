//! `/v1/admin/…`: notification search, one delivery's history, stats, dead letters and their
//! re-drive, templates.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::notifications::{AttemptView, DeliveryView, NotificationSummary};

/// Most ids in one re-drive request.
pub const MAX_REDRIVE_IDS: usize = 1000;

/// `GET /v1/admin/notifications`: every filter given must match.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    /// A delivery status: notifications with at least one delivery in it.
    pub status: Option<String>,
    /// A channel.
    pub channel: Option<String>,
    /// A category.
    pub category: Option<String>,
    /// A user id or an address. A service's search matches only addresses it gave itself,
    /// never one resolved from a user's profile.
    pub recipient: Option<String>,
    /// Created at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// 1..=200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

crate::page!(
    /// A page of notifications, each with its delivery counts (deliveries are paged per
    /// notification at `GET /v1/notifications/{id}/deliveries`).
    NotificationPage of NotificationSummary
);
crate::page!(
    /// A page of deliveries (dead letters; one notification's deliveries).
    DeliveryPage of DeliveryView
);

/// A delivery (every field of `Delivery`) with every attempt and re-drive.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: DeliveryView,
    /// Every attempt, oldest first.
    pub attempt_log: Vec<AttemptView>,
    /// Every re-drive (admin or stuck scan), oldest first.
    pub redrives: Vec<RedriveView>,
    /// An `in_app` delivery's item: when the user saw, read, archived and clicked it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbox: Option<InboxMarks>,
}

/// What the user did with an in-app item.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InboxMarks {
    pub seen_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    pub archived_at: Option<DateTime<Utc>>,
    pub clicked_at: Option<DateTime<Utc>>,
}

/// In-app items stored in a window, and how many of them users saw, read, archived, clicked.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct InboxStats {
    pub items: i64,
    pub seen: i64,
    pub read: i64,
    pub archived: i64,
    pub clicked: i64,
}

/// Who re-drove a delivery and why.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Redrive)]
pub struct RedriveView {
    pub from_attempt: i32,
    pub to_attempt: i32,
    /// `dead_letter` (an admin) or `lost` (the repeater's stuck scan).
    #[schema(example = "dead_letter")]
    pub kind: String,
    pub actor: String,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

/// `GET /v1/admin/stats`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// `30s`, `15m`, `1h`, `7d` (default `1h`; 1 s to 31 days, no leading zero).
    pub window: Option<String>,
    /// With it, `series` holds the counts per bucket of this length (`1m`, `5m`, `1h`…;
    /// widened to at most 500 buckets in the window, narrowed to the window: `bucket_secs`
    /// says which length was used).
    pub bucket: Option<String>,
}

/// Counts per channel × status and accept → sent latency over a window.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    pub window_secs: i64,
    /// With `bucket`: the bucket length used — the one asked for, widened to at most 500
    /// buckets in the window and narrowed to the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_secs: Option<i64>,
    /// `{channel: {status: count}}` of deliveries created in the window.
    #[schema(example = json!({"email": {"sent": 120, "dead": 2}}))]
    pub counts: BTreeMap<String, BTreeMap<String, i64>>,
    /// `{reason: count}` of deliveries created in the window that were not sent on purpose
    /// (`opted_out`, `no_contact`, `throttled`, `bounced`, …).
    #[serde(default)]
    #[schema(example = json!({"throttled": 7, "opted_out": 2}))]
    pub suppressed: BTreeMap<String, i64>,
    /// Accept → sent latency of deliveries sent in the window, in milliseconds.
    pub latency_ms: Latency,
    /// In-app items stored in the window and what their users did with them.
    #[serde(default)]
    pub inbox: InboxStats,
    /// With `bucket`: the same counts per bucket, oldest first; buckets without a delivery
    /// are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<Vec<StatsBucket>>,
}

/// The deliveries created in one bucket of time.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatsBucket {
    /// The bucket's start.
    pub at: DateTime<Utc>,
    /// `{channel: {status: count}}`.
    pub counts: BTreeMap<String, BTreeMap<String, i64>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// Which dead letters: every field given must match; `{}` matches all of them.
#[derive(Debug, Default, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RedriveFilter)]
pub struct DeadLetterFilter {
    /// A channel.
    pub channel: Option<String>,
    /// `last_error.code`, e.g. `smtp_550`, `fcm_unregistered`.
    #[schema(min_length = 1, max_length = 200)]
    pub error_code: Option<String>,
    /// The provider of the last attempt (`smtp`, `twilio`, `fcm`, `apns`, ...).
    #[schema(min_length = 1, max_length = 200)]
    pub provider: Option<String>,
    /// Died at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Died before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

/// `GET /v1/admin/dead-letters`: the filter's fields and a page.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// A channel.
    pub channel: Option<String>,
    /// The last error's code, e.g. `smtp_550`.
    pub error_code: Option<String>,
    /// The last attempt's provider, e.g. `twilio`.
    pub provider: Option<String>,
    /// Died at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Died before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// 1..=200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl DeadLetterQuery {
    pub fn filter(&self) -> DeadLetterFilter {
        DeadLetterFilter {
            channel: self.channel.clone(),
            error_code: self.error_code.clone(),
            provider: self.provider.clone(),
            since: self.since,
            until: self.until,
        }
    }
}

/// `GET /v1/admin/attempts`: provider attempts in the order they were recorded.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttemptQuery {
    /// Recorded at or after (RFC 3339); without it and without `cursor`, from now on.
    pub since: Option<DateTime<Utc>>,
    /// 1..=500, default 100.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `cursor` of the previous answer: what was recorded after it.
    pub cursor: Option<String>,
}

/// One provider attempt with the delivery it belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptEvent {
    pub delivery_id: Uuid,
    pub notification_id: Uuid,
    pub channel: String,
    pub address: Option<String>,
    /// The delivery's status now (a later attempt may have moved it on).
    pub status: String,
    pub attempt: AttemptView,
    pub recorded_at: DateTime<Utc>,
}

/// Attempts recorded after a position, oldest first, and the position after them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptFeed {
    pub items: Vec<AttemptEvent>,
    /// Pass as `cursor` for what is recorded next; present on every answer, also an empty
    /// one, so a client can follow the feed.
    pub cursor: String,
}

/// Exactly one of `ids` (1..=1000) and `filter`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RedriveRequest)]
pub struct RedriveBody {
    #[schema(min_items = 1, max_items = 1000)]
    pub ids: Option<Vec<Uuid>>,
    pub filter: Option<DeadLetterFilter>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Redriven {
    /// Dead letters given a new attempt.
    pub redriven: u64,
    /// Ids given that were not (or no longer) dead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Uuid>,
    /// Dead letters not re-driven because their address is on the suppression list (the first
    /// 1,000; `refused_total` counts them all). They stay dead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 1000)]
    pub refused: Vec<RefusedRedrive>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refused_total: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A dead letter a re-drive left dead, and why.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RefusedRedrive {
    pub id: Uuid,
    /// `bounced` (hard bounce) or `complained`: lift it with
    /// `DELETE /v1/admin/suppressions/{id}` first if the address works again.
    #[schema(example = "bounced")]
    pub reason: String,
}

impl Redriven {
    /// Records that `id` was refused for `reason`.
    pub fn refuse(&mut self, id: Uuid, reason: &str) {
        self.refused_total += 1;
        if self.refused.len() < 1000 {
            self.refused.push(RefusedRedrive {
                id,
                reason: reason.to_owned(),
            });
        }
    }
}

/// One locale of a template (minijinja; HTML auto-escaped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateVariant {
    #[schema(example = "Your invoice {{ number }}")]
    pub subject: Option<String>,
    #[schema(example = "Invoice {{ number }} is ready.")]
    pub text: String,
    pub html: Option<String>,
    /// How a digest of sends of this template reads (`digest` on a send): rendered with
    /// `count`, `items` (each `{subject, text, data}`, the first 100), `first` and `last`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<DigestForm>,
}

/// A template's digest form (minijinja, like the variant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DigestForm {
    #[schema(example = "{{ count }} new comments")]
    pub subject: Option<String>,
    #[schema(example = "{% for i in items %}- {{ i.data.author }}: {{ i.text }}\n{% endfor %}")]
    pub text: String,
    pub html: Option<String>,
}

/// A template's variants by locale (`en`, `de-AT`, …).
pub type Locales = BTreeMap<String, TemplateVariant>;

/// `PUT /v1/admin/templates/{name}`: every variant must compile.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// At least one locale.
    pub locales: BTreeMap<String, TemplateVariant>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Template)]
pub struct TemplateView {
    pub name: String,
    pub locales: BTreeMap<String, TemplateVariant>,
}

/// `POST /v1/admin/template-preview`: one variant rendered with data; nothing is stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    as = TemplatePreviewRequest,
    example = json!({
        "variant": { "subject": "Your invoice {{ number }}", "text": "Invoice {{ number }} is ready." },
        "data": { "number": 42 }
    })
)]
pub struct PreviewBody {
    pub variant: TemplateVariant,
    /// The variables, as a notification's `data` carries them; `{}` when absent.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Option<serde_json::Value>,
}

/// What a recipient would get.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = TemplatePreview)]
pub struct Preview {
    pub subject: Option<String>,
    pub text: String,
    pub html: Option<String>,
}

/// An address that is not sent to any more.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Suppression {
    pub id: Uuid,
    #[schema(example = "email")]
    pub channel: String,
    pub address: String,
    /// `hard_bounce`, `complaint` or `soft_bounces`.
    #[schema(example = "hard_bounce")]
    pub reason: String,
    pub detail: Option<String>,
    pub created_at: DateTime<Utc>,
}

crate::page!(
    /// A page of suppressions.
    SuppressionPage of Suppression
);

/// `GET /v1/admin/suppressions`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SuppressionQuery {
    /// A channel.
    pub channel: Option<String>,
    /// One address (as stored: an email's domain lower-cased).
    pub address: Option<String>,
    /// 1..=200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// An event of `notify.events` that could never be handled (a welcome whose template does not
/// render, a message that does not decode): recorded and skipped so the rest flowed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SkippedEvent {
    pub id: i64,
    /// The topic as the deployment names it (with its prefix).
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// `user.registered`, `delivery.dead`, … (`unknown` when it did not decode).
    #[schema(example = "user.registered")]
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The message as it came (the first 4 KiB).
    pub payload: String,
    /// Why it could not be handled.
    pub error: String,
    pub skipped_at: DateTime<Utc>,
}

crate::page!(
    /// A page of skipped events, newest first.
    SkippedEventPage of SkippedEvent
);

/// `GET /v1/admin/skipped-events`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SkippedEventQuery {
    /// 1..=200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}
