//! Planning: which deliveries a validated request becomes.
//!
//! Per recipient: requested channels (or every enabled channel) ∩ channels the user enabled
//! for the category (mandatory categories ignore opt-outs) ∩ contacts the user has. What is
//! left out is still a delivery, `suppressed` with its reason (`no_contact`, `opted_out`,
//! `unknown_user`), so an admin can always see why nothing was sent. Quiet hours defer
//! `normal`/`low` deliveries to the end of the window (`pending` until then); `high` bypasses
//! them, and so does `in_app` (silent: an item waits in the inbox anyway).

use std::collections::HashMap;

use api::profiles::DeliveryProfile;
use chrono::{DateTime, Utc};
use common::events::{Channel, Lane};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    quiet_hours::quiet_until,
    request::{Priority, Recipient, SendRequest},
};

/// Planning rules that are deployment choices.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PlanningConfig {
    /// Channels this deployment delivers. Requests naming another channel get 422 instead of
    /// deliveries no worker would ever send.
    pub enabled_channels: Vec<Channel>,
    /// Categories that always take the urgent lane (besides `priority: high`).
    pub urgent_categories: Vec<String>,
    /// Templates fall back to this locale.
    pub default_locale: String,
    /// The deployment's frequency cap: at most `limit` deliveries per user and channel per
    /// `window` in every category (urgent and mandatory ones exempt). None: no cap.
    pub cap: Option<api::digests::CapBody>,
    /// How long an instance keeps the category rules before reading them again.
    pub rules_cache_ms: u64,
}

impl PlanningConfig {
    /// Refuses settings that cannot be applied (at start, before anything is accepted).
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(cap) = &self.cap {
            cap.check()
                .map_err(|(field, why)| anyhow::anyhow!("planning.cap.{field} {why}"))?;
        }
        Ok(())
    }

    /// The deployment's cap, parsed (checked at start).
    pub fn cap(&self) -> Option<crate::request::Cap> {
        let (limit, window_seconds) = self.cap.as_ref()?.check().ok()?;
        Some(crate::request::Cap {
            limit,
            window_seconds,
        })
    }
}

impl Default for PlanningConfig {
    fn default() -> Self {
        Self {
            enabled_channels: vec![Channel::Email],
            urgent_categories: vec!["security".into(), "otp".into()],
            default_locale: "en".into(),
            cap: None,
            rules_cache_ms: 2000,
        }
    }
}

/// The status a delivery is planned in (the lifecycle crate's).
pub use delivery::insert::Start as PlannedStatus;

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
    /// Not dispatched before this instant (`send_at`, or the end of quiet hours).
    pub available_at: Option<DateTime<Utc>>,
}

/// The lane of a notification.
pub fn lane(req: &SendRequest, cfg: &PlanningConfig) -> Lane {
    if req.priority == Priority::High || cfg.urgent_categories.contains(&req.category) {
        Lane::Urgent
    } else {
        Lane::Bulk
    }
}

/// The locales a template request is rendered in: those of the deliveries that will be sent.
pub fn locales_to_render(deliveries: &[PlannedDelivery]) -> Vec<Option<&str>> {
    deliveries
        .iter()
        .filter(|d| d.status != PlannedStatus::Suppressed)
        .map(|d| d.locale.as_deref())
        .collect()
}

