//! HTTP routes, one module per resource.

pub mod admin;
pub mod bounces;
pub mod dead_letters;
pub mod inbox;
pub mod me;
pub mod notifications;
pub mod receipts;
pub mod rules;
pub mod suppressions;
pub mod templates;
