//! The delivery guarantee under infrastructure faults:
//!
//! * a Kafka broker goes down while notifications are being published and consumed: every one
//!   is still delivered, once;
//! * the brokers answer a produce only after the client gave up on it (it was written, the
//!   answer came too late) and the client sends it again: each notification is still mailed
//!   once and its status applied once. A real broker drops the retried copy by the idempotent
//!   producer's sequence numbers; librdkafka's mock cluster checks sequences only for
//!   transactional producers (`rd_kafka_mock_validate_records`), so here the copy reaches the
//!   log, and the test counts it through the layers behind (the worker's per-attempt claim
//!   re-reports instead of sending, the repeater counts the second status as a duplicate);
//! * Redis goes down: requests are still accepted (rate limits fail open, idempotency and
//!   profiles fall back to Postgres and users-service), but no worker sends without its
//!   duplicate-send claim — the message waits in Kafka, visibly, and goes out once Redis is
//!   back.

use std::time::Duration;

use common::auth::Role;
use devkit::redis::RedisServer;
use e2e::{Options, Service, Stack};
use reqwest::Method;
use serde_json::{Value, json};

async fn send(stack: &Stack, token: &str, body: Value) -> Value {
    stack.send(token, body).await.unwrap()
}

/// `POST /v1/notifications` with an `Idempotency-Key`; must be accepted.
async fn send_once(stack: &Stack, token: &str, key: &str, body: &Value) -> Value {
    let resp = stack
        .http
        .post(format!("{}/v1/notifications", stack.url()))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    resp.json().await.unwrap()
}

