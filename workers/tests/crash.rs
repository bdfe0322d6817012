//! A worker process killed between consuming a dispatch and reporting its status does not
//! lose the delivery: its offset was never committed, so the next worker consumes the message
//! again, sends it and reports `sent`.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::{
    events::{
        Channel, Content, DispatchMessage, Lane, Outcome, RecipientRef, SCHEMA, STATUS_TOPIC,
        StatusEvent, dispatch_topic,
    },
    kafka::{KafkaConfig, consumer, producer},
};
use devkit::{kafka::DevCluster, smtp::SmtpSink};
use rdkafka::{Message, consumer::Consumer, producer::FutureRecord};

fn spawn_worker(kafka: &KafkaConfig, redis_prefix: &str, smtp_url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_workers"))
        .env("NOTIFY_KAFKA__BOOTSTRAP_SERVERS", &kafka.bootstrap_servers)
        .env("NOTIFY_KAFKA__TOPIC_PREFIX", &kafka.topic_prefix)
        .env("NOTIFY_REDIS__KEY_PREFIX", redis_prefix)
        .env("NOTIFY_EMAIL__SMTP_URL", smtp_url)
        .env("NOTIFY_EMAIL__TIMEOUT_MS", "120000")
        // The killed worker's claim on the send expires after this; the next worker then sends.
        .env("NOTIFY_CLAIM_TTL_SECS", "2")
        .env("NOTIFY_HTTP__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("starting the workers binary")
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
    let redis_prefix = format!("test:{id}:");

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
    p.send(
        FutureRecord::to(&topic).key("erin").payload(&payload),
        Duration::from_secs(10),
    )
    .await
    .unwrap();

    let mut first = spawn_worker(&kafka, &redis_prefix, &stuck_url);
    tokio::task::spawn_blocking(move || accepted_rx.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the first worker consumed the message and connected to SMTP");
    first.kill().unwrap(); // SIGKILL: no shutdown, no commit
    first.wait().unwrap();

    let sink = SmtpSink::start(0, None).unwrap();
    let mut second = spawn_worker(&kafka, &redis_prefix, &sink.url());
    let sink2 = sink.clone();
    let mails = tokio::task::spawn_blocking(move || sink2.wait_for(1, Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(mails.len(), 1, "the delivery was consumed again and sent");
    assert_eq!(mails[0].to, vec!["erin@example.com".to_owned()]);

    let c = consumer(&kafka, "status-reader", "test").unwrap();
    c.subscribe(&[&kafka.topic(STATUS_TOPIC)]).unwrap();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while let Ok(Ok(m)) = tokio::time::timeout_at(deadline, c.recv()).await {
        events.push(serde_json::from_slice::<StatusEvent>(m.payload().unwrap()).unwrap());
        if !events.is_empty() {
            // give a duplicate a moment to show up
            if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(2), c.recv()).await {
                events.push(serde_json::from_slice::<StatusEvent>(m.payload().unwrap()).unwrap());
            }
            break;
        }
    }
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(events.len(), 1, "exactly one status: {events:?}");
    assert_eq!(
        (events[0].delivery_id, events[0].attempt, events[0].outcome),
        (msg.delivery_id, 1, Outcome::Sent)
    );
}
