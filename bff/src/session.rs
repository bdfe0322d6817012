//! Browser sessions for the pages (decision 0025): a token exchanged once for an `HttpOnly`
//! cookie, turned back into `Authorization: Bearer` for every `/v1/` call the page makes.
//!
//! - `POST /session` with `Authorization: Bearer <token>` (the page read it from its URL
//!   fragment, which no server sees): sets `__Host-notify_session` (`HttpOnly; Secure;
//!   SameSite=Strict; Path=/`, until the token expires; the `__Host-` prefix makes the browser
//!   refuse the cookie from any other host or path, so a sibling subdomain cannot plant one)
//!   and answers who is signed in and the CSRF token. When the browser is already signed in
//!   as someone else, the swap needs `X-Session-Switch: confirm` (409 `session_switch`
//!   without it): a link to `/app#token=<attacker's token>` must not silently sign a victim
//!   into the attacker's account (login CSRF), where they would then type their own phone
//!   number. The pages ask the person first.
//! - `GET /session`: the same answer for the cookie's session (a reloaded page gets its CSRF
//!   token back), 401 without one.
//! - `DELETE /session`: signs out (the cookie is expired).
//!
//! A `/v1/` request with the cookie and no `Authorization` header is carried out with the
//! cookie's token; a write (anything but GET and HEAD) must also send `X-CSRF-Token`. The CSRF
//! token is derived from the session's token (a hash no other site can compute: it cannot read
//! the cookie), so every bff instance checks it without shared state. The services see an
//! ordinary bearer token and do not know about sessions.

use axum::{
    Json, Router,
    extract::Request,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use common::{auth::Principal, problem::ApiError};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::AppState;

pub const COOKIE: &str = "__Host-notify_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// `X-Session-Switch: confirm`: the person agreed to leave the session they have for the
/// token's.
pub const SWITCH_HEADER: &str = "x-session-switch";

/// Who is signed in, and what to send as `X-CSRF-Token` with each write.
#[derive(Debug, Serialize)]
pub struct SessionView {
    pub sub: String,
    pub role: common::auth::Role,
    /// Unix seconds.
    pub expires_at: i64,
    pub csrf_token: String,
}

/// The CSRF token of a session: bound to its token, unguessable without it.
pub fn csrf_of(token: &str) -> String {
    Sha256::new()
        .chain_update(b"notify-csrf\0")
        .chain_update(token.as_bytes())
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

fn view(principal: &Principal) -> SessionView {
    SessionView {
        sub: principal.claims.sub.clone(),
        role: principal.claims.role,
        expires_at: principal.claims.exp,
        csrf_token: csrf_of(&principal.token),
    }
}

fn set_cookie(value: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age}"
    ))
    .expect("a token is a valid header value")
}

fn no_store() -> [(header::HeaderName, HeaderValue); 1] {
    [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))]
}

/// `POST /session`: the bearer token becomes the session cookie — at once when the browser
/// has no session (or one of the same caller, or one that no longer verifies), only with
/// `X-Session-Switch: confirm` when it is signed in as someone else.
async fn create(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
    principal: Principal,
) -> Response {
    let current = cookie(&headers, COOKIE).and_then(|t| state.verifier.verify(t).ok());
    let confirmed = headers
        .get(SWITCH_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"confirm"));
    if let Some(current) = current
        && (current.sub != principal.claims.sub || current.role != principal.claims.role)
        && !confirmed
    {
        return ApiError::conflict(
            "session_switch",
            "this browser is signed in as someone else: switching needs the person's \
             confirmation (X-Session-Switch: confirm); nothing changed",
        )
        .into_response();
    }
    let max_age = (principal.claims.exp - chrono::Utc::now().timestamp()).max(0);
    (
        [(header::SET_COOKIE, set_cookie(&principal.token, max_age))],
        no_store(),
        Json(view(&principal)),
    )
        .into_response()
}

/// `GET /session`: the cookie's session (the middleware made it a bearer token).
async fn current(principal: Principal) -> Response {
    (no_store(), Json(view(&principal))).into_response()
}

/// `DELETE /session`: the cookie expires. No token needed: signing out always works.
async fn delete() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, set_cookie("", 0))],
    )
        .into_response()
}

pub fn router() -> Router<AppState> {
    Router::new().route("/session", get(current).post(create).delete(delete))
}

/// The cookie's token as `Authorization: Bearer` for `/v1/` and `/session` requests that
/// have no `Authorization` header; a write with the cookie needs the session's CSRF token.
/// A token that no longer verifies is left for the route to refuse (401).
pub async fn cookie_to_bearer(mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let ours = path.starts_with("/v1/") || path == "/session";
    if !ours || req.headers().contains_key(header::AUTHORIZATION) {
        return next.run(req).await;
    }
    let Some(token) = cookie(req.headers(), COOKIE).map(str::to_owned) else {
        return next.run(req).await;
    };
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    // Signing out needs no CSRF token: at worst another site signs the user out.
    if write && path != "/session" {
        let given = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if given.is_empty() || given != csrf_of(&token) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "a change made with the session cookie needs the session's X-CSRF-Token header",
            )
            .into_response();
        }
    }
    // The route verifies the token; this layer only moves it.
    match bearer_of(&token) {
        Ok(v) => {
            req.headers_mut().insert(header::AUTHORIZATION, v);
        }
        Err(e) => return e.into_response(),
    }
    next.run(req).await
}

/// The `Authorization` value a session cookie's token is carried out with.
fn bearer_of(token: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ApiError::unauthorized("the session cookie is not a token"))
}

/// For a read (`GET`) outside the router (`crate::stream_listener`): the session cookie's
/// token as `Authorization`, when the request has the cookie and no `Authorization` of its
/// own — what [`cookie_to_bearer`] does for the router's reads.
pub fn cookie_to_bearer_for_read(headers: &mut HeaderMap) -> Result<(), ApiError> {
    if headers.contains_key(header::AUTHORIZATION) {
        return Ok(());
    }
    if let Some(token) = cookie(headers, COOKIE).map(str::to_owned) {
        headers.insert(header::AUTHORIZATION, bearer_of(&token)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others_and_empty_ones_are_none() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-notify_session=tok; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("tok"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-notify_session="),
        );
        assert_eq!(cookie(&h, COOKIE), None);
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_are_stable() {
        assert_eq!(csrf_of("a"), csrf_of("a"));
        assert_ne!(csrf_of("a"), csrf_of("b"));
        assert_eq!(csrf_of("a").len(), 32);
    }
}
