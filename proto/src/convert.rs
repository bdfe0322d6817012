//! `notify.v1` messages to and from the `api` crate's REST bodies. A request converts into
//! the body its REST twin takes (only what the message's types cannot say is checked here: a
//! user id that is not a UUID, a timestamp out of range, an unknown enum number — with the
//! REST API's field paths); everything else is validated by the service, once, for both.

use api::{
    admin::{DeliveryPage, NotificationPage},
    notifications::{
        AttemptView, BatchResult, ContentBody, DeliveryCounts, DeliveryView, NotificationSummary,
        NotificationView, RecipientBody, SendBody,
    },
};
use common::{events::Priority, problem::FieldError};
use serde_json::json;

use crate::{
    v1::{self, recipient::To},
    wkt,
};

/// The REST body of a `Send`.
pub fn send_body(req: v1::SendRequest) -> Result<SendBody, Vec<FieldError>> {
    let mut errors = Vec::new();
    let recipients = req
        .recipients
        .into_iter()
        .enumerate()
        .map(|(i, r)| recipient_body(i, r, &mut errors))
        .collect();
    let priority = match v1::Priority::try_from(req.priority) {
        Ok(p) => priority_from(p),
        Err(_) => {
            errors.push(FieldError::new("priority", "is not a Priority value"));
            Priority::Normal
        }
    };
    let send_at = req.send_at.as_ref().and_then(|ts| {
        let at = wkt::datetime(ts);
        if at.is_none() {
            errors.push(FieldError::new("send_at", "is not a valid timestamp"));
        }
        at
    });
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(SendBody {
        recipients,
        category: req.category,
        priority,
        channels: non_empty(req.channels),
        template: req.template,
        data: req.data.map(wkt::struct_to_json),
        content: req.content.map(|c| ContentBody {
            subject: c.subject,
            text: c.text,
            html: c.html,
        }),
        send_at,
        ttl_seconds: req.ttl_seconds,
        fallback: non_empty(req.fallback),
        digest: req.digest.map(|d| api::digests::DigestBody {
            key: d.key,
            window: d.window,
        }),
        cap: req.cap.map(|c| api::digests::CapBody {
            limit: c.limit,
            window: c.window,
        }),
    })
}

/// The REST items of a `SendBatch`, in order: each the JSON item its REST twin takes (the
/// send body plus `idempotency_key`), or the field errors of an item that does not convert
/// (answered in its place, as the service answers a bad item).
pub fn batch_items(req: v1::SendBatchRequest) -> Vec<Result<serde_json::Value, Vec<FieldError>>> {
    req.notifications
        .into_iter()
        .map(|item| {
            let body = send_body(item.notification.unwrap_or_default())?;
            let mut value = serde_json::to_value(body).expect("a send body serialises");
            if let Some(key) = item.idempotency_key {
                value["idempotency_key"] = json!(key);
            }
            Ok(value)
        })
        .collect()
}

/// How many recipients a `SendBatch` names over all its items (a whole-request limit).
pub fn batch_recipients(req: &v1::SendBatchRequest) -> usize {
    req.notifications
        .iter()
        .map(|i| i.notification.as_ref().map_or(0, |n| n.recipients.len()))
        .sum()
}

/// One item's result.
pub fn batch_result(r: BatchResult) -> v1::BatchResult {
    v1::BatchResult {
        status: r.status.into(),
        id: r.id.map(|id| id.to_string()),
        problem: r.problem.map(|p| v1::Problem {
            r#type: p.kind,
            title: p.title,
            detail: p.detail,
            errors: p
                .errors
                .into_iter()
                .map(|e| v1::FieldError {
                    field: e.field,
                    message: e.message,
                })
                .collect(),
        }),
    }
}

