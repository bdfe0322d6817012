//! Queries on database `notify`. Each takes a connection or transaction from the caller.

pub mod admin;
pub mod dead_letters;
pub mod digests;
pub mod fanouts;
pub mod idempotency;
pub mod inbox;
pub mod notifications;
pub mod retention;
pub mod rules;
pub mod skipped;
pub mod suppressions;
pub mod templates;
