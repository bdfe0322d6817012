//! librdkafka's mock cluster, kept on its own thread (it is `!Send`).
//!
//! Three brokers speaking the real Kafka protocol on 127.0.0.1; other processes connect to
//! [`DevCluster::bootstrap_servers`]. Topics are created up front with 3 partitions and
//! replication factor 3; the 3 s initial group rebalance delay is switched off so consumers
//! join at once.

#![allow(unsafe_code)]

use std::{sync::mpsc, thread::JoinHandle, time::Duration};

use anyhow::Context;
use rdkafka::{
    ClientConfig,
    producer::{BaseProducer, Producer},
};

enum Cmd {
    BrokerDown(i32),
    LeadersOff(i32, Vec<String>),
    Leader(String, i32, i32),
    BrokerUp(i32),
    Rtt(i32, Duration),
    Stop,
}

/// A running mock cluster; stops when dropped.
pub struct DevCluster {
    bootstrap: String,
    cmds: mpsc::Sender<(Cmd, mpsc::Sender<anyhow::Result<()>>)>,
    thread: Option<JoinHandle<()>>,
}

impl DevCluster {
    /// Starts 3 brokers and creates `topics` with `partitions` partitions, replication 3.
    pub fn start(topics: &[String], partitions: i32) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (cmd_tx, cmd_rx) = mpsc::channel::<(Cmd, mpsc::Sender<anyhow::Result<()>>)>();
        let topics = topics.to_vec();
        let thread = std::thread::Builder::new()
            .name("kafka-mock".into())
            .spawn(move || {
                let producer: BaseProducer = match ClientConfig::new()
                    .set("test.mock.num.brokers", "3")
                    .set("log_level", "3")
                    .create()
                {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = ready_tx.send(Err(
                            anyhow::Error::new(e).context("starting the mock cluster")
                        ));
                        return;
                    }
                };
                let setup = (|| -> anyhow::Result<_> {
                    let cluster = producer
                        .client()
                        .mock_cluster()
                        .context("the client has no mock cluster")?;
                    // SAFETY: the handle belongs to `producer`, which outlives every use here.
                    unsafe {
                        let raw = rdkafka::bindings::rd_kafka_handle_mock_cluster(
                            producer.client().native_ptr(),
                        );
                        rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(raw, 0);
                    }
                    for t in &topics {
                        cluster
                            .create_topic(t, partitions, 3)
                            .with_context(|| format!("creating topic {t}"))?;
                    }
                    let bootstrap = cluster.bootstrap_servers();
                    Ok((cluster, bootstrap))
                })();
                let (cluster, bootstrap) = match setup {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(bootstrap));
                while let Ok((cmd, reply)) = cmd_rx.recv() {
                    let res = match cmd {
                        Cmd::BrokerDown(id) => cluster.broker_down(id).map_err(Into::into),
                        Cmd::BrokerUp(id) => cluster.broker_up(id).map_err(Into::into),
                        Cmd::LeadersOff(id, groups) => (|| -> anyhow::Result<()> {
                            let others: Vec<i32> = (1..=3).filter(|b| *b != id).collect();
                            for t in &topics {
                                for p in 0..partitions {
                                    let to = others[p as usize % others.len()];
                                    cluster.partition_leader(t, p, Some(to))?;
                                }
                            }
                            for (i, g) in groups.iter().enumerate() {
                                cluster.coordinator(
                                    rdkafka::mocking::MockCoordinator::Group(g.clone()),
                                    others[i % others.len()],
                                )?;
                            }
                            Ok(())
                        })(),
                        Cmd::Leader(topic, partition, broker) => cluster
                            .partition_leader(&topic, partition, Some(broker))
                            .map_err(Into::into),
                        Cmd::Rtt(id, rtt) => {
                            cluster.broker_round_trip_time(id, rtt).map_err(Into::into)
                        }
                        Cmd::Stop => {
                            let _ = reply.send(Ok(()));
                            break;
                        }
                    };
                    let _ = reply.send(res);
                }
                drop(cluster);
                let _ = producer.flush(Duration::from_millis(100));
            })?;
        let bootstrap = ready_rx.recv().context("mock cluster thread died")??;
        Ok(Self {
            bootstrap,
            cmds: cmd_tx,
            thread: Some(thread),
        })
    }

    /// `host:port,host:port,host:port`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    fn call(&self, cmd: Cmd) -> anyhow::Result<()> {
        let (tx, rx) = mpsc::channel();
        self.cmds.send((cmd, tx)).context("mock cluster stopped")?;
        rx.recv().context("mock cluster stopped")?
    }

    /// Takes broker `id` (1-based) down: fault injection for tests.
    pub fn broker_down(&self, id: i32) -> anyhow::Result<()> {
        self.call(Cmd::BrokerDown(id))
    }

    pub fn broker_up(&self, id: i32) -> anyhow::Result<()> {
        self.call(Cmd::BrokerUp(id))
    }

    /// Moves the leadership of every partition of the cluster's topics, and the coordination
    /// of `groups`, off broker `id` — what a real cluster does when a broker dies (the mock
    /// cluster keeps a downed broker the leader of its partitions and the coordinator of its
    /// groups, which then stay unavailable until it is back).
    pub fn move_leaders_off(&self, id: i32, groups: &[String]) -> anyhow::Result<()> {
        self.call(Cmd::LeadersOff(id, groups.to_vec()))
    }

    /// Makes broker `broker` (1-based) the leader of `topic`'s `partition` (the full, prefixed
    /// name): with that broker down, only that partition is without a leader.
    pub fn set_leader(&self, topic: &str, partition: i32, broker: i32) -> anyhow::Result<()> {
        self.call(Cmd::Leader(topic.to_owned(), partition, broker))
    }

    /// Delays every answer of broker `id` (1-based) by `rtt`: a slow network or broker.
    pub fn set_round_trip_time(&self, id: i32, rtt: Duration) -> anyhow::Result<()> {
        self.call(Cmd::Rtt(id, rtt))
    }

    /// The broker ids (1-based).
    pub fn broker_ids(&self) -> std::ops::RangeInclusive<i32> {
        1..=3
    }

    /// Leaves the brokers running until the process exits instead of stopping them when this
    /// value is dropped. For teardown paths where clients of the cluster may still be alive: a
    /// consumer closed after its brokers vanished waits for them forever.
    pub fn keep_running(self) {
        // The command sender is leaked with it, so the cluster thread never sees `Stop`.
        std::mem::forget(self);
    }
}