fn recipient_body(i: usize, r: v1::Recipient, errors: &mut Vec<FieldError>) -> RecipientBody {
    let mut body = RecipientBody::default();
    match r.to {
        // Left empty: the service answers "must have exactly one of ...", as over REST.
        None => {}
        Some(To::UserId(id)) => match uuid::Uuid::parse_str(&id) {
            Ok(id) => body.user_id = Some(id),
            Err(_) => errors.push(FieldError::new(
                format!("recipients[{i}].user_id"),
                "is not a UUID",
            )),
        },
        Some(To::Email(e)) => body.email = Some(e),
        Some(To::Phone(p)) => body.phone = Some(p),
        Some(To::Device(d)) => {
            body.device = Some(json!({ "platform": d.platform, "token": d.token }))
        }
        Some(To::Webhook(w)) => body.webhook = Some(json!({ "url": w.url })),
        Some(To::Telegram(t)) => body.telegram = Some(json!({ "chat_id": t.chat_id })),
        Some(To::Topic(key)) => body.topic = Some(key),
    }
    body
}

fn non_empty(v: Vec<String>) -> Option<Vec<String>> {
    (!v.is_empty()).then_some(v)
}

fn priority_from(p: v1::Priority) -> Priority {
    match p {
        v1::Priority::High => Priority::High,
        v1::Priority::Unspecified | v1::Priority::Normal => Priority::Normal,
        v1::Priority::Low => Priority::Low,
    }
}

fn priority_to(p: &str) -> v1::Priority {
    match Priority::parse(p) {
        Some(Priority::High) => v1::Priority::High,
        Some(Priority::Normal) => v1::Priority::Normal,
        Some(Priority::Low) => v1::Priority::Low,
        None => v1::Priority::Unspecified,
    }
}

/// The query string of a `List` (`GET /v1/notifications?…`).
pub fn list_query(req: &v1::ListRequest) -> Result<String, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in [
        ("status", &req.status),
        ("channel", &req.channel),
        ("category", &req.category),
        ("recipient", &req.recipient),
        ("cursor", &req.cursor),
    ] {
        if let Some(v) = value {
            q.append_pair(name, v);
        }
    }
    for (name, value) in [("since", &req.since), ("until", &req.until)] {
        if let Some(ts) = value {
            match wkt::datetime(ts) {
                Some(at) => {
                    q.append_pair(
                        name,
                        &at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                    );
                }
                None => errors.push(FieldError::new(name, "is not a valid timestamp")),
            }
        }
    }
    if req.limit != 0 {
        q.append_pair("limit", &req.limit.to_string());
    }
    if errors.is_empty() {
        Ok(q.finish())
    } else {
        Err(errors)
    }
}

pub fn notification(n: NotificationView) -> v1::Notification {
    v1::Notification {
        id: n.id.to_string(),
        status: n.status,
        category: n.category,
        priority: priority_to(&n.priority).into(),
        created_at: Some(wkt::timestamp(n.created_at)),
        send_at: n.send_at.map(wkt::timestamp),
        deliveries: n.deliveries.into_iter().map(delivery).collect(),
        delivery_counts: Some(counts(n.delivery_counts)),
        deliveries_next_cursor: n.deliveries_next_cursor,
        fanout: n.fanout.map(|f| v1::Fanout {
            topic: f.topic,
            state: f.state,
            total: f.total,
            planned: f.planned,
            chunks: f.chunks,
            chunks_done: f.chunks_done,
        }),
        digest: n.digest.map(|g| v1::DigestSummary {
            id: g.id.to_string(),
            key: g.key,
            channel: g.channel,
            items: g.items,
            opened_at: Some(wkt::timestamp(g.opened_at)),
            closes_at: Some(wkt::timestamp(g.closes_at)),
        }),
    }
}

fn summary(n: NotificationSummary) -> v1::Notification {
    v1::Notification {
        id: n.id.to_string(),
        status: n.status,
        category: n.category,
        priority: priority_to(&n.priority).into(),
        created_at: Some(wkt::timestamp(n.created_at)),
        send_at: n.send_at.map(wkt::timestamp),
        deliveries: Vec::new(),
        delivery_counts: Some(counts(n.delivery_counts)),
        deliveries_next_cursor: None,
        fanout: None,
        digest: None,
    }
}

