//! HTTP routes, one module per resource.

pub mod admin;
pub mod me;
pub mod notifications;
pub mod templates;
