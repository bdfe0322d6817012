//! The faults, injected in turn while the load runs.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use common::events::all_topics;
use devkit::kafka::DevCluster;
use tokio::time::Instant;

use super::rig::{Rig, SERVICES, consumer_groups};

/// The faults, spread over the load; returns (fault, start s, lasted s) for each.
pub(super) async fn inject_faults(
    rig: Arc<tokio::sync::Mutex<Rig>>,
    duration: Duration,
    faults: Vec<String>,
) -> anyhow::Result<Vec<(String, f64, f64)>> {
    let wants = |name: &str| faults.iter().any(|f| f == name || f == "all");
    let d = duration.as_secs_f64();
    let start = Instant::now();
    let at = |f: f64| start + Duration::from_secs_f64(d * f);
    let window = |f: f64, lo: f64, hi: f64| Duration::from_secs_f64((d * f).clamp(lo, hi));
    let mut log = Vec::new();
    let mut record = |name: String, began: Instant, ended: Instant| {
        log.push((
            name,
            (began - start).as_secs_f64(),
            (ended - began).as_secs_f64(),
        ));
    };

    for (i, name) in SERVICES.iter().enumerate() {
        if !wants("kills") && !wants(&format!("kill-{name}")) {
            continue;
        }
        {
            tokio::time::sleep_until(at(0.06 + 0.06 * i as f64)).await;
            let began = Instant::now();
            let mut r = rig.lock().await;
            r.kill(name).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            r.fleet.start(name)?;
            r.fleet.ready(name, Duration::from_secs(60)).await?;
            drop(r);
            record(
                format!("SIGKILL {name}, restarted after 2 s"),
                began,
                Instant::now(),
            );
        }
    }

    let broker_window = window(0.1, 5.0, 20.0);
    if wants("broker") {
        tokio::time::sleep_until(at(0.38)).await;
        let began = Instant::now();
        {
            // What a real cluster's controller does when a broker dies: its partitions get new
            // leaders among the in-sync replicas (the mock cluster would keep them leaderless).
            let r = rig.lock().await;
            let kafka = r.kafka.as_ref().unwrap();
            kafka.broker_down(2)?;
            kafka.move_leaders_off(2, &consumer_groups())?;
        }
        tokio::time::sleep(broker_window).await;
        rig.lock().await.kafka.as_ref().unwrap().broker_up(2)?;
        record(
            format!(
                "Kafka broker 2 down {:.0} s (its partitions and groups moved to the others)",
                broker_window.as_secs_f64()
            ),
            began,
            Instant::now(),
        );
    }

    if wants("brokers") {
        tokio::time::sleep_until(at(0.50)).await;
        let began = Instant::now();
        for b in 1..=3 {
            rig.lock().await.kafka.as_ref().unwrap().broker_down(b)?;
        }
        tokio::time::sleep(broker_window).await;
        for b in 1..=3 {
            rig.lock().await.kafka.as_ref().unwrap().broker_up(b)?;
        }
        record(
            format!(
                "all Kafka brokers down {:.0} s",
                broker_window.as_secs_f64()
            ),
            began,
            Instant::now(),
        );
    }

    if wants("postgres") {
        tokio::time::sleep_until(at(0.62)).await;
        let began = Instant::now();
        {
            let mut r = rig.lock().await;
            let mut pg = r.pg.take().unwrap();
            pg = tokio::task::spawn_blocking(move || pg.restart().map(|()| pg)).await??;
            r.pg = Some(pg);
        }
        record(
            "Postgres restarted (immediate shutdown)".into(),
            began,
            Instant::now(),
        );
    }

    if wants("redis") {
        tokio::time::sleep_until(at(0.70)).await;
        let began = Instant::now();
        {
            let mut r = rig.lock().await;
            let mut redis = r.redis.take().unwrap();
            redis = tokio::task::spawn_blocking(move || {
                redis.stop();
                std::thread::sleep(Duration::from_secs(1));
                redis.restart().map(|()| redis)
            })
            .await??;
            r.redis = Some(redis);
        }
        record(
            "Redis SIGKILLed, restarted from its append-only file after 1 s".into(),
            began,
            Instant::now(),
        );
    }

    let outage = window(0.15, 5.0, 30.0);
    if wants("providers") {
        tokio::time::sleep_until(at(0.76)).await;
        let began = Instant::now();
        {
            let r = rig.lock().await;
            r.smtp.set_mode(devkit::smtp::Mode::FailTransient(u32::MAX));
            r.hooks.outage.store(true, Ordering::Relaxed);
        }
        tokio::time::sleep(outage).await;
        {
            let r = rig.lock().await;
            r.smtp.set_mode(devkit::smtp::Mode::FailRandomly {
                percent: r.failure_percent,
            });
            r.hooks.outage.store(false, Ordering::Relaxed);
        }
        record(
            format!(
                "both providers failing everything {:.0} s",
                outage.as_secs_f64()
            ),
            began,
            Instant::now(),
        );
    }

    if wants("replace") {
        tokio::time::sleep_until(at(0.93)).await;
        let began = Instant::now();
        {
            let mut r = rig.lock().await;
            for name in SERVICES {
                r.kill(name).await;
            }
            drop(r.kafka.take());
            let kafka = DevCluster::start(&all_topics(), 3)?;
            let bootstrap = kafka.bootstrap_servers().to_owned();
            r.kafka = Some(kafka);
            r.fleet
                .set_env("NOTIFY_KAFKA__BOOTSTRAP_SERVERS", &bootstrap);
            for name in SERVICES {
                r.fleet.start(name)?;
            }
            for name in SERVICES {
                r.fleet.ready(name, Duration::from_secs(60)).await?;
            }
        }
        record(
            "Kafka cluster replaced by an empty one (every service killed and restarted on it)"
                .into(),
            began,
            Instant::now(),
        );
    }

    Ok(log)
}
