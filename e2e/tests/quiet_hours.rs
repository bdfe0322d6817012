//! Quiet hours end to end: a user sets a do-not-disturb window in their time zone through
//! `/v1/me/preferences`; a normal notification sent inside it waits (`pending`) until the
//! window's end — computed in that zone — while a high-priority one goes out at once.

use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use common::auth::Role;
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::json;

/// A zone far from UTC, with DST, so a zone mix-up would show.
const ZONE: &str = "America/Los_Angeles";

/// When a window ending at local `end` (HH:MM), which contains `now`, ends.
fn window_end(now: DateTime<Utc>, end: NaiveTime) -> DateTime<Utc> {
    let tz: Tz = ZONE.parse().unwrap();
    let local = now.with_timezone(&tz);
    let date = if local.time() < end {
        local.date_naive()
    } else {
        local.date_naive().succ_opt().unwrap()
    };
    // A local time skipped by a DST change ends the window at the first minute after the gap
    // (the service's rule); one that happens twice, at its first occurrence.
    (0..=240)
        .find_map(|m| {
            tz.from_local_datetime(&(date.and_time(end) + chrono::Duration::minutes(m)))
                .earliest()
        })
        .unwrap()
        .with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_inside_quiet_hours_waits_for_their_end_unless_it_is_urgent() {
    let stack = Stack::start(Options {
        welcome: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let user = stack.register_user("quiet@example.com").await.unwrap();
    let me = stack.token(Role::User, &user.to_string());

    // A window from an hour ago to two hours ahead, on the user's local clock (minutes kept,
    // so the end is not on a round hour by accident).
    let tz: Tz = ZONE.parse().unwrap();
    let now = Utc::now();
    let local = now.with_timezone(&tz).time();
    let hm = |t: NaiveTime| format!("{:02}:{:02}", t.hour(), t.minute());
    let start = local - chrono::Duration::hours(1);
    let end = NaiveTime::from_hms_opt(local.hour(), local.minute(), 0).unwrap()
        + chrono::Duration::hours(2);
    let (status, body) = stack
        .call(
            Method::PUT,
            "/v1/me/preferences",
            Some(&me),
            Some(
                json!({ "quiet_hours": { "start": hm(start), "end": hm(end), "timezone": ZONE } }),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let expected_end = window_end(now, end);

    let svc = stack.token(Role::Service, "billing");
    let send = |priority: &'static str, text: &'static str| {
        let (stack, svc) = (&stack, &svc);
        async move {
            let body = json!({ "recipients": [{ "user_id": user }], "category": "news",
                               "priority": priority, "content": { "subject": text, "text": text } });
            stack.send(svc, body).await.unwrap()
        }
    };
    let deferred = send("normal", "Weekly digest").await;
    assert_eq!(deferred["deliveries"][0]["status"], "pending", "{deferred}");
    let urgent = send("high", "Your account was locked").await;
    assert_eq!(urgent["deliveries"][0]["status"], "queued", "{urgent}");

    // The urgent one is delivered now.
    let view = stack
        .wait_settled(
            urgent["id"].as_str().unwrap(),
            &svc,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");

    // The other waits for the window's end, in the user's zone — exactly, to the minute.
    let due: DateTime<Utc> = sqlx::query_scalar(
        "SELECT o.available_at FROM outbox o JOIN deliveries d ON o.headers ->> 'delivery-id' = d.id::text
         WHERE d.notification_id = $1::uuid",
    )
    .bind(deferred["id"].as_str().unwrap())
    .fetch_one(&stack.notify_pool)
    .await
    .unwrap();
    assert_eq!(due, expected_end, "due at the end of quiet hours in {ZONE}");
    let (status, still) = stack
        .call(
            Method::GET,
            &format!("/v1/notifications/{}", deferred["id"].as_str().unwrap()),
            Some(&svc),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(still["deliveries"][0]["status"], "pending", "{still}");
    let mails = stack.smtp.mails();
    assert_eq!(mails.len(), 1, "only the urgent one was sent");
    assert!(mails[0].text().contains("Your account was locked"));
}
