//! The delivery lifecycle of database `notify`, and its only writer (docs/architecture.md,
//! decision 0019). It alone knows what a delivery's status can be ([`Status`]) and moves it:
//!
//! - [`insert`]: new deliveries in their first status (intake, fallback);
//! - [`dispatch`]: the one builder of the dispatch message and its outbox row
//!   ([`DispatchParts`](dispatch::DispatchParts), [`LockedDelivery`]);
//! - [`apply`]: status events (attempts, retries on the schedule of [`retry`], dead letters,
//!   dead push tokens, the `delivery.dead` event for fallback), expiry, undeliverable;
//! - [`redrive`]: the next attempt (admin re-drive, the stuck scan);
//! - [`cancel`]: what has not been dispatched yet;
//! - [`fallback`]: which channel a dead delivery's user is tried on next, claimed once;
//! - [`receipts`]: a provider's delivery receipt moves `sent` to `delivered` / `undelivered`;
//! - [`recheck`]: what the re-check before an attempt changes (suppressed, or a new address);
//! - [`lost`]: the stuck scan's queries (the repeater holds its Kafka side).
//!
//! notification-service and the repeater call this crate and never write delivery state
//! themselves; `tests/ownership.rs` fails on a status write, a status literal in SQL, or a
//! query outside a `db` module anywhere else in the workspace.

pub mod apply;
pub mod cancel;
pub mod dispatch;
pub mod fallback;
pub mod insert;
pub mod lost;
pub mod receipts;
pub mod recheck;
pub mod redrive;
pub mod retry;
pub mod status;

pub use dispatch::{LockedDelivery, dispatch_row};
pub use redrive::{RedriveKind, redrive, redrive_many};
pub use status::Status;
