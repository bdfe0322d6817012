//! The stuck scan: a lost dispatch is re-driven and a backlog left alone; what retention
//! dropped is recovered and what outlived its TTL expires.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stuck_scan_redrives_a_passed_over_message_and_leaves_a_backlog_alone() {
    use rdkafka::producer::FutureRecord;

    let gateway = MockServer::start().await;
    let mut opts = sms_options(&gateway);
    // SMS is planned but no worker consumes it: its messages wait in a backlog.
    opts.enabled_channels = vec![Channel::Email, Channel::Sms];
    opts.workers.channels = vec![Channel::Email];
    let mut stack = Stack::start(opts).await.unwrap();

    // A backlog: published, no status, far past the visibility timeout (3 s).
    let waiting = sms(&stack, "+49301234021").await;
    let waiting_delivery: Uuid =
        sqlx::query_scalar("SELECT id FROM deliveries WHERE notification_id = $1::uuid")
            .bind(&waiting)
            .fetch_one(&stack.notify_pool)
            .await
            .unwrap();

    // A message the workers passed over: the outbox row says it went to (partition, offset) of
    // a message that was not it (as if lost), and the workers' group has committed past that.
    let (id, planned) = send(
        &stack,
        json!({ "recipients": [{ "email": "passed-over@example.test" }], "category": "billing",
                "content": { "text": "hello" },
                "send_at": (Utc::now() + chrono::Duration::hours(1)).to_rfc3339() }),
    )
    .await;
    let delivery = planned[0]["id"].as_str().unwrap().to_owned();
    let producer = common::kafka::producer(&stack.kafka_cfg, "test").unwrap();
    let topic = stack.kafka_cfg.topic("notify.dispatch.email.bulk");
    let rdkafka::producer::future_producer::Delivery {
        partition, offset, ..
    } = producer
        .send(
            FutureRecord::to(&topic)
                .key("someone-else")
                .payload("not a dispatch message"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    sqlx::query(
        "UPDATE outbox SET published_at = now() - interval '10 seconds', kafka_partition = $2, kafka_offset = $3
         WHERE headers ->> 'delivery-id' = $1",
    )
    .bind(&delivery)
    .bind(partition)
    .bind(offset)
    .execute(&stack.notify_pool)
    .await
    .unwrap();
    sqlx::query("UPDATE deliveries SET status = 'queued' WHERE id = $1::uuid")
        .bind(&delivery)
        .execute(&stack.notify_pool)
        .await
        .unwrap();

    let view = settled(&stack, &id, Duration::from_secs(30)).await;
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
    assert_eq!(
        stack.smtp.mails().len(),
        1,
        "the lost message was re-driven and sent once"
    );
    let admin = stack.token(Role::Admin, "ops-admin");
    let (_, detail) = stack
        .call(
            Method::GET,
            &format!("/v1/admin/deliveries/{delivery}"),
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    assert_eq!(detail["redrives"].as_array().unwrap().len(), 1, "{detail}");
    assert_eq!(detail["redrives"][0]["kind"], "lost");
    assert_eq!(detail["redrives"][0]["actor"], "repeater");
    assert_eq!(detail["redrives"][0]["to_attempt"], 2);

    // The backlog was older than the visibility timeout for all that time, and untouched.
    let published: DateTime<Utc> = sqlx::query_scalar(
        "SELECT published_at FROM outbox WHERE headers ->> 'delivery-id' = $1::text",
    )
    .bind(waiting_delivery.to_string())
    .fetch_one(&stack.notify_pool)
    .await
    .unwrap();
    let wait = Duration::from_secs(5)
        .saturating_sub((Utc::now() - published).to_std().unwrap_or_default());
    tokio::time::sleep(wait).await;
    let (status, attempt, redrives): (String, i32, i64) = sqlx::query_as(
        "SELECT status, current_attempt, (SELECT count(*) FROM redrives WHERE delivery_id = d.id)
         FROM deliveries d WHERE id = $1",
    )
    .bind(waiting_delivery)
    .fetch_one(&stack.notify_pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), attempt, redrives), ("queued", 1, 0));

    // An SMS worker joins: the backlog's one message is sent once, as attempt 1 — a re-drive
    // would have left a second message (attempt 2) behind it.
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(sent())
        .mount(&gateway)
        .await;
    let mut sms_workers = sms_options(&gateway).workers;
    sms_workers.channels = vec![Channel::Sms];
    stack.spawn_workers(sms_workers).await.unwrap();
    let view = settled(&stack, &waiting, Duration::from_secs(30)).await;
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
    assert_eq!(view["deliveries"][0]["attempts"], 1, "{view}");
    let dispatched: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE headers ->> 'delivery-id' = $1")
            .bind(waiting_delivery.to_string())
            .fetch_one(&stack.notify_pool)
            .await
            .unwrap();
    assert_eq!(dispatched, 1, "never re-driven");
    let requests = gateway.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "the backlog was sent once");
    assert!(String::from_utf8_lossy(&requests[0].body).contains("To=%2B49301234021"));
}

