//! The re-check before an attempt (decision 0026): the outbox relay's [`Gate`] for `notify`,
//! which first puts back the content of dispatches written without it
//! (`crate::stored_content`).
//!
//! Planning decided a delivery with what was true at intake. A retry (attempt 2 and later, an
//! admin re-drive, a stuck-scan re-drive) or a deferred first attempt (a scheduled send, quiet
//! hours) goes out minutes or hours later, when the address may have bounced, the user may
//! have opted out, removed the device or changed the address. So just before such a dispatch is
//! published, it is checked again, with what planning uses:
//!
//! - the suppression list (hard bounces, complaints) → `suppressed` / `bounced` | `complained`;
//! - a user's profile (users-service through the Redis cache that `preferences.updated`
//!   evicts, the same one planning reads): gone → `unknown_user`; the category × channel
//!   switched off (not a mandatory category) → `opted_out`; no address for the channel any
//!   more → `no_contact`; the push device removed → `device_removed`; a different address →
//!   the attempt goes to the new one (the delivery's `address` follows).
//!
//! A first attempt published right after intake is not checked (planning just did). When the
//! profile cannot be read (users-service away) the rows that need it wait (`Defer`), and the rest
//! of the batch is published.

use std::{collections::HashMap, sync::Arc, time::Duration};

use api::profiles::DeliveryProfile;
use common::{
    address::PushAddress,
    events::{Channel, DispatchMessage},
    outbox::gate::{Gate, GateRow, Verdict, Verdicts},
};
use delivery::recheck::Applied;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{metrics::Metrics, users_client::UsersClient};

/// How long a row waits when its check could not be made (users-service away, a delivery
/// locked by a cancel).
const RETRY_CHECK_AFTER: Duration = Duration::from_secs(2);

/// The gate of notification-service's relay.
pub struct Recheck {
    pub users: Arc<UsersClient>,
    pub metrics: Arc<Metrics>,
}

/// What the check concluded for one dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Send,
    Suppress(&'static str),
    Readdress(String),
    /// Could not be decided now.
    Later,
}

/// Whether a due row is a dispatch that must be checked, and its message (`payload`: the
/// row's, with its content filled in).
fn candidate(row: &GateRow, payload: &str) -> Option<DispatchMessage> {
    if !row.topic.starts_with("notify.dispatch.") {
        return None;
    }
    let retry = row
        .headers
        .get("attempt")
        .and_then(|a| a.parse::<u32>().ok())
        .is_some_and(|a| a > 1);
    if !(retry || row.deferred) {
        return None;
    }
    serde_json::from_str(payload).ok()
}

/// The address `profile` has now for `channel` (push: whether the device is still there).
fn current_address(profile: &DeliveryProfile, m: &DispatchMessage) -> Result<String, &'static str> {
    let found = match m.channel {
        Channel::Email => profile.contacts.email.clone(),
        Channel::Sms => profile.contacts.phone.clone(),
        Channel::Telegram => profile.contacts.telegram_chat_id.clone(),
        Channel::Push => {
            let still = PushAddress::parse(&m.recipient.address).is_some_and(|a| {
                profile
                    .devices
                    .iter()
                    .any(|d| d.platform == a.platform && d.token == a.token)
            });
            return if still {
                Ok(m.recipient.address.clone())
            } else {
                Err("device_removed")
            };
        }
        Channel::Webhook => Some(m.recipient.address.clone()),
        // The inbox is the user's own, for as long as the user exists.
        Channel::InApp => Some(profile.user_id.to_string()),
    };
    found.ok_or("no_contact")
}

/// The decision for a user's dispatch from their profile (`None`: no such user any more).
fn for_user(
    m: &DispatchMessage,
    category: Option<&str>,
    profile: Option<&DeliveryProfile>,
) -> Decision {
    let Some(profile) = profile else {
        return Decision::Suppress("unknown_user");
    };
    if let Some(category) = category {
        let mandatory = profile.mandatory_categories.iter().any(|c| c == category);
        if !mandatory && !profile.preferences.allows(category, m.channel) {
            return Decision::Suppress("opted_out");
        }
    }
    match current_address(profile, m) {
        Err(reason) => Decision::Suppress(reason),
        Ok(a) if a == m.recipient.address => Decision::Send,
        Ok(a) => Decision::Readdress(a),
    }
}

