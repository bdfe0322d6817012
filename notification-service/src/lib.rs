//! notification-service: intake, planning and history. Owns database `notify`.
//!
//! [`intake`] owns turning a request into written notifications, for the send route, the
//! welcome of a new user ([`events`]) and channel fallback ([`fallback`]) alike: it validates
//! the request ([`request`]), fetches recipients' delivery profiles from users-service in one
//! batch ([`users_client`]), plans one delivery per recipient × channel ([`planning`]),
//! renders templates ([`templates`]) and writes the notification, its deliveries and their
//! outbox rows in one transaction ([`db`]) before answering 202. The outbox relay (from
//! `common`) publishes the dispatch messages to Kafka; a dispatch that goes out later than it
//! was planned (a retry, a re-drive, a scheduled send) passes [`recheck`] first. A send to a
//! topic is fanned out in chunks through the same intake ([`fanout`]). Sends may be folded
//! into digests ([`digest`], [`folding`]) and held back by frequency caps ([`caps`]), with the rules admins
//! set per category ([`category_rules`]). [`views`] are the response shapes of the public
//! contract.

pub mod caps;
pub mod category_rules;
pub mod config;
pub mod db;
pub mod digest;
pub mod events;
pub mod fallback;
pub mod fanout;
pub mod folding;
pub mod inbox;
pub mod intake;
pub mod metrics;
pub mod permissions;
pub mod planned;
pub mod planning;
pub mod quiet_hours;
pub mod recheck;
pub mod request;
pub mod routes;
pub mod skip;
pub mod stored_content;
pub mod suppression;
pub mod templates;
pub mod users_client;
pub mod views;

use std::sync::Arc;

use axum::{Router, extract::FromRef};
use common::auth::JwtVerifier;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Migrations of database `notify` (shared with the repeater), embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/notify");

/// What handlers share.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub pool: PgPool,
    pub verifier: Arc<JwtVerifier>,
    pub users: Arc<users_client::UsersClient>,
    pub planning: Arc<planning::PlanningConfig>,
    /// This instance's metric families (served at `/metrics`).
    pub metrics: Arc<metrics::Metrics>,
    /// What each calling service may send.
    pub permissions: Arc<permissions::PermissionsConfig>,
    /// This instance's Kafka consumers (readiness waits until they joined their groups).
    pub membership: common::kafka::Membership,
    /// Writes accepted requests (group commit).
    pub intake: intake::Intake,
    /// Which providers' receipts are taken, and their keys.
    pub receipts: Arc<routes::receipts::ReceiptsConfig>,
    /// Bounce and complaint reports (the suppression list).
    pub bounces: Arc<routes::bounces::BouncesConfig>,
    /// `bounces.secret`, parsed once (a malformed secret stops the service at start).
    pub bounce_key: Option<common::signing::SigningKey>,
    /// Where inbox changes are published for the bff's streams.
    pub inbox: Arc<inbox::Bus>,
    /// The rules admins set per category (digest windows, caps), cached.
    pub rules: Arc<category_rules::Cache>,
}

