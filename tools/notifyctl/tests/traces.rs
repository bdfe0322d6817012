//! One notification is one trace (OpenTelemetry over OTLP/HTTP, opt-in): `notifyctl up
//! --otlp-endpoint` at a local OTLP receiver, one request through nginx with no trace context
//! of its own, and the spans every process exported for nginx's request id form one tree —
//! the bff's request → notification-service's request → (outbox row, Kafka headers) → the
//! worker consuming the dispatch → its provider call, and → the repeater consuming the
//! worker's status event.

use std::time::{Duration, Instant};

use devkit::otlp::{OtlpSink, ReceivedSpan};

mod support;

#[test]
fn one_notification_is_one_trace_from_the_edge_to_the_repeater() {
    let otlp = OtlpSink::start().unwrap();
    let port = devkit::free_port();
    let grpc_port = devkit::free_port();
    let launched = support::up(
        &[
            "--port",
            &port.to_string(),
            "--grpc-port",
            &grpc_port.to_string(),
            "--no-prometheus",
            "--otlp-endpoint",
            &otlp.url(),
        ],
        // Children inherit the launcher's environment: spans leave every 200 ms.
        &[("NOTIFY_TELEMETRY__EXPORT_INTERVAL_MS", "200")],
    );
    let stack = &launched.stack;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // nginx makes the request id (the request carries none).
    let (request_id, view) = rt.block_on(support::send_until_sent(
        stack,
        serde_json::json!({
            "recipients": [{ "email": "traced@example.com" }],
            "category": "ops",
            "content": { "subject": "Traced", "text": "follow me" }
        }),
    ));
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");

    // The spans of this request, once every hop's has arrived (the repeater's come last).
    let started = Instant::now();
    let (spans, mine) = loop {
        let spans = otlp.spans();
        let mine: Vec<ReceivedSpan> = spans
            .iter()
            .filter(|s| s.attributes.get("request_id") == Some(&request_id))
            .cloned()
            .collect();
        let has = |service: &str, name_starts: &str| {
            mine.iter()
                .any(|s| s.service == service && s.name.starts_with(name_starts))
        };
        if has("bff", "POST /v1/notifications")
            && has("notification-service", "POST /v1/notifications")
            && has("workers", "consume ")
            && has("repeater", "consume ")
        {
            break (spans, mine);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the spans of request {request_id} did not all arrive in 60 s; have {mine:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let find = |service: &str, pred: &dyn Fn(&ReceivedSpan) -> bool| -> ReceivedSpan {
        mine.iter()
            .find(|s| s.service == service && pred(s))
            .cloned()
            .unwrap_or_else(|| panic!("no {service} span as expected in {mine:#?}"))
    };
    let bff = find("bff", &|s| s.name == "POST /v1/notifications");
    let intake = find("notification-service", &|s| {
        s.name == "POST /v1/notifications"
    });
    let worker = find("workers", &|s| {
        s.attributes
            .get("topic")
            .is_some_and(|t| t.contains("notify.dispatch.email"))
    });
    let repeater = find("repeater", &|s| {
        s.attributes
            .get("topic")
            .is_some_and(|t| t.ends_with("notify.status"))
    });
    let provider = spans
        .iter()
        .find(|s| s.service == "workers" && s.parent_span_id == worker.span_id)
        .cloned()
        .unwrap_or_else(|| panic!("no span under the worker's {worker:#?} in {spans:#?}"));

    // One trace, started at the bff (nginx sent no trace context).
    for s in [&intake, &worker, &provider, &repeater] {
        assert_eq!(
            s.trace_id, bff.trace_id,
            "{s:#?} is not in {bff:#?}'s trace"
        );
    }
    assert_eq!(bff.parent_span_id, "", "{bff:#?}");
    // Each hop is the child of the one that caused it.
    assert_eq!(
        intake.parent_span_id, bff.span_id,
        "bff → notification-service"
    );
    assert_eq!(
        worker.parent_span_id, intake.span_id,
        "notification-service → outbox → Kafka → worker"
    );
    assert_eq!(provider.name, "send email via smtp", "{provider:#?}");
    assert_eq!(
        provider.attributes.get("outcome").map(String::as_str),
        Some("sent"),
        "{provider:#?}"
    );
    assert_eq!(
        repeater.parent_span_id, worker.span_id,
        "worker → status → repeater"
    );
    assert_eq!(
        bff.attributes
            .get("http.response.status_code")
            .map(String::as_str),
        Some("202")
    );
}
