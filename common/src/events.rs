//! The messages that travel over Kafka (schema 1). Free of sqlx and rdkafka so any crate can
//! use them. Topic names here are unprefixed; [`crate::kafka::KafkaConfig::topic`] adds the
//! deployment prefix.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// The version written into every message's `schema` field.
pub const SCHEMA: u32 = 1;

/// The provider name the Twilio-style SMS gateway reports in status events (and the attempt
/// log): the workers write it, receipts look attempts up by it.
pub const SMS_GATEWAY_PROVIDER: &str = "sms_gateway";

/// Status events from every worker.
pub const STATUS_TOPIC: &str = "notify.status";
/// Domain events (user registered, preferences changed).
pub const EVENTS_TOPIC: &str = "notify.events";
/// The steps of fan-outs to topics' subscribers (notification-service to itself: a split, then
/// one message per chunk, keyed so chunks spread over partitions and instances).
pub const FANOUT_TOPIC: &str = "notify.fanout";
/// The closes of digest windows (notification-service to itself, each due at its window's
/// end through the outbox).
pub const DIGEST_TOPIC: &str = "notify.digest";

/// A delivery channel.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Push,
    Webhook,
    Telegram,
    /// The user's in-app inbox (decision 0029): stored by notification-service, shown by the
    /// feed and its real-time stream. Silent, so quiet hours do not hold it back.
    InApp,
}

impl Channel {
    pub const ALL: [Channel; 6] = [
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::Webhook,
        Channel::Telegram,
        Channel::InApp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::Webhook => "webhook",
            Channel::Telegram => "telegram",
            Channel::InApp => "in_app",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Urgent traffic (OTP, security, `priority: high`) has its own topics and consumers so a bulk
/// backlog never delays it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Urgent,
    Bulk,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Urgent, Lane::Bulk];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Urgent => "urgent",
            Lane::Bulk => "bulk",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// A notification's priority: `high` takes the urgent lane and ignores quiet hours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// `TryFrom<String>` through each vocabulary's one parser, so a database column read with
/// `#[sqlx(try_from = "String")]` arrives typed.
macro_rules! parsed_from_string {
    ($($t:ty => $what:literal),* $(,)?) => {$(
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                Self::parse(&s).ok_or_else(|| format!(concat!("unknown ", $what, " {:?}"), s))
            }
        }
    )*};
}
parsed_from_string!(Channel => "channel", Lane => "lane", Priority => "priority");

/// `notify.dispatch.<channel>.<lane>`.
pub fn dispatch_topic(channel: Channel, lane: Lane) -> String {
    format!("notify.dispatch.{}.{}", channel.as_str(), lane.as_str())
}

/// Every topic the platform uses (unprefixed), for creating them up front.
pub fn all_topics() -> Vec<String> {
    let mut topics: Vec<String> = Channel::ALL
        .into_iter()
        .flat_map(|c| Lane::ALL.into_iter().map(move |l| dispatch_topic(c, l)))
        .collect();
    topics.push(STATUS_TOPIC.to_owned());
    topics.push(EVENTS_TOPIC.to_owned());
    topics.push(FANOUT_TOPIC.to_owned());
    topics.push(DIGEST_TOPIC.to_owned());
    topics
}

/// Who a dispatch goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    /// Channel address: email address, E.164 phone, push token, URL or chat id.
    pub address: String,
}

/// Rendered content: workers are pure transport.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// The value of a `notify.dispatch.*` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchMessage {
    pub schema: u32,
    pub delivery_id: Uuid,
    pub notification_id: Uuid,
    pub attempt: u32,
    pub channel: Channel,
    pub lane: Lane,
    pub recipient: RecipientRef,
    pub content: Content,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// What a provider attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Sent,
    TransientFailure,
    PermanentFailure,
    InvalidAddress,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Sent,
        Outcome::TransientFailure,
        Outcome::PermanentFailure,
        Outcome::InvalidAddress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::TransientFailure => "transient_failure",
            Outcome::PermanentFailure => "permanent_failure",
            Outcome::InvalidAddress => "invalid_address",
        }
    }
}

