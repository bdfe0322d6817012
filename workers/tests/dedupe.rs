//! Duplicate-send protection: a dispatch handled twice — one after the other, at the same
//! time, or delivered twice through Kafka to a running worker — reaches the provider once, and
//! every copy still gets its status reported.

use std::{sync::Arc, time::Duration};

use common::{
    events::{
        Channel, Content, DispatchMessage, Lane, Outcome, RecipientRef, SCHEMA, STATUS_TOPIC,
        StatusEvent, dispatch_topic,
    },
    kafka::{KafkaConfig, producer},
};
use devkit::{kafka::DevCluster, redis::TestPrefix, tasks::TaskGroup};
use rdkafka::{Message, producer::FutureRecord};
use secrecy::SecretString;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};
use workers::{
    dispatch::{Deferred, Dispatcher},
    metrics::Metrics,
    sms::{SmsConfig, SmsProvider},
};

const SMS_PATH: &str = "/2010-04-01/Accounts/AC123/Messages.json";

fn message() -> DispatchMessage {
    DispatchMessage {
        schema: SCHEMA,
        delivery_id: uuid::Uuid::now_v7(),
        notification_id: uuid::Uuid::now_v7(),
        attempt: 1,
        channel: Channel::Sms,
        lane: Lane::Urgent,
        recipient: RecipientRef {
            user_id: None,
            address: "+4930123456".into(),
        },
        content: Content {
            subject: None,
            text: "Your code is 123456".into(),
            html: None,
            data: None,
        },
        locale: None,
        not_after: None,
        created_at: chrono::Utc::now(),
    }
}

fn sms_config(server: &MockServer) -> SmsConfig {
    SmsConfig {
        base_url: server.uri(),
        account_sid: "AC123".into(),
        auth_token: SecretString::from("secret"),
        from: "+15005550006".into(),
        timeout_ms: 5_000,
        ..Default::default()
    }
}

/// An SMS gateway that answers after `delay` and expects exactly one request.
async fn gateway(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SMS_PATH))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({ "sid": "SM1" }))
                .set_delay(delay),
        )
        .expect(1)
        .mount(&server)
        .await;
    server
}

/// Workers settings with the test's own Redis key prefix (its keys go when `keys` drops).
fn config(server: &MockServer, keys: &TestPrefix) -> workers::Config {
    workers::Config {
        channels: vec![Channel::Sms],
        redis: common::redis::RedisConfig {
            key_prefix: keys.prefix().to_owned(),
            ..Default::default()
        },
        sms: sms_config(server),
        ..Default::default()
    }
}

async fn dispatcher(server: &MockServer, keys: &TestPrefix) -> Dispatcher<SmsProvider> {
    let mut cfg = config(server, keys);
    cfg.redis.url = keys.url().to_owned();
    cfg.claim_ttl_secs = 1;
    let redis = common::redis::connect(&cfg.redis).await.unwrap();
    // `process` never publishes; the producer only has to exist.
    let kafka = KafkaConfig {
        bootstrap_servers: "127.0.0.1:1".into(),
        ..Default::default()
    };
    let producer = producer(&kafka, "test").unwrap();
    Dispatcher::new(
        Arc::new(SmsProvider::new(&cfg.sms).unwrap()),
        producer,
        redis,
        &cfg,
        Arc::new(Metrics::new(&common::metrics::Registry::default())),
    )
}

#[tokio::test]
async fn a_dispatch_handled_twice_reaches_the_provider_once() {
    let server = gateway(Duration::ZERO).await;
    let keys = TestPrefix::local();
    let d = dispatcher(&server, &keys).await;
    let msg = message();
    let first = d.process(&msg).await.unwrap();
    let second = d.process(&msg).await.unwrap();
    assert_eq!(first.outcome, Outcome::Sent);
    assert_eq!(
        second, first,
        "the redelivery re-reports the recorded status"
    );
    // `expect(1)` is verified when the server drops.
}

