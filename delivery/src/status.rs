//! A delivery's status: the one list of them (the `deliveries_status_check` constraint of
//! migration notify/0001 holds the same names; decision 0006 says what each means).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Planned, waiting for its time (`send_at`, quiet hours).
    Pending,
    /// Its dispatch message is in the outbox or in Kafka.
    Queued,
    Sending,
    Sent,
    /// A transient failure; the next attempt is scheduled.
    Retrying,
    /// Failed for good (a dead letter an admin can re-drive).
    Dead,
    /// Not sent on purpose (preferences, quiet hours, a suppressed address).
    Suppressed,
    Cancelled,
    /// Its time to live passed before it could be sent.
    Expired,
    /// Sent, and the provider's delivery receipt says it reached the device (SMS).
    Delivered,
    /// Sent, but the provider's delivery receipt says it never arrived (SMS: `undelivered`
    /// or `failed`). Terminal: the provider had accepted it, so it is not retried.
    Undelivered,
    /// Folded into a digest (`digest_id`): the digest's own notification carries it.
    Digested,
}

impl Status {
    pub const ALL: [Status; 12] = [
        Status::Pending,
        Status::Queued,
        Status::Sending,
        Status::Sent,
        Status::Retrying,
        Status::Dead,
        Status::Suppressed,
        Status::Cancelled,
        Status::Expired,
        Status::Delivered,
        Status::Undelivered,
        Status::Digested,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Retrying => "retrying",
            Status::Dead => "dead",
            Status::Suppressed => "suppressed",
            Status::Cancelled => "cancelled",
            Status::Expired => "expired",
            Status::Delivered => "delivered",
            Status::Undelivered => "undelivered",
            Status::Digested => "digested",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// After these only a re-drive changes a delivery.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Sent
                | Status::Dead
                | Status::Suppressed
                | Status::Cancelled
                | Status::Expired
                | Status::Delivered
                | Status::Undelivered
                | Status::Digested
        )
    }
}

impl TryFrom<String> for Status {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("unknown delivery status {s:?}"))
    }
}

/// The terminal statuses' names, for SQL (`status = ANY($1)`).
pub fn terminal_names() -> Vec<&'static str> {
    Status::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .map(Status::as_str)
        .collect()
}

/// A notification's status, derived from its deliveries' statuses: `scheduled` (all open
/// ones wait for their time), `in_progress`, `completed`, `failed`, `partially_failed`,
/// `cancelled`.
pub fn notification_status<'a>(statuses: impl IntoIterator<Item = &'a str>) -> &'static str {
    notification_status_counted(statuses.into_iter().map(|s| (s, 1)))
}

/// [`notification_status`] from `(status, how many deliveries are in it)` pairs: what a count
/// query gives, so a notification's status never needs its deliveries loaded.
pub fn notification_status_counted<'a>(
    counts: impl IntoIterator<Item = (&'a str, i64)>,
) -> &'static str {
    let (mut total, mut open, mut pending, mut ok, mut failed, mut cancelled) = (0, 0, 0, 0, 0, 0);
    for (s, n) in counts {
        total += n;
        match Status::parse(s) {
            Some(Status::Pending) => {
                open += n;
                pending += n
            }
            Some(Status::Queued | Status::Sending | Status::Retrying) | None => open += n,
            Some(Status::Sent | Status::Suppressed | Status::Delivered | Status::Digested) => {
                ok += n
            }
            Some(Status::Dead | Status::Expired | Status::Undelivered) => failed += n,
            Some(Status::Cancelled) => cancelled += n,
        }
    }
    match () {
        _ if total > 0 && cancelled == total => "cancelled",
        _ if open > 0 && pending == open && ok + failed == 0 => "scheduled",
        _ if open > 0 => "in_progress",
        _ if failed == 0 => "completed",
        _ if ok == 0 => "failed",
        _ => "partially_failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_status() {
        assert_eq!(notification_status(["queued", "sent"]), "in_progress");
        assert_eq!(notification_status(["pending", "pending"]), "scheduled");
        assert_eq!(notification_status(["sent", "suppressed"]), "completed");
        assert_eq!(notification_status(["dead", "sent"]), "partially_failed");
        assert_eq!(notification_status(["dead", "expired"]), "failed");
        assert_eq!(notification_status(["cancelled"]), "cancelled");
        assert_eq!(notification_status(["digested", "sent"]), "completed");
        assert_eq!(notification_status(["delivered", "sent"]), "completed");
        assert_eq!(
            notification_status(["delivered", "undelivered"]),
            "partially_failed"
        );
    }

    #[test]
    fn every_status_round_trips_and_serialises_as_its_name() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(Status::parse("bounced"), None);
        assert_eq!(
            terminal_names(),
            [
                "sent",
                "dead",
                "suppressed",
                "cancelled",
                "expired",
                "delivered",
                "undelivered",
                "digested"
            ]
        );
    }
}
