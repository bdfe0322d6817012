//! SMS provider failover on the real stack: a Twilio-style gateway first, Vonage second
//! (both wiremock), circuit breakers in Redis. The first gateway's outage (503) moves traffic
//! to the second at once and, after `consecutive_failures`, stops calling the first at all;
//! once it recovers a probe (after `open_secs`: 10 s, long enough that the outage phase never
//! depends on timing) closes its breaker and traffic comes back. An invalid number is
//! final on the first gateway: the second never sees it.

use std::time::Duration;

use common::events::Channel;
use e2e::{Options, Service, Stack};
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_string_contains, method, path},
};

const TWILIO: &str = "/2010-04-01/Accounts/AC0123/Messages.json";
const VONAGE: &str = "/sms/json";

fn options(twilio: &MockServer, vonage: &MockServer) -> Options {
    Options {
        welcome: false,
        enabled_channels: vec![Channel::Sms],
        workers: workers::Config {
            channels: vec![Channel::Sms],
            sms: workers::sms::SmsConfig {
                vonage: Some(workers::vonage::VonageConfig {
                    base_url: vonage.uri(),
                    api_key: "key".into(),
                    api_secret: "secret".to_owned().into(),
                    from: "Notify".into(),
                    timeout_ms: 2_000,
                }),
                ..e2e::sms_config(&twilio.uri())
            },
            // Open far longer than any test step takes on a loaded machine: the test ends
            // the open period itself (see `open_period_ends`) instead of racing a clock.
            breaker: workers::breaker::BreakerConfig {
                consecutive_failures: 3,
                open_secs: 600.0,
                probe_timeout_secs: 5.0,
            },
            ..Default::default()
        },
        ..Options::default()
    }
}

/// Ends `provider`'s open period now (the breaker's state is Redis's, with Redis's clock):
/// what `open_secs` passing would do, without waiting for it.
async fn open_period_ends(stack: &Stack, provider: &str) {
    let mut redis = common::redis::connect(&stack.redis).await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(stack.redis.key(&format!("breaker:{provider}")))
        .arg("until")
        .arg(0)
        .query_async(&mut redis)
        .await
        .unwrap();
}

async fn twilio_accepting(twilio: &MockServer) {
    twilio.reset().await;
    Mock::given(method("POST"))
        .and(path(TWILIO))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({ "sid": "SM1", "status": "queued" })),
        )
        .mount(twilio)
        .await;
}

async fn vonage_accepting(vonage: &MockServer) {
    Mock::given(method("POST"))
        .and(path(VONAGE))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "message-count": "1",
            "messages": [{ "status": "0", "message-id": "V1", "to": "49301234000" }]
        })))
        .mount(vonage)
        .await;
}

async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.unwrap_or_default().len()
}

/// Sends one SMS and waits until it is settled; returns its delivery as the admin sees it
/// (status, last attempt's provider).
async fn sms(stack: &Stack, phone: &str) -> Value {
    let view = stack
        .send_settled(
            json!({ "recipients": [{ "phone": phone }], "category": "billing",
                              "content": { "text": "Your code is 1234" } }),
        )
        .await
        .unwrap();
    view["deliveries"][0].clone()
}

