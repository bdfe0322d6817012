//! Planning: which deliveries a validated request becomes.
//!
//! Per recipient: requested channels (or every enabled channel) × the contacts the user has.
//! What is left out is still a delivery, `suppressed` with its reason, so an admin can always
//! see why nothing was sent. (Preferences, quiet hours and mandatory categories arrive with
//! the users issue; the shape here is where they plug in.)

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use common::events::{Channel, DeliveryProfile, Lane};
use uuid::Uuid;

use crate::{
    config::PlanningConfig,
    request::{Priority, Recipient, SendRequest},
};

/// A delivery's status (the `deliveries.status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlannedStatus {
    /// Waiting for `send_at`.
    Pending,
    /// Handed to the outbox for dispatch now.
    Queued,
    /// Not sent, for `reason`.
    Suppressed,
}

impl PlannedStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PlannedStatus::Pending => "pending",
            PlannedStatus::Queued => "queued",
            PlannedStatus::Suppressed => "suppressed",
        }
    }
}

/// One planned delivery.
#[derive(Debug, Clone)]
pub struct PlannedDelivery {
    pub id: Uuid,
    pub channel: Channel,
    pub lane: Lane,
    pub user_id: Option<Uuid>,
    pub recipient: serde_json::Value,
    pub address: Option<String>,
    pub status: PlannedStatus,
    pub reason: Option<&'static str>,
    pub locale: Option<String>,
}

/// The lane of a notification.
pub fn lane(req: &SendRequest, cfg: &PlanningConfig) -> Lane {
    if req.priority == Priority::High || cfg.urgent_categories.contains(&req.category) {
        Lane::Urgent
    } else {
        Lane::Bulk
    }
}

/// Plans every delivery of `req`. `profiles` holds the users that exist.
pub fn plan(
    req: &SendRequest,
    profiles: &HashMap<Uuid, DeliveryProfile>,
    cfg: &PlanningConfig,
    now: DateTime<Utc>,
) -> Vec<PlannedDelivery> {
    let lane = lane(req, cfg);
    let live = if req.send_at.is_some_and(|at| at > now) {
        PlannedStatus::Pending
    } else {
        PlannedStatus::Queued
    };
    let channels: &[Channel] = req.channels.as_deref().unwrap_or(&cfg.enabled_channels);
    let mut out = Vec::new();
    for recipient in &req.recipients {
        let base =
            |channel, user_id, address: Option<String>, reason: Option<&'static str>, locale| {
                PlannedDelivery {
                    id: Uuid::now_v7(),
                    channel,
                    lane,
                    user_id,
                    recipient: recipient.to_json(),
                    status: if reason.is_some() || address.is_none() {
                        PlannedStatus::Suppressed
                    } else {
                        live
                    },
                    reason: reason.or(if address.is_none() {
                        Some("no_contact")
                    } else {
                        None
                    }),
                    address,
                    locale,
                }
            };
        match recipient {
            Recipient::Email(email) => {
                out.push(base(Channel::Email, None, Some(email.clone()), None, None))
            }
            Recipient::User(id) => match profiles.get(id) {
                None => {
                    for &c in channels {
                        out.push(base(c, Some(*id), None, Some("unknown_user"), None));
                    }
                }
                Some(profile) => {
                    for &c in channels {
                        let address = match c {
                            Channel::Email => profile.contacts.email.clone(),
                            Channel::Sms => profile.contacts.phone.clone(),
                            Channel::Telegram => profile.contacts.telegram_chat_id.clone(),
                            Channel::Push | Channel::Webhook => None,
                        };
                        out.push(base(
                            c,
                            Some(*id),
                            address,
                            None,
                            Some(profile.locale.clone()),
                        ));
                    }
                }
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use common::events::{Contacts, Content};

    use super::*;

    fn req(recipients: Vec<Recipient>, priority: Priority) -> SendRequest {
        SendRequest {
            recipients,
            category: "billing".into(),
            priority,
            channels: None,
            content: Content {
                subject: None,
                text: "hi".into(),
                html: None,
                data: None,
            },
            send_at: None,
            ttl_seconds: None,
        }
    }

    #[test]
    fn users_without_an_address_or_unknown_are_suppressed_with_a_reason() {
        let cfg = PlanningConfig::default();
        let (with, without, unknown) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let profile = |id, email: Option<&str>| DeliveryProfile {
            user_id: id,
            locale: "de".into(),
            timezone: "UTC".into(),
            contacts: Contacts {
                email: email.map(Into::into),
                ..Default::default()
            },
        };
        let profiles = HashMap::from([
            (with, profile(with, Some("a@b.co"))),
            (without, profile(without, None)),
        ]);
        let r = req(
            vec![
                Recipient::User(with),
                Recipient::User(without),
                Recipient::User(unknown),
                Recipient::Email("x@y.co".into()),
            ],
            Priority::Normal,
        );
        let plan = plan(&r, &profiles, &cfg, Utc::now());
        let summary: Vec<_> = plan
            .iter()
            .map(|d| (d.status, d.reason, d.address.as_deref()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (PlannedStatus::Queued, None, Some("a@b.co")),
                (PlannedStatus::Suppressed, Some("no_contact"), None),
                (PlannedStatus::Suppressed, Some("unknown_user"), None),
                (PlannedStatus::Queued, None, Some("x@y.co")),
            ]
        );
        assert!(plan.iter().all(|d| d.lane == Lane::Bulk));
    }

    #[test]
    fn high_priority_and_security_take_the_urgent_lane() {
        let cfg = PlanningConfig::default();
        assert_eq!(lane(&req(vec![], Priority::High), &cfg), Lane::Urgent);
        let mut r = req(vec![], Priority::Low);
        r.category = "security".into();
        assert_eq!(lane(&r, &cfg), Lane::Urgent);
    }
}
