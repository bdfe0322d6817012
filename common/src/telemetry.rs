//! Logging, traces and the per-request context.
//!
//! Logs are JSON lines by default (`NOTIFY_LOG_FORMAT=pretty` for humans); `RUST_LOG`
//! overrides the level. Every request and every consumed Kafka message runs inside a
//! [`RequestContext`] that carries its `x-request-id` and W3C `traceparent`; the outbox copies
//! both into Kafka headers and consumers restore them, so one id follows a notification from
//! the edge to the provider.
//!
//! With `telemetry.otlp_endpoint` set ([`init_exporting`]), each of those units of work is also an
//! OpenTelemetry span exported over OTLP/HTTP: an HTTP request's span is the child of the
//! caller's `traceparent`, and the `traceparent` the unit passes on (to an upstream, into an
//! outbox row, into a Kafka message) names its own span, so one notification is one trace from
//! the bff through notification-service, the outbox and Kafka to the worker's provider call
//! and the repeater (decision 0024).

use std::{collections::BTreeMap, sync::OnceLock, time::Duration};

use rand::Rng;
use serde::{Deserialize, Serialize};
use tracing_subscriber::{
    EnvFilter, Layer as _, Registry, filter::LevelFilter, fmt, layer::SubscriberExt,
    util::SubscriberInitExt,
};

/// OpenTelemetry trace export (`[telemetry]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TelemetryConfig {
    /// An OTLP/HTTP endpoint (`http://otel-collector:4318`): spans go to
    /// `<endpoint>/v1/traces` as protobuf. Unset, nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// Share of new traces recorded, 0 to 1. A request arriving with a `traceparent` follows
    /// its caller's decision.
    pub sample_ratio: f64,
    /// Finished spans are sent at least this often.
    pub export_interval_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sample_ratio: 1.0,
            export_interval_ms: 5_000,
        }
    }
}

/// Header names carried from HTTP into Kafka and back.
pub const REQUEST_ID: &str = "x-request-id";
/// W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";

type OtelLayer =
    tracing_opentelemetry::OpenTelemetryLayer<Registry, opentelemetry_sdk::trace::SdkTracer>;

/// The exporting provider, once [`init_exporting`] installed one (flushed by [`flush`]).
static OTEL: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();

/// The logging subscriber, with the OpenTelemetry layer when given one. The log level filters
/// the logs only: spans are exported at `info` whatever `RUST_LOG` says.
fn subscriber(otel: Option<OtelLayer>) -> Box<dyn tracing::Subscriber + Send + Sync> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,rdkafka=warn"));
    let pretty = std::env::var("NOTIFY_LOG_FORMAT").is_ok_and(|v| v == "pretty");
    let registry = tracing_subscriber::registry().with(otel.with_filter(LevelFilter::INFO));
    if pretty {
        Box::new(registry.with(fmt::layer().with_target(false).with_filter(filter)))
    } else {
        Box::new(
            registry.with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter),
            ),
        )
    }
}

/// Installs the global subscriber (logs only). Safe to call twice (the second call does
/// nothing), so tests that start several apps in one process can all call it.
pub fn init(service: &str) {
    if subscriber(None).try_init().is_ok() {
        tracing::info!(service, "telemetry initialised");
    }
}

/// Runs `f` (loading the config, before [`init_exporting`] can be called) with the logging
/// subscriber as the current one, so what it logs is not lost.
pub fn while_starting<T>(f: impl FnOnce() -> T) -> T {
    tracing::subscriber::with_default(subscriber(None), f)
}

/// Installs the global subscriber with span export as `cfg` says (none when `otlp_endpoint`
/// is unset), tagged with `service` as `service.name`.
pub fn init_exporting(service: &str, cfg: &TelemetryConfig) -> anyhow::Result<()> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler};
    let Some(endpoint) = &cfg.otlp_endpoint else {
        init(service);
        return Ok(());
    };
    anyhow::ensure!(
        (0.0..=1.0).contains(&cfg.sample_ratio),
        "telemetry.sample_ratio must be between 0 and 1"
    );
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(&url)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| anyhow::anyhow!("telemetry.otlp_endpoint {endpoint}: {e}"))?;
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_millis(cfg.export_interval_ms.max(10)))
                .build(),
        )
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            cfg.sample_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("notify"));
    subscriber(Some(layer))
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the trace exporter: {e}"))?;
    let _ = OTEL.set(provider);
    tracing::info!(service, endpoint = %url, sample_ratio = cfg.sample_ratio, "telemetry initialised, exporting traces");
    Ok(())
}

/// Whether spans are being exported.
pub fn exporting() -> bool {
    OTEL.get().is_some()
}

/// Sends the spans not yet exported (at shutdown).
pub fn flush() {
    if let Some(p) = OTEL.get() {
        let _ = p.force_flush();
    }
}

/// Makes `span` the unit of work `ctx` describes: its parent is `incoming` (the caller's
/// `traceparent`, when it sent a valid one), and `ctx.traceparent` becomes `span`'s own, so
/// what this work passes on is its child. Does nothing while no spans are exported.
pub fn adopt(span: &tracing::Span, incoming: Option<&str>, ctx: &mut RequestContext) {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if !exporting() {
        return;
    }
    if let Some(tp) = incoming.filter(|tp| valid_traceparent(tp)) {
        let part = |i: usize| tp.split('-').nth(i).unwrap_or_default();
        let parent = SpanContext::new(
            TraceId::from_hex(part(1)).unwrap_or(TraceId::INVALID),
            SpanId::from_hex(part(2)).unwrap_or(SpanId::INVALID),
            TraceFlags::new(u8::from_str_radix(part(3), 16).unwrap_or(1)),
            true,
            TraceState::default(),
        );
        if parent.is_valid() {
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
        }
    }
    let own = span.context().span().span_context().clone();
    if own.is_valid() {
        ctx.traceparent = format!(
            "00-{}-{}-{:02x}",
            own.trace_id(),
            own.span_id(),
            own.trace_flags().to_u8()
        );
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
