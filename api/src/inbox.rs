//! The in-app inbox (decision 0029): channel `in_app` lands as an item in the user's inbox,
//! owned by notification-service. Users list and mark their items; every change to an inbox
//! takes the next number of that user's sequence, which the real-time stream
//! (`GET /v1/me/inbox/stream`, Server-Sent Events through the bff) carries as the event id,
//! so a reconnect with `Last-Event-ID` resumes with no gap and no duplicate.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// The lists of `GET /v1/me/inbox?status=` (absent: every item not archived).
pub const STATUSES: [&str; 3] = ["unread", "read", "archived"];
/// Most items one page of `GET /v1/me/inbox` holds.
pub const MAX_PAGE: i64 = 100;
/// Most changes one read of the change log answers (a stream reads again for more).
pub const MAX_EVENTS: i64 = 200;

/// `GET /v1/me/inbox`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboxQuery {
    /// `unread` (neither read nor archived), `read` (read, not archived) or `archived`;
    /// absent: every item not archived.
    #[param(value_type = Option<String>)]
    pub status: Option<String>,
    /// 1..=100, default 20.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One item of a user's inbox: an `in_app` delivery as the user sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InboxItem {
    /// The item (and its delivery's) id.
    pub id: Uuid,
    pub notification_id: Uuid,
    /// Its place in the user's inbox (newest highest).
    pub seq: i64,
    pub category: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub text: String,
    /// The send's `data` as the sender gave it (e.g. `{"url": ...}` for the item's action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clicked_at: Option<DateTime<Utc>>,
}

crate::page!(
    /// A page of inbox items, newest first.
    InboxPage of InboxItem
);

/// `GET /v1/me/inbox/counts`: kept with every change, never counted over the inbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InboxCounts {
    /// Items neither read nor archived.
    pub unread: i64,
    /// Items never seen (opening the feed marks them seen) and not archived.
    pub unseen: i64,
}

/// A mark one item can get (`POST /v1/me/inbox/{id}/{mark}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    Seen,
    Read,
    Archived,
    Clicked,
}

impl Mark {
    pub fn as_str(self) -> &'static str {
        match self {
            Mark::Seen => "seen",
            Mark::Read => "read",
            Mark::Archived => "archived",
            Mark::Clicked => "clicked",
        }
    }

    /// The path segment of the mark's route.
    pub fn parse_verb(s: &str) -> Option<Self> {
        match s {
            "seen" => Some(Mark::Seen),
            "read" => Some(Mark::Read),
            "archive" => Some(Mark::Archived),
            "click" => Some(Mark::Clicked),
            _ => None,
        }
    }
}

/// What a mark did: the item as it is now, and the counts after it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Marked {
    pub item: InboxItem,
    pub counts: InboxCounts,
}

/// One change to a user's inbox, as the stream sends it (`data` of an `inbox` event whose
/// `id` is `seq`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InboxEvent {
    /// The change's number in the user's sequence (the stream's event id).
    pub seq: i64,
    /// `new` (an item arrived), `seen`, `read`, `archived`, `clicked` (one item), `read_all`
    /// or `seen_all` (every item up to `seq`).
    #[schema(example = "new")]
    pub kind: String,
    /// The item as it is after the change (absent for `read_all` and `seen_all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<InboxItem>,
    /// The counts after the change.
    pub counts: InboxCounts,
    pub at: DateTime<Utc>,
}

/// `GET /v1/me/inbox/changes?after=N` (notification-service, for the bff's streams): the
/// changes after `N`, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InboxChanges {
    pub events: Vec<InboxEvent>,
    /// More changes follow the last one given (read again after it).
    pub more: bool,
    /// `after` is older than the changes still kept (or ahead of the user's sequence): the
    /// client reloads its list instead of replaying; `counts` and `last_seq` are current.
    pub reset: bool,
    pub counts: InboxCounts,
    /// The user's latest change.
    pub last_seq: i64,
}

/// `GET /v1/me/inbox/changes`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangesQuery {
    /// The last change the client has (0: from the start of what is kept; absent: none, only
    /// the counts and the latest change's number).
    pub after: Option<String>,
}

/// The Redis pub/sub channel [`InboxSignal`]s travel on: the deployment's key prefix +
/// `inbox` (notification-service publishes, every bff subscribes).
pub fn signal_channel(cfg: &common::redis::RedisConfig) -> String {
    cfg.key("inbox")
}

/// What notification-service publishes (Redis pub/sub) after a change to an inbox commits:
/// each bff's one subscription hands it to that user's open streams. `event` is left out when
/// it is large; a stream then reads the change log instead.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxSignal {
    pub user_id: Uuid,
    pub seq: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<InboxEvent>,
}