impl Recheck {
    async fn decide(
        &self,
        conn: &mut PgConnection,
        messages: &[&DispatchMessage],
    ) -> anyhow::Result<Vec<Decision>> {
        // Users' profiles (cached) and their notifications' categories: one call, one query.
        let mut users: Vec<Uuid> = messages
            .iter()
            .filter_map(|m| m.recipient.user_id)
            .collect();
        users.sort_unstable();
        users.dedup();
        let profiles: Option<HashMap<Uuid, DeliveryProfile>> = if users.is_empty() {
            Some(HashMap::new())
        } else {
            let token = self
                .users
                .service_token()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            match self.users.profiles(&token, &users).await {
                Ok(ps) => Some(ps.into_iter().map(|p| (p.user_id, p)).collect()),
                Err(e) => {
                    tracing::warn!(error = %e, "re-check: profiles unavailable; those dispatches wait");
                    None
                }
            }
        };
        let notifications: Vec<Uuid> = messages
            .iter()
            .filter(|m| m.recipient.user_id.is_some())
            .map(|m| m.notification_id)
            .collect();
        let categories = crate::db::notifications::categories(conn, &notifications).await?;
        let mut decisions: Vec<Decision> = messages
            .iter()
            .map(|m| match (m.recipient.user_id, &profiles) {
                (None, _) => Decision::Send,
                (Some(_), None) => Decision::Later,
                (Some(user), Some(ps)) => for_user(
                    m,
                    categories.get(&m.notification_id).map(String::as_str),
                    ps.get(&user),
                ),
            })
            .collect();
        // The suppression list, for the address each email would go to now.
        let emails: Vec<&str> = messages
            .iter()
            .zip(&decisions)
            .filter(|(m, _)| m.channel == Channel::Email)
            .filter_map(|(m, d)| match d {
                Decision::Send => Some(m.recipient.address.as_str()),
                Decision::Readdress(a) => Some(a.as_str()),
                _ => None,
            })
            .collect();
        if !emails.is_empty() {
            let suppressed =
                crate::db::suppressions::lookup(conn, Channel::Email.as_str(), &emails).await?;
            for (m, d) in messages.iter().zip(decisions.iter_mut()) {
                let address = match d {
                    Decision::Send => m.recipient.address.as_str(),
                    Decision::Readdress(a) => a.as_str(),
                    _ => continue,
                };
                if m.channel != Channel::Email {
                    continue;
                }
                if let Some(kind) = suppressed.get(address) {
                    *d = Decision::Suppress(crate::suppression::reason_of(kind));
                }
            }
        }
        Ok(decisions)
    }

    /// Carries out `decision` for `m`; the row's verdict.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        m: &DispatchMessage,
        decision: Decision,
    ) -> anyhow::Result<Verdict> {
        let attempt = m.attempt as i32;
        let (verdict, outcome) = match decision {
            Decision::Send => (Verdict::Publish, "passed"),
            Decision::Later => (Verdict::Defer(RETRY_CHECK_AFTER), "deferred"),
            Decision::Suppress(reason) => {
                match delivery::recheck::suppress(conn, m.delivery_id, attempt, reason).await? {
                    Applied::Done => {
                        tracing::info!(delivery_id = %m.delivery_id, attempt, reason,
                            "re-check: not sent, the world changed since planning");
                        (Verdict::Drop, "suppressed")
                    }
                    Applied::Stale => (Verdict::Publish, "passed"),
                    Applied::Busy => (Verdict::Defer(RETRY_CHECK_AFTER), "deferred"),
                }
            }
            Decision::Readdress(address) => {
                match delivery::recheck::readdress(conn, m.delivery_id, attempt, &address).await? {
                    Applied::Done => {
                        let mut moved = m.clone();
                        moved.recipient.address = address;
                        (
                            Verdict::PublishAs(serde_json::to_string(&moved)?),
                            "readdressed",
                        )
                    }
                    Applied::Stale => (Verdict::Publish, "passed"),
                    Applied::Busy => (Verdict::Defer(RETRY_CHECK_AFTER), "deferred"),
                }
            }
        };
        self.metrics.rechecked(outcome);
        Ok(verdict)
    }
}

