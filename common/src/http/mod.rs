//! The HTTP edge every service shares: the request-context middleware, a JSON extractor whose
//! rejections are problem+json naming the field, health routes and `serve`.

use std::{net::SocketAddr, time::Instant};

use axum::{
    Router,
    extract::{MatchedPath, Request},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod json;
pub mod limit;

pub use json::{AppJson, RawBody, parse_json};
pub use limit::ConcurrencyConfig;

use crate::{
    metrics::{HttpMetrics, Registry},
    problem::{ApiError, FieldError},
    telemetry::{REQUEST_ID, RequestContext, TRACEPARENT},
};

/// Where a service listens and how much it accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Address of the public (to the cluster) API.
    pub listen: SocketAddr,
    /// Largest accepted request body; bigger ones get 413.
    pub body_limit_bytes: usize,
    /// A request that takes longer is answered 503 so callers can retry elsewhere.
    pub request_timeout_ms: u64,
    /// Requests handled at once at most; one more is answered 503 `overloaded` with
    /// `Retry-After` at once instead of queueing (queued requests cost memory and only get
    /// slower). Health and metrics endpoints are never refused. The limit in force adapts to
    /// latency below this ceiling (`concurrency`).
    pub max_in_flight: usize,
    /// How the in-flight limit adapts to latency ([`limit`]).
    pub concurrency: ConcurrencyConfig,
    /// Where `/metrics` is served instead of on `listen`: a port Prometheus reaches and
    /// callers do not (the bff's `listen` is public behind nginx). Unset, `/metrics` is on
    /// `listen`.
    pub metrics_listen: Option<SocketAddr>,
}

impl HttpConfig {
    pub fn with_port(port: u16) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            ..Self::default()
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            body_limit_bytes: 256 * 1024,
            request_timeout_ms: 20_000,
            max_in_flight: 1024,
            concurrency: ConcurrencyConfig::default(),
            metrics_listen: None,
        }
    }
}

/// Adds the shared layers to a service's router, outermost first: request context and trace
/// span → request metrics → in-flight limit → timeout → body limit. Auth is per route (an
/// extractor). `/metrics` (the instance's `registry`) is added unless `cfg.metrics_listen`
/// moves it to a port of its own ([`serve_metrics`]).
pub fn with_edge_layers(router: Router, cfg: &HttpConfig, registry: &Registry) -> Router {
    use tower_http::timeout::TimeoutLayer;
    let metrics = HttpMetrics::new(registry);
    let in_flight = limit::ConcurrencyLimit::new(
        cfg.max_in_flight,
        &cfg.concurrency,
        metrics.concurrency_limit.clone(),
    );
    let router = match cfg.metrics_listen {
        None => router.route("/metrics", registry.endpoint()),
        Some(_) => router,
    };
    router
        .fallback(|| async { ApiError::not_found("no route matches this path") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path does not take this method",
            )
        })
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn(reject_nul_in_uri))
        .layer(axum::extract::DefaultBodyLimit::max(cfg.body_limit_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            std::time::Duration::from_millis(cfg.request_timeout_ms),
        ))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| shed_overload(in_flight.clone(), req, next),
        ))
        .layer(axum::middleware::from_fn(problems_only))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| count_request(metrics.clone(), req, next),
        ))
        .layer(axum::middleware::from_fn(request_context))
}

/// Counts each answered request by method, matched route and status (a path no route
/// matches is `unmatched`: raw paths would make a series per id).
async fn count_request(metrics: HttpMetrics, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics.observe(
        method.as_str(),
        &route,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

/// Serves `/metrics` on `cfg.metrics_listen` until `shutdown`, when it is set, with `admin`'s
/// routes beside it (what only operators may read, e.g. the bff's detailed readiness). The
/// port is bound before this returns, so a taken port stops the service at start.
pub async fn serve_metrics(
    cfg: &HttpConfig,
    registry: &Registry,
    admin: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = cfg.metrics_listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding http.metrics_listen {addr}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    let router = Router::new()
        .route("/metrics", registry.endpoint())
        .route("/healthz", axum::routing::get(healthz))
        .merge(admin);
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = serve(listener, router, shutdown).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    })))
}

