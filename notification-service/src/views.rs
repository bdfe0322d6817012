//! What callers may see of the public contract's shapes (the shapes are `api`'s).

pub use api::notifications::{AttemptView, DeliveryView, FanoutView, NotificationView};
pub use delivery::status::{notification_status, notification_status_counted};

/// Adds a send to a topic's fan-out to its view. While the fan-out runs the notification is
/// `in_progress` whatever its deliveries so far say (none may be planned yet); a cancelled
/// one with no delivery is `cancelled`.
pub fn with_fanout(view: &mut NotificationView, fanout: FanoutView) {
    match fanout.state.as_str() {
        "splitting" | "planning" => view.status = "in_progress".into(),
        "cancelled" if view.delivery_counts.total == 0 => view.status = "cancelled".into(),
        _ => {}
    }
    view.fanout = Some(fanout);
}

/// A fan-out as accepted: nothing split or planned yet.
pub fn accepted_fanout(topic: &str) -> FanoutView {
    FanoutView {
        topic: topic.to_owned(),
        state: "splitting".into(),
        total: None,
        planned: 0,
        chunks: None,
        chunks_done: 0,
    }
}

/// What a service sees in place of a provider's text about a delivery to a user: providers
/// echo the address they were given ("550 <lea@example.org>: mailbox unavailable").
pub const HIDDEN_PROVIDER_TEXT: &str =
    "hidden: the provider's text may name the user's address (admins see it)";

/// What the calling service may see of a notification: the addresses it gave itself, not
/// those resolved from a user's profile (a user's email, phone or device token is not the
/// sender's to read), nor provider text about them. Admins see everything; a user sees their
/// own history elsewhere.
pub fn for_service(mut view: NotificationView) -> NotificationView {
    view.deliveries = view
        .deliveries
        .into_iter()
        .map(delivery_for_service)
        .collect();
    view
}

/// [`for_service`] for one delivery: for a delivery the platform resolved from a user's
/// profile, no address and no provider text (error codes stay: they name no one).
pub fn delivery_for_service(mut d: DeliveryView) -> DeliveryView {
    if d.recipient.get("user_id").is_none() {
        return d;
    }
    d.address = None;
    if let Some(error) = d.last_error.as_mut() {
        hide_message(error);
    }
    if let Some(error) = d.last_attempt.as_mut().and_then(|a| a.error.as_mut()) {
        hide_message(error);
    }
    d
}

/// `{code, message}` → `{code, message: HIDDEN_PROVIDER_TEXT}`.
fn hide_message(error: &mut serde_json::Value) {
    if let Some(fields) = error.as_object_mut()
        && fields.contains_key("message")
    {
        fields.insert("message".into(), HIDDEN_PROVIDER_TEXT.into());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn delivery(recipient: serde_json::Value) -> DeliveryView {
        serde_json::from_value(json!({
            "id": "0190f0f0-0000-7000-8000-000000000001",
            "notification_id": "0190f0f0-0000-7000-8000-000000000002",
            "channel": "email", "lane": "bulk", "recipient": recipient,
            "address": "lea@example.org", "status": "dead", "attempts": 1,
            "last_error": { "code": "rejected", "message": "550 <lea@example.org> unknown" },
            "last_attempt": { "attempt": 1, "outcome": "permanent_failure", "provider": "smtp",
                              "error": { "code": "rejected", "message": "550 <lea@example.org> unknown" },
                              "duration_ms": 3, "at": "2026-01-01T00:00:00Z" },
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn a_users_address_and_provider_text_are_hidden_from_the_service() {
        let d = delivery_for_service(delivery(
            json!({ "user_id": "0190f0f0-0000-7000-8000-000000000003" }),
        ));
        let text = serde_json::to_string(&d).unwrap();
        assert!(!text.contains("lea@example.org"), "{text}");
        assert_eq!(d.last_error.unwrap()["code"], "rejected");
        // An address the service gave itself is its own to see.
        let own = delivery_for_service(delivery(json!({ "email": "lea@example.org" })));
        assert_eq!(own.address.as_deref(), Some("lea@example.org"));
        assert!(
            own.last_error.unwrap()["message"]
                .as_str()
                .unwrap()
                .contains("550")
        );
    }
}
