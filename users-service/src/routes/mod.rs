//! HTTP routes, one module per resource.

pub mod internal;
pub mod me;
pub mod telegram;
pub mod topics;
pub mod users;