/// A provider's error, as reported by a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
}

/// The value of a `notify.status` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    pub schema: u32,
    pub delivery_id: Uuid,
    pub attempt: u32,
    pub channel: Channel,
    pub outcome: Outcome,
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// A provider's `Retry-After`, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    pub at: DateTime<Utc>,
    pub duration_ms: u64,
}

/// A value on `notify.events` (key = user id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DomainEvent {
    /// Someone wrote to the platform's Telegram bot (not a command it handles itself):
    /// users-service publishes it for whichever service answers such messages (seed 000).
    #[serde(rename = "telegram.message")]
    TelegramMessage {
        schema: u32,
        chat_id: String,
        /// The linked user, when the chat is linked to one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<Uuid>,
        message_id: i64,
        text: String,
        at: DateTime<Utc>,
    },
    /// A user was registered; notification-service sends the `welcome` notification.
    #[serde(rename = "user.registered")]
    UserRegistered {
        schema: u32,
        user_id: Uuid,
        at: DateTime<Utc>,
    },
    /// A user's contacts or preferences changed; cached delivery profiles are stale.
    #[serde(rename = "preferences.updated")]
    PreferencesUpdated {
        schema: u32,
        user_id: Uuid,
        at: DateTime<Utc>,
    },
    /// A push provider said this device token is dead (FCM `UNREGISTERED`, APNs 410...): the
    /// repeater publishes it when such a delivery ends; users-service removes the device.
    #[serde(rename = "device.invalidated")]
    DeviceInvalidated {
        schema: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<Uuid>,
        platform: Platform,
        token: String,
        /// The delivery whose attempt found out.
        delivery_id: Uuid,
        /// The provider's error code (`fcm_unregistered`, `apns_Unregistered`, ...).
        reason: String,
        at: DateTime<Utc>,
    },
    /// A delivery of a notification that asked for `fallback` ended `dead`: the repeater
    /// publishes it in the transaction that records the death; notification-service plans the
    /// next channel of the fallback list for the same recipient.
    #[serde(rename = "delivery.dead")]
    DeliveryDead {
        schema: u32,
        delivery_id: Uuid,
        notification_id: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<Uuid>,
        channel: Channel,
        /// `permanent_failure`, `invalid_address`, `attempts_exhausted`.
        reason: String,
        at: DateTime<Utc>,
    },
}

/// The consumer group of the workers of one channel and lane (unprefixed).
pub fn worker_group(channel: Channel, lane: Lane) -> String {
    format!("workers.{}.{}", channel.as_str(), lane.as_str())
}

/// The repeater's consumer group on [`STATUS_TOPIC`] (unprefixed).
pub const REPEATER_GROUP: &str = "repeater";

/// A push platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Fcm,
    Apns,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Fcm => "fcm",
            Platform::Apns => "apns",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fcm" => Some(Platform::Fcm),
            "apns" => Some(Platform::Apns),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_named_as_in_the_architecture() {
        assert_eq!(
            dispatch_topic(Channel::Email, Lane::Bulk),
            "notify.dispatch.email.bulk"
        );
        let all = all_topics();
        assert_eq!(all.len(), 16);
        assert!(all.contains(&"notify.dispatch.telegram.urgent".to_owned()));
        assert!(all.contains(&"notify.digest".to_owned()));
        assert!(all.contains(&"notify.dispatch.in_app.bulk".to_owned()));
    }

    #[test]
    fn status_event_wire_shape() {
        let ev = StatusEvent {
            schema: SCHEMA,
            delivery_id: Uuid::nil(),
            attempt: 1,
            channel: Channel::Email,
            outcome: Outcome::TransientFailure,
            provider: "smtp".into(),
            provider_message_id: None,
            error: Some(ErrorInfo {
                code: "smtp_451".into(),
                message: "later".into(),
            }),
            retry_after_ms: None,
            at: DateTime::from_timestamp(0, 0).unwrap(),
            duration_ms: 3,
        };
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["outcome"], "transient_failure");
        assert_eq!(v["channel"], "email");
        assert_eq!(v["schema"], 1);
    }
}
