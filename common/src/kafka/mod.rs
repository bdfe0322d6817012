//! Kafka clients configured the way ../docs/decisions/0002-kafka-settings.md explains.
//!
//! * Producers are idempotent with `acks=all` and lz4; callers enqueue a batch and then await
//!   the delivery futures (one-at-a-time sends cost ~6 ms each).
//! * Consumers never auto-commit and never auto-store offsets: an offset is stored only after
//!   its message was fully handled ([`runner`]), stored offsets are committed every second and
//!   synchronously when partitions are revoked. The default `enable.auto.offset.store=true`
//!   silently loses fetched-but-unhandled messages on rebalance or close.

pub mod offsets;
pub mod runner;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use rdkafka::{
    ClientConfig, ClientContext, Message,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaResult,
    message::{Header, Headers, OwnedHeaders},
    producer::FutureProducer,
};
use serde::Deserialize;

/// Broker connection and client settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct KafkaConfig {
    /// `host:port,host:port`.
    pub bootstrap_servers: String,
    /// Prepended to every topic name (tests use a unique one).
    pub topic_prefix: String,
    /// Extra librdkafka properties, applied last (e.g. `security.protocol`).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            topic_prefix: String::new(),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The deployment's name for an (unprefixed) topic.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }

    /// What every client shares (decision 0002, "Timeouts"): a request a broker does not
    /// answer is given up on after 10 s (`socket.timeout.ms`, librdkafka's default 60 s, and
    /// never more than the remaining `message.timeout.ms` for a produce: 30 s) — a broker that
    /// dies without closing its connections would otherwise hold every produce in flight to it
    /// that long, and the relay, which waits for its batch's acknowledgements, with them: `make
    /// chaos` saw sending stop for 30 s at every broker outage. With idempotence a retried
    /// produce is never written twice. And a broker that comes back is reconnected to within a
    /// second (`reconnect.backoff.max.ms`, default 10 s).
    fn base(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap_servers)
            .set("socket.timeout.ms", "10000")
            .set("reconnect.backoff.max.ms", "1000");
        cfg
    }

    fn apply_properties(&self, cfg: &mut ClientConfig) {
        for (k, v) in &self.properties {
            cfg.set(k, v);
        }
    }
}

/// An idempotent producer (`acks=all`, lz4, bounded memory).
pub fn producer(cfg: &KafkaConfig, client_id: &str) -> KafkaResult<FutureProducer> {
    let mut c = cfg.base();
    c.set("client.id", client_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .set("queue.buffering.max.kbytes", "16384");
    cfg.apply_properties(&mut c);
    c.create()
}

/// Commits stored offsets synchronously before partitions are taken away, so the next owner
/// starts exactly after what this member finished; and tells [`Membership`] once the consumer
/// has joined its group (its first assignment, possibly empty, arrived).
#[derive(Default)]
pub struct CommitOnRevoke {
    joined: Option<Joined>,
}

impl ClientContext for CommitOnRevoke {}

impl ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance
            && tpl.count() > 0
            && let Err(e) = consumer.commit_consumer_state(CommitMode::Sync)
        {
            // NoOffset just means nothing was stored since the last commit.
            tracing::debug!(error = %e, "commit on revoke");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let (Rebalance::Assign(_), Some(joined)) = (rebalance, &self.joined) {
            joined.set();
        }
    }
}

/// The consumer type every service uses.
pub type SafeConsumer = StreamConsumer<CommitOnRevoke>;

/// Which of a service instance's consumer groups have been joined. A service that consumes is
/// ready only once every one of its consumers got its first assignment: before that, messages
/// produced to its topics wait for a rebalance, which a load balancer or a test must not
/// mistake for the service being slow. It is a latch: a later rebalance does not make the
/// service unready (the group still owns the partitions; another member may be serving them).
#[derive(Clone, Debug, Default)]
pub struct Membership(Arc<Mutex<BTreeMap<String, bool>>>);

/// One consumer's flag in a [`Membership`].
#[derive(Clone, Debug)]
pub struct Joined {
    membership: Membership,
    group: String,
}

impl Joined {
    pub(crate) fn set(&self) {
        let mut groups = self.membership.0.lock().expect("membership lock poisoned");
        if let Some(joined) = groups.get_mut(&self.group)
            && !*joined
        {
            *joined = true;
            tracing::info!(group = %self.group, "joined the consumer group");
        }
    }
}

impl Membership {
    /// Starts tracking a consumer of `group` (not yet joined).
    pub fn track(&self, group: &str) -> Joined {
        self.0
            .lock()
            .expect("membership lock poisoned")
            .insert(group.to_owned(), false);
        Joined {
            membership: self.clone(),
            group: group.to_owned(),
        }
    }

    /// `Ok` once every tracked consumer has joined; else the groups still joining.
    pub fn check(&self) -> Result<(), String> {
        let groups = self.0.lock().expect("membership lock poisoned");
        let waiting: Vec<&str> = groups
            .iter()
            .filter(|(_, joined)| !**joined)
            .map(|(g, _)| g.as_str())
            .collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!("joining consumer group(s) {}", waiting.join(", ")))
        }
    }
}

/// A group consumer with manual offset storage, cooperative-sticky assignment and bounded
/// prefetch memory.
pub fn consumer(cfg: &KafkaConfig, group_id: &str, client_id: &str) -> KafkaResult<SafeConsumer> {
    consumer_in(cfg, group_id, client_id, None)
}

/// [`consumer`], reporting to `joined` once it has joined its group.
pub fn consumer_in(
    cfg: &KafkaConfig,
    group_id: &str,
    client_id: &str,
    joined: Option<Joined>,
) -> KafkaResult<SafeConsumer> {
    let mut c = cfg.base();
    c.set("group.id", group_id)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "50")
        .set("queued.max.messages.kbytes", "4096")
        .set("enable.partition.eof", "false");
    cfg.apply_properties(&mut c);
    c.create_with_context(CommitOnRevoke { joined })
}

/// A consumer that never joins its group: it only reads `group_id`'s committed offsets and the
/// log's watermarks (the repeater's stuck scan). Nothing is ever committed through it.
pub fn offsets_reader(
    cfg: &KafkaConfig,
    group_id: &str,
    client_id: &str,
) -> KafkaResult<BaseConsumer> {
    let mut c = cfg.base();
    c.set("group.id", group_id)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false");
    cfg.apply_properties(&mut c);
    c.create()
}

/// Kafka headers from a string map (request id, traceparent, delivery id, attempt).
pub fn owned_headers(map: &BTreeMap<String, String>) -> OwnedHeaders {
    map.iter()
        .fold(OwnedHeaders::new_with_capacity(map.len()), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            })
        })
}

/// A message's headers as a string map (non-UTF-8 values are skipped).
pub fn message_headers<M: Message>(msg: &M) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(headers) = msg.headers() {
        for h in headers.iter() {
            if let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok()) {
                out.insert(h.key.to_owned(), v.to_owned());
            }
        }
    }
    out
}
