//! HTTP routes, one module per resource.

pub mod health;
pub mod internal;
pub mod users;
