//! Dead letters: listed, filtered, re-driven by filter and by time of death.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_redriven_by_filter() {
    let gateway = MockServer::start().await;
    for (number, code) in [
        ("49301234011", 21610),
        ("49301234012", 21610),
        ("49301234013", 30007),
    ] {
        Mock::given(method("POST"))
            .and(path(MESSAGES))
            .and(body_string_contains(number))
            .respond_with(twilio_error(400, code))
            .mount(&gateway)
            .await;
    }
    let stack = Stack::start(sms_options(&gateway)).await.unwrap();
    let admin = stack.token(Role::Admin, "ops-admin");

    let mut ids = Vec::new();
    for n in ["+49301234011", "+49301234012", "+49301234013"] {
        let id = sms(&stack, n).await;
        let view = settled(&stack, &id, Duration::from_secs(20)).await;
        assert_eq!(view["deliveries"][0]["status"], "dead", "{view}");
        ids.push(view["deliveries"][0]["id"].as_str().unwrap().to_owned());
    }

    let list = |q: &'static str| {
        let (stack, admin) = (&stack, admin.clone());
        async move {
            stack
                .call(
                    Method::GET,
                    &format!("/v1/admin/dead-letters{q}"),
                    Some(&admin),
                    None,
                )
                .await
                .unwrap()
        }
    };
    let (status, all) = list("").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    let (_, by_code) = list("?error_code=sms_21610&provider=sms_gateway&channel=sms").await;
    let mut listed: Vec<&str> = by_code["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    listed.sort();
    let mut expected = vec![ids[0].as_str(), ids[1].as_str()];
    expected.sort();
    assert_eq!(listed, expected);
    let (_, none) = list("?channel=email").await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    let (_, paged) = list("?limit=2").await;
    assert_eq!(paged["items"].as_array().unwrap().len(), 2);
    let cursor = paged["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = stack
        .call(
            Method::GET,
            &format!("/v1/admin/dead-letters?limit=2&cursor={cursor}"),
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    let (status, bad) = list("?channel=fax").await;
    assert_eq!(status, 422, "{bad}");

    // Bad re-drive requests change nothing.
    let redrive = |body: Value, token: String| {
        let stack = &stack;
        async move {
            stack
                .call(
                    Method::POST,
                    "/v1/admin/dead-letters/redrive",
                    Some(&token),
                    Some(body),
                )
                .await
                .unwrap()
        }
    };
    let (status, _) = redrive(json!({}), admin.clone()).await;
    assert_eq!(status, 422);
    let (status, _) = redrive(json!({ "ids": [ids[0]], "filter": {} }), admin.clone()).await;
    assert_eq!(status, 422);
    let (status, _) = redrive(
        json!({ "filter": { "channel": "sms" } }),
        stack.token(Role::Service, "billing"),
    )
    .await;
    assert_eq!(status, 403);
    let (_, still) = list("").await;
    assert_eq!(still["items"].as_array().unwrap().len(), 3);

    // The gateway now takes 0011 and 0012; re-drive exactly the sms_21610 ones.
    gateway.reset().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(body_string_contains("49301234013"))
        .respond_with(twilio_error(400, 30007))
        .mount(&gateway)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(sent())
        .mount(&gateway)
        .await;
    let (status, body) = redrive(
        json!({ "filter": { "error_code": "sms_21610" } }),
        admin.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["redriven"], 2);

    for id in &ids[..2] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let detail = loop {
            let (_, d) = stack
                .call(
                    Method::GET,
                    &format!("/v1/admin/deliveries/{id}"),
                    Some(&admin),
                    None,
                )
                .await
                .unwrap();
            if d["status"] == "sent" || tokio::time::Instant::now() > deadline {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(detail["status"], "sent", "{detail}");
        assert_eq!(detail["attempts"], 2);
        assert_eq!(detail["redrives"][0]["kind"], "dead_letter");
        assert_eq!(detail["redrives"][0]["actor"], "ops-admin");
        assert_eq!(detail["redrives"][0]["to_attempt"], 2);
    }
    let requests = gateway.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2, "only the re-driven two were sent again");
    assert!(
        requests
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.body).contains("49301234013"))
    );

    let (_, left) = list("").await;
    let left: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(left, vec![ids[2].as_str()]);

    // By ids: the dead one is re-driven (and dies again), the sent one is skipped.
    let (status, body) = redrive(json!({ "ids": [ids[2], ids[0]] }), admin.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["redriven"], 1);
    assert_eq!(body["skipped"], json!([ids[0]]));
    let view = settled(
        &stack,
        &ids_notification(&stack, &ids[2]).await,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(view["deliveries"][0]["status"], "dead", "{view}");

    stack
        .expect_metrics(&[
        (
            Service::Notifications,
            "notify_dead_letters_redriven_total 3",
        ),
        (
            Service::Repeater,
            "notify_repeater_dead_letters_total{channel=\"sms\",reason=\"permanent_failure\"} 4",
        ),
        ])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_filtered_and_redriven_by_time_of_death() {
    let gateway = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(twilio_error(400, 21610))
        .mount(&gateway)
        .await;
    let stack = Stack::start(sms_options(&gateway)).await.unwrap();
    let admin = stack.token(Role::Admin, "ops-admin");
    let mut dead = Vec::new();
    let mut boundary = None;
    for (i, phone) in ["+49301234031", "+49301234032"].iter().enumerate() {
        if i == 1 {
            // Everything before this instant died before it; everything after, after.
            boundary = Some(db_now(&stack).await);
        }
        let view = settled(&stack, &sms(&stack, phone).await, Duration::from_secs(20)).await;
        assert_eq!(view["deliveries"][0]["status"], "dead", "{view}");
        dead.push(view["deliveries"][0]["id"].as_str().unwrap().to_owned());
    }
    let t = boundary
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let t = t.replace('+', "%2B");
    let list = |q: String| {
        let (stack, admin) = (&stack, admin.clone());
        async move {
            let (status, body) = stack
                .call(
                    Method::GET,
                    &format!("/v1/admin/dead-letters{q}"),
                    Some(&admin),
                    None,
                )
                .await
                .unwrap();
            assert_eq!(status, 200, "{q}: {body}");
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(format!("?since={t}")).await, vec![dead[1].clone()]);
    assert_eq!(list(format!("?until={t}")).await, vec![dead[0].clone()]);
    // An empty or reversed range is empty (a range the document allows is never refused).
    for until in [t.clone(), "2000-01-01T00:00:00Z".to_owned()] {
        assert!(list(format!("?since={t}&until={until}")).await.is_empty());
    }
    let (status, _) = stack
        .call(
            Method::GET,
            "/v1/admin/dead-letters?since=yesterday",
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    assert!(status == 400 || status == 422, "{status}");

    // Re-drive only what died before the boundary.
    gateway.reset().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(sent())
        .mount(&gateway)
        .await;
    let (status, body) = stack
        .call(
            Method::POST,
            "/v1/admin/dead-letters/redrive",
            Some(&admin),
            Some(json!({ "filter": { "until": boundary.unwrap() } })),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, body["redriven"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let view = settled(
        &stack,
        &ids_notification(&stack, &dead[0]).await,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
    assert_eq!(
        list(String::new()).await,
        vec![dead[1].clone()],
        "the later one stays dead"
    );
    assert_eq!(gateway.received_requests().await.unwrap().len(), 1);
}
