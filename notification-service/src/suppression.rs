//! Planning consults the suppression list: a planned email delivery to a suppressed address is
//! written `suppressed` with reason `bounced` (hard bounce, soft bounces) or `complained`.

use common::events::Channel;
use sqlx::PgPool;

use crate::planning::{PlannedDelivery, PlannedStatus};

/// Marks the planned deliveries whose address is suppressed (one query, only when some email
/// delivery is planned).
pub async fn apply(pool: &PgPool, deliveries: &mut [PlannedDelivery]) -> sqlx::Result<()> {
    let addresses: Vec<&str> = deliveries
        .iter()
        .filter(|d| d.channel == Channel::Email && d.status != PlannedStatus::Suppressed)
        .filter_map(|d| d.address.as_deref())
        .collect();
    if addresses.is_empty() {
        return Ok(());
    }
    let mut conn = pool.acquire().await?;
    let suppressed =
        crate::db::suppressions::lookup(&mut conn, Channel::Email.as_str(), &addresses).await?;
    if suppressed.is_empty() {
        return Ok(());
    }
    for d in deliveries.iter_mut() {
        let reason = d
            .address
            .as_deref()
            .filter(|_| d.channel == Channel::Email && d.status != PlannedStatus::Suppressed)
            .and_then(|a| suppressed.get(a));
        if let Some(reason) = reason {
            d.status = PlannedStatus::Suppressed;
            d.reason = Some(reason_of(reason));
            d.available_at = None;
        }
    }
    Ok(())
}

/// A delivery's `suppressed` reason for a suppression list entry's kind.
pub fn reason_of(kind: &str) -> &'static str {
    if kind == "complaint" {
        "complained"
    } else {
        "bounced"
    }
}

/// Why `address` may not be sent to on `channel` (`bounced`, `complained`), if it may not.
pub async fn suppressed(
    conn: &mut sqlx::PgConnection,
    channel: Channel,
    address: &str,
) -> sqlx::Result<Option<&'static str>> {
    if channel != Channel::Email {
        return Ok(None);
    }
    let found = crate::db::suppressions::lookup(conn, channel.as_str(), &[address]).await?;
    Ok(found.get(address).map(|kind| reason_of(kind)))
}