/// Seconds a shed request is told to wait before trying again.
const OVERLOADED_RETRY_AFTER_SECS: u64 = 1;

/// Answers 503 `overloaded` when as many requests as the limit allows are already being
/// handled ([`limit`]).
async fn shed_overload(
    in_flight: std::sync::Arc<limit::ConcurrencyLimit>,
    req: Request,
    next: Next,
) -> Response {
    // Liveness and metrics always answer (they cost nothing). `/readyz` is shed like any
    // request: it calls dependencies, so a flood of it must not get past the limit, and a
    // saturated instance saying "not ready" is what a load balancer should hear.
    let exempt = matches!(req.uri().path(), "/healthz" | "/metrics");
    let permit = match in_flight.try_acquire() {
        Some(permit) => Some(permit),
        None if exempt => None,
        None => {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the service is handling as many requests as it can; try again shortly",
            )
            .with_header(
                header::RETRY_AFTER,
                header::HeaderValue::from(OVERLOADED_RETRY_AFTER_SECS),
            )
            .into_response();
        }
    };
    let resp = next.run(req).await;
    if let Some(permit) = permit {
        permit.finish();
    }
    resp
}

/// A handler that panicked answers a 500 problem (and the panic is logged) instead of
/// dropping the connection, which a caller cannot tell from the service being down.
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    ApiError::internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}

/// Every error answer is `application/problem+json`, also the ones the framework makes itself
/// (a query string that does not parse, a timed-out request, a body of the wrong type): any
/// 4xx/5xx that is not a problem becomes one with the same status and headers, its text as
/// the detail. A handler's own problems pass untouched.
async fn problems_only(req: Request, next: Next) -> Response {
    // Readiness has its own small body (`{"status": "not_ready"}`), which is what a 503 from
    // it means; every other error is a problem.
    let readiness = req.uri().path() == "/readyz";
    let resp = next.run(req).await;
    if readiness {
        return resp;
    }
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/problem+json"));
    if is_problem {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let (kind, fallback) = match status {
        StatusCode::BAD_REQUEST => ("bad_request", "the request is malformed"),
        StatusCode::NOT_FOUND => ("not_found", "no route matches this path"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "this path does not take this method")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "the request body must be application/json",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => ("validation_failed", "the request is invalid"),
        StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "too many requests; retry later"),
        StatusCode::SERVICE_UNAVAILABLE => (
            "service_unavailable",
            "the service could not answer in time; retry",
        ),
        s if s.is_server_error() => ("internal", "an internal error occurred"),
        _ => ("bad_request", "the request cannot be served"),
    };
    let detail = if text.is_empty() || status.is_server_error() {
        fallback.to_owned()
    } else {
        text.chars().take(300).collect()
    };
    let mut out = ApiError::new(status, kind, detail).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// A NUL (`%00`) in the path or query string is a 400 problem before any handler sees it: no
/// store here can keep one, and a handler would fail deep inside with a 500.
async fn reject_nul_in_uri(req: Request, next: Next) -> Response {
    let uri = req.uri();
    let has_nul = |s: &str| s.to_ascii_lowercase().contains("%00");
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        let field = uri
            .query()
            .and_then(|q| {
                q.split('&')
                    .find(|p| has_nul(p))
                    .map(|p| p.split('=').next().unwrap_or_default().to_owned())
            })
            .unwrap_or_else(|| "path".to_owned());
        return ApiError::validation(vec![FieldError::new(
            field,
            "must not contain a NUL character (%00)",
        )])
        .into_response();
    }
    next.run(req).await
}

