//! The public API, one module per resource. Each handler authorises by role, then forwards.

pub mod health;
pub mod me;
pub mod notifications;
pub mod users;

use common::{auth::Role, problem::ApiError};

use crate::rate_limit::Caller;

impl Caller {
    /// 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        self.0.require(roles)
    }
}

/// Everything under `/v1/admin` is for admins, including paths that do not exist (yet): a
/// user or service token learns nothing but 403.
pub async fn admin_guard(caller: Caller) -> Result<(), ApiError> {
    caller.require(&[Role::Admin])?;
    Err(ApiError::not_found("no admin route matches this path"))
}
