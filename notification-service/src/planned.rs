//! A notification as planned, before it is written: what its deliveries' first dispatch
//! messages are made of, and the answer to `POST /v1/notifications` without a second read.

use api::notifications::{DeliveryCounts, DeliveryView, INLINE_DELIVERIES, NotificationView};
use chrono::{DateTime, Utc};
use common::outbox::OutboxMessage;
use uuid::Uuid;

use crate::{
    planning::{PlannedDelivery, PlannedStatus},
    request::SendRequest,
    views::notification_status_counted,
};

/// A notification as planned, ready to write.
pub struct NewNotification<'a> {
    pub id: Uuid,
    pub created_by: &'a str,
    pub request: &'a SendRequest,
    pub deliveries: &'a [PlannedDelivery],
    pub created_at: DateTime<Utc>,
}

impl<'a> NewNotification<'a> {
    /// What attempt 1 of `d`'s dispatch message is made of.
    pub fn dispatch(&self, d: &'a PlannedDelivery) -> delivery::dispatch::DispatchParts<'a> {
        delivery::dispatch::DispatchParts {
            delivery_id: d.id,
            notification_id: self.id,
            attempt: 1,
            channel: d.channel,
            lane: d.lane,
            user_id: d.user_id,
            address: d.address.as_deref(),
            locale: d.locale.as_deref(),
            content: &self.request.content,
            localized: self.request.localized.as_ref(),
            created_at: self.created_at,
            send_at: self.request.send_at,
            ttl_seconds: self.request.ttl_seconds,
        }
    }

    /// The response body of `POST /v1/notifications`, without a second read: every delivery
    /// counted, the first [`INLINE_DELIVERIES`] (in id order) inline.
    pub fn view(&self) -> NotificationView {
        let mut delivery_counts = DeliveryCounts::default();
        for d in self.deliveries {
            delivery_counts.add(d.channel.as_str(), d.status.as_str(), 1);
        }
        let mut first: Vec<&PlannedDelivery> = self.deliveries.iter().collect();
        first.sort_unstable_by_key(|d| d.id);
        let more = first.len() > INLINE_DELIVERIES;
        first.truncate(INLINE_DELIVERIES);
        let deliveries: Vec<DeliveryView> = first
            .into_iter()
            .map(|d| DeliveryView {
                id: d.id,
                notification_id: self.id,
                channel: d.channel.as_str().into(),
                lane: d.lane.as_str().into(),
                recipient: d.recipient.clone(),
                address: d.address.clone(),
                status: d.status.as_str().into(),
                reason: d.reason.map(Into::into),
                attempts: 0,
                last_error: None,
                last_attempt: None,
                created_at: self.created_at,
                updated_at: self.created_at,
                sent_at: None,
                fallback_of: None,
                digest: None,
            })
            .collect();
        let deliveries_next_cursor = more
            .then(|| deliveries.last().map(|d| d.id.to_string()))
            .flatten();
        NotificationView {
            id: self.id,
            status: notification_status_counted(
                delivery_counts
                    .by_status
                    .iter()
                    .map(|(s, n)| (s.as_str(), *n)),
            )
            .into(),
            category: self.request.category.clone(),
            priority: self.request.priority.as_str().into(),
            created_at: self.created_at,
            send_at: self.request.send_at,
            delivery_counts,
            deliveries,
            deliveries_next_cursor,
            fanout: None,
            digest: None,
        }
    }
}

/// The outbox rows of `n`'s deliveries to dispatch, with the current request's id and trace
/// in their headers. Their content is left out (the notification stores it once): the relay
/// fills it in before publishing (`crate::stored_content`).
pub fn dispatch_rows(n: &NewNotification<'_>) -> anyhow::Result<Vec<OutboxMessage>> {
    n.deliveries
        .iter()
        .filter(|d| {
            !matches!(
                d.status,
                PlannedStatus::Suppressed | PlannedStatus::Digested
            )
        })
        .map(|d| {
            Ok(n.dispatch(d)
                .row_by_reference()?
                .available_at(d.available_at))
        })
        .collect()
}

/// A send to a topic, as accepted: what its fan-out reads and how it is planned
/// (`crate::fanout`). Written with the notification, with its first step's message.
#[derive(Debug, Clone)]
pub struct NewFanout {
    pub topic: String,
    /// The send's channels (`None`: every channel each user allows).
    pub channels: Option<Vec<common::events::Channel>>,
    /// Users the send also names directly: they are reached once, by that.
    pub exclude: Vec<Uuid>,
    /// The subscribers as of this instant (acceptance) are reached.
    pub as_of: DateTime<Utc>,
}

/// A step of a fan-out, the value of a `notify.fanout` message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FanoutStep {
    pub schema: u32,
    pub notification_id: Uuid,
    #[serde(flatten)]
    pub step: Step,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Count the subscribers as of acceptance and split them into chunks.
    Split,
    /// Plan the subscribers with `after < user_id <= until` (open-ended where absent).
    Chunk {
        index: i32,
        after: Option<Uuid>,
        until: Option<Uuid>,
    },
}

impl FanoutStep {
    /// The outbox row of this step: keyed by notification and chunk, so the chunks of one
    /// fan-out spread over the topic's partitions (and the instances consuming them).
    pub fn row(&self) -> anyhow::Result<OutboxMessage> {
        let key = match &self.step {
            Step::Split => self.notification_id.to_string(),
            Step::Chunk { index, .. } => format!("{}:{index}", self.notification_id),
        };
        OutboxMessage::new(common::events::FANOUT_TOPIC, key, self)
    }
}
