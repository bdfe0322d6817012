//! The public API, one module per resource. Each handler authorises by role, then forwards.

pub mod admin;
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

/// A resource id from the path, checked before it is put into an upstream URL (ids are UUIDs;
/// anything else cannot exist).
pub fn path_id<'a>(id: &'a str, what: &str) -> Result<&'a str, ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(id)
    } else {
        Err(ApiError::not_found(format!("no {what} has this id")))
    }
}

/// Everything under `/v1/admin` is for admins, including paths that do not exist (yet): a
/// user or service token learns nothing but 403.
pub async fn admin_guard(caller: Caller) -> Result<(), ApiError> {
    caller.require(&[Role::Admin])?;
    Err(ApiError::not_found("no admin route matches this path"))
}