/// Plans every delivery of `req`. `profiles` holds the users that exist.
pub fn plan(
    req: &SendRequest,
    profiles: &HashMap<Uuid, DeliveryProfile>,
    cfg: &PlanningConfig,
    now: DateTime<Utc>,
) -> Vec<PlannedDelivery> {
    let lane = lane(req, cfg);
    let at = req.send_at.filter(|at| *at > now);
    let channels: &[Channel] = req.channels.as_deref().unwrap_or(&cfg.enabled_channels);
    let mut out = Vec::new();
    for recipient in &req.recipients {
        let delivery = |channel,
                        user_id,
                        address: Option<String>,
                        reason: Option<&'static str>,
                        profile: Option<&DeliveryProfile>| {
            let reason = reason.or(if address.is_none() {
                Some("no_contact")
            } else {
                None
            });
            // In-app items are silent: quiet hours do not hold them back.
            let quiet_end = profile
                .filter(|_| {
                    reason.is_none() && req.priority != Priority::High && channel != Channel::InApp
                })
                .and_then(|p| p.preferences.quiet_hours.as_ref())
                .and_then(|q| quiet_until(q, at.unwrap_or(now)));
            let available_at = quiet_end.or(at);
            PlannedDelivery {
                id: Uuid::now_v7(),
                channel,
                lane,
                user_id,
                recipient: recipient.to_json(),
                status: match (reason, available_at) {
                    (Some(_), _) => PlannedStatus::Suppressed,
                    (None, Some(_)) => PlannedStatus::Pending,
                    (None, None) => PlannedStatus::Queued,
                },
                reason,
                address,
                locale: profile.map(|p| p.locale.clone()),
                available_at: if reason.is_some() { None } else { available_at },
            }
        };
        match recipient {
            Recipient::Email(address)
            | Recipient::Phone(address)
            | Recipient::Webhook(address)
            | Recipient::Telegram(address) => {
                let channel = recipient.channel().expect("raw recipients have a channel");
                out.push(delivery(channel, None, Some(address.clone()), None, None));
            }
            // Push addresses carry the platform: `fcm:<token>` / `apns:<token>`.
            Recipient::Device { platform, token } => {
                let address = format!("{}:{token}", platform.as_str());
                out.push(delivery(Channel::Push, None, Some(address), None, None));
            }
            // Its subscribers are planned chunk by chunk (`crate::fanout`).
            Recipient::Topic(_) => {}
            Recipient::Invalid { channel, .. } => out.push(delivery(
                *channel,
                None,
                None,
                Some("invalid_address"),
                None,
            )),
            Recipient::User(id) => match profiles.get(id) {
                None => {
                    for &c in channels {
                        out.push(delivery(c, Some(*id), None, Some("unknown_user"), None));
                    }
                }
                Some(profile) => {
                    let mandatory = profile.mandatory_categories.contains(&req.category);
                    for &c in channels {
                        let opted_out = !mandatory && !profile.preferences.allows(&req.category, c);
                        // Push fans out to every registered device (none: `no_contact`).
                        if c == Channel::Push && !profile.devices.is_empty() {
                            for device in &profile.devices {
                                let address = common::address::PushAddress {
                                    platform: device.platform,
                                    token: device.token.clone(),
                                }
                                .to_string();
                                let reason = opted_out.then_some("opted_out");
                                out.push(delivery(
                                    c,
                                    Some(*id),
                                    Some(address),
                                    reason,
                                    Some(profile),
                                ));
                            }
                            continue;
                        }
                        let address = match c {
                            Channel::Email => profile.contacts.email.clone(),
                            Channel::Sms => profile.contacts.phone.clone(),
                            Channel::Telegram => profile.contacts.telegram_chat_id.clone(),
                            // Every user has an inbox: its address is the user.
                            Channel::InApp => Some(id.to_string()),
                            Channel::Push | Channel::Webhook => None,
                        };
                        let reason = (opted_out && address.is_some()).then_some("opted_out");
                        out.push(delivery(c, Some(*id), address, reason, Some(profile)));
                    }
                }
            },
        }
    }
    out
}

/// The most content one request may plan, summed over its deliveries (each dispatch message
/// carries the content): 1,000 recipients × 5 channels × a large HTML mail would otherwise
/// write gigabytes in one transaction.
pub const MAX_PLANNED_BYTES: usize = 32_000_000;