impl Drop for DevCluster {
    /// Stops the brokers — unless a panic is unwinding: then some client (a service task the
    /// failed test could not stop) may still be connected, and would hang in its close if the
    /// brokers went away first. The process is about to exit anyway.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let _ = self.call(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client that only reads positions (committed offsets of `group`, watermarks); it never
/// joins the group.
fn position_reader(
    bootstrap: &str,
    group: &str,
) -> anyhow::Result<rdkafka::consumer::BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("log_level", "3")
        .create()?)
}

/// Blocks until consumer group `group` has committed past `offset` of `topic`'s partition
/// `partition` (full names): the message there was handled and will not come back. Errors
/// after `timeout`, naming where the group stands.
pub fn wait_committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    timeout: Duration,
) -> anyhow::Result<()> {
    use rdkafka::{Offset, TopicPartitionList, consumer::Consumer};
    let reader = position_reader(bootstrap, group)?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        let committed = reader
            .committed_offsets(tpl, Duration::from_secs(5))?
            .find_partition(topic, partition)
            .map(|e| e.offset());
        if let Some(Offset::Offset(o)) = committed
            && o > offset
        {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{group} did not commit past {topic}/{partition}@{offset} within {timeout:?} (committed: {committed:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many messages `topic` (full name) holds: the sum over its partitions of high − low
/// watermark.
pub fn message_count(bootstrap: &str, topic: &str) -> anyhow::Result<i64> {
    use rdkafka::consumer::Consumer;
    let reader = position_reader(bootstrap, "devkit-message-count")?;
    let md = reader.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let mut total = 0;
    for t in md.topics() {
        for p in t.partitions() {
            let (low, high) = reader.fetch_watermarks(topic, p.id(), Duration::from_secs(5))?;
            total += high - low;
        }
    }
    Ok(total)
}

/// Every message `topic` (full name) holds now, read from the start of each partition by a
/// consumer that is assigned the partitions (it never joins a group: no rebalance, nothing to
/// leave, a close that cannot hang). Blocks; errors if they are not all read within `timeout`.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<rdkafka::message::OwnedMessage>> {
    use rdkafka::{
        Message, Offset, TopicPartitionList,
        consumer::{BaseConsumer, Consumer},
    };
    let count = message_count(bootstrap, topic)?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "devkit-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("log_level", "3")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while (out.len() as i64) < count {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "read {} of {count} messages of {topic} within {timeout:?}",
            out.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(e)) => anyhow::bail!("reading {topic}: {e}"),
            None => {}
        }
    }
    out.sort_by_key(|m| (m.partition(), m.offset()));
    Ok(out)
}

/// Appends `count` incompressible messages of `size` bytes to `topic`'s `partition` (full
/// name): with enough of them the mock broker's retention (5 MB per partition) drops the
/// partition's oldest messages and its low watermark moves past them, as `retention.bytes`
/// would on a real cluster.
pub fn fill_partition(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    count: usize,
    size: usize,
) -> anyhow::Result<()> {
    use rdkafka::producer::{BaseRecord, Producer};
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.type", "none")
        .set("message.max.bytes", (size + 4096).to_string())
        .set("linger.ms", "0")
        .set("log_level", "3")
        .create()?;
    // xorshift: bytes no compressor can shrink, without a random-number crate.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(partition as u32);
    for _ in 0..count {
        let payload: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut record = BaseRecord::<(), [u8]>::to(topic)
            .partition(partition)
            .payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) => {
                    anyhow::ensure!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "producing filler: {e}"
                    );
                    producer.poll(Duration::from_millis(50));
                    record = r;
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}
