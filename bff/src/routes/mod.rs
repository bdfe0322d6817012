//! The public API, one module per resource. Each handler authorises by role, then forwards.

pub mod health;
pub mod notifications;
pub mod users;