fn provider(delivery: &Value) -> &str {
    delivery["last_attempt"]["provider"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_the_first_gateway_moves_traffic_to_the_second_and_back() {
    let (twilio, vonage) = (MockServer::start().await, MockServer::start().await);
    twilio_accepting(&twilio).await;
    vonage_accepting(&vonage).await;
    let stack = Stack::start(options(&twilio, &vonage)).await.unwrap();

    // Healthy: the first gateway sends.
    let d = sms(&stack, "+49301234001").await;
    assert_eq!(
        (d["status"].as_str(), provider(&d)),
        (Some("sent"), "sms_gateway")
    );

    // An invalid number is final on the first gateway: never tried on the second.
    twilio.reset().await;
    Mock::given(method("POST"))
        .and(path(TWILIO))
        .and(body_string_contains("49301234002"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({ "code": 21211, "message": "The 'To' number is not a valid phone number." }),
        ))
        .mount(&twilio)
        .await;
    let d = sms(&stack, "+49301234002").await;
    assert_eq!(d["status"], "dead", "{d}");
    assert_eq!(d["reason"], "invalid_address", "{d}");
    assert_eq!(provider(&d), "sms_gateway");
    assert_eq!(
        requests(&vonage).await,
        0,
        "the second gateway saw the invalid number"
    );

    // The first gateway goes down: every message fails over at once (sent, by Vonage); after
    // three failures in a row its breaker opens and it is not called any more.
    twilio.reset().await;
    Mock::given(method("POST"))
        .and(path(TWILIO))
        .respond_with(ResponseTemplate::new(503))
        .mount(&twilio)
        .await;
    for i in 0..6 {
        let d = sms(&stack, &format!("+4930123401{i}")).await;
        assert_eq!(
            (d["status"].as_str(), provider(&d)),
            (Some("sent"), "vonage"),
            "{d}"
        );
    }
    assert_eq!(
        requests(&twilio).await,
        3,
        "the open breaker still let requests through"
    );
    assert_eq!(requests(&vonage).await, 6);
    stack
        .expect_metrics(&[
            (
                Service::Workers,
                r#"notify_worker_breaker_state{channel="sms",provider="sms_gateway"} 1"#,
            ),
            (
                Service::Workers,
                r#"notify_worker_failovers_total{channel="sms",from="sms_gateway",to="vonage"} 3"#,
            ),
        ])
        .await
        .unwrap();

    // It recovers: once the open period is over the breaker lets a probe through, and
    // traffic is back on it.
    twilio_accepting(&twilio).await;
    open_period_ends(&stack, "sms_gateway").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let mut n = 0;
    loop {
        n += 1;
        let d = sms(&stack, &format!("+493012340{}", 20 + n)).await;
        assert_eq!(d["status"], "sent", "{d}");
        if provider(&d) == "sms_gateway" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "traffic never came back to the first gateway"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let d = sms(&stack, "+49301234090").await;
    assert_eq!(
        provider(&d),
        "sms_gateway",
        "the breaker did not close after the probe: {d}"
    );
    stack
        .expect_metrics(&[(
            Service::Workers,
            r#"notify_worker_breaker_state{channel="sms",provider="sms_gateway"} 0"#,
        )])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_smtp_relay_hands_mail_to_the_secondary() {
    let secondary = devkit::smtp::SmtpSink::start(0, None).unwrap();
    let stack = Stack::start(Options {
        welcome: false,
        workers: workers::Config {
            email: workers::config::EmailConfig {
                secondary_smtp_url: Some(secondary.url()),
                ..Default::default()
            },
            // Open for longer than the five sends take on any machine.
            breaker: workers::breaker::BreakerConfig {
                consecutive_failures: 3,
                open_secs: 600.0,
                probe_timeout_secs: 5.0,
            },
            ..Default::default()
        },
        ..Options::default()
    })
    .await
    .unwrap();
    // The primary relay (the stack's catcher) answers 451 to everything.
    stack
        .smtp
        .set_mode(devkit::smtp::Mode::FailTransient(u32::MAX));
    for i in 0..5 {
        let view = stack
            .send_settled(
                json!({ "recipients": [{ "email": format!("r{i}@example.test") }],
                                  "category": "billing",
                                  "content": { "subject": "Invoice", "text": "Your invoice" } }),
            )
            .await
            .unwrap();
        let d = &view["deliveries"][0];
        assert_eq!(
            (d["status"].as_str(), provider(d)),
            (Some("sent"), "smtp_secondary"),
            "{d}"
        );
    }
    assert_eq!(secondary.mails().len(), 5);
    assert!(stack.smtp.mails().is_empty());
    assert_eq!(
        stack.smtp.attempts(),
        3,
        "the open breaker still let mail through to the primary"
    );
}