fn counts(c: DeliveryCounts) -> v1::DeliveryCounts {
    v1::DeliveryCounts {
        total: c.total,
        by_status: c.by_status.into_iter().collect(),
        by_channel: c
            .by_channel
            .into_iter()
            .map(|(channel, by_status)| {
                (
                    channel,
                    v1::StatusCounts {
                        by_status: by_status.into_iter().collect(),
                    },
                )
            })
            .collect(),
    }
}

pub fn list_response(page: NotificationPage) -> v1::ListResponse {
    v1::ListResponse {
        items: page.items.into_iter().map(summary).collect(),
        next_cursor: page.next_cursor,
    }
}

/// `ListDeliveries`' REST query (`limit`, `cursor`).
pub fn deliveries_query(req: &v1::ListDeliveriesRequest) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    if req.limit != 0 {
        q.append_pair("limit", &req.limit.to_string());
    }
    if let Some(cursor) = &req.cursor {
        q.append_pair("cursor", cursor);
    }
    q.finish()
}

pub fn deliveries_response(page: DeliveryPage) -> v1::ListDeliveriesResponse {
    v1::ListDeliveriesResponse {
        items: page.items.into_iter().map(delivery).collect(),
        next_cursor: page.next_cursor,
    }
}

fn delivery(d: DeliveryView) -> v1::Delivery {
    v1::Delivery {
        id: d.id.to_string(),
        notification_id: d.notification_id.to_string(),
        channel: d.channel,
        lane: d.lane,
        recipient: Some(recipient(&d.recipient)),
        address: d.address,
        status: d.status,
        reason: d.reason,
        attempts: d.attempts,
        last_error: d.last_error.as_ref().map(error),
        last_attempt: d.last_attempt.map(attempt),
        created_at: Some(wkt::timestamp(d.created_at)),
        updated_at: Some(wkt::timestamp(d.updated_at)),
        sent_at: d.sent_at.map(wkt::timestamp),
        fallback_of: d.fallback_of.map(|id| id.to_string()),
        digest: d.digest.map(|g| v1::DigestLink {
            id: g.id.to_string(),
            state: g.state,
            closes_at: Some(wkt::timestamp(g.closes_at)),
            notification_id: g.notification_id.map(|id| id.to_string()),
        }),
    }
}

/// A delivery's recipient as the service stores it (`{"email": …}`, `{"device": {…}}`, …).
fn recipient(r: &serde_json::Value) -> v1::Recipient {
    let text = |v: &serde_json::Value, key: &str| match v.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let to = if let Some(id) = r.get("user_id") {
        Some(To::UserId(id.as_str().unwrap_or_default().to_owned()))
    } else if let Some(e) = r.get("email") {
        Some(To::Email(e.as_str().unwrap_or_default().to_owned()))
    } else if let Some(p) = r.get("phone") {
        Some(To::Phone(p.as_str().unwrap_or_default().to_owned()))
    } else if let Some(d) = r.get("device") {
        Some(To::Device(v1::Device {
            platform: text(d, "platform"),
            token: text(d, "token"),
        }))
    } else if let Some(w) = r.get("webhook") {
        Some(To::Webhook(v1::Webhook {
            url: text(w, "url"),
        }))
    } else if let Some(t) = r.get("topic") {
        Some(To::Topic(t.as_str().unwrap_or_default().to_owned()))
    } else {
        r.get("telegram").map(|t| {
            To::Telegram(v1::Telegram {
                chat_id: text(t, "chat_id"),
            })
        })
    };
    v1::Recipient { to }
}

/// `{"code", "message"}`.
fn error(e: &serde_json::Value) -> v1::Error {
    v1::Error {
        code: e
            .get("code")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_owned(),
        message: e.get("message").and_then(|m| m.as_str()).map(str::to_owned),
    }
}

