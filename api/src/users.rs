//! `POST /v1/users` and `/v1/me…`: registration, contacts, preferences, devices.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use common::events::Channel;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::profiles::{Contacts, Device, QuietHours};

/// Registration body; every field optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterUser {
    pub email: Option<String>,
    /// E.164.
    #[schema(example = "+4930123456")]
    pub phone: Option<String>,
    /// Admins only (a service gets 403): users link their own chat through the bot
    /// (`POST /v1/me/telegram/link`). A chat belongs to one user (409 `telegram_chat_taken`).
    #[schema(pattern = "^-?[0-9]{1,31}$")]
    pub telegram_chat_id: Option<String>,
    /// A BCP 47 language tag.
    #[schema(example = "de-AT")]
    pub locale: Option<String>,
    /// An IANA zone.
    #[schema(example = "Europe/Berlin")]
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    pub user_id: Uuid,
}

/// The whole contact set; an absent field is cleared.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactsBody {
    pub email: Option<String>,
    /// E.164.
    #[schema(example = "+4930123456")]
    pub phone: Option<String>,
    /// The chat linked through the bot (`POST /v1/me/telegram/link`): send it back to keep
    /// it, null or absent to unlink. Any other chat id is refused (409
    /// `telegram_chat_not_linked`): a chat is claimed
    /// only by proving it holds the link code.
    #[schema(pattern = "^-?[0-9]{1,31}$")]
    pub telegram_chat_id: Option<String>,
}

/// Preferences as the API shows them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PreferencesView {
    pub channels: BTreeMap<Channel, bool>,
    pub categories: BTreeMap<String, BTreeMap<Channel, bool>>,
    pub quiet_hours: Option<QuietHours>,
    pub locale: String,
    /// Categories delivered whatever the opt-outs say (security alerts, OTP).
    pub mandatory_categories: Vec<String>,
}

/// The whole preference document; absent switches mean "on", absent `quiet_hours` means none,
/// absent `locale` keeps the current one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PreferencesUpdate)]
pub struct PreferencesBody {
    #[serde(default)]
    #[schema(example = json!({"email": true, "sms": false}))]
    pub channels: BTreeMap<String, bool>,
    #[serde(default)]
    #[schema(example = json!({"marketing": {"email": false}}))]
    pub categories: BTreeMap<String, BTreeMap<String, bool>>,
    pub quiet_hours: Option<QuietHoursBody>,
    pub locale: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursBody {
    /// `HH:MM`, 24 h.
    #[schema(example = "22:00")]
    pub start: String,
    /// `HH:MM`, 24 h; the same as `start` is an empty window (never quiet).
    #[schema(example = "07:00")]
    pub end: String,
    /// An IANA zone.
    #[schema(example = "Europe/Berlin")]
    pub timezone: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceList {
    pub items: Vec<Device>,
}

/// A push token to register.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DeviceRequest)]
pub struct DeviceBody {
    #[schema(example = "fcm", pattern = "^(fcm|apns)$")]
    pub platform: String,
    #[schema(min_length = 1, max_length = 4096)]
    pub token: String,
}

/// `GET /v1/me`: profile, contacts, devices and preferences in one response (the bff puts
/// it together from four users-service reads).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub user_id: Uuid,
    pub locale: String,
    pub timezone: String,
    pub created_at: DateTime<Utc>,
    pub contacts: Contacts,
    pub devices: Vec<Device>,
    pub preferences: PreferencesView,
}

/// `GET /v1/me/profile`: the user's own record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Profile {
    pub user_id: Uuid,
    pub locale: String,
    pub timezone: String,
    pub created_at: DateTime<Utc>,
}

/// A one-time code that links a Telegram chat to the user (`POST /v1/me/telegram/link`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TelegramLink {
    /// Send `/start <code>` to the bot, or open `deep_link`.
    pub code: String,
    /// `https://t.me/<bot>?start=<code>`.
    pub deep_link: String,
    /// The code works once, until then.
    pub expires_at: DateTime<Utc>,
}
