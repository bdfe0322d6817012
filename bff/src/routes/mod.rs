//! The public API, one module per resource. Each handler authorises by role, then forwards.

pub mod admin;
pub mod health;
pub mod me;
pub mod notifications;
pub mod users;

use axum::{
    body::Bytes,
    http::{HeaderMap, Method},
    response::Response,
};
use common::{auth::Role, problem::ApiError};

use crate::{AppState, rate_limit::Caller, upstream::Service};

impl Caller {
    /// 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        self.0.require(roles)
    }

    /// Authorises by role, then forwards the request with the caller's token: what almost
    /// every bff route does.
    #[allow(clippy::too_many_arguments)]
    pub async fn forward(
        &self,
        state: &AppState,
        roles: &[Role],
        service: Service,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response, ApiError> {
        self.require(roles)?;
        state
            .upstream
            .forward(service, method, path, &self.0, headers, body)
            .await
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

/// `path?query`, after checking the raw query string holds only URL characters from
/// alphanumerics and `extra` (it is put into an upstream URL as is).
pub fn with_query(
    path: &str,
    query: Option<String>,
    extra: &[u8],
    max_len: usize,
) -> Result<String, ApiError> {
    let query = query.unwrap_or_default();
    if query.len() > max_len
        || !query
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    {
        return Err(ApiError::invalid_field(
            "query",
            "unexpected characters in the query string",
        ));
    }
    Ok(if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    })
}

/// Everything under `/v1/admin` is for admins, including paths that do not exist (yet): a
/// user or service token learns nothing but 403.
pub async fn admin_guard(caller: Caller) -> Result<(), ApiError> {
    caller.require(&[Role::Admin])?;
    Err(ApiError::not_found("no admin route matches this path"))
}