fn attempt(a: AttemptView) -> v1::Attempt {
    v1::Attempt {
        attempt: a.attempt,
        outcome: a.outcome,
        provider: a.provider,
        provider_message_id: a.provider_message_id,
        error: a.error.as_ref().map(error),
        duration_ms: a.duration_ms,
        at: Some(wkt::timestamp(a.at)),
    }
}

/// `PUT /v1/topics/{key}`'s body.
pub fn topic_body(req: &v1::PutTopicRequest) -> api::topics::TopicBody {
    api::topics::TopicBody {
        name: req.name.clone(),
        open: req.open,
    }
}

/// `PUT`/`DELETE /v1/topics/{key}/subscribers`' body; ids that are not UUIDs named as the
/// REST API names them.
pub fn subscribers_body(
    req: &v1::SubscribersRequest,
) -> Result<api::topics::SubscribersBody, Vec<FieldError>> {
    let mut errors = Vec::new();
    let user_ids = req
        .user_ids
        .iter()
        .enumerate()
        .filter_map(|(i, id)| match uuid::Uuid::parse_str(id) {
            Ok(id) => Some(id),
            Err(_) => {
                errors.push(FieldError::new(format!("user_ids[{i}]"), "is not a UUID"));
                None
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(api::topics::SubscribersBody { user_ids })
    } else {
        Err(errors)
    }
}

pub fn topic(t: api::topics::TopicView) -> v1::Topic {
    v1::Topic {
        key: t.key,
        name: t.name,
        open: t.open,
        subscribers: t.subscribers,
        created_at: Some(wkt::timestamp(t.created_at)),
    }
}

pub fn subscribers_changed(c: api::topics::SubscribersChanged) -> v1::SubscribersChanged {
    v1::SubscribersChanged {
        changed: c.changed,
        subscribers: c.subscribers,
    }
}

/// The query string of an inbox `List` (`GET /v1/me/inbox?…`).
pub fn inbox_query(req: &v1::ListInboxRequest) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in [("status", &req.status), ("cursor", &req.cursor)] {
        if let Some(v) = value {
            q.append_pair(name, v);
        }
    }
    if req.limit != 0 {
        q.append_pair("limit", &req.limit.to_string());
    }
    q.finish()
}

/// The path segment of a mark (`INVALID_ARGUMENT` naming `mark` when it names none).
pub fn mark_verb(mark: i32) -> Result<&'static str, Vec<FieldError>> {
    match v1::InboxMark::try_from(mark) {
        Ok(v1::InboxMark::Seen) => Ok("seen"),
        Ok(v1::InboxMark::Read) => Ok("read"),
        Ok(v1::InboxMark::Archived) => Ok("archive"),
        Ok(v1::InboxMark::Clicked) => Ok("click"),
        _ => Err(vec![FieldError::new(
            "mark",
            "must be one of SEEN, READ, ARCHIVED, CLICKED",
        )]),
    }
}

pub fn inbox_item(i: api::inbox::InboxItem) -> v1::InboxItem {
    let at = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(wkt::timestamp);
    v1::InboxItem {
        id: i.id.to_string(),
        notification_id: i.notification_id.to_string(),
        seq: i.seq,
        category: i.category,
        subject: i.subject,
        text: i.text,
        data: i
            .data
            .as_ref()
            .and_then(serde_json::Value::as_object)
            .map(wkt::json_to_struct),
        created_at: Some(wkt::timestamp(i.created_at)),
        seen_at: at(i.seen_at),
        read_at: at(i.read_at),
        archived_at: at(i.archived_at),
        clicked_at: at(i.clicked_at),
    }
}

pub fn inbox_page(p: api::inbox::InboxPage) -> v1::InboxPage {
    v1::InboxPage {
        items: p.items.into_iter().map(inbox_item).collect(),
        next_cursor: p.next_cursor,
    }
}

