//! The delivery lifecycle of database `notify` (issue 14, in progress): what a delivery's
//! status can be ([`Status`]), its dispatch message and outbox row ([`dispatch_row`],
//! [`LockedDelivery`]), the next attempt ([`redrive`], the retry schedule in [`retry`]), applying status events
//! ([`apply`]) and cancel ([`cancel`]). Both services
//! that move deliveries — notification-service and the repeater — call this crate; docs/next.md
//! lists what still writes delivery state elsewhere.

pub mod apply;
pub mod cancel;
pub mod dispatch;
pub mod fallback;
pub mod insert;
pub mod lost;
pub mod redrive;
pub mod retry;
pub mod status;

pub use dispatch::{LockedDelivery, dispatch_row};
pub use redrive::{RedriveKind, redrive, redrive_many};
pub use status::Status;
