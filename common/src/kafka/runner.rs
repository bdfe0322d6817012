//! The consume loop every consumer shares: bounded concurrency, offsets stored only after the
//! handler finished, retries in place for transient handler errors, a clean drain on shutdown.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use rdkafka::{
    Message,
    consumer::{CommitMode, Consumer},
    message::OwnedMessage,
};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{SafeConsumer, message_headers, offsets::OffsetTracker};
use crate::telemetry::RequestContext;

/// Why a message could not be handled.
#[derive(Debug)]
pub enum HandleError {
    /// Try the same message again later (a dependency is down). Its offset is not stored.
    Retry(anyhow::Error),
    /// The message can never be handled (undecodable). It is logged and skipped.
    Skip(anyhow::Error),
}

/// Handles one message. Must be idempotent: after a crash or rebalance a message is handled
/// again.
pub trait MessageHandler: Send + Sync + 'static {
    fn handle(&self, msg: &OwnedMessage) -> impl Future<Output = Result<(), HandleError>> + Send;
}

/// Loop settings.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Messages handled at once.
    pub max_in_flight: usize,
    /// How often stored offsets are committed.
    pub commit_interval: Duration,
    /// How long shutdown waits for in-flight handlers before giving up on them (their offsets
    /// stay uncommitted, so they are consumed again).
    pub drain_timeout: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 32,
            commit_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// Subscribes a new consumer in group `group` (the deployment prefix is applied to it and to
/// `topic`) and runs [`run`] on a task; `membership` learns when it has joined the group.
pub fn spawn<H: MessageHandler>(
    kafka: &super::KafkaConfig,
    group: &str,
    topic: &str,
    handler: Arc<H>,
    cfg: RunnerConfig,
    membership: &super::Membership,
    shutdown: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let topic = kafka.topic(topic);
    let group = kafka.topic(group);
    let consumer = super::consumer_in(
        kafka,
        &group,
        &group.replace('.', "-"),
        Some(membership.track(&group)),
    )?;
    consumer.subscribe(&[&topic])?;
    tracing::info!(%topic, %group, "consuming");
    Ok(tokio::spawn(run(
        Arc::new(consumer),
        handler,
        cfg,
        shutdown.clone(),
    )))
}

/// Consumes until `shutdown`, handing each message to `handler`.
pub async fn run<H: MessageHandler>(
    consumer: Arc<SafeConsumer>,
    handler: Arc<H>,
    cfg: RunnerConfig,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(cfg.max_in_flight));
    let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
    let mut tasks = JoinSet::new();
    let mut commit_tick = tokio::time::interval(cfg.commit_interval);
    commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("semaphore never closes"),
        };
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = commit_tick.tick() => {
                commit(&consumer, CommitMode::Async);
                continue;
            }
            m = consumer.recv() => m,
        };
        let msg = match msg {
            Ok(m) => m.detach(),
            Err(e) => {
                tracing::warn!(error = %e, "kafka consume error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        tracker
            .lock()
            .unwrap()
            .begin(msg.topic(), msg.partition(), msg.offset());
        let (consumer, handler, tracker, shutdown) = (
            consumer.clone(),
            handler.clone(),
            tracker.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            let handled = handle_with_retry(&*handler, &msg, &shutdown).await;
            if handled {
                let safe =
                    tracker
                        .lock()
                        .unwrap()
                        .finish(msg.topic(), msg.partition(), msg.offset());
                if let Some(offset) = safe {
                    // Fails only if the partition was revoked meanwhile; the new owner
                    // handles the message again (handlers are idempotent).
                    if let Err(e) = consumer.store_offset(msg.topic(), msg.partition(), offset) {
                        tracing::debug!(error = %e, "offset not stored");
                    }
                }
            }
            drop(permit);
        });
    }

    tracing::info!(
        in_flight = tasks.len(),
        "consumer stopping, draining in-flight messages"
    );
    crate::shutdown::drain(
        async { while tasks.join_next().await.is_some() {} },
        cfg.drain_timeout,
    )
    .await;
    close(consumer, cfg.drain_timeout).await;
}

/// Commits what was handled, then lets the consumer go **without** librdkafka's close.
///
/// * The synchronous commit waits with no time limit for the group coordinator, so it runs on
///   its own thread and shutdown waits for it only up to `limit`: with Kafka unreachable the
///   process still exits, and what was not committed is consumed again by the next owner.
/// * Closing a consumer while an assignment is in progress (right after start, or during a
///   rebalance — every rolling deploy) aborts or hangs librdkafka 2.12.1 (issue #4792,
///   `rd_kafka_cgrp_terminated: assert: !rd_kafka_assignment_in_progress`). So the consumer is
///   deliberately not closed: the process exits, and the group reassigns its partitions after
///   `session.timeout.ms` (6 s). Nothing is lost — what was handled was committed above.
async fn close(consumer: Arc<SafeConsumer>, limit: Duration) {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("kafka-commit".into())
        .spawn(move || {
            commit(&consumer, CommitMode::Sync);
            let _ = done_tx.send(consumer);
        });
    if spawned.is_err() {
        return;
    }
    match tokio::time::timeout(limit, done_rx).await {
        Ok(Ok(consumer)) => std::mem::forget(consumer),
        _ => tracing::warn!(
            ?limit,
            "the final offset commit did not finish (Kafka unreachable?); uncommitted messages will be consumed again"
        ),
    }
}

fn commit(consumer: &SafeConsumer, mode: CommitMode) {
    if let Err(e) = consumer.commit_consumer_state(mode) {
        use rdkafka::{error::KafkaError, types::RDKafkaErrorCode};
        if !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) {
            tracing::debug!(error = %e, "offset commit failed; will retry");
        }
    }
}

/// Returns true when the message is done with (handled or skipped), false when shutdown
/// interrupted its retries.
async fn handle_with_retry<H: MessageHandler>(
    handler: &H,
    msg: &OwnedMessage,
    shutdown: &CancellationToken,
) -> bool {
    let headers = message_headers(msg);
    let mut ctx = RequestContext::from_headers(&headers);
    let span = tracing::info_span!(
        "consume",
        otel.name = format!("consume {}", msg.topic()),
        otel.kind = "consumer",
        topic = msg.topic(),
        partition = msg.partition(),
        offset = msg.offset(),
        request_id = %ctx.request_id,
        trace_id = tracing::field::Empty,
    );
    crate::telemetry::adopt(
        &span,
        headers
            .get(crate::telemetry::TRACEPARENT)
            .map(String::as_str),
        &mut ctx,
    );
    span.record("trace_id", ctx.trace_id());
    ctx.scope(
        async {
            let mut backoff = Duration::from_millis(100);
            loop {
                match handler.handle(msg).await {
                    Ok(()) => return true,
                    Err(HandleError::Skip(e)) => {
                        tracing::error!(error = ?e, "message cannot be handled; skipped");
                        return true;
                    }
                    Err(HandleError::Retry(e)) => {
                        tracing::warn!(error = ?e, ?backoff, "handler failed; retrying the message");
                        tokio::select! {
                            _ = shutdown.cancelled() => return false,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        .instrument(span),
    )
    .await
}
