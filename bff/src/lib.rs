//! bff: the public edge behind nginx. Holds no database.
//!
//! Every request is authenticated here (JWT, pinned algorithm), rate limited per principal
//! ([`rate_limit`], Redis, shared by all instances) and authorised per route (roles), then
//! forwarded with the caller's token to the service that owns the data, which verifies it
//! again ([`upstream`]). The routes are one table ([`routes::ROUTES`]: method, path, roles,
//! upstream, checks, documentation) that both registers them and builds the OpenAPI 3.1
//! document ([`openapi`], schemas from the `api` crate's types), served at `/openapi.json`
//! and browsable at `/docs` ([`web`]: pages and their assets, served from this origin). The
//! gRPC API ([`grpc`], `notify.v1`) is served on the same port
//! and carried out by the same routes.

pub mod config;
pub mod grpc;
pub mod idempotency;
pub mod inbox_stream;
pub mod openapi;
pub mod rate_limit;
pub mod routes;
pub mod session;
pub mod stream_listener;
pub mod upstream;
pub mod web;

use std::sync::Arc;

use axum::{Router, extract::FromRef};
use common::auth::JwtVerifier;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// What handlers share.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub verifier: Arc<JwtVerifier>,
    pub upstream: Arc<upstream::Upstreams>,
    pub limiter: rate_limit::SharedLimiter,
    /// Replays of completed idempotent requests.
    pub idempotency: Option<Arc<idempotency::IdempotencyCache>>,
    /// The inbox streams this instance holds, and its one subscription.
    pub inbox: Arc<inbox_stream::Hub>,
}

/// Every route, with the OpenAPI document built from the same handlers, and the gRPC API.
/// Requests are counted in `registry`; set `http.metrics_listen` so `/metrics` is not served
/// on the public port (nginx refuses `/metrics` from outside either way).
pub fn router(state: AppState, cfg: &Config, registry: &common::metrics::Registry) -> Router {
    let api = routes::router()
        .merge(session::router())
        .with_state(state.clone())
        .merge(openapi::docs_router(openapi::served()))
        .merge(web::router())
        .layer(axum::middleware::from_fn(session::cookie_to_bearer));
    let rest = common::http::with_edge_layers(api, &cfg.http, registry);
    grpc::mount(rest, state, cfg.http.body_limit_bytes)
}

/// Serves the public API until `shutdown`; in-flight requests finish first.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // First, before anything is connected: settings anyone could forge tokens for stop here.
    let verifier = Arc::new(JwtVerifier::new(&cfg.jwt)?);
    let redis = common::redis::connect(&cfg.redis).await?;
    let limiter = cfg.rate_limits.enabled.then(|| {
        Arc::new(rate_limit::RateLimiter::new(
            redis.clone(),
            cfg.rate_limits.clone(),
            cfg.redis.clone(),
        ))
    });
    let idempotency = Some(Arc::new(idempotency::IdempotencyCache::new(
        redis.clone(),
        cfg.redis.clone(),
    )));
    let registry = common::metrics::Registry::default();
    let inbox = inbox_stream::Hub::new(
        cfg.inbox.clone(),
        Some(redis.clone()),
        cfg.redis.clone(),
        &registry,
        shutdown.clone(),
    );
    tokio::spawn(inbox.clone().run(cfg.redis.url.clone()));
    tokio::spawn(inbox.clone().renew_leases());
    let state = AppState {
        verifier,
        upstream: Arc::new(upstream::Upstreams::new(&cfg.upstreams)?),
        limiter,
        idempotency,
        inbox,
    };
    let _memory = common::redis::spawn_memory_gauge(
        redis,
        &registry,
        std::time::Duration::from_secs(10),
        shutdown.clone(),
    );
    // The readiness details name internal hosts: only on the admin (metrics) port.
    let admin = Router::new()
        .route(
            "/readyz",
            axum::routing::get(routes::health::readyz_detailed),
        )
        .with_state(state.clone());
    let _metrics =
        common::http::serve_metrics(&cfg.http, &registry, admin, shutdown.clone()).await?;
    tracing::info!(addr = %listener.local_addr()?, "bff listening");
    // Connections that open with an inbox stream are served off hyper (decision 0029).
    let rest = stream_listener::split(listener, state.clone(), shutdown.clone())?;
    common::http::serve_on(rest, router(state, &cfg, &registry), shutdown).await?;
    Ok(())
}

impl common::cli::Service for Config {
    const NAME: &'static str = "bff";

    fn telemetry(&self) -> &common::telemetry::TelemetryConfig {
        &self.telemetry
    }

    fn listen(&self) -> std::net::SocketAddr {
        self.http.listen
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        println!("the bff has no database: nothing to migrate");
        Ok(())
    }

    async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        run(self, listener, shutdown).await
    }
}
