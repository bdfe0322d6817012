//! Channel fallback planning: which channel a dead delivery's user is tried on next, and the
//! claim that makes planning it happen once. notification-service plans the deliveries
//! themselves (preferences, contacts, quiet hours) and inserts them through
//! [`crate::insert`], linked by `fallback_of`.

use common::events::Channel;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{LockedDelivery, Status};

/// What a dead delivery allows.
#[derive(Debug)]
pub enum Candidates {
    /// No fallback applies, and why (no list, not a user, re-driven meanwhile, list used up).
    None(&'static str),
    /// Try `channels` in this order for `user_id`; `dead` is the delivery as read.
    Try {
        dead: Box<LockedDelivery>,
        user_id: Uuid,
        channels: Vec<Channel>,
    },
}

/// The channels still to try after `failed`, in the caller's order, leaving out those the user
/// already has a delivery on in this notification.
pub fn next_channels(list: &[Channel], failed: Channel, taken: &[Channel]) -> Vec<Channel> {
    let after = list.iter().position(|c| *c == failed).map_or(0, |i| i + 1);
    list[after..]
        .iter()
        .copied()
        .filter(|c| !taken.contains(c))
        .collect()
}

/// Reads the dead delivery (unlocked: planning calls users-service, which must not happen
/// under a row lock) and the channels its user can still be tried on.
pub async fn candidates(conn: &mut PgConnection, id: Uuid) -> anyhow::Result<Candidates> {
    let Some(dead) = LockedDelivery::read(conn, id).await? else {
        return Ok(Candidates::None("unknown delivery"));
    };
    let (Some(list), Some(user_id)) = (dead.fallback.as_ref(), dead.user_id) else {
        return Ok(Candidates::None("no fallback for this recipient"));
    };
    if dead.status != Status::Dead {
        return Ok(Candidates::None("no longer dead (re-driven)"));
    }
    let taken: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT channel FROM deliveries WHERE notification_id = $1 AND user_id = $2",
    )
    .bind(dead.notification_id)
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    let taken: Vec<Channel> = taken.iter().filter_map(|c| Channel::parse(c)).collect();
    let channels = next_channels(&list.0, dead.channel, &taken);
    if channels.is_empty() {
        return Ok(Candidates::None("fallback list used up"));
    }
    Ok(Candidates::Try {
        dead: Box::new(dead),
        user_id,
        channels,
    })
}

/// Whether the fallback of `id` may be written now.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Locked, still dead, nothing planned for it yet: insert in this transaction.
    Ready,
    /// Re-driven meanwhile.
    NotDead,
    /// Planned before (the event was handled already).
    AlreadyPlanned,
}

/// Locks the dead delivery's row for the transaction that writes its fallback: the event may
/// be delivered twice and a re-drive may race it.
pub async fn claim(conn: &mut PgConnection, id: Uuid) -> anyhow::Result<Claim> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM deliveries WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    if status.as_deref() != Some(Status::Dead.as_str()) {
        return Ok(Claim::NotDead);
    }
    let done: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM deliveries WHERE fallback_of = $1)")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    Ok(if done {
        Claim::AlreadyPlanned
    } else {
        Claim::Ready
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_channels_follow_the_list_after_the_failed_one() {
        use Channel::*;
        let list = [Push, Sms, Email];
        assert_eq!(next_channels(&list, Push, &[]), vec![Sms, Email]);
        assert_eq!(next_channels(&list, Sms, &[]), vec![Email]);
        assert_eq!(next_channels(&list, Email, &[]), Vec::<Channel>::new());
        // A channel not in the list starts at its head.
        assert_eq!(next_channels(&list, Telegram, &[]), vec![Push, Sms, Email]);
        // Channels the user already has a delivery on are not planned twice.
        assert_eq!(next_channels(&list, Push, &[Push, Sms]), vec![Email]);
    }
}