impl Gate for Recheck {
    fn admit<'a>(&'a self, conn: &'a mut PgConnection, rows: &'a [GateRow]) -> Verdicts<'a> {
        Box::pin(async move {
            // Dispatches written without their content get it first: the check reads the
            // message as it will be published.
            let filled = crate::stored_content::fill(conn, rows).await?;
            let parsed: Vec<Option<DispatchMessage>> = rows
                .iter()
                .zip(&filled)
                .map(|(r, f)| candidate(r, f.as_deref().unwrap_or(&r.payload)))
                .collect();
            let messages: Vec<&DispatchMessage> = parsed.iter().flatten().collect();
            let mut decisions = if messages.is_empty() {
                Vec::new()
            } else {
                self.decide(conn, &messages).await?
            }
            .into_iter();
            let mut verdicts = Vec::with_capacity(rows.len());
            for (m, filled) in parsed.iter().zip(filled) {
                let verdict = match m {
                    None => Verdict::Publish,
                    Some(m) => {
                        let d = decisions.next().expect("one decision per message");
                        self.apply(conn, m, d).await?
                    }
                };
                verdicts.push(match (verdict, filled) {
                    (Verdict::Publish, Some(payload)) => Verdict::PublishAs(payload),
                    (verdict, _) => verdict,
                });
            }
            Ok(verdicts)
        })
    }
}

#[cfg(test)]
mod tests {
    use api::profiles::{Contacts, Preferences};
    use common::events::{Content, Lane, Platform, RecipientRef};

    use super::*;

    fn message(channel: Channel, address: &str) -> DispatchMessage {
        DispatchMessage {
            schema: 1,
            delivery_id: Uuid::new_v4(),
            notification_id: Uuid::new_v4(),
            attempt: 2,
            channel,
            lane: Lane::Bulk,
            recipient: RecipientRef {
                user_id: Some(Uuid::new_v4()),
                address: address.into(),
            },
            content: Content {
                subject: None,
                text: "x".into(),
                html: None,
                data: None,
            },
            locale: None,
            not_after: None,
            created_at: chrono::Utc::now(),
        }
    }

    fn profile() -> DeliveryProfile {
        DeliveryProfile {
            user_id: Uuid::new_v4(),
            locale: "en".into(),
            timezone: "UTC".into(),
            contacts: Contacts {
                email: Some("new@example.org".into()),
                ..Default::default()
            },
            devices: vec![],
            preferences: Preferences::default(),
            mandatory_categories: vec!["security".into()],
        }
    }

    #[test]
    fn what_changed_since_planning_decides_the_attempt() {
        let p = profile();
        let email = message(Channel::Email, "old@example.org");
        assert_eq!(
            for_user(&email, Some("news"), None),
            Decision::Suppress("unknown_user")
        );
        assert_eq!(
            for_user(&email, Some("news"), Some(&p)),
            Decision::Readdress("new@example.org".into())
        );
        let mut off = profile();
        off.preferences.channels = [(Channel::Email, false)].into();
        assert_eq!(
            for_user(&email, Some("news"), Some(&off)),
            Decision::Suppress("opted_out")
        );
        assert_eq!(
            for_user(&email, Some("security"), Some(&off)),
            Decision::Readdress("new@example.org".into()),
            "a mandatory category ignores the opt-out"
        );
        let sms = message(Channel::Sms, "+4930123456");
        assert_eq!(
            for_user(&sms, Some("news"), Some(&p)),
            Decision::Suppress("no_contact")
        );
        let push = message(Channel::Push, "fcm:abc");
        assert_eq!(
            for_user(&push, Some("news"), Some(&p)),
            Decision::Suppress("device_removed")
        );
        let mut with_device = profile();
        with_device.devices = vec![api::profiles::Device {
            id: Uuid::new_v4(),
            platform: Platform::Fcm,
            token: "abc".into(),
            created_at: chrono::Utc::now(),
            last_seen: chrono::Utc::now(),
        }];
        assert_eq!(
            for_user(&push, Some("news"), Some(&with_device)),
            Decision::Send
        );
    }

    #[test]
    fn only_retries_and_deferred_dispatches_are_checked() {
        let m = message(Channel::Email, "a@example.org");
        let row = |attempt: &str, deferred: bool, topic: &str| GateRow {
            id: 1,
            topic: topic.into(),
            key: "k".into(),
            payload: serde_json::to_string(&m).unwrap(),
            headers: [("attempt".to_owned(), attempt.to_owned())].into(),
            deferred,
        };
        let check = |r: GateRow| candidate(&r, &r.payload);
        assert!(check(row("1", false, "notify.dispatch.email.bulk")).is_none());
        assert!(check(row("2", false, "notify.dispatch.email.bulk")).is_some());
        assert!(check(row("1", true, "notify.dispatch.email.bulk")).is_some());
        assert!(check(row("2", true, "notify.events")).is_none());
    }
}
