//! Retries on the schedule; permanent errors and exhausted retries end dead.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_twice_then_succeeding_is_sent_on_attempt_3_on_the_schedule() {
    let gateway = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&gateway)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(sent())
        .with_priority(2)
        .mount(&gateway)
        .await;
    let stack = Stack::start(Options {
        retry_schedule: vec![1.0, 2.0, 60.0],
        retry_jitter: 0.2,
        ..sms_options(&gateway)
    })
    .await
    .unwrap();

    let id = sms(&stack, "+49301234001").await;
    let view = settled(&stack, &id, Duration::from_secs(30)).await;
    let d = &view["deliveries"][0];
    assert_eq!(d["status"], "sent", "{view}");
    assert_eq!(d["attempts"], 3);
    let delivery = d["id"].as_str().unwrap();

    let rows = attempts(&stack, delivery).await;
    let outcomes: Vec<_> = rows
        .iter()
        .map(|r| (r.attempt, r.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (1, "transient_failure"),
            (2, "transient_failure"),
            (3, "sent")
        ]
    );
    // Each retry was scheduled at schedule[n] ± 20 % after the failure was recorded (both
    // instants on the database's clock, in the transaction that recorded the failure)…
    for (failed, base) in [(0usize, 1.0), (1, 2.0)] {
        let scheduled =
            secs(due(&stack, delivery, failed as i32 + 2).await - rows[failed].recorded_at);
        assert!(
            (base * 0.8 - 0.001..=base * 1.2 + 0.001).contains(&scheduled),
            "retry {} scheduled {scheduled}s after the failure (schedule {base}s ± 20%)",
            failed + 2
        );
        // …and the provider was not called again before then.
        let gap = secs(rows[failed + 1].at - rows[failed].at);
        assert!(
            gap >= base * 0.8 - 0.05,
            "attempt {} came {gap}s after the previous",
            failed + 2
        );
    }
    assert_eq!(gateway.received_requests().await.unwrap().len(), 3);
    stack
        .expect_metrics(&[(
            Service::Repeater,
            "notify_repeater_retries_scheduled_total{channel=\"sms\"} 2",
        )])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_die_at_once_and_exhausted_retries_die_after_the_last() {
    let gateway = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(body_string_contains("49301234002"))
        .respond_with(twilio_error(400, 21610))
        .mount(&gateway)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(body_string_contains("49301234003"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&gateway)
        .await;
    let stack = Stack::start(Options {
        retry_schedule: vec![0.3, 0.3],
        ..sms_options(&gateway)
    })
    .await
    .unwrap();

    let permanent = sms(&stack, "+49301234002").await;
    let exhausted = sms(&stack, "+49301234003").await;
    let p = settled(&stack, &permanent, Duration::from_secs(20)).await;
    let e = settled(&stack, &exhausted, Duration::from_secs(20)).await;

    let p = &p["deliveries"][0];
    assert_eq!(p["status"], "dead", "{p}");
    assert_eq!(p["reason"], "permanent_failure");
    assert_eq!(p["attempts"], 1);
    assert_eq!(p["last_error"]["code"], "sms_21610");

    let e = &e["deliveries"][0];
    assert_eq!(e["status"], "dead", "{e}");
    assert_eq!(e["reason"], "attempts_exhausted");
    assert_eq!(e["attempts"], 3, "1 attempt + 2 scheduled retries");

    let requests = gateway.received_requests().await.unwrap();
    let to = |n: &str| {
        requests
            .iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains(n))
            .count()
    };
    assert_eq!(to("49301234002"), 1);
    assert_eq!(to("49301234003"), 3);
}