/// Gives every request a [`RequestContext`] (from `x-request-id` / `traceparent` or new), runs
/// it inside a span carrying those ids and the matched route, echoes `x-request-id` and logs
/// one line per request.
pub async fn request_context(req: Request, next: Next) -> Response {
    let (incoming, mut ctx) = {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let incoming = header(TRACEPARENT).map(str::to_owned);
        let ctx = RequestContext::from_parts(header(REQUEST_ID), incoming.as_deref());
        (incoming, ctx)
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let method = req.method().clone();
    let span = tracing::info_span!(
        "http",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        %method,
        route,
        request_id = %ctx.request_id,
        trace_id = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    crate::telemetry::adopt(&span, incoming.as_deref(), &mut ctx);
    span.record("trace_id", ctx.trace_id());
    let request_id = ctx.request_id.clone();
    let started = Instant::now();
    let mut resp = ctx.scope(next.run(req)).instrument(span.clone()).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    let status = resp.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.record("http.response.status_code", status);
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, elapsed_ms, "request finished");
        } else {
            tracing::info!(status, elapsed_ms, "request finished");
        }
    });
    resp
}

/// Runs `router` on an already-bound listener until `shutdown` is cancelled; in-flight
/// requests finish first.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}

/// [`serve`] on any listener (one that hands over only some of a port's connections).
pub async fn serve_on<L>(
    listener: L,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router.into_make_service())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// `/healthz` and a `/readyz` that checks Postgres and that every Kafka consumer of the