/// The database's clock now (the one `updated_at` of a death is stamped with).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stuck_scan_recovers_what_retention_dropped_and_expires_what_outlived_its_ttl() {
    let gateway = accepting_gateway().await;
    let mut opts = sms_options(&gateway);
    // SMS is planned but nothing consumes it yet: its messages wait in the log.
    opts.enabled_channels = vec![Channel::Email, Channel::Sms];
    opts.workers.channels = vec![Channel::Email];
    let mut stack = Stack::start(opts).await.unwrap();

    let (keep, _) = send(
        &stack,
        json!({ "recipients": [{ "phone": "+49301234041" }], "category": "billing",
                "content": { "text": "keep me" } }),
    )
    .await;
    let (short, _) = send(
        &stack,
        json!({ "recipients": [{ "phone": "+49301234042" }], "category": "billing",
                "ttl_seconds": 2, "content": { "text": "only for 2 s" } }),
    )
    .await;
    // Both dispatch messages are published; wait until the short one's TTL is behind us.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let positions: Vec<(i32, i64)> = loop {
        let rows: Vec<(Option<i32>, Option<i64>)> = sqlx::query_as(
            "SELECT o.kafka_partition, o.kafka_offset FROM outbox o
             JOIN deliveries d ON o.headers ->> 'delivery-id' = d.id::text
             WHERE d.notification_id IN ($1::uuid, $2::uuid)",
        )
        .bind(&keep)
        .bind(&short)
        .fetch_all(&stack.notify_pool)
        .await
        .unwrap();
        if rows.len() == 2 && rows.iter().all(|(p, o)| p.is_some() && o.is_some()) {
            break rows
                .into_iter()
                .map(|(p, o)| (p.unwrap(), o.unwrap()))
                .collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not published: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    // Retention: fill each partition holding one of them past the broker's 5 MB, so the log
    // no longer has them (their offsets fall below the low watermark).
    let topic = stack.kafka_cfg.topic("notify.dispatch.sms.bulk");
    let bootstrap = stack.kafka_cfg.bootstrap_servers.clone();
    let mut partitions: Vec<i32> = positions.iter().map(|(p, _)| *p).collect();
    partitions.sort_unstable();
    partitions.dedup();
    tokio::task::spawn_blocking(move || {
        for p in partitions {
            devkit::kafka::fill_partition(&bootstrap, &topic, p, 7, 900_000).unwrap();
        }
    })
    .await
    .unwrap();

    // The scan re-drives the first (a new message, after the filler) and expires the second.
    let admin = stack.token(Role::Admin, "ops-admin");
    let short_view = settled(&stack, &short, Duration::from_secs(30)).await;
    let d = &short_view["deliveries"][0];
    assert_eq!(
        (
            d["status"].as_str(),
            d["reason"].as_str(),
            d["attempts"].as_i64()
        ),
        (Some("expired"), Some("ttl_passed"), Some(0)),
        "{short_view}"
    );
    let keep_delivery: Uuid =
        sqlx::query_scalar("SELECT id FROM deliveries WHERE notification_id = $1::uuid")
            .bind(&keep)
            .fetch_one(&stack.notify_pool)
            .await
            .unwrap();
    let detail = wait_redriven(&stack, &admin, keep_delivery).await;
    assert_eq!(detail["redrives"][0]["kind"], "lost", "{detail}");
    assert!(
        detail["redrives"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("retention"),
        "{detail}"
    );
    stack
        .expect_metrics(&[
            (
                Service::Repeater,
                "notify_repeater_stuck_redriven_total{channel=\"sms\"} 1",
            ),
            (
                Service::Repeater,
                "notify_repeater_stuck_expired_total{channel=\"sms\"} 1",
            ),
        ])
        .await
        .unwrap();

    // An SMS worker joins: it reads past the filler (undecodable: skipped) to the re-driven
    // attempt and sends it — once; the expired one never.
    let mut sms_workers = sms_options(&gateway).workers;
    sms_workers.channels = vec![Channel::Sms];
    stack.spawn_workers(sms_workers).await.unwrap();
    let view = settled(&stack, &keep, Duration::from_secs(60)).await;
    assert_eq!(
        (
            view["deliveries"][0]["status"].as_str(),
            view["deliveries"][0]["attempts"].as_i64()
        ),
        (Some("sent"), Some(1)),
        "{view}"
    );
    let requests = gateway.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert!(String::from_utf8_lossy(&requests[0].body).contains("keep+me"));
}

/// Makes `delivery` (a scheduled one, its dispatch not yet published) look like a dispatch the
/// workers passed over: its outbox row "published" `age` ago at the position of a junk message
/// the email workers will skip, the delivery `status`.
async fn pass_over(stack: &Stack, delivery: &str, age_secs: i32, status: &str) {
    use rdkafka::producer::FutureRecord;
    let producer = common::kafka::producer(&stack.kafka_cfg, "test").unwrap();
    let topic = stack.kafka_cfg.topic("notify.dispatch.email.bulk");
    let rdkafka::producer::future_producer::Delivery {
        partition, offset, ..
    } = producer
        .send(
            FutureRecord::to(&topic)
                .key("someone-else")
                .payload("not a dispatch message"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    sqlx::query(
        "UPDATE outbox SET published_at = now() - make_interval(secs => $4), kafka_partition = $2,
                           kafka_offset = $3
         WHERE headers ->> 'delivery-id' = $1",
    )
    .bind(delivery)
    .bind(partition)
    .bind(offset)
    .bind(f64::from(age_secs))
    .execute(&stack.notify_pool)
    .await
    .unwrap();
    sqlx::query("UPDATE deliveries SET status = $2 WHERE id = $1::uuid")
        .bind(delivery)
        .bind(status)
        .execute(&stack.notify_pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_continuous_load_a_lost_dispatch_is_recovered_while_traffic_goes_on() {
    let stack = Stack::start(Options {
        welcome: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let svc = stack.token(Role::Service, "billing");
    // Steady traffic, 50 emails a second, for the whole test: the repeater always has some
    // status events it has not committed yet.
    let load = tokio_util::sync::CancellationToken::new();
    let traffic = tokio::spawn({
        let (stack_url, svc, stop, http) =
            (stack.url(), svc.clone(), load.clone(), stack.http.clone());
        async move {
            let mut sent = 0u32;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while !stop.is_cancelled() {
                tick.tick().await;
                let resp = http
                    .post(format!("{stack_url}/v1/notifications"))
                    .bearer_auth(&svc)
                    .json(
                        &json!({ "recipients": [{ "email": format!("load{sent}@example.com") }],
                                   "category": "news", "content": { "text": "load" } }),
                    )
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 202);
                sent += 1;
            }
            sent
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (id, planned) = send(
        &stack,
        json!({ "recipients": [{ "email": "lost-under-load@example.test" }], "category": "billing",
                "content": { "text": "hello" },
                "send_at": (Utc::now() + chrono::Duration::hours(1)).to_rfc3339() }),
    )
    .await;
    let delivery = planned[0]["id"].as_str().unwrap().to_owned();
    pass_over(&stack, &delivery, 10, "queued").await;

    let view = settled(&stack, &id, Duration::from_secs(30)).await;
    let sent_under_load = !traffic.is_finished();
    load.cancel();
    let total = traffic.await.unwrap();
    assert!(sent_under_load, "the load stopped early");
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
    let admin = stack.token(Role::Admin, "ops-admin");
    let (_, detail) = stack
        .call(
            Method::GET,
            &format!("/v1/admin/deliveries/{delivery}"),
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    assert_eq!(detail["redrives"][0]["kind"], "lost", "{detail}");
    // (How many depends on the machine: the traffic only has to be going on.)
    assert!(total > 0, "no load was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_dispatch_lost_after_its_outbox_row_was_purged_is_still_recovered() {
    let gateway = accepting_gateway().await;
    let mut opts = sms_options(&gateway);
    // SMS is planned but nothing consumes it yet; published rows are purged after 2 s, and the
    // scan remembers a dispatch's position once it is 1 s old.
    opts.enabled_channels = vec![Channel::Email, Channel::Sms];
    opts.workers.channels = vec![Channel::Email];
    opts.relay.retention_secs = 2;
    opts.relay.purge_interval_secs = 1;
    opts.stuck.remember_after_secs = 1.0;
    let mut stack = Stack::start(opts).await.unwrap();

    // Scheduled a second ahead: published then, and `pending` until a status arrives.
    let (id, planned) = send(
        &stack,
        json!({ "recipients": [{ "phone": "+49301234051" }], "category": "billing",
                "content": { "text": "scheduled" },
                "send_at": (Utc::now() + chrono::Duration::seconds(1)).to_rfc3339() }),
    )
    .await;
    let delivery: Uuid = planned[0]["id"].as_str().unwrap().parse().unwrap();
    // The scan copies the dispatch's position onto the delivery; then the relay purges the row.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let partition = loop {
        let (remembered, partition, rows): (Option<i32>, Option<i32>, i64) = sqlx::query_as(
            "SELECT dispatch_attempt, dispatch_partition,
                    (SELECT count(*) FROM outbox WHERE headers ->> 'delivery-id' = d.id::text)
             FROM deliveries d WHERE id = $1",
        )
        .bind(delivery)
        .fetch_one(&stack.notify_pool)
        .await
        .unwrap();
        if remembered == Some(1) && rows == 0 {
            break partition.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "remembered {remembered:?}, {rows} outbox rows"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let status: String = sqlx::query_scalar("SELECT status FROM deliveries WHERE id = $1")
        .bind(delivery)
        .fetch_one(&stack.notify_pool)
        .await
        .unwrap();
    assert_eq!(status, "pending");

    // Now the message is lost too (retention drops it): recovered from what the delivery kept.
    let (bootstrap, topic) = (
        stack.kafka_cfg.bootstrap_servers.clone(),
        stack.kafka_cfg.topic("notify.dispatch.sms.bulk"),
    );
    tokio::task::spawn_blocking(move || {
        devkit::kafka::fill_partition(&bootstrap, &topic, partition, 7, 900_000).unwrap();
    })
    .await
    .unwrap();
    let admin = stack.token(Role::Admin, "ops-admin");
    let detail = wait_redriven(&stack, &admin, delivery).await;
    assert!(
        detail["redrives"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("retention"),
        "{detail}"
    );

    let mut sms_workers = sms_options(&gateway).workers;
    sms_workers.channels = vec![Channel::Sms];
    stack.spawn_workers(sms_workers).await.unwrap();
    let view = settled(&stack, &id, Duration::from_secs(60)).await;
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
    assert_eq!(gateway.received_requests().await.unwrap().len(), 1);
}
