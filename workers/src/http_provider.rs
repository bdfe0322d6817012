//! What HTTP providers share: the client, `Retry-After`, and the transient cases.

use std::time::Duration;

use common::events::Outcome;

use crate::provider::ProviderResult;

/// A client with the per-send timeout; providers are reached over TLS in production and over
/// plain HTTP to local sinks and test servers.
pub fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(32)
        .build()?)
}

/// `Retry-After` in seconds (HTTP-date forms are rare from these APIs and ignored).
pub fn retry_after_ms(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| s * 1000)
}

/// A request that never got an answer: timeouts and connection errors are transient.
pub fn unreachable(provider: &str, e: reqwest::Error) -> ProviderResult {
    let code = if e.is_timeout() {
        format!("{provider}_timeout")
    } else {
        format!("{provider}_connection")
    };
    ProviderResult::failed(Outcome::TransientFailure, code, describe(e))
}

/// A request error as text for logs and the status event, **without its URL**: provider URLs
/// carry credentials (Telegram's bot token is part of the path; webhook URLs may hold a
/// user's secrets), and error texts end up in the database and in admin views.
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// 429 and 5xx: try again later, honouring `Retry-After`.
pub fn transient(
    provider: &str,
    status: u16,
    retry_after_ms: Option<u64>,
    message: String,
) -> ProviderResult {
    ProviderResult {
        retry_after_ms,
        ..ProviderResult::failed(
            Outcome::TransientFailure,
            format!("{provider}_{status}"),
            message,
        )
    }
}
