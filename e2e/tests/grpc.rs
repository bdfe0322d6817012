//! The gRPC API (`notify.v1.Notifications`, `notify.v1.Topics`, `notify.v1.Inbox`) through
//! Debian's nginx (`grpc_pass`, HTTP/2) to two bff instances, with a tonic client: a send is
//! delivered and readable over REST; Get, List and Cancel answer what their REST twins do; the token, roles, idempotency key,
//! validation and rate limits are the REST API's, their problems gRPC statuses with details;
//! reflection lists the service; a send's `digest` and `cap` are the REST twin's.

use std::time::Duration;

use common::auth::Role;
use e2e::{Options, Stack};
use proto::v1::{
    CancelRequest, Content, GetRequest, ListRequest, Recipient, SendRequest,
    notifications_client::NotificationsClient, recipient::To,
};
use reqwest::Method;
use tonic::{Code, Request, Status, transport::Channel};
use tonic_types::StatusExt;

async fn client(stack: &Stack) -> NotificationsClient<Channel> {
    let channel = Channel::from_shared(stack.grpc_url())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    NotificationsClient::new(channel)
}

/// `message` with `authorization: Bearer token` (none when `token` is empty) and the extra
/// metadata.
fn request<T>(message: T, token: &str, meta: &[(&'static str, &str)]) -> Request<T> {
    let mut req = Request::new(message);
    if !token.is_empty() {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    for (k, v) in meta {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    req
}

fn email_send(to: &str, text: &str) -> SendRequest {
    SendRequest {
        recipients: vec![Recipient {
            to: Some(To::Email(to.into())),
        }],
        category: "orders".into(),
        content: Some(Content {
            subject: Some("Your order".into()),
            text: text.into(),
            html: None,
        }),
        ..SendRequest::default()
    }
}

/// The ErrorInfo reason (the REST problem type) of `status`; panics when it has none.
fn reason(status: &Status) -> String {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "notify");
    info.reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_send_through_nginx_is_delivered_readable_over_rest_and_cancellable() {
    let stack = Stack::start(Options {
        bff_instances: 2,
        nginx: true,
        ..Options::default()
    })
    .await
    .unwrap();
    let (billing, shop, admin) = (
        stack.token(Role::Service, "billing"),
        stack.token(Role::Service, "shop"),
        stack.token(Role::Admin, "ops"),
    );
    let mut grpc = client(&stack).await;

    // Send, with an idempotency key and the caller's request id.
    let sent = grpc
        .send(request(
            email_send("ada@example.com", "shipped over gRPC"),
            &billing,
            &[
                ("idempotency-key", "order-7"),
                ("x-request-id", "grpc-req-1"),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(
        sent.metadata().get("x-request-id").unwrap(),
        "grpc-req-1",
        "nginx and the bff keep the caller's request id"
    );
    assert!(sent.metadata().get("idempotent-replayed").is_none());
    let sent = sent.into_inner();
    assert_eq!(sent.category, "orders");
    assert_eq!(sent.deliveries.len(), 1);
    assert_eq!(sent.deliveries[0].channel, "email");
    assert_eq!(sent.deliveries[0].status, "queued");
    assert!(sent.created_at.is_some());

    // Delivered: the SMTP server has it, and REST shows it sent.
    let mails = stack.smtp.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 1, "the mail never arrived");
    assert_eq!(mails[0].to, vec!["ada@example.com".to_owned()]);
    assert!(mails[0].text().contains("shipped over gRPC"));
    let rest = stack
        .wait_settled(&sent.id, &billing, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(rest["deliveries"][0]["status"], "sent", "{rest}");

    // Get answers what REST does.
    let got = grpc
        .get(request(
            GetRequest {
                id: sent.id.clone(),
            },
            &billing,
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.id, sent.id);
    assert_eq!(got.status, rest["status"].as_str().unwrap());
    let d = &got.deliveries[0];
    assert_eq!(d.status, "sent");
    assert_eq!(d.attempts, 1);
    let attempt = d.last_attempt.as_ref().expect("the attempt is recorded");
    assert_eq!(attempt.outcome, "sent");
    assert!(!attempt.provider.is_empty());
    assert!(d.sent_at.is_some());
    // Another service cannot read it (as over REST: 404, nothing about its existence).
    let err = grpc
        .get(request(
            GetRequest {
                id: sent.id.clone(),
            },
            &shop,
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(reason(&err), "not_found");

    // The same key and request: the first answer again, marked as a replay.
    let again = grpc
        .send(request(
            email_send("ada@example.com", "shipped over gRPC"),
            &billing,
            &[("idempotency-key", "order-7")],
        ))
        .await
        .unwrap();
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.into_inner().id, sent.id);
    // The same key with another request: refused, naming the key.
    let err = grpc
        .send(request(
            email_send("ada@example.com", "something else"),
            &billing,
            &[("idempotency-key", "order-7")],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let fields = err
        .get_details_bad_request()
        .expect("a BadRequest")
        .field_violations;
    assert_eq!(fields[0].field, "Idempotency-Key", "{fields:?}");
    assert_eq!(stack.smtp.mails().len(), 1, "no second mail was sent");

    // List: a service sees its own, another service none, an admin every one.
    let list = |token: &str, filter: ListRequest| request(filter, token, &[]);
    let mine = grpc
        .list(list(&billing, ListRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.items.len(), 1);
    assert_eq!(mine.items[0].id, sent.id);
    let theirs = grpc
        .list(list(&shop, ListRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(theirs.items.is_empty(), "{theirs:?}");
    let by_recipient = grpc
        .list(list(
            &admin,
            ListRequest {
                recipient: Some("ada@example.com".into()),
                status: Some("sent".into()),
                ..ListRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_recipient.items.len(), 1);
    // A list item carries counts, not deliveries; they are paged with ListDeliveries.
    let item = &by_recipient.items[0];
    assert!(item.deliveries.is_empty(), "{item:?}");
    let counts = item.delivery_counts.as_ref().unwrap();
    assert_eq!((counts.total, counts.by_status.get("sent")), (1, Some(&1)));
    let page = grpc
        .list_deliveries(request(
            proto::v1::ListDeliveriesRequest {
                id: item.id.clone(),
                limit: 10,
                cursor: None,
            },
            &admin,
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        page.items[0].address.as_deref(),
        Some("ada@example.com"),
        "an admin sees addresses"
    );
    assert_eq!(page.next_cursor, None);
    let none = grpc
        .list(list(
            &admin,
            ListRequest {
                status: Some("dead".into()),
                ..ListRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(none.items.is_empty(), "{none:?}");

    // Cancel after it was sent: FAILED_PRECONDITION naming the dispatched delivery.
    let err = grpc
        .cancel(request(
            CancelRequest {
                id: sent.id.clone(),
            },
            &billing,
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(reason(&err), "already_dispatched");
    let violations = err
        .get_details_precondition_failure()
        .expect("a PreconditionFailure")
        .violations;
    assert_eq!(
        violations[0].subject,
        format!("deliveries.{}", sent.deliveries[0].id)
    );

    // Cancel before send_at: every delivery cancelled, nothing sent.
    let mut later = email_send("bob@example.com", "not yet");
    later.send_at = Some(proto::wkt::timestamp(
        chrono::Utc::now() + chrono::Duration::hours(1),
    ));
    let scheduled = grpc
        .send(request(later, &billing, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scheduled.status, "scheduled");
    assert_eq!(scheduled.deliveries[0].status, "pending");
    let cancelled = grpc
        .cancel(request(
            CancelRequest {
                id: scheduled.id.clone(),
            },
            &billing,
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.deliveries[0].status, "cancelled");
    let (status, rest) = stack
        .call(
            Method::GET,
            &format!("/v1/notifications/{}", scheduled.id),
            Some(&billing),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(rest["deliveries"][0]["status"], "cancelled", "{rest}");

    // Reflection lists the service (what `grpcurl list` asks).
    let services = reflected_services(&stack).await;
    assert!(services.iter().any(|s| s == proto::SERVICE), "{services:?}");
    assert!(
        services.iter().any(|s| s == "notify.v1.Topics"),
        "{services:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_errors_are_the_rest_problems_as_statuses_with_details() {
    let mut stack = Stack::start(Options {
        bff_instances: 1,
        nginx: true,
        rate_limits: bff::config::RateLimitConfig {
            user: bff::config::Limit {
                requests: 2,
                period_secs: 3600,
            },
            ..bff::config::RateLimitConfig::default()
        },
        ..Options::default()
    })
    .await
    .unwrap();
    let billing = stack.token(Role::Service, "billing");
    let user = stack.token(Role::User, &uuid::Uuid::now_v7().to_string());
    let mut grpc = client(&stack).await;

    // No token.
    let err = grpc
        .send(request(
            email_send("a@example.com", "x"),
            "",
            &[("x-request-id", "no-token")],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert_eq!(reason(&err), "unauthorized");
    assert_eq!(
        err.get_details_request_info()
            .expect("a RequestInfo")
            .request_id,
        "no-token"
    );

    // A user may not send — even with a message that does not convert (roles come first).
    let err = grpc
        .send(request(email_send("a@example.com", "x"), &user, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(reason(&err), "forbidden");
    let unconvertible = SendRequest {
        recipients: vec![Recipient { to: None }],
        ..email_send("a@example.com", "x")
    };
    let err = grpc
        .send(request(unconvertible.clone(), &user, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // The user's limit (2 per hour) is spent: RESOURCE_EXHAUSTED with when to retry.
    let err = grpc
        .send(request(email_send("a@example.com", "x"), &user, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(reason(&err), "rate_limited");
    let retry = err.get_details_retry_info().expect("a RetryInfo");
    assert!(retry.retry_delay.is_some_and(|d| d > Duration::ZERO));

    // Validation: the fields named as over REST.
    let err = grpc
        .send(request(unconvertible, &billing, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(reason(&err), "validation_failed");
    let fields = err.get_details_bad_request().unwrap().field_violations;
    assert!(fields[0].field.starts_with("recipients[0]"), "{fields:?}");
    let err = grpc
        .send(request(
            SendRequest {
                recipients: vec![],
                category: "Not A Category".into(),
                ..email_send("a@example.com", "x")
            },
            &billing,
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let fields: Vec<String> = err
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|f| f.field)
        .collect();
    assert!(fields.contains(&"recipients".to_owned()), "{fields:?}");
    assert!(fields.contains(&"category".to_owned()), "{fields:?}");
    let err = grpc
        .list(request(
            ListRequest {
                limit: 5000,
                ..ListRequest::default()
            },
            &billing,
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Unknown ids, and ids that are not one path segment, are not found.
    for id in [
        uuid::Uuid::now_v7().to_string(),
        "not-an-id".into(),
        "x/cancel".into(),
        "../users".into(),
    ] {
        let err = grpc
            .get(request(GetRequest { id: id.clone() }, &billing, &[]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{id}: {err:?}");
        let err = grpc
            .cancel(request(CancelRequest { id: id.clone() }, &billing, &[]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{id}: {err:?}");
    }
    // Messages over the body limit (256 KiB for the REST twin; tonic's decoding limit, four
    // times that) are refused as REST refuses an oversized body.
    for size in [300 * 1024, 2 * 1024 * 1024] {
        let err = grpc
            .send(request(
                email_send("a@example.com", &"x".repeat(size)),
                &billing,
                &[],
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{size} bytes: {err:?}");
        assert_eq!(reason(&err), "payload_too_large");
    }
    assert!(stack.smtp.mails().is_empty(), "nothing refused was sent");

    // No bff answering: nginx's own UNAVAILABLE, never a hang.
    stack.stop_bff(0).await;
    let err = grpc
        .send(request(email_send("a@example.com", "x"), &billing, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

/// The services the reflection API (v1) lists.
async fn reflected_services(stack: &Stack) -> Vec<String> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let channel = Channel::from_shared(stack.grpc_url())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(futures::stream::iter([ask]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("one answer");
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("not a service list: {other:?}"),
    }
}

/// `SendBatch` through nginx's gRPC port to two bff: one result per item in order, an item
/// that does not convert (a user id that is not a UUID) answered in its place beside the
/// service's own refusals, a keyed item replayed, the whole-request limit a status naming
/// `notifications`, and a caller without the role told nothing about the items.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_batch_answers_each_item_and_converts_bad_ones_in_place() {
    use proto::v1::{BatchItem, SendBatchRequest};
    let stack = Stack::start(Options {
        bff_instances: 2,
        nginx: true,
        ..Options::default()
    })
    .await
    .unwrap();
    let (billing, user) = (
        stack.token(Role::Service, "billing"),
        stack.token(Role::User, &uuid::Uuid::new_v4().to_string()),
    );
    let mut grpc = client(&stack).await;
    let item = |send: SendRequest, key: Option<&str>| BatchItem {
        notification: Some(send),
        idempotency_key: key.map(str::to_owned),
    };
    let not_a_uuid = SendRequest {
        recipients: vec![Recipient {
            to: Some(To::UserId("nobody".into())),
        }],
        ..email_send("x@example.com", "x")
    };
    let no_recipient = SendRequest {
        recipients: vec![],
        ..email_send("x@example.com", "x")
    };
    let batch = SendBatchRequest {
        notifications: vec![
            item(email_send("a@example.com", "first"), None),
            item(not_a_uuid.clone(), None),
            item(no_recipient, None),
            item(email_send("k@example.com", "keyed"), Some("order-9")),
            item(email_send("b@example.com", "last"), None),
        ],
    };
    let answer = grpc
        .send_batch(request(batch, &billing, &[]))
        .await
        .unwrap()
        .into_inner();
    let statuses: Vec<u32> = answer.results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [202, 422, 422, 202, 202], "{answer:?}");
    let field = |i: usize| {
        let p = answer.results[i].problem.as_ref().unwrap();
        assert_eq!(p.r#type, "validation_failed", "{p:?}");
        p.errors[0].field.clone()
    };
    assert_eq!(field(1), "recipients[0].user_id");
    assert_eq!(field(2), "recipients");
    let ids: Vec<&str> = [0, 3, 4]
        .iter()
        .map(|&i| answer.results[i].id.as_deref().unwrap())
        .collect();
    assert!(answer.results[1].id.is_none() && answer.results[2].id.is_none());
    assert_eq!(
        stack
            .notify_count("SELECT count(*) FROM notifications")
            .await,
        3
    );
    let view = stack
        .wait_settled(ids[1], &billing, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");

    // The keyed item again: replayed with its first id, nothing written.
    let again = grpc
        .send_batch(request(
            SendBatchRequest {
                notifications: vec![item(email_send("k@example.com", "keyed"), Some("order-9"))],
            },
            &billing,
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.results[0].status, 200, "{again:?}");
    assert_eq!(again.results[0].id.as_deref(), Some(ids[1]));

    // Only items that do not convert: answered without the service, for a service only.
    let bad_only = SendBatchRequest {
        notifications: vec![item(not_a_uuid, None)],
    };
    let answer = grpc
        .send_batch(request(bad_only.clone(), &billing, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.results[0].status, 422, "{answer:?}");
    let err = grpc
        .send_batch(request(bad_only, &user, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Whole-request limits: no item, more than 1,000.
    for n in [0, 1001] {
        let err = grpc
            .send_batch(request(
                SendBatchRequest {
                    notifications: (0..n)
                        .map(|i| item(email_send(&format!("m{i}@example.com"), "m"), None))
                        .collect(),
                },
                &billing,
                &[],
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{n}: {err:?}");
        let fields = err.get_details_bad_request().unwrap().field_violations;
        assert_eq!(fields[0].field, "notifications", "{n}: {fields:?}");
    }
    assert_eq!(
        stack
            .notify_count("SELECT count(*) FROM notifications")
            .await,
        3
    );
}

/// Topics over gRPC: created, subscribed (a non-UUID id answered in place with the REST
/// field path), read, and a `Send` to it whose `Notification.fanout` shows the fan-out done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_managed_and_sent_to_over_grpc() {
    use proto::v1::{
        GetTopicRequest, PutTopicRequest, SubscribersRequest, topics_client::TopicsClient,
    };
    let stack = Stack::start(Options {
        nginx: true,
        welcome: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let channel = Channel::from_shared(stack.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut topics = TopicsClient::new(channel);
    let svc = stack.token(Role::Service, "billing");
    let a = stack.register_user("g1@example.com").await.unwrap();
    let b = stack.register_user("g2@example.com").await.unwrap();

    let made = topics
        .put(request(
            PutTopicRequest {
                key: "grpc.news".into(),
                name: Some("gRPC news".into()),
                open: None,
            },
            &svc,
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (made.key.as_str(), made.open, made.subscribers),
        ("grpc.news", false, 0)
    );
    let bad = topics
        .subscribe(request(
            SubscribersRequest {
                key: "grpc.news".into(),
                user_ids: vec![a.to_string(), "not-a-uuid".into()],
            },
            &svc,
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    let fields: Vec<String> = bad
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, vec!["user_ids[1]".to_owned()]);
    let changed = topics
        .subscribe(request(
            SubscribersRequest {
                key: "grpc.news".into(),
                user_ids: vec![a.to_string(), b.to_string()],
            },
            &svc,
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((changed.changed, changed.subscribers), (2, 2));
    let missing = topics
        .get(request(GetTopicRequest { key: "nope".into() }, &svc, &[]))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let mut notifications = client(&stack).await;
    let sent = notifications
        .send(request(
            SendRequest {
                recipients: vec![Recipient {
                    to: Some(To::Topic("grpc.news".into())),
                }],
                ..email_send("", "Broadcast over gRPC")
            },
            &svc,
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.fanout.as_ref().unwrap().topic, "grpc.news");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = notifications
            .get(request(
                GetRequest {
                    id: sent.id.clone(),
                },
                &svc,
                &[],
            ))
            .await
            .unwrap()
            .into_inner();
        let f = n.fanout.unwrap();
        if f.state == "done" {
            assert_eq!((f.total, f.planned), (Some(2), 2));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{f:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.smtp.wait_for(2, Duration::from_secs(30)).await;
}

/// The inbox over gRPC is its REST twin: a user lists their in-app items, marks one (an
/// unspecified mark is INVALID_ARGUMENT naming `mark`, another user's item NOT_FOUND), reads
/// the counts and reads everything; a service token is PERMISSION_DENIED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_is_listed_and_marked_over_grpc() {
    use proto::v1::{
        InboxAllRequest, InboxCountsRequest, InboxMark, ListInboxRequest, MarkRequest,
        inbox_client::InboxClient,
    };
    let stack = Stack::start(Options {
        nginx: true,
        welcome: false,
        enabled_channels: vec![
            common::events::Channel::Email,
            common::events::Channel::InApp,
        ],
        ..Options::default()
    })
    .await
    .unwrap();
    let channel = Channel::from_shared(stack.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut inbox = InboxClient::new(channel);
    let user = stack.register_user("inbox-grpc@example.com").await.unwrap();
    let other = stack.register_user("other-grpc@example.com").await.unwrap();
    let (token, others) = (
        stack.token(Role::User, &user.to_string()),
        stack.token(Role::User, &other.to_string()),
    );
    let svc = stack.token(Role::Service, "billing");
    for n in 0..2 {
        stack
            .send(
                &svc,
                serde_json::json!({
                    "recipients": [{ "user_id": user }], "category": "orders",
                    "channels": ["in_app"], "content": { "subject": format!("Item {n}"), "text": "x" },
                    "data": { "url": "https://example.com/o/1", "n": n }
                }),
            )
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let page = loop {
        let page = inbox
            .list(request(ListInboxRequest::default(), &token, &[]))
            .await
            .unwrap()
            .into_inner();
        if page.items.len() == 2 {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the items were not stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Two dispatches may be stored in either order (the consumer handles them at once).
    let mut subjects: Vec<&str> = page
        .items
        .iter()
        .filter_map(|i| i.subject.as_deref())
        .collect();
    subjects.sort_unstable();
    assert_eq!(subjects, ["Item 0", "Item 1"]);
    let data = page.items[0].data.clone().unwrap();
    assert_eq!(
        proto::wkt::struct_to_json(data)["url"],
        "https://example.com/o/1"
    );
    let first = page.items[1].id.clone();

    let marked = inbox
        .mark(request(
            MarkRequest {
                id: first.clone(),
                mark: InboxMark::Read.into(),
            },
            &token,
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(marked.item.unwrap().read_at.is_some());
    assert_eq!(marked.counts.unwrap().unread, 1);
    let bad = inbox
        .mark(request(
            MarkRequest {
                id: first.clone(),
                mark: InboxMark::Unspecified.into(),
            },
            &token,
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert_eq!(
        bad.get_details_bad_request().unwrap().field_violations[0].field,
        "mark"
    );
    let theirs = inbox
        .mark(request(
            MarkRequest {
                id: first.clone(),
                mark: InboxMark::Archived.into(),
            },
            &others,
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(theirs.code(), Code::NotFound, "{theirs:?}");
    let denied = inbox
        .counts(request(InboxCountsRequest {}, &svc, &[]))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    let counts = inbox
        .read_all(request(InboxAllRequest {}, &token, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((counts.unread, counts.unseen), (0, 0));
    let counts = inbox
        .counts(request(InboxCountsRequest {}, &token, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((counts.unread, counts.unseen), (0, 0));
}

/// A send's `digest` and `cap` over gRPC are its REST twin's: the delivery is `digested` and
/// `Get` links it to its digest; a second send past a cap of one is `throttled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_and_a_cap_are_sent_over_grpc() {
    use proto::v1::{Cap, Digest};
    let stack = Stack::start(Options {
        nginx: true,
        welcome: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let mut grpc = client(&stack).await;
    let svc = stack.token(Role::Service, "billing");
    let user = stack.register_user("dg@example.com").await.unwrap();

    let mut digested = email_send("digest@example.com", "folded over gRPC");
    digested.digest = Some(Digest {
        key: "grpc".into(),
        window: "1h".into(),
    });
    let sent = grpc
        .send(request(digested, &svc, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.deliveries[0].status, "digested", "{sent:?}");
    let got = grpc
        .get(request(
            GetRequest {
                id: sent.id.clone(),
            },
            &svc,
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    let link = got.deliveries[0].digest.as_ref().expect("a digest link");
    assert_eq!(link.state, "open");
    assert!(link.closes_at.is_some() && link.notification_id.is_none());

    let capped = || {
        let mut s = email_send("unused@example.com", "capped over gRPC");
        s.recipients = vec![Recipient {
            to: Some(To::UserId(user.to_string())),
        }];
        s.cap = Some(Cap {
            limit: 1,
            window: "1h".into(),
        });
        s
    };
    let first = grpc
        .send(request(capped(), &svc, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.deliveries[0].status, "queued");
    let second = grpc
        .send(request(capped(), &svc, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            second.deliveries[0].status.as_str(),
            second.deliveries[0].reason.as_deref()
        ),
        ("suppressed", Some("throttled"))
    );
    // A window past 7 days is the REST problem, as a status.
    let mut bad = email_send("digest@example.com", "x");
    bad.digest = Some(Digest {
        key: "grpc".into(),
        window: "8d".into(),
    });
    let status = grpc.send(request(bad, &svc, &[])).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}
