//! Topics: named groups of users one send can address (`{"topic": key}`), owned by
//! users-service (decision 0028). Services and admins manage subscribers in bulk; users follow
//! and unfollow open topics themselves; notification-service reads a topic's subscribers a
//! chunk at a time, with their delivery profiles, to fan a send out.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::profiles::DeliveryProfile;

/// Most user ids one `PUT`/`DELETE /v1/topics/{key}/subscribers` may carry.
pub const MAX_SUBSCRIBERS_PER_CALL: usize = 10_000;
/// The largest body of a subscribers call (10,000 ids, with room for whitespace).
pub const MAX_SUBSCRIBERS_BYTES: usize = 1024 * 1024;
/// Most topic keys one `PUT`/`DELETE /v1/me/topics` may carry.
pub const MAX_KEYS_PER_CALL: usize = 100;
/// Most topics one user may follow.
pub const MAX_TOPICS_PER_USER: i64 = 1_000;
/// Most characters of a topic's display name.
pub const MAX_NAME_CHARS: usize = 200;

/// `PUT /v1/topics/{key}`: creates the topic or changes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicBody {
    /// What users see in the preference center (at most 200 characters).
    #[schema(example = "Project Apollo", max_length = 200)]
    pub name: Option<String>,
    /// Users may follow it themselves (`PUT /v1/me/topics`). Closed topics (the default) get
    /// subscribers only from services and admins; a user can always leave one.
    pub open: Option<bool>,
}

/// A topic.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Topic)]
pub struct TopicView {
    #[schema(example = "project.apollo")]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub open: bool,
    /// Its subscribers now.
    pub subscribers: i64,
    pub created_at: DateTime<Utc>,
}

/// `PUT`/`DELETE /v1/topics/{key}/subscribers`: 1 to 10,000 user ids.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribersBody {
    #[schema(min_items = 1, max_items = 10000)]
    pub user_ids: Vec<Uuid>,
}

/// What a change of subscribers did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubscribersChanged {
    /// Subscriptions added (or removed); ids already in that state are not counted.
    pub changed: u64,
    /// The topic's subscribers after the change.
    pub subscribers: i64,
}

/// `PUT`/`DELETE /v1/me/topics`: 1 to 100 topic keys.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicKeysBody {
    #[schema(min_items = 1, max_items = 100)]
    pub keys: Vec<String>,
}

/// A topic as one user sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MyTopic {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Open topics can be followed; the user can leave any topic they follow.
    pub open: bool,
    pub following: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followed_at: Option<DateTime<Utc>>,
}

/// `GET /v1/me/topics`: every topic the user follows, then the open topics they do not (by
/// key, at most 200 of them).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MyTopics {
    pub topics: Vec<MyTopic>,
}

/// Most open topics `GET /v1/me/topics` offers besides those followed.
pub const MAX_OFFERED_TOPICS: i64 = 200;

/// `GET /v1/admin/topics`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopicQuery {
    /// 1..=200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

crate::page!(
    /// A page of topics, by key.
    TopicPage of TopicView
);

/// users-service's internal answer about a topic (`GET /internal/v1/topics/{key}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicInfo {
    pub key: String,
    pub subscribers: i64,
}

/// `POST /internal/v1/topics/{key}/bounds`: how a fan-out splits the topic's subscribers as of
/// `as_of` into ranges of `every` users.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoundsRequest {
    pub as_of: DateTime<Utc>,
    pub every: u32,
}

/// The subscribers as of the request's instant, and every `every`-th user id in id order:
/// chunk `i` is `(bounds[i-1], bounds[i]]`, the last one open-ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bounds {
    pub subscribers: i64,
    pub bounds: Vec<Uuid>,
}

/// `POST /internal/v1/topics/{key}/chunk`: the subscribers with `after < user_id <= until`
/// who subscribed at or before `as_of` and still are, but those in `exclude`, with their
/// delivery profiles.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkRequest {
    pub as_of: DateTime<Utc>,
    pub after: Option<Uuid>,
    pub until: Option<Uuid>,
    #[serde(default)]
    pub exclude: Vec<Uuid>,
}

/// Most subscribers one chunk answer may hold (a chunk is at most a split's `every`; this
/// bounds the answer whatever happens meanwhile).
pub const MAX_CHUNK: usize = 5_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chunk {
    pub profiles: Vec<DeliveryProfile>,
}
