//! A worker process killed between consuming a dispatch and reporting its status does not
//! lose the delivery: its offset was never committed, so the next worker consumes the message
//! again, sends it and reports `sent`.

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::{
    events::{
        Channel, Content, DispatchMessage, Lane, Outcome, RecipientRef, SCHEMA, STATUS_TOPIC,
        StatusEvent, dispatch_topic,
    },
    kafka::{KafkaConfig, producer},
};
use devkit::{kafka::DevCluster, process::Guarded, redis::TestPrefix, smtp::SmtpSink};
use rdkafka::{Message, producer::FutureRecord};

/// The `workers` binary as a child process, killed when the returned guard drops (also when
/// an assertion fails) or when this test process dies.
fn spawn_worker(kafka: &KafkaConfig, redis_prefix: &str, smtp_url: &str) -> Guarded {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_workers"));
    cmd.env("NOTIFY_KAFKA__BOOTSTRAP_SERVERS", &kafka.bootstrap_servers)
        .env("NOTIFY_KAFKA__TOPIC_PREFIX", &kafka.topic_prefix)
        .env("NOTIFY_REDIS__KEY_PREFIX", redis_prefix)
        .env("NOTIFY_EMAIL__SMTP_URL", smtp_url)
        .env("NOTIFY_EMAIL__TIMEOUT_MS", "120000")
        // The killed worker's claim on the send expires after this; the next worker then sends.
        .env("NOTIFY_CLAIM_TTL_SECS", "2")
        .env("NOTIFY_HTTP__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    Guarded::spawn("workers", cmd).expect("starting the workers binary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_send_does_not_lose_the_delivery() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("c{}.", &id[..8]);
    let topics: Vec<String> = [
        dispatch_topic(Channel::Email, Lane::Bulk),
        dispatch_topic(Channel::Email, Lane::Urgent),
        STATUS_TOPIC.to_owned(),
    ]
    .iter()
    .map(|t| format!("{prefix}{t}"))
    .collect();
    let cluster = DevCluster::start(&topics, 3).unwrap();
    let kafka = KafkaConfig {
        bootstrap_servers: cluster.bootstrap_servers().to_owned(),
        topic_prefix: prefix,
        ..Default::default()
    };
    let keys = TestPrefix::local();
    let redis_prefix = keys.prefix().to_owned();

    // An SMTP server that accepts the connection and never answers: the worker is stuck in
    // the send, after consuming and before reporting.
    let stuck = TcpListener::bind("127.0.0.1:0").unwrap();
    let stuck_url = format!("smtp://{}", stuck.local_addr().unwrap());
    let (accepted_tx, accepted_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in stuck.incoming() {
            held.push(conn);
            let _ = accepted_tx.send(());
        }
    });

    let msg = DispatchMessage {
        schema: SCHEMA,
        delivery_id: uuid::Uuid::now_v7(),
        notification_id: uuid::Uuid::now_v7(),
        attempt: 1,
        channel: Channel::Email,
        lane: Lane::Bulk,
        recipient: RecipientRef {
            user_id: None,
            address: "erin@example.com".into(),
        },
        content: Content {
            subject: Some("Receipt".into()),
            text: "Thanks.".into(),
            html: None,
            data: None,
        },
        locale: None,
        not_after: None,
        created_at: chrono::Utc::now(),
    };
    let p = producer(&kafka, "test").unwrap();
    let topic = kafka.topic(&dispatch_topic(Channel::Email, Lane::Bulk));
    let payload = serde_json::to_vec(&msg).unwrap();
    let produced = p
        .send(
            FutureRecord::to(&topic).key("erin").payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let mut first = spawn_worker(&kafka, &redis_prefix, &stuck_url);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while accepted_rx.try_recv().is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first worker never consumed the message and connected to SMTP"
        );
        assert!(first.try_wait().is_none(), "the first worker exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill(); // SIGKILL: no shutdown, no commit

    let sink = SmtpSink::start(0, None).unwrap();
    let mut second = spawn_worker(&kafka, &redis_prefix, &sink.url());
    let mails = sink.wait_for(1, Duration::from_secs(60)).await;
    assert_eq!(mails.len(), 1, "the delivery was consumed again and sent");
    assert_eq!(mails[0].to, vec!["erin@example.com".to_owned()]);

    // Once the second worker's group has committed past the dispatch message, nothing more
    // will happen to it: exactly one mail and one status event, `sent` for attempt 1.
    let (bootstrap, group, dispatch) = (
        kafka.bootstrap_servers.clone(),
        kafka.topic(&common::events::worker_group(Channel::Email, Lane::Bulk)),
        topic.clone(),
    );
    tokio::task::spawn_blocking(move || {
        devkit::kafka::wait_committed(
            &bootstrap,
            &group,
            &dispatch,
            produced.partition,
            produced.offset,
            Duration::from_secs(30),
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(sink.mails().len(), 1, "sent once");
    let (bootstrap, status_topic) = (kafka.bootstrap_servers.clone(), kafka.topic(STATUS_TOPIC));
    let statuses = tokio::task::spawn_blocking(move || {
        devkit::kafka::read_topic(&bootstrap, &status_topic, Duration::from_secs(15))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(statuses.len(), 1, "exactly one status event");
    let event: StatusEvent = serde_json::from_slice(statuses[0].payload().unwrap()).unwrap();
    assert_eq!(
        (event.delivery_id, event.attempt, event.outcome),
        (msg.delivery_id, 1, Outcome::Sent)
    );
    second.stop();
}
