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
    BrokerUp(i32),
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
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let _ = self.call(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