pub fn router(state: AppState, registry: &common::metrics::Registry, cfg: &Config) -> Router {
    let api = Router::new()
        .merge(routes::notifications::router())
        .merge(routes::me::router())
        .merge(routes::inbox::router())
        .merge(routes::templates::router())
        .merge(routes::admin::router())
        .merge(routes::dead_letters::router())
        .merge(routes::receipts::router())
        .merge(routes::bounces::router())
        .merge(routes::suppressions::router())
        .merge(routes::rules::router())
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
    // First, before anything is connected: settings anyone could forge tokens for stop here.
    let verifier = Arc::new(JwtVerifier::new(&cfg.jwt)?);
    cfg.planning.check()?;
    let registry = common::metrics::Registry::default();
    let pool = common::db::connect_lazy(&cfg.database)?;
    let redis = common::redis::connect(&cfg.redis).await?;
    let bus = Arc::new(inbox::Bus::new(redis.clone(), &cfg.redis));
    let users =
        users_client::UsersClient::new(&cfg.users, &cfg.jwt, Some((redis, cfg.redis.clone())))?;
    let state = AppState {
        pool: pool.clone(),
        verifier,
        users: Arc::new(users),
        planning: Arc::new(cfg.planning.clone()),
        metrics: Arc::new(metrics::Metrics::new(&registry)),
        permissions: Arc::new(cfg.permissions.clone()),
        membership: common::kafka::Membership::default(),
        intake: intake::Intake::start(pool.clone(), &cfg.intake),
        receipts: Arc::new(cfg.receipts.clone()),
        bounces: Arc::new(cfg.bounces.clone()),
        bounce_key: cfg.bounces.key()?,
        inbox: bus,
        rules: Arc::new(category_rules::Cache::new(
            pool.clone(),
            std::time::Duration::from_millis(cfg.planning.rules_cache_ms),
        )),
    };
    let consume = Consume {
        cfg: &cfg,
        state: &state,
        shutdown: &shutdown,
    };
    let events = consume.spawn(
        "events",
        common::events::EVENTS_TOPIC,
        8,
        events::EventsHandler {
            state: state.clone(),
            welcome: Arc::new(cfg.welcome.clone()),
        },
    )?;
    let fanouts = consume.spawn(
        "fanout",
        common::events::FANOUT_TOPIC,
        cfg.fanout.concurrency,
        fanout::FanoutHandler {
            state: state.clone(),
            cfg: Arc::new(cfg.fanout.clone()),
        },
    )?;
    let digests = consume.spawn(
        "digest",
        common::events::DIGEST_TOPIC,
        cfg.fanout.concurrency,
        digest::DigestHandler {
            state: state.clone(),
        },
    )?;
    // The in-app channel's worker: one consumer group over both lanes' topics.
    let inboxes = if cfg
        .planning
        .enabled_channels
        .contains(&common::events::Channel::InApp)
    {
        common::events::Lane::ALL
            .into_iter()
            .map(|lane| {
                consume.spawn(
                    &format!("in_app.{}", lane.as_str()),
                    &common::events::dispatch_topic(common::events::Channel::InApp, lane),
                    cfg.inbox.concurrency,
                    inbox::InboxHandler {
                        state: state.clone(),
                    },
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let _inbox_purge = inbox::spawn_purge(pool.clone(), cfg.inbox.clone(), shutdown.clone());
    // Every dispatch that goes out later than it was planned is re-checked first (decision 0026).
    let recheck = Arc::new(recheck::Recheck {
        users: state.users.clone(),
        metrics: state.metrics.clone(),
    });
    let relay = common::outbox::spawn_gated_relay(
        &pool,
        &cfg.kafka,
        &cfg.relay,
        "notification-service-relay",
        Some(&registry),
        Some(recheck),
        &shutdown,
    )?;
    // Expired idempotency keys are purged hourly (they are also ignored once 24 h old).
    let purge = {
        let (pool, shutdown) = (pool.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => match db::idempotency::purge_expired(&pool).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(purged = n, "expired idempotency keys deleted"),
                        Err(e) => tracing::warn!(error = %e, "idempotency key purge failed"),
                    },
                }
            }
        })
    };
    tracing::info!(addr = %listener.local_addr()?, "notification-service listening");
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
    common::http::serve(listener, router(state, &registry, &cfg), shutdown.clone()).await?;
    shutdown.cancel();
    if let Some(relay) = relay {
        common::shutdown::drain(relay, std::time::Duration::from_secs(10)).await;
    }
    // The consumers stop together: one after another, each one's wait added to the stop.
    tokio::join!(
        common::shutdown::drain(events, std::time::Duration::from_secs(25)),
        common::shutdown::drain(fanouts, std::time::Duration::from_secs(25)),
        common::shutdown::drain(digests, std::time::Duration::from_secs(25)),
    );
    for c in inboxes {
        common::shutdown::drain(c, std::time::Duration::from_secs(25)).await;
    }
    let _ = purge.await;
    pool.close().await;
    Ok(())
}

/// What this service's Kafka consumers share: each is a group of its own,
/// `notification-service.<name>`, joined before the service is ready.
struct Consume<'a> {
    cfg: &'a Config,
    state: &'a AppState,
    shutdown: &'a CancellationToken,
}

impl Consume<'_> {
    fn spawn<H: common::kafka::runner::MessageHandler>(
        &self,
        name: &str,
        topic: &str,
        max_in_flight: usize,
        handler: H,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        common::kafka::runner::spawn(
            &self.cfg.kafka,
            &format!("notification-service.{name}"),
            topic,
            Arc::new(handler),
            common::kafka::runner::RunnerConfig {
                max_in_flight: max_in_flight.max(1),
                ..Default::default()
            },
            &self.state.membership,
            self.shutdown,
        )
    }
}

impl common::cli::Service for Config {
    const NAME: &'static str = "notification-service";

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
