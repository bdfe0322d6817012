//! users-service's internal contract: `POST /internal/v1/profiles/batch`, what
//! notification-service plans deliveries from.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use common::events::{Channel, Platform};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ProfilesRequest {
    pub user_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ProfilesResponse {
    /// Profiles of the users that exist; unknown ids are left out.
    pub profiles: Vec<DeliveryProfile>,
}

/// A user's delivery profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryProfile {
    pub user_id: Uuid,
    pub locale: String,
    pub timezone: String,
    pub contacts: Contacts,
    #[serde(default)]
    pub devices: Vec<Device>,
    #[serde(default)]
    pub preferences: Preferences,
    /// Categories whose notifications ignore opt-outs (users-service's configuration).
    #[serde(default)]
    pub mandatory_categories: Vec<String>,
}

/// A registered push device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Device {
    pub id: Uuid,
    pub platform: Platform,
    pub token: String,
    pub created_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// How a user wants to be reached. A channel or category × channel that is absent is on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    #[serde(default)]
    pub channels: BTreeMap<Channel, bool>,
    #[serde(default)]
    pub categories: BTreeMap<String, BTreeMap<Channel, bool>>,
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
}

impl Preferences {
    /// Whether the user accepts `category` on `channel` (mandatory categories aside).
    pub fn allows(&self, category: &str, channel: Channel) -> bool {
        self.channels.get(&channel).copied().unwrap_or(true)
            && self
                .categories
                .get(category)
                .and_then(|c| c.get(&channel))
                .copied()
                .unwrap_or(true)
    }
}

/// A daily do-not-disturb window in the user's zone; `start > end` crosses midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuietHours {
    /// `HH:MM`, 24 h.
    #[schema(example = "22:00")]
    pub start: String,
    /// `HH:MM`, 24 h.
    #[schema(example = "07:00")]
    pub end: String,
    /// IANA zone.
    #[schema(example = "Europe/Berlin")]
    pub timezone: String,
}

/// A user's addresses, normalised.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Contacts {
    pub email: Option<String>,
    /// E.164.
    #[schema(example = "+4930123456")]
    pub phone: Option<String>,
    pub telegram_chat_id: Option<String>,
}
