//! workers: stateless transports. Each consumes `notify.dispatch.<channel>.<lane>`, sends
//! through its provider and reports a status event on `notify.status`.
//!
//! [`provider`] is what a channel implements ([`email`], [`sms`], [`push`] (FCM and APNs),
//! [`webhook`], [`telegram`]); [`dispatch`] is the
//! channel-independent part: decode, dedupe in Redis, send, report. Urgent and bulk lanes have
//! separate consumers and concurrency limits so a bulk backlog never delays urgent traffic.

pub mod apns;
pub mod breaker;
pub mod config;
pub mod dispatch;
pub mod email;
pub mod failover;
pub mod fcm;
pub mod http_provider;
pub mod metrics;
pub mod provider;
pub mod push;
pub mod sms;
pub mod smtp_pool;
pub mod telegram;
pub mod vonage;
pub mod webhook;

use std::sync::Arc;

use axum::{Router, extract::State, response::Response, routing::get};
use common::{
    events::{Channel, Lane, dispatch_topic},
    kafka::{
        Membership,
        runner::{self, RunnerConfig},
    },
    metrics::Registry,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
use dispatch::Dispatcher;

#[derive(Clone)]
struct HealthState {
    redis: redis::aio::ConnectionManager,
    membership: Membership,
}

fn health_router(state: HealthState, registry: &Registry, cfg: &Config) -> Router {
    let r = Router::new()
        .route("/healthz", get(common::http::healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    common::http::with_edge_layers(r, &cfg.http, registry)
}

async fn readyz(State(mut s): State<HealthState>) -> Response {
    common::http::readiness(vec![
        ("redis", common::redis::ping(&mut s.redis).await),
        ("kafka_consumers", s.membership.check()),
    ])
}

/// What every channel's consumers share.
struct Shared<'a> {
    cfg: &'a Config,
    producer: &'a rdkafka::producer::FutureProducer,
    redis: &'a redis::aio::ConnectionManager,
    metrics: &'a Arc<metrics::Metrics>,
    membership: &'a Membership,
    shutdown: &'a CancellationToken,
}

/// Starts an urgent and a bulk consumer for `channel`, sending through `provider`.
fn start_channel<P: provider::Provider>(
    provider: Arc<P>,
    channel: Channel,
    s: &Shared<'_>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let cfg = s.cfg;
    s.metrics.declare(channel, &provider.providers());
    let dispatcher = Arc::new(Dispatcher::new(
        provider,
        s.producer.clone(),
        s.redis.clone(),
        cfg,
        s.metrics.clone(),
    ));
    let mut handles = Vec::new();
    for lane in Lane::ALL {
        handles.push(runner::spawn(
            &cfg.kafka,
            &common::events::worker_group(channel, lane),
            &dispatch_topic(channel, lane),
            dispatcher.clone(),
            RunnerConfig {
                max_in_flight: cfg.lanes.concurrency(lane),
                ..RunnerConfig::default()
            },
            s.membership,
            s.shutdown,
        )?);
    }
    Ok(handles)
}

/// Runs the consumers of every configured channel (one per lane) and the health endpoint
/// until `shutdown`.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let registry = Registry::default();
    let metrics = Arc::new(metrics::Metrics::new(&registry));
    let membership = Membership::default();
    let redis = common::redis::connect(&cfg.redis).await?;
    let producer = common::kafka::producer(&cfg.kafka, "workers-status")?;
    let shared = Shared {
        cfg: &cfg,
        producer: &producer,
        redis: &redis,
        metrics: &metrics,
        membership: &membership,
        shutdown: &shutdown,
    };
    // One set of circuit breakers for every channel with several providers (keys per provider).
    let breakers = breaker::Breakers::new(redis.clone(), cfg.redis.clone(), cfg.breaker.clone());
    let mut consumers = Vec::new();
    for channel in &cfg.channels {
        let started = match channel {
            Channel::Email => start_channel(
                Arc::new(failover::Failover::new(
                    Channel::Email,
                    email::EmailProvider::relays(&cfg.email)?,
                    breakers.clone(),
                    metrics.clone(),
                )?),
                *channel,
                &shared,
            )?,
            Channel::Sms => start_channel(
                Arc::new(failover::Failover::new(
                    Channel::Sms,
                    sms::SmsGateway::all(&cfg.sms)?,
                    breakers.clone(),
                    metrics.clone(),
                )?),
                *channel,
                &shared,
            )?,
            Channel::Telegram => start_channel(
                Arc::new(telegram::TelegramProvider::new(&cfg.telegram)?),
                *channel,
                &shared,
            )?,
            Channel::Webhook => start_channel(
                Arc::new(webhook::WebhookProvider::new(&cfg.webhook)?),
                *channel,
                &shared,
            )?,
            Channel::Push => start_channel(
                Arc::new(push::PushProvider::new(&cfg.push)?),
                *channel,
                &shared,
            )?,
            // notification-service stores in-app items itself (decision 0029).
            Channel::InApp => anyhow::bail!(
                "channels: in_app is delivered by notification-service, not by the workers"
            ),
        };
        consumers.extend(started);
    }

    // The claims' Redis must neither fill up nor evict (decision 0004): its memory, watched.
    let _memory = common::redis::spawn_memory_gauge(
        redis.clone(),
        &registry,
        std::time::Duration::from_secs(10),
        shutdown.clone(),
    );
    let _metrics =
        common::http::serve_metrics(&cfg.http, &registry, axum::Router::new(), shutdown.clone())
            .await?;
    tracing::info!(addr = %listener.local_addr()?, "workers listening (health)");
    common::http::serve(
        listener,
        health_router(HealthState { redis, membership }, &registry, &cfg),
        shutdown.clone(),
    )
    .await?;
    shutdown.cancel();
    for c in consumers {
        let _ = c.await;
    }
    Ok(())
}

impl common::cli::Service for Config {
    const NAME: &'static str = "workers";

    fn telemetry(&self) -> &common::telemetry::TelemetryConfig {
        &self.telemetry
    }

    fn listen(&self) -> std::net::SocketAddr {
        self.http.listen
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        println!("workers are stateless: nothing to migrate");
        Ok(())
    }

    async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        run(self, listener, shutdown).await
    }
}
