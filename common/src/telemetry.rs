//! Logging and the per-request context.
//!
//! Logs are JSON lines by default (`NOTIFY_LOG_FORMAT=pretty` for humans); `RUST_LOG`
//! overrides the level. Every request and every consumed Kafka message runs inside a
//! [`RequestContext`] that carries its `x-request-id` and W3C `traceparent`; the outbox copies
//! both into Kafka headers and consumers restore them, so one id follows a notification from
//! the edge to the provider.

use std::collections::BTreeMap;

use rand::Rng;
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

/// Header names carried from HTTP into Kafka and back.
pub const REQUEST_ID: &str = "x-request-id";
/// W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";

/// Installs the global subscriber. Safe to call twice (the second call does nothing), so tests
/// that start several apps in one process can all call it.
pub fn init(service: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,rdkafka=warn"));
    let pretty = std::env::var("NOTIFY_LOG_FORMAT").is_ok_and(|v| v == "pretty");
    let registry = tracing_subscriber::registry().with(filter);
    let res = if pretty {
        registry.with(fmt::layer().with_target(false)).try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()
    };
    if res.is_ok() {
        tracing::info!(service, "telemetry initialised");
    }
}

/// For tests: logs only when `TEST_LOG` is set, so a passing run stays quiet.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        // SAFETY of intent: only the format switches, nothing else reads this variable.
        init("test");
    }
}

/// What identifies one unit of work across services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    pub request_id: String,
    pub traceparent: String,
}

tokio::task_local! {
    static CONTEXT: RequestContext;
}

impl RequestContext {
    /// A fresh context: a random request id and a new sampled trace.
    pub fn new() -> Self {
        Self {
            request_id: uuid::Uuid::new_v4().simple().to_string(),
            traceparent: new_traceparent(),
        }
    }

    /// Builds a context from incoming header values, replacing any that are missing or
    /// malformed (a request id must be 1..=128 visible ASCII characters).
    pub fn from_parts(request_id: Option<&str>, traceparent: Option<&str>) -> Self {
        let request_id = request_id
            .filter(|id| {
                !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
            })
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let traceparent = traceparent
            .filter(|tp| valid_traceparent(tp))
            .map(str::to_owned)
            .unwrap_or_else(new_traceparent);
        Self {
            request_id,
            traceparent,
        }
    }

    /// Restores a context from Kafka headers (or an outbox row's header map).
    pub fn from_headers(headers: &BTreeMap<String, String>) -> Self {
        Self::from_parts(
            headers.get(REQUEST_ID).map(String::as_str),
            headers.get(TRACEPARENT).map(String::as_str),
        )
    }

    /// The trace id part of the `traceparent`, for log fields.
    pub fn trace_id(&self) -> &str {
        self.traceparent.split('-').nth(1).unwrap_or_default()
    }

    /// The context of the running task, if one was entered.
    pub fn current() -> Option<Self> {
        CONTEXT.try_with(Clone::clone).ok()
    }

    /// The current context, or a new one when the task runs outside any request.
    pub fn current_or_new() -> Self {
        Self::current().unwrap_or_default()
    }

    /// Runs `fut` with this context as the current one.
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        CONTEXT.scope(self, fut).await
    }

    /// The header map written into outbox rows and Kafka messages.
    pub fn to_headers(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (REQUEST_ID.to_owned(), self.request_id.clone()),
            (TRACEPARENT.to_owned(), self.traceparent.clone()),
        ])
    }
}

impl Default for RequestContext {
    fn default() -> Self {
        Self::new()
    }
}

fn new_traceparent() -> String {
    let mut rng = rand::rng();
    format!(
        "00-{:032x}-{:016x}-01",
        rng.random::<u128>() | 1,
        rng.random::<u64>() | 1
    )
}

fn valid_traceparent(tp: &str) -> bool {
    let parts: Vec<&str> = tp.split('-').collect();
    parts.len() == 4
        && parts[0].len() == 2
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3].len() == 2
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
        && parts[1].bytes().any(|b| b != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_valid_ids_and_replaces_bad_ones() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = RequestContext::from_parts(Some("abc-1"), Some(tp));
        assert_eq!(ctx.request_id, "abc-1");
        assert_eq!(ctx.traceparent, tp);
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");

        let ctx = RequestContext::from_parts(Some("has space"), Some("garbage"));
        assert_ne!(ctx.request_id, "has space");
        assert!(valid_traceparent(&ctx.traceparent));
    }

    #[tokio::test]
    async fn scope_makes_the_context_current() {
        assert!(RequestContext::current().is_none());
        let ctx = RequestContext::new();
        let seen = ctx.clone().scope(async { RequestContext::current() }).await;
        assert_eq!(seen, Some(ctx));
    }
}