/// instance has joined its group, for services whose state holds a pool and a membership.
pub fn health<S>() -> Router<S>
where
    sqlx::PgPool: axum::extract::FromRef<S>,
    crate::kafka::Membership: axum::extract::FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    async fn readyz(
        axum::extract::State(pool): axum::extract::State<sqlx::PgPool>,
        axum::extract::State(membership): axum::extract::State<crate::kafka::Membership>,
    ) -> Response {
        readiness(vec![
            ("postgres", crate::db::ping(&pool).await),
            ("kafka_consumers", membership.check()),
        ])
    }
    Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(readyz))
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// A readiness result for anyone: 200 `{"status": "ready"}` or 503 `{"status":
/// "not_ready"}`, nothing about the dependencies (their errors name internal hosts); the
/// failures are logged, and [`readiness`] serves the details where only operators reach.
pub fn readiness_bare(checks: Vec<(&'static str, Result<(), String>)>) -> Response {
    let failed: Vec<_> = checks.iter().filter(|(_, r)| r.is_err()).collect();
    for (name, r) in &failed {
        tracing::warn!(
            dependency = name,
            error = r.as_ref().err().map(String::as_str),
            "not ready"
        );
    }
    let (status, word) = if failed.is_empty() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    (status, axum::Json(serde_json::json!({ "status": word }))).into_response()
}

/// Renders a readiness result: 200 when every dependency answered, 503 naming the ones that
/// did not.
pub fn readiness(checks: Vec<(&'static str, Result<(), String>)>) -> Response {
    let failed: Vec<_> = checks.iter().filter(|(_, r)| r.is_err()).collect();
    let body = serde_json::json!({
        "status": if failed.is_empty() { "ready" } else { "not_ready" },
        "checks": checks.iter().map(|(name, r)| (name.to_string(), serde_json::Value::String(match r {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.clone(),
        }))).collect::<serde_json::Map<String, serde_json::Value>>(),
    });
    let status = if failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over `max_in_flight`, a request is answered 503 `overloaded` with `Retry-After` at
    /// once (readiness too); liveness is still answered; a finished request frees its place.
    #[tokio::test]
    async fn requests_over_the_in_flight_limit_are_shed_not_queued() {
        use tower::ServiceExt;
        let release = std::sync::Arc::new(tokio::sync::Notify::new());
        let entered = std::sync::Arc::new(tokio::sync::Notify::new());
        let (held, entering) = (release.clone(), entered.clone());
        let router = Router::new()
            .route(
                "/slow",
                axum::routing::get(move || {
                    let (held, entering) = (held.clone(), entering.clone());
                    async move {
                        entering.notify_one();
                        held.notified().await;
                        "done"
                    }
                }),
            )
            .route("/healthz", axum::routing::get(healthz))
            .route("/readyz", axum::routing::get(|| async { "ready" }));
        let cfg = HttpConfig {
            max_in_flight: 1,
            ..HttpConfig::default()
        };
        let app = with_edge_layers(router, &cfg, &Registry::default());
        let get = |path: &str| {
            axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let first = tokio::spawn(app.clone().oneshot(get("/slow")));
        entered.notified().await; // the first request holds the only place
        let shed = app.clone().oneshot(get("/slow")).await.unwrap();
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shed.headers()[header::RETRY_AFTER], "1");
        let body = axum::body::to_bytes(shed.into_body(), 4096).await.unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            problem["type"].as_str().unwrap().ends_with("overloaded"),
            "{problem}"
        );
        let health = app.clone().oneshot(get("/healthz")).await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        // Readiness calls dependencies: a flood of it is shed like any request.
        let ready = app.clone().oneshot(get("/readyz")).await.unwrap();
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        release.notify_one();
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
        release.notify_one();
        let again = app.oneshot(get("/slow")).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
    }

    /// A handler that panics answers a 500 problem+json (logged once), not a dropped
    /// connection — which the bff would report as "unavailable, retry".
    #[tokio::test]
    async fn a_panic_is_a_500_problem() {
        use tower::ServiceExt;
        let router = Router::new().route(
            "/boom",
            axum::routing::get(|| async {
                if true {
                    panic!("a bug");
                }
                "never"
            }),
        );
        let app = with_edge_layers(router, &HttpConfig::default(), &Registry::default());
        let resp = app
            .oneshot(
                axum::http::Request::get("/boom")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["type"], "internal", "{problem}");
        assert!(
            !problem.to_string().contains("a bug"),
            "nothing of the panic shows: {problem}"
        );
    }

    /// `/readyz` answers 503 until every Kafka consumer of the instance has joined its group
    /// (a load balancer must not send traffic a consumer cannot yet take), then 200.
    #[tokio::test]
    async fn readiness_waits_for_every_consumer_to_join() {
        use tower::ServiceExt;
        #[derive(Clone, axum::extract::FromRef)]
        struct State {
            pool: sqlx::PgPool,
            membership: crate::kafka::Membership,
        }
        let pool = crate::db::connect_lazy(&crate::db::DatabaseConfig::new(
            "postgres://postgres@127.0.0.1:5432/postgres",
        ))
        .unwrap();
        let membership = crate::kafka::Membership::default();
        let joined = membership.track("notification-service.events");
        let app = health().with_state(State {
            pool,
            membership: membership.clone(),
        });
        let ready = |app: Router| async move {
            app.oneshot(
                axum::http::Request::get("/readyz")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap()
            .status()
        };
        assert_eq!(ready(app.clone()).await, StatusCode::SERVICE_UNAVAILABLE);
        joined.set();
        assert_eq!(ready(app).await, StatusCode::OK);
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        category: String,
        recipients: Vec<Recipient>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Recipient {
        email: String,
    }

    #[test]
    fn missing_field_is_named() {
        let err = parse_json::<Body>(br#"{"recipients": []}"#).unwrap_err();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.errors[0].field, "category");
        let err = parse_json::<Body>(br#"{"category": "x", "recipients": [{}]}"#).unwrap_err();
        assert_eq!(err.errors[0].field, "recipients[0].email");
        let err = parse_json::<Body>(br#"{"category": 5, "recipients": []}"#).unwrap_err();
        assert_eq!(err.errors[0].field, "category");
    }

    #[test]
    fn a_nul_anywhere_is_422_naming_where() {
        let err =
            parse_json::<serde_json::Value>(br#"{"a": {"b": ["ok", "x\u0000"]}}"#).unwrap_err();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.errors[0].field, "a.b[1]");
        // An escaped backslash followed by the letters is no NUL.
        assert!(parse_json::<serde_json::Value>(br#"{"a": "\\u0000"}"#).is_ok());
    }

    #[test]
    fn broken_json_is_400() {
        let err = parse_json::<Body>(br#"{"category": "#).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.kind, "malformed_json");
    }
}
