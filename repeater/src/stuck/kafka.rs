//! The stuck scan's view of Kafka: each group's committed offsets and each partition's
//! watermarks, read by never-subscribed consumers (one per group).

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use common::events::{Channel, Lane, dispatch_topic, worker_group};
use delivery::lost::Position;
use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};

use super::StuckScan;

const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);

impl StuckScan {
    /// Every dispatch topic's partitions, for the workers' group of that channel and lane.
    pub(super) async fn dispatch_positions(&self) -> anyhow::Result<Vec<Position>> {
        let mut out = Vec::new();
        for channel in Channel::ALL {
            for lane in Lane::ALL {
                out.extend(
                    self.positions(
                        &worker_group(channel, lane),
                        vec![dispatch_topic(channel, lane)],
                    )
                    .await?,
                );
            }
        }
        Ok(out)
    }

    fn consumer(&self, group: &str) -> anyhow::Result<Arc<BaseConsumer>> {
        let mut consumers = self.consumers.lock().expect("consumers lock poisoned");
        if let Some(c) = consumers.get(group) {
            return Ok(c.clone());
        }
        let c = Arc::new(
            common::kafka::offsets_reader(
                &self.kafka,
                &self.kafka.topic(group),
                "repeater-stuck-scan",
            )
            .context("stuck-scan consumer")?,
        );
        consumers.insert(group.to_owned(), c.clone());
        Ok(c)
    }

    /// The committed offset of `group` and the watermarks of every partition of `topics`.
    pub(super) async fn positions(
        &self,
        group: &str,
        topics: Vec<String>,
    ) -> anyhow::Result<Vec<Position>> {
        let consumer = self.consumer(group)?;
        let kafka = self.kafka.clone();
        tokio::task::spawn_blocking(move || {
            // Never subscribed, so this returns no message; it serves the client's queued
            // events (logs, errors), which would otherwise pile up between scans.
            let _ = consumer.poll(Duration::ZERO);
            let mut tpl = TopicPartitionList::new();
            let mut wanted = Vec::new();
            for topic in &topics {
                let name = kafka.topic(topic);
                let md = consumer
                    .fetch_metadata(Some(&name), KAFKA_TIMEOUT)
                    .with_context(|| format!("metadata of {name}"))?;
                for t in md.topics() {
                    for p in t.partitions() {
                        tpl.add_partition(&name, p.id());
                        wanted.push((topic.clone(), name.clone(), p.id()));
                    }
                }
            }
            let committed = consumer
                .committed_offsets(tpl, KAFKA_TIMEOUT)
                .context("committed offsets")?;
            let mut out = Vec::with_capacity(wanted.len());
            for (topic, name, partition) in wanted {
                let (low, high) = consumer
                    .fetch_watermarks(&name, partition, KAFKA_TIMEOUT)
                    .with_context(|| format!("watermarks of {name}/{partition}"))?;
                let committed = match committed
                    .find_partition(&name, partition)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(o)) => o,
                    _ => -1,
                };
                out.push(Position {
                    topic,
                    partition,
                    committed,
                    low,
                    high,
                });
            }
            Ok(out)
        })
        .await?
    }
}
