//! What callers may see of the public contract's shapes (the shapes are `api`'s).

pub use api::notifications::{AttemptView, DeliveryView, NotificationView};
pub use delivery::status::notification_status;

/// What the calling service may see of a notification: the addresses it gave itself, not
/// those resolved from a user's profile (a user's email, phone or device token is not the
/// sender's to read). Admins see everything; a user sees their own history elsewhere.
pub fn for_service(mut view: NotificationView) -> NotificationView {
    for d in &mut view.deliveries {
        if d.recipient.get("user_id").is_some() {
            d.address = None;
        }
    }
    view
}
