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
use delivery::fallback::Candidates;
use uuid::Uuid;

use crate::{
    AppState,
    intake::{self, Accepted, Origin},
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

    let req = SendRequest::stored(&dead, user_id);
    let origin = Origin::Fallback {
        of: delivery_id,
        dead: &dead,
        channels: &candidates,
    };
    let accepted = intake::accept(state, origin, req, Utc::now())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(match accepted {
        Accepted::Written {
            deliveries,
            channel: Some(channel),
        } => {
            state
                .metrics
                .fallbacks_planned
                .get_or_create(&crate::metrics::ChannelLabel {
                    channel: channel.as_str().to_owned(),
                })
                .inc();
            FallbackOutcome::Planned {
                channel,
                deliveries,
            }
        }
        Accepted::AlreadyWritten => FallbackOutcome::AlreadyPlanned,
        Accepted::Nothing(why) => FallbackOutcome::None(why),
        other => anyhow::bail!("fallback answered {other:?}"),
    })
}
