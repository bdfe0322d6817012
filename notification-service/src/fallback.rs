//! Channel fallback: a user's delivery ended `dead` and its notification asked for
//! `fallback: [..]` → plan the next channel of that list for the same user, with the same
//! rules as intake (preferences, contacts, quiet hours), linked to the dead delivery
//! (`deliveries.fallback_of`) so the history shows the chain.
//!
//! The repeater announces the death (`delivery.dead` on `notify.events`, written in the
//! transaction that recorded it); this runs in notification-service because planning lives
//! here. Idempotent: the dead delivery's row is locked and a delivery already linked to it
//! means the event was handled before.

use chrono::Utc;
use common::events::Channel;
use delivery::fallback::{Candidates, Claim};
use uuid::Uuid;

use crate::{
    AppState,
    db::notifications::{NewNotification, insert_deliveries},
    intake,
    planning::{PlannedDelivery, PlannedStatus},
    request::SendRequest,
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

pub async fn on_dead(state: &AppState, delivery_id: Uuid) -> anyhow::Result<FallbackOutcome> {
    let mut conn = state.pool.acquire().await?;
    let (dead, user_id, candidates) =
        match delivery::fallback::candidates(&mut conn, delivery_id).await? {
            Candidates::None(why) => return Ok(FallbackOutcome::None(why)),
            Candidates::Try {
                dead,
                user_id,
                channels,
            } => (dead, user_id, channels),
        };
    drop(conn);

    let mut req = SendRequest::stored(&dead, user_id);
    let profiles = intake::profiles_for(state, &req)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = Utc::now();
    // The first channel that can carry it; channels that cannot (opted out, no contact) are
    // written as suppressed deliveries on the way, so the chain explains itself.
    let mut planned: Vec<PlannedDelivery> = Vec::new();
    let mut chosen = None;
    for channel in candidates {
        req.channels = Some(vec![channel]);
        let ds = intake::plan(state, &req, &profiles, now)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let deliverable = ds.iter().any(|p| p.status != PlannedStatus::Suppressed);
        planned.extend(ds);
        chosen = Some(channel);
        if deliverable {
            break;
        }
    }
    let channel = chosen.expect("candidates is not empty");

    let mut tx = state.pool.begin().await?;
    match delivery::fallback::claim(&mut tx, delivery_id).await? {
        Claim::NotDead => return Ok(FallbackOutcome::None("no longer dead (re-driven)")),
        Claim::AlreadyPlanned => return Ok(FallbackOutcome::AlreadyPlanned),
        Claim::Ready => {}
    }
    let n = NewNotification {
        id: dead.notification_id,
        created_by: &dead.created_by,
        request: &req,
        deliveries: &planned,
        created_at: dead.created_at,
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