/// The repeater re-drives a delivery whose first attempt was sent but whose status was lost
/// (its Kafka cluster was replaced before the status was consumed): the second attempt is
/// reported sent, with the first send's provider message id, and the provider sees one request.
#[tokio::test]
async fn a_redriven_attempt_of_a_delivery_already_sent_is_reported_not_sent_again() {
    let server = gateway(Duration::ZERO).await;
    let keys = TestPrefix::local();
    let d = dispatcher(&server, &keys).await;
    let first = message();
    let sent = d.process(&first).await.unwrap();
    assert_eq!(sent.outcome, Outcome::Sent);

    let redriven = DispatchMessage {
        attempt: 2,
        ..first.clone()
    };
    let again = d.process(&redriven).await.unwrap();
    assert_eq!(again.outcome, Outcome::Sent);
    assert_eq!(again.attempt, 2);
    assert_eq!(again.provider_message_id.as_deref(), Some("SM1"));
    server.verify().await;
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_copy_arriving_mid_send_waits_for_the_first_instead_of_sending() {
    // The gateway takes 3 s: the copy comes while the first send is surely still running.
    let server = gateway(Duration::from_secs(3)).await;
    let keys = TestPrefix::local();
    let d = dispatcher(&server, &keys).await;
    let msg = message();
    let claim = format!("{}dispatch:{}:1", keys.prefix(), msg.delivery_id);
    let mut conn = devkit::redis::connect(keys.url()).await.unwrap();
    let (a, b) = tokio::join!(d.process(&msg), async {
        // The copy starts once the first holds the claim (a state, not a head start).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let taken: bool = redis::cmd("EXISTS")
                .arg(&claim)
                .query_async(&mut conn)
                .await
                .unwrap();
            if taken {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no claim taken");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        d.process(&msg).await
    });
    let sent = a.unwrap();
    assert_eq!(sent.outcome, Outcome::Sent);
    assert_eq!(
        b,
        Err(Deferred::Busy),
        "the claim is held while the first send runs"
    );
    assert_eq!(
        d.process(&msg).await,
        Ok(sent),
        "then the status is re-reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_kafka_message_twice_is_sent_once_and_reported_twice() {
    let server = gateway(Duration::from_millis(200)).await;
    let keys = TestPrefix::local();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("d{}.", &id[..8]);
    let topics: Vec<String> = [
        dispatch_topic(Channel::Sms, Lane::Urgent),
        dispatch_topic(Channel::Sms, Lane::Bulk),
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

    // The same message twice, on different partitions (different keys): two consumers' worth
    // of concurrency inside one worker.
    let msg = message();
    let payload = serde_json::to_vec(&msg).unwrap();
    let p = producer(&kafka, "test").unwrap();
    let topic = kafka.topic(&dispatch_topic(Channel::Sms, Lane::Urgent));
    let mut produced = Vec::new();
    for key in ["a", "b"] {
        produced.push(
            p.send(
                FutureRecord::to(&topic).key(key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap(),
        );
    }

    let cfg = workers::Config {
        kafka: kafka.clone(),
        http: common::http::HttpConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        },
        ..config(&server, &keys)
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health = listener.local_addr().unwrap();
    // Declared after the cluster: stopped before it, also when an assertion fails.
    let mut services = TaskGroup::new();
    services.spawn("workers", workers::run(cfg, listener, services.token()));

    // Once the worker's group has committed past both copies, both were handled for good.
    let group = kafka.topic(&common::events::worker_group(Channel::Sms, Lane::Urgent));
    for d in &produced {
        let (bootstrap, group, topic) = (
            kafka.bootstrap_servers.clone(),
            group.clone(),
            topic.clone(),
        );
        let (partition, offset) = (d.partition, d.offset);
        tokio::task::spawn_blocking(move || {
            devkit::kafka::wait_committed(
                &bootstrap,
                &group,
                &topic,
                partition,
                offset,
                Duration::from_secs(30),
            )
        })
        .await
        .unwrap()
        .unwrap();
    }
    let (bootstrap, status_topic) = (kafka.bootstrap_servers.clone(), kafka.topic(STATUS_TOPIC));
    let events: Vec<StatusEvent> = tokio::task::spawn_blocking(move || {
        devkit::kafka::read_topic(&bootstrap, &status_topic, Duration::from_secs(15))
    })
    .await
    .unwrap()
    .unwrap()
    .iter()
    .map(|m| serde_json::from_slice(m.payload().unwrap()).unwrap())
    .collect();
    assert_eq!(events.len(), 2, "both copies are reported: {events:?}");
    assert_eq!(events[0], events[1], "with the same status");
    assert_eq!(
        (
            events[0].delivery_id,
            events[0].outcome,
            events[0].provider.as_str()
        ),
        (msg.delivery_id, Outcome::Sent, "sms_gateway")
    );
    let sends: Vec<_> = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == SMS_PATH)
        .collect();
    assert_eq!(sends.len(), 1, "the gateway got one request");

    // The send is counted once, with its latency, on the worker's /metrics.
    let metrics = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("http://{health}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Whole lines: `… 1` must not pass for `… 10`.
    for line in [
        r#"notify_worker_sends_total{channel="sms",provider="sms_gateway",outcome="sent"} 1"#,
        r#"notify_worker_send_duration_seconds_count{channel="sms",provider="sms_gateway"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    }
    services.stop(Duration::from_secs(30)).await.unwrap();
}

#[tokio::test]
async fn a_providers_retry_after_reaches_the_status_event() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SMS_PATH))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "120")
                .set_body_json(
                    serde_json::json!({ "code": 20429, "message": "Too Many Requests" }),
                ),
        )
        .mount(&server)
        .await;
    let keys = TestPrefix::local();
    let d = dispatcher(&server, &keys).await;
    let msg = message();
    let ev = d.process(&msg).await.unwrap();
    assert_eq!(
        (
            ev.delivery_id,
            ev.outcome,
            ev.retry_after_ms,
            ev.error.map(|e| e.code),
            ev.provider.as_str()
        ),
        (
            msg.delivery_id,
            Outcome::TransientFailure,
            Some(120_000),
            Some("sms_429".to_owned()),
            "sms_gateway"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_record_could_not_be_written_is_never_sent_again() {
    // Redis dies while the provider is answering: the claim was taken, the record of the
    // outcome cannot be written. Retrying the message (the status must still be reported)
    // re-reports that outcome — even after Redis is back, empty, and the claim long expired.
    let server = gateway(Duration::from_secs(3)).await;
    let mut redis = tokio::task::spawn_blocking(devkit::redis::RedisServer::start)
        .await
        .unwrap()
        .unwrap();
    let keys = TestPrefix::new(&redis.url());
    let d = Arc::new(dispatcher(&server, &keys).await);
    let msg = message();
    let sending = tokio::spawn({
        let (d, msg) = (d.clone(), msg.clone());
        async move { d.process(&msg).await }
    });
    // Once the claim is in Redis the send runs (3 s at the gateway): kill Redis then.
    let claim = format!("{}dispatch:{}:1", keys.prefix(), msg.delivery_id);
    let mut conn = devkit::redis::connect(&redis.url()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let taken: bool = redis::cmd("EXISTS")
            .arg(&claim)
            .query_async(&mut conn)
            .await
            .unwrap();
        if taken {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no claim taken");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    redis.stop();
    let first = sending.await.unwrap().unwrap();
    assert_eq!(first.outcome, Outcome::Sent);

    redis = tokio::task::spawn_blocking(move || {
        redis.restart().unwrap();
        redis
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await; // past the 1 s claim
    assert_eq!(d.process(&msg).await, Ok(first.clone()), "re-reported");
    assert_eq!(d.process(&msg).await, Ok(first), "still");
    drop(redis);
    // `expect(1)`: the gateway saw one send (verified when the server drops).
}
