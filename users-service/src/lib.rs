//! users-service: owns database `users` — who the users are and how to reach them.
//!
//! Layout: [`config`] (typed settings), [`domain`] (parsing of emails, phones, time zones:
//! parse at the edge, trust inside), [`db`] (queries; the caller owns the transaction),
//! [`routes`] (one module per resource), [`topics`] (the topic use cases the routes call). [`run`] wires the HTTP server and the outbox relay
//! that publishes `user.registered` events.

pub mod config;
pub mod db;
pub mod domain;
pub mod events;
pub mod routes;
pub mod topics;

use std::sync::Arc;

use axum::{Router, extract::FromRef};
use common::auth::JwtVerifier;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Migrations of database `users`, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/users");

/// What handlers share.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub pool: PgPool,
    pub verifier: Arc<JwtVerifier>,
    /// Categories that ignore opt-outs.
    pub mandatory_categories: Arc<Vec<String>>,
    /// This instance's Kafka consumers (readiness waits until they joined their groups).
    pub membership: common::kafka::Membership,
    /// Who may call `/internal/v1/*`.
    #[from_ref(skip)]
    pub internal_callers: Arc<Vec<String>>,
    /// The Telegram bot's settings and its replies.
    #[from_ref(skip)]
    pub telegram: Arc<routes::telegram::TelegramConfig>,
    #[from_ref(skip)]
    pub telegram_replies: Arc<routes::telegram::Replies>,
}

/// Every route of the service.
pub fn router(state: AppState, registry: &common::metrics::Registry, cfg: &Config) -> Router {
    let api = Router::new()
        .merge(routes::users::router())
        .merge(routes::internal::router())
        .merge(routes::me::router())
        .merge(routes::telegram::router())
        .merge(routes::topics::router())
        .merge(common::http::health())
        .with_state(state);
    common::http::with_edge_layers(api, &cfg.http, registry)
}

/// Creates the database if needed and applies migrations.
pub async fn migrate(cfg: &Config) -> anyhow::Result<()> {
    common::db::migrate(&cfg.database, &MIGRATOR).await
}

/// Runs the HTTP API and the outbox relay until `shutdown`.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = common::db::connect_lazy(&cfg.database)?;
    let registry = common::metrics::Registry::default();
    let verifier = Arc::new(JwtVerifier::new(&cfg.jwt)?);
    let state = AppState {
        pool: pool.clone(),
        verifier,
        mandatory_categories: Arc::new(cfg.mandatory_categories.clone()),
        membership: common::kafka::Membership::default(),
        internal_callers: Arc::new(cfg.internal_callers.clone()),
        telegram: Arc::new(cfg.telegram.clone()),
        telegram_replies: Arc::new(routes::telegram::Replies::new(&cfg.telegram)?),
    };
    let relay = common::outbox::spawn_relay(
        &pool,
        &cfg.kafka,
        &cfg.relay,
        "users-service-relay",
        Some(&registry),
        &shutdown,
    )?;
    let events = common::kafka::runner::spawn(
        &cfg.kafka,
        "users-service.events",
        common::events::EVENTS_TOPIC,
        Arc::new(events::EventsHandler { pool: pool.clone() }),
        common::kafka::runner::RunnerConfig {
            max_in_flight: 8,
            ..Default::default()
        },
        &state.membership,
        &shutdown,
    )?;
    let _retention = common::retention::spawn(
        pool.clone(),
        cfg.retention.rules(),
        cfg.retention.purge.clone(),
        &registry,
        shutdown.clone(),
    );
    let _metrics =
        common::http::serve_metrics(&cfg.http, &registry, axum::Router::new(), shutdown.clone())
            .await?;
    tracing::info!(addr = %listener.local_addr()?, "users-service listening");
    common::http::serve(listener, router(state, &registry, &cfg), shutdown.clone()).await?;
    shutdown.cancel();
    let _ = events.await;
    if let Some(relay) = relay {
        common::shutdown::drain(relay, std::time::Duration::from_secs(10)).await;
    }
    pool.close().await;
    Ok(())
}

impl common::cli::Service for Config {
    const NAME: &'static str = "users-service";

    fn telemetry(&self) -> &common::telemetry::TelemetryConfig {
        &self.telemetry
    }

    fn listen(&self) -> std::net::SocketAddr {
        self.http.listen
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        migrate(self).await
    }

    async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        run(self, listener, shutdown).await
    }
}