pub fn inbox_counts(c: api::inbox::InboxCounts) -> v1::InboxCounts {
    v1::InboxCounts {
        unread: c.unread,
        unseen: c.unseen,
    }
}

pub fn marked(m: api::inbox::Marked) -> v1::Marked {
    v1::Marked {
        item: Some(inbox_item(m.item)),
        counts: Some(inbox_counts(m.counts)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(e: &str) -> v1::Recipient {
        v1::Recipient {
            to: Some(To::Email(e.into())),
        }
    }

    #[test]
    fn a_send_request_becomes_the_rest_body_its_twin_takes() {
        let req = v1::SendRequest {
            recipients: vec![
                email("a@example.com"),
                v1::Recipient {
                    to: Some(To::Device(v1::Device {
                        platform: "fcm".into(),
                        token: "tok".into(),
                    })),
                },
                v1::Recipient { to: None },
            ],
            category: "billing".into(),
            priority: v1::Priority::High.into(),
            channels: vec![],
            content: Some(v1::Content {
                subject: Some("Hi".into()),
                text: "Hello".into(),
                html: None,
            }),
            fallback: vec!["push".into(), "sms".into()],
            ..Default::default()
        };
        let body = serde_json::to_value(send_body(req).unwrap()).unwrap();
        assert_eq!(
            body["recipients"],
            json!([
                {"user_id": null, "email": "a@example.com", "phone": null, "device": null, "webhook": null, "telegram": null, "topic": null},
                {"user_id": null, "email": null, "phone": null, "device": {"platform": "fcm", "token": "tok"}, "webhook": null, "telegram": null, "topic": null},
                {"user_id": null, "email": null, "phone": null, "device": null, "webhook": null, "telegram": null, "topic": null},
            ])
        );
        assert_eq!(body["priority"], "high");
        assert_eq!(
            body["channels"],
            serde_json::Value::Null,
            "empty means every channel"
        );
        assert_eq!(body["fallback"], json!(["push", "sms"]));
        assert_eq!(body["content"]["subject"], "Hi");
    }

    #[test]
    fn what_the_types_cannot_say_is_refused_with_rest_field_paths() {
        let req = v1::SendRequest {
            recipients: vec![
                email("a@example.com"),
                v1::Recipient {
                    to: Some(To::UserId("not-a-uuid".into())),
                },
            ],
            priority: 42,
            send_at: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -5,
            }),
            ..Default::default()
        };
        let fields: Vec<String> = send_body(req)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["recipients[1].user_id", "priority", "send_at"]);
    }

    #[test]
    fn a_list_request_becomes_an_encoded_query_string() {
        let req = v1::ListRequest {
            status: Some("dead".into()),
            recipient: Some("a+b@example.com".into()),
            since: Some(prost_types::Timestamp {
                seconds: 1_764_547_200,
                nanos: 0,
            }),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            list_query(&req).unwrap(),
            "status=dead&recipient=a%2Bb%40example.com&since=2025-12-01T00%3A00%3A00Z&limit=10"
        );
        assert_eq!(list_query(&v1::ListRequest::default()).unwrap(), "");
    }

    #[test]
    fn stored_recipients_come_back_as_the_oneof() {
        for (stored, expected) in [
            (
                json!({"email": "a@example.com"}),
                To::Email("a@example.com".into()),
            ),
            (
                json!({"telegram": {"chat_id": "-100"}}),
                To::Telegram(v1::Telegram {
                    chat_id: "-100".into(),
                }),
            ),
            (
                json!({"webhook": {"url": "https://x.test/h"}}),
                To::Webhook(v1::Webhook {
                    url: "https://x.test/h".into(),
                }),
            ),
        ] {
            assert_eq!(recipient(&stored).to, Some(expected));
        }
        assert_eq!(recipient(&json!({})).to, None);
    }
}
