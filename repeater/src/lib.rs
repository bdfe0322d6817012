//! repeater: the status side of database `notify`.
//!
//! Consumes `notify.status`, records every attempt and moves the delivery to its next state
//! ([`status`]): `sent`; `retrying` with the next attempt scheduled through the outbox
//! (`available_at` in the future, [`retry`] computes when); or `dead` with the last error.
//! Handling is idempotent: `(delivery_id, attempt)` is unique, a redelivered event changes
//! nothing.

pub mod config;
pub mod metrics;
pub mod status;
pub mod stuck;

use std::sync::Arc;

use common::{
    events::{REPEATER_GROUP, STATUS_TOPIC},
    kafka::runner::{self, RunnerConfig},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// What the health endpoints read.
#[derive(Clone, axum::extract::FromRef)]
struct HealthState {
    pool: sqlx::PgPool,
    membership: common::kafka::Membership,
}

/// Migrations of database `notify`, shared with notification-service (same folder).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/notify");

/// Creates the database if needed and applies migrations (either service may run them).
pub async fn migrate(cfg: &Config) -> anyhow::Result<()> {
    common::db::migrate(&cfg.database, &MIGRATOR).await
}

/// Runs the status consumer, the stuck-delivery scan and the health and metrics endpoint
/// until `shutdown`.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let registry = common::metrics::Registry::default();
    let metrics = Arc::new(metrics::Metrics::new(&registry));
    let membership = common::kafka::Membership::default();
    let pool = common::db::connect_lazy(&cfg.database)?;
    let handler = Arc::new(status::StatusHandler::new(
        pool.clone(),
        cfg.retry.clone(),
        &cfg.apply,
        metrics.clone(),
    ));
    let consuming = runner::spawn(
        &cfg.kafka,
        REPEATER_GROUP,
        STATUS_TOPIC,
        handler,
        RunnerConfig {
            max_in_flight: cfg.max_in_flight,
            ..RunnerConfig::default()
        },
        &membership,
        &shutdown,
    )?;

    let scanning = cfg.stuck.enabled.then(|| {
        let scan = Arc::new(stuck::StuckScan::new(
            pool.clone(),
            cfg.kafka.clone(),
            cfg.stuck.clone(),
            metrics.clone(),
        ));
        tokio::spawn(scan.run(shutdown.clone()))
    });

    let router = common::http::health().with_state(HealthState {
        pool: pool.clone(),
        membership,
    });
    let _metrics =
        common::http::serve_metrics(&cfg.http, &registry, axum::Router::new(), shutdown.clone())
            .await?;
    tracing::info!(addr = %listener.local_addr()?, "repeater listening (health)");
    common::http::serve(
        listener,
        common::http::with_edge_layers(router, &cfg.http, &registry),
        shutdown.clone(),
    )
    .await?;
    shutdown.cancel();
    let _ = consuming.await;
    if let Some(s) = scanning {
        let _ = s.await;
    }
    pool.close().await;
    Ok(())
}

impl common::cli::Service for Config {
    const NAME: &'static str = "repeater";

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