/// Messages on `topic` (unprefixed) of the stack's cluster.
async fn messages(stack: &Stack, topic: &str) -> i64 {
    let (bootstrap, topic) = (
        stack.kafka_cfg.bootstrap_servers.clone(),
        stack.kafka_cfg.topic(topic),
    );
    tokio::task::spawn_blocking(move || devkit::kafka::message_count(&bootstrap, &topic))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_going_down_mid_stream_loses_and_duplicates_nothing() {
    let stack = Stack::start(Options {
        welcome: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "billing");
    const N: usize = 30;
    let mut ids = Vec::new();
    for i in 0..N {
        if i == 10 {
            // Broker 1 leads a third of the partitions and may coordinate groups: the relay's
            // and the workers' requests to it fail until it is back. Back within the
            // consumers' session timeout (6 s) and the producer's message timeout (30 s).
            stack.kafka().broker_down(1).unwrap();
        }
        let view = send(
            &stack,
            &svc,
            json!({ "recipients": [{ "email": format!("b{i}@example.com") }], "category": "news",
                    "content": { "text": format!("message {i}") } }),
        )
        .await;
        ids.push(view["id"].as_str().unwrap().to_owned());
        if i == 20 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            stack.kafka().broker_up(1).unwrap();
        }
    }
    for id in &ids {
        let view = stack
            .wait_settled(id, &svc, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
        assert_eq!(view["deliveries"][0]["attempts"], 1, "{view}");
    }
    let mut to: Vec<String> = stack
        .smtp
        .mails()
        .into_iter()
        .map(|m| m.to[0].clone())
        .collect();
    to.sort();
    to.dedup();
    assert_eq!(stack.smtp.mails().len(), N, "each mailed once");
    assert_eq!(to.len(), N);
    // The log holds each dispatch and each status exactly once.
    assert_eq!(
        messages(&stack, "notify.dispatch.email.bulk").await,
        N as i64
    );
    assert_eq!(messages(&stack, "notify.status").await, N as i64);
    assert_eq!(
        stack
            .notify_count("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_answered_after_the_client_gave_up_is_sent_again_and_still_mailed_once() {
    // Every client gives up on an unanswered request after 2 s here (10 s in production).
    let stack = Stack::start(Options {
        welcome: false,
        kafka_properties: [("socket.timeout.ms".to_owned(), "2000".to_owned())].into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "billing");
    let body = |i: usize| {
        json!({ "recipients": [{ "email": format!("late{i}@example.com") }], "category": "news",
                "content": { "text": format!("message {i}") } })
    };
    // One sent first: every producer has its id and its connections.
    let first = send(&stack, &svc, body(0)).await;
    stack
        .wait_settled(first["id"].as_str().unwrap(), &svc, Duration::from_secs(30))
        .await
        .unwrap();

    // Every broker now answers 6 s late: each produce is appended on arrival, the producer
    // gives up on its answer after 2 s (found by a scan once a second), drops the connection
    // and sends it again.
    let brokers = stack.kafka().broker_ids();
    for id in brokers.clone() {
        stack
            .kafka()
            .set_round_trip_time(id, Duration::from_secs(6))
            .unwrap();
    }
    const N: usize = 5;
    let mut ids = vec![first["id"].as_str().unwrap().to_owned()];
    for i in 1..=N {
        ids.push(
            send(&stack, &svc, body(i)).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // The relay publishes within moments of each commit; once the first answers were given
    // up on, the brokers are quick again and the retries are answered. (Quick earlier, a
    // late answer would be flushed before its timeout by the next request on its connection.)
    tokio::time::sleep(Duration::from_secs(4)).await;
    for id in brokers {
        stack
            .kafka()
            .set_round_trip_time(id, Duration::ZERO)
            .unwrap();
    }
    for id in &ids {
        let view = stack
            .wait_settled(id, &svc, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
        assert_eq!(view["deliveries"][0]["attempts"], 1, "{view}");
    }
    assert_eq!(stack.smtp.mails().len(), N + 1, "each mailed once");
    // The producers did send again (a copy reached the mock's log: see the module's text), and
    // every extra status the copies caused was recognised as a duplicate.
    let dispatches = messages(&stack, "notify.dispatch.email.bulk").await;
    assert!(
        dispatches > (N + 1) as i64,
        "no copy in the log: no produce was sent again (or the mock cluster now drops copies as \
         a broker does: then assert exactly {} here)",
        N + 1
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let statuses = messages(&stack, "notify.status").await;
        let repeater = stack.metrics(Service::Repeater).await.unwrap();
        let duplicates: i64 = repeater
            .lines()
            .find_map(|l| l.strip_prefix("notify_repeater_duplicate_status_events_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if statuses == (N + 1) as i64 + duplicates {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{statuses} statuses for {} sends and {duplicates} duplicates",
            N + 1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_requests_are_accepted_and_nothing_is_sent_until_it_is_back() {
    // A Redis of this test's own, to kill and restart.
    let mut redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap()
        .unwrap();
    let stack = Stack::start(Options {
        welcome: false,
        redis_url: Some(redis.url()),
        ..Options::default()
    })
    .await
    .unwrap();
    let user = stack.register_user("redis-down@example.com").await.unwrap();
    let svc = stack.token(Role::Service, "billing");
    let body = json!({ "recipients": [{ "user_id": user }], "category": "news",
                       "content": { "text": "hello" } });
    let first = send(&stack, &svc, body.clone()).await;
    stack
        .wait_settled(first["id"].as_str().unwrap(), &svc, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(stack.smtp.mails().len(), 1);

    redis.stop();
    // Accepted: the rate limit fails open, the idempotency key is kept in Postgres, the
    // profile comes from users-service.
    let second = send_once(&stack, &svc, "while-redis-is-down", &body).await;
    let id = second["id"].as_str().unwrap().to_owned();
    assert_eq!(second["deliveries"][0]["status"], "queued", "{second}");

    // The worker holds the send (it cannot take its claim): counted on /metrics, not ready,
    // nothing sent.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = stack.metrics(Service::Workers).await.unwrap();
        let held = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("notify_worker_claims_unavailable_total{channel=\"email\"} ")?
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0);
        if held >= 2 {
            break; // tried, and tried again
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never tried the send:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = stack
        .http
        .get(format!("http://{}/readyz", stack.addr(Service::Workers)))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let (_, view) = stack
        .call(
            Method::GET,
            &format!("/v1/notifications/{id}"),
            Some(&svc),
            None,
        )
        .await
        .unwrap();
    assert_eq!(view["deliveries"][0]["status"], "queued", "{view}");
    assert_eq!(
        stack.smtp.mails().len(),
        1,
        "nothing sent without the claim"
    );

    // Redis is back (empty): the held message goes out, once.
    redis = tokio::task::spawn_blocking(move || {
        redis.restart().unwrap();
        redis
    })
    .await
    .unwrap();
    let view = stack
        .wait_settled(&id, &svc, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
    assert_eq!(view["deliveries"][0]["attempts"], 1, "{view}");
    assert_eq!(stack.smtp.mails().len(), 2);
    // The key was kept in Postgres: a replay answers the same notification.
    let replayed = send_once(&stack, &svc, "while-redis-is-down", &body).await;
    assert_eq!(replayed["id"], second["id"]);
    assert_eq!(
        stack
            .notify_count("SELECT count(*) FROM notifications")
            .await,
        2
    );

    // The services reconnected by themselves: the next send caches the profile again.
    let third = send(&stack, &svc, body).await;
    stack
        .wait_settled(third["id"].as_str().unwrap(), &svc, Duration::from_secs(20))
        .await
        .unwrap();
    let mut conn = devkit::redis::connect(&redis.url()).await.unwrap();
    let cached: bool = redis::cmd("EXISTS")
        .arg(stack.redis.key(&format!("profile:{user}")))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(cached, "the profile cache works again");
    assert_eq!(stack.smtp.mails().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_a_kafka_outage_answers_at_once_instead_of_hanging() {
    let stack = Stack::start(Options {
        welcome: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "billing");
    // Scheduled an hour ahead, so nothing is published before the brokers are down.
    let at = chrono::Utc::now() + chrono::Duration::hours(1);
    let view = send(
        &stack,
        &svc,
        json!({ "recipients": [{ "email": "outage@example.com" }], "category": "news",
                "send_at": at.to_rfc3339(), "content": { "text": "during the outage" } }),
    )
    .await;
    let id = view["id"].as_str().unwrap().to_owned();
    // Every broker goes away, then the row comes due: the relay takes it and waits for
    // Kafka's acknowledgement, holding the row's lock.
    for b in stack.kafka().broker_ids() {
        stack.kafka().broker_down(b).unwrap();
    }
    let delivery = view["deliveries"][0]["id"].as_str().unwrap().to_owned();
    sqlx::query("UPDATE outbox SET available_at = now() WHERE headers ->> 'delivery-id' = $1")
        .bind(&delivery)
        .execute(&stack.notify_pool)
        .await
        .unwrap();
    // Until someone else holds the row's lock: `NOWAIT` fails only then.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut tx = stack.notify_pool.begin().await.unwrap();
        let tried = sqlx::query(
            "SELECT 1 FROM outbox WHERE headers ->> 'delivery-id' = $1 FOR UPDATE NOWAIT",
        )
        .bind(&delivery)
        .execute(&mut *tx)
        .await;
        let _ = tx.rollback().await;
        match tried {
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => break,
            Err(e) => panic!("{e}"),
            Ok(_) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never took the due row"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The cancel answers within seconds: 409, in progress, retry — it neither hangs nor
    // cancels a delivery whose message may be on its way.
    let started = tokio::time::Instant::now();
    let (status, problem) = stack
        .call(
            Method::POST,
            &format!("/v1/notifications/{id}/cancel"),
            Some(&svc),
            None,
        )
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        (status, problem["type"].as_str()),
        (409, Some("dispatch_in_progress")),
        "{problem}"
    );
    // It waited for the lock (`lock_timeout` 2 s) before giving up — not at once, not forever.
    assert!(
        took >= Duration::from_millis(1_900) && took < Duration::from_secs(30),
        "the cancel took {took:?}"
    );

    // Kafka comes back: the message goes out, exactly once, and the delivery is sent.
    for b in stack.kafka().broker_ids() {
        stack.kafka().broker_up(b).unwrap();
    }
    let view = stack
        .wait_settled(&id, &svc, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
    assert_eq!(stack.smtp.mails().len(), 1);
}

/// users-service down: a send to a registered user cannot be planned, so it is refused with
/// 503 "nothing was accepted" — and nothing is written (no notification, no outbox row), so a
/// retry with the same `Idempotency-Key` is a fresh start. Sends to raw addresses need no
/// profile and go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_users_service_down_a_send_to_a_user_is_503_and_writes_nothing() {
    let stack = Stack::start(Options {
        welcome: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let user = stack.register_user("down@example.com").await.unwrap();
    let svc = stack.token(Role::Service, "billing");
    stack
        .users_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let resp = stack
        .http
        .post(format!("{}/v1/notifications", stack.url()))
        .bearer_auth(&svc)
        .header("idempotency-key", "during-outage")
        .json(
            &json!({ "recipients": [{ "user_id": user }], "category": "news",
                       "content": { "text": "x" } }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let problem: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(problem["type"], "dependency_unavailable", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("nothing was accepted"),
        "{problem}"
    );
    for table in ["notifications", "deliveries", "outbox", "idempotency_keys"] {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&stack.notify_pool)
            .await
            .unwrap();
        assert_eq!(rows, 0, "{table}");
    }
    // A raw address needs no profile.
    let view = send(
        &stack,
        &svc,
        json!({ "recipients": [{ "email": "raw@example.com" }], "category": "news",
                "content": { "text": "x" } }),
    )
    .await;
    assert!(view["id"].is_string(), "{view}");
    // Back: the same key is a fresh request.
    stack
        .users_down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let resp = stack
        .http
        .post(format!("{}/v1/notifications", stack.url()))
        .bearer_auth(&svc)
        .header("idempotency-key", "during-outage")
        .json(
            &json!({ "recipients": [{ "user_id": user }], "category": "news",
                       "content": { "text": "x" } }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
}