/// The content bytes `deliveries` will carry (suppressed ones carry none).
pub fn planned_bytes(req: &SendRequest, deliveries: &[PlannedDelivery]) -> usize {
    deliveries
        .iter()
        .filter(|d| d.status != PlannedStatus::Suppressed)
        .map(|d| {
            let c = delivery::dispatch::content_for(
                &req.content,
                req.localized.as_ref(),
                d.locale.as_deref(),
            );
            c.text.len()
                + c.html.as_ref().map_or(0, String::len)
                + c.subject.as_ref().map_or(0, String::len)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use api::profiles::{Contacts, Preferences, QuietHours};

    use super::*;

    fn profile(id: Uuid, email: Option<&str>, preferences: Preferences) -> DeliveryProfile {
        DeliveryProfile {
            user_id: id,
            locale: "de".into(),
            timezone: "UTC".into(),
            contacts: Contacts {
                email: email.map(Into::into),
                ..Default::default()
            },
            devices: vec![],
            preferences,
            mandatory_categories: vec!["security".into()],
        }
    }

    #[test]
    fn push_fans_out_to_every_device_and_respects_opt_outs() {
        let cfg = PlanningConfig::default();
        let id = Uuid::new_v4();
        let device = |platform, token: &str| api::profiles::Device {
            id: Uuid::new_v4(),
            platform,
            token: token.into(),
            created_at: Utc::now(),
            last_seen: Utc::now(),
        };
        let mut p = profile(id, None, Preferences::default());
        p.devices = vec![
            device(common::events::Platform::Fcm, "f1"),
            device(common::events::Platform::Apns, "a1"),
        ];
        let mut profiles = HashMap::from([(id, p)]);
        let mut r = req(vec![Recipient::User(id)], Priority::Normal);
        r.channels = Some(vec![Channel::Push]);
        let planned = plan(&r, &profiles, &cfg, Utc::now());
        let rows: Vec<_> = planned
            .iter()
            .map(|d| (d.address.as_deref(), d.status, d.reason))
            .collect();
        assert_eq!(
            rows,
            vec![
                (Some("fcm:f1"), PlannedStatus::Queued, None),
                (Some("apns:a1"), PlannedStatus::Queued, None),
            ]
        );

        let prof = profiles.get_mut(&id).unwrap();
        prof.preferences.channels = [(Channel::Push, false)].into();
        let planned = plan(&r, &profiles, &cfg, Utc::now());
        assert!(planned.iter().all(|d| d.reason == Some("opted_out")));

        profiles.get_mut(&id).unwrap().devices.clear();
        let planned = plan(&r, &profiles, &cfg, Utc::now());
        assert_eq!((planned.len(), planned[0].reason), (1, Some("no_contact")));
    }

    #[test]
    fn opt_outs_suppress_except_for_mandatory_categories() {
        let cfg = PlanningConfig::default();
        let id = Uuid::new_v4();
        let prefs = Preferences {
            channels: [(Channel::Email, false)].into(),
            ..Default::default()
        };
        let profiles = HashMap::from([(id, profile(id, Some("a@b.co"), prefs))]);
        let mut r = req(vec![Recipient::User(id)], Priority::Normal);
        let p = plan(&r, &profiles, &cfg, Utc::now());
        assert_eq!(
            (p[0].status, p[0].reason),
            (PlannedStatus::Suppressed, Some("opted_out"))
        );
        r.category = "security".into();
        let p = plan(&r, &profiles, &cfg, Utc::now());
        assert_eq!((p[0].status, p[0].reason), (PlannedStatus::Queued, None));

        let by_category = Preferences {
            categories: [("billing".to_owned(), [(Channel::Email, false)].into())].into(),
            ..Default::default()
        };
        let profiles = HashMap::from([(id, profile(id, Some("a@b.co"), by_category))]);
        r.category = "billing".into();
        assert_eq!(
            plan(&r, &profiles, &cfg, Utc::now())[0].reason,
            Some("opted_out")
        );
        r.category = "news".into();
        assert_eq!(plan(&r, &profiles, &cfg, Utc::now())[0].reason, None);
    }

    #[test]
    fn quiet_hours_defer_normal_but_not_high_priority() {
        let cfg = PlanningConfig::default();
        let id = Uuid::new_v4();
        let prefs = Preferences {
            quiet_hours: Some(QuietHours {
                start: "22:00".into(),
                end: "07:00".into(),
                timezone: "UTC".into(),
            }),
            ..Default::default()
        };
        let profiles = HashMap::from([(id, profile(id, Some("a@b.co"), prefs))]);
        let night = DateTime::parse_from_rfc3339("2026-01-10T23:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let p = plan(
            &req(vec![Recipient::User(id)], Priority::Normal),
            &profiles,
            &cfg,
            night,
        );
        assert_eq!(p[0].status, PlannedStatus::Pending);
        assert_eq!(
            p[0].available_at.unwrap().to_rfc3339(),
            "2026-01-11T07:00:00+00:00"
        );
        let p = plan(
            &req(vec![Recipient::User(id)], Priority::High),
            &profiles,
            &cfg,
            night,
        );
        assert_eq!(
            (p[0].status, p[0].available_at),
            (PlannedStatus::Queued, None)
        );
    }

    fn req(recipients: Vec<Recipient>, priority: Priority) -> SendRequest {
        let mut r = crate::request::tests_support::request("billing");
        r.recipients = recipients;
        r.priority = priority;
        r
    }

    #[test]
    fn users_without_an_address_or_unknown_are_suppressed_with_a_reason() {
        let cfg = PlanningConfig::default();
        let (with, without, unknown) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let profile = |id, email: Option<&str>| profile(id, email, Preferences::default());
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
