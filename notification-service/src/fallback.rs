//! Channel fallback: a user's delivery ended `dead` and its notification asked for
//! `fallback: [..]` → plan the next channel of that list for the same user, with the same
//! rules as intake (preferences, contacts, quiet hours), linked to the dead delivery
//! (`deliveries.fallback_of`) so the history shows the chain.
//!
//! The repeater announces the death (`delivery.dead` on `notify.events`, written in the
//! transaction that recorded it); this runs in notification-service because planning lives
//! here. Idempotent: the dead delivery's row is locked and a delivery already linked to it
//! means the event was handled before.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use common::events::{Channel, Content};
use uuid::Uuid;

use crate::{
    AppState,
    db::notifications::{NewNotification, insert_deliveries},
    planning::{self, PlannedDelivery, PlannedStatus},
    request::{Priority, Recipient, SendRequest},
};

/// What handling one `delivery.dead` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FallbackOutcome {
    /// No fallback applies (no list, not a user, re-driven meanwhile, list used up).
    None(&'static str),
    /// Handled before.
    AlreadyPlanned,
    /// Deliveries written on `channel` (some may be suppressed, e.g. opted out).
    Planned { channel: Channel, deliveries: usize },
}

#[derive(sqlx::FromRow)]
struct DeadRow {
    status: String,
    channel: String,
    user_id: Option<Uuid>,
    notification_id: Uuid,
    category: String,
    priority: String,
    content: sqlx::types::Json<Content>,
    localized: Option<sqlx::types::Json<BTreeMap<String, Content>>>,
    template: Option<String>,
    send_at: Option<DateTime<Utc>>,
    ttl_seconds: Option<i32>,
    created_at: DateTime<Utc>,
    created_by: String,
    fallback: Option<sqlx::types::Json<Vec<Channel>>>,
}

/// The channels still to try after `failed`, in the caller's order, leaving out those the user
/// already has a delivery on in this notification.
pub fn next_channels(list: &[Channel], failed: &str, taken: &[String]) -> Vec<Channel> {
    let after = list
        .iter()
        .position(|c| c.as_str() == failed)
        .map_or(0, |i| i + 1);
    list[after..]
        .iter()
        .copied()
        .filter(|c| !taken.iter().any(|t| t == c.as_str()))
        .collect()
}

pub async fn on_dead(state: &AppState, delivery_id: Uuid) -> anyhow::Result<FallbackOutcome> {
    let Some(d): Option<DeadRow> = sqlx::query_as(
        "SELECT d.status, d.channel, d.user_id, d.notification_id, n.category, n.priority, n.content,
                n.localized, n.template, n.send_at, n.ttl_seconds, n.created_at, n.created_by, n.fallback
         FROM deliveries d JOIN notifications n ON n.id = d.notification_id
         WHERE d.id = $1",
    )
    .bind(delivery_id)
    .fetch_optional(&state.pool)
    .await?
    else {
        return Ok(FallbackOutcome::None("unknown delivery"));
    };
    let (Some(list), Some(user_id)) = (d.fallback.as_ref(), d.user_id) else {
        return Ok(FallbackOutcome::None("no fallback for this recipient"));
    };
    if d.status != "dead" {
        return Ok(FallbackOutcome::None("no longer dead (re-driven)"));
    }
    let taken: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT channel FROM deliveries WHERE notification_id = $1 AND user_id = $2",
    )
    .bind(d.notification_id)
    .bind(user_id)
    .fetch_all(&state.pool)
    .await?;
    let candidates = next_channels(&list.0, &d.channel, &taken);
    if candidates.is_empty() {
        return Ok(FallbackOutcome::None("fallback list used up"));
    }

    let token = state
        .users
        .service_token()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let profiles: HashMap<Uuid, _> = state
        .users
        .profiles(&token, &[user_id])
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .map(|p| (p.user_id, p))
        .collect();
    let priority = match d.priority.as_str() {
        "high" => Priority::High,
        "low" => Priority::Low,
        _ => Priority::Normal,
    };
    let mut req = SendRequest {
        recipients: vec![Recipient::User(user_id)],
        category: d.category,
        priority,
        channels: None,
        content: d.content.0,
        send_at: d.send_at,
        ttl_seconds: d.ttl_seconds.map(i64::from),
        template: d.template,
        data: None,
        localized: d.localized.map(|l| l.0),
        fallback: Some(list.0.clone()),
    };
    let now = Utc::now();
    // The first channel that can carry it; channels that cannot (opted out, no contact) are
    // written as suppressed deliveries on the way, so the chain explains itself.
    let mut planned: Vec<PlannedDelivery> = Vec::new();
    let mut chosen = None;
    for channel in candidates {
        req.channels = Some(vec![channel]);
        let ds = planning::plan(&req, &profiles, &state.planning, now);
        let deliverable = ds.iter().any(|p| p.status != PlannedStatus::Suppressed);
        planned.extend(ds);
        chosen = Some(channel);
        if deliverable {
            break;
        }
    }
    let channel = chosen.expect("candidates is not empty");

    let mut tx = state.pool.begin().await?;
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM deliveries WHERE id = $1 FOR UPDATE")
            .bind(delivery_id)
            .fetch_optional(&mut *tx)
            .await?;
    if status.as_deref() != Some("dead") {
        return Ok(FallbackOutcome::None("no longer dead (re-driven)"));
    }
    let done: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM deliveries WHERE fallback_of = $1)")
            .bind(delivery_id)
            .fetch_one(&mut *tx)
            .await?;
    if done {
        return Ok(FallbackOutcome::AlreadyPlanned);
    }
    let n = NewNotification {
        id: d.notification_id,
        created_by: &d.created_by,
        request: &req,
        deliveries: &planned,
        created_at: d.created_at,
    };
    insert_deliveries(&mut tx, &n, Some(delivery_id), now).await?;
    tx.commit().await?;
    state
        .metrics
        .fallbacks_planned
        .get_or_create(&crate::metrics::ChannelLabel {
            channel: channel.as_str().to_owned(),
        })
        .inc();
    Ok(FallbackOutcome::Planned {
        channel,
        deliveries: planned.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_channels_follow_the_list_after_the_failed_one() {
        use Channel::*;
        let list = [Push, Sms, Email];
        assert_eq!(next_channels(&list, "push", &[]), vec![Sms, Email]);
        assert_eq!(next_channels(&list, "sms", &[]), vec![Email]);
        assert_eq!(next_channels(&list, "email", &[]), Vec::<Channel>::new());
        // A channel not in the list starts at its head.
        assert_eq!(
            next_channels(&list, "telegram", &[]),
            vec![Push, Sms, Email]
        );
        // Channels the user already has a delivery on are not planned twice.
        assert_eq!(
            next_channels(&list, "push", &["push".into(), "sms".into()]),
            vec![Email]
        );
    }
}
