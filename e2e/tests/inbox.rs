//! The in-app inbox end to end (decision 0029), on the real stack with nginx in front of two
//! bff: an `in_app` send lands in the user's inbox and on every open stream of that user,
//! whichever bff holds it; a stream resumes with `Last-Event-ID` with no gap and no
//! duplicate; marks from two tabs at once keep the counts right; nobody sees another user's
//! items or stream; opted-out users get nothing; the caps and the token's expiry end streams.

use std::time::{Duration, Instant};

use common::{auth::Role, events::Channel};
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

/// One Server-Sent Event.
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    id: Option<i64>,
    data: Value,
    at: Instant,
}

/// An open stream: its events as they arrive (the reader stops when this is dropped).
struct Stream {
    rx: mpsc::UnboundedReceiver<Sse>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream {
    /// The next event within `timeout` (panics naming what it waited for otherwise).
    async fn next(&mut self, timeout: Duration) -> Sse {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no event within {timeout:?}"))
            .expect("the stream ended")
    }

    /// Whatever arrives within `wait`; `None` for "the stream ended".
    async fn maybe(&mut self, wait: Duration) -> Option<Option<Sse>> {
        tokio::time::timeout(wait, self.rx.recv()).await.ok()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Opens `GET /v1/me/inbox/stream` at `base` on a new connection (the bff serves it off
/// hyper, `bff::stream_listener`); the status, and the stream when it is 200.
async fn open(
    base: &str,
    token: &str,
    last_event_id: Option<&str>,
) -> (u16, Option<Stream>, Value) {
    open_with(&client(), base, token, last_event_id).await
}

/// The same on a connection that served a request first (keep-alive): the router's route.
async fn open_after_a_request(base: &str, token: &str) -> (u16, Option<Stream>, Value) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let ok = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    ok.bytes().await.unwrap();
    open_with(&http, base, token, None).await
}

async fn open_with(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    last_event_id: Option<&str>,
) -> (u16, Option<Stream>, Value) {
    let mut req = http
        .get(format!("{base}/v1/me/inbox/stream"))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let mut resp = tokio::time::timeout(Duration::from_secs(10), req.send())
        .await
        .expect("the stream did not answer within 10 s")
        .unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        let body = resp.json().await.unwrap_or(Value::Null);
        return (status, None, body);
    }
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut buf = String::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                        any = true;
                    }
                }
                // Comments (heartbeats) carry nothing.
                if any {
                    let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    if tx
                        .send(Sse {
                            event,
                            id,
                            data,
                            at: Instant::now(),
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    (status, Some(Stream { rx, task }), Value::Null)
}

async fn stack(opts: Options) -> Stack {
    Stack::start(Options {
        welcome: false,
        nginx: true,
        bff_instances: 2,
        enabled_channels: vec![Channel::Email, Channel::InApp],
        ..opts
    })
    .await
    .unwrap()
}

fn bff(stack: &Stack, i: usize) -> String {
    format!("http://{}", stack.bffs[i].addr)
}

/// Sends one in-app notification to `user`; its id.
async fn send(stack: &Stack, user: Uuid, subject: &str) -> String {
    let view = stack
        .send(
            &stack.token(Role::Service, "billing"),
            json!({
                "recipients": [{ "user_id": user }],
                "category": "billing",
                "channels": ["in_app"],
                "content": { "subject": subject, "text": format!("{subject}, in full") },
                "data": { "url": "https://example.com/orders/1" }
            }),
        )
        .await
        .unwrap();
    view["id"].as_str().unwrap().to_owned()
}

async fn call(stack: &Stack, method: Method, path: &str, token: &str) -> (u16, Value) {
    stack.call(method, path, Some(token), None).await.unwrap()
}

/// The counts as the API gives them, and as a count over the items in the database.
async fn counts_agree(stack: &Stack, user: Uuid, token: &str) -> Value {
    let (status, counts) = call(stack, Method::GET, "/v1/me/inbox/counts", token).await;
    assert_eq!(status, 200, "{counts}");
    let counted: (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE read_at IS NULL AND archived_at IS NULL),
                count(*) FILTER (WHERE seen_at IS NULL AND archived_at IS NULL)
         FROM inbox_items WHERE user_id = $1",
    )
    .bind(user)
    .fetch_one(&stack.notify_pool)
    .await
    .unwrap();
    assert_eq!(
        (
            counts["unread"].as_i64().unwrap(),
            counts["unseen"].as_i64().unwrap()
        ),
        counted,
        "the kept counts and the items disagree"
    );
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_reaches_every_stream_of_its_user_on_both_bff_and_marks_from_two_tabs_keep_counts_right()
 {
    let stack = stack(Options::default()).await;
    let user = stack.register_user("inbox@example.com").await.unwrap();
    let token = stack.token(Role::User, &user.to_string());

    // Two tabs on different bff instances, a third through nginx, a fourth on a connection
    // that served a request before (the router's route rather than the stream listener).
    let mut tabs = Vec::new();
    for (i, base) in [bff(&stack, 0), bff(&stack, 1), stack.url(), bff(&stack, 1)]
        .into_iter()
        .enumerate()
    {
        let (status, s, body) = if i == 3 {
            open_after_a_request(&base, &token).await
        } else {
            open(&base, &token, None).await
        };
        assert_eq!(status, 200, "{body}");
        let mut s = s.unwrap();
        let first = s.next(Duration::from_secs(5)).await;
        assert_eq!(first.event, "counts", "{first:?}");
        assert_eq!(
            first.data,
            json!({ "unread": 0, "unseen": 0, "last_seq": 0 })
        );
        assert_eq!(first.id, Some(0));
        tabs.push(s);
    }

    let sent_at = Instant::now();
    let id = send(&stack, user, "Order shipped").await;
    let mut item_id = String::new();
    for (i, tab) in tabs.iter_mut().enumerate() {
        let e = tab.next(Duration::from_secs(10)).await;
        eprintln!(
            "tab {i}: the item arrived {:?} after the send",
            e.at - sent_at
        );
        assert_eq!((e.event.as_str(), e.id), ("inbox", Some(1)), "{e:?}");
        assert_eq!(e.data["kind"], "new");
        assert_eq!(e.data["item"]["notification_id"], id.as_str());
        assert_eq!(e.data["item"]["subject"], "Order shipped");
        assert_eq!(e.data["item"]["text"], "Order shipped, in full");
        assert_eq!(
            e.data["item"]["data"]["url"],
            "https://example.com/orders/1"
        );
        assert_eq!(e.data["counts"], json!({ "unread": 1, "unseen": 1 }));
        item_id = e.data["item"]["id"].as_str().unwrap().to_owned();
    }

    // The delivery is `sent`, by the inbox; the list has the item.
    let admin = stack.token(Role::Admin, "ops");
    let view = stack
        .wait_settled(&id, &admin, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        view["delivery_counts"]["by_status"],
        json!({ "sent": 1 }),
        "{view}"
    );
    let (status, detail) = call(
        &stack,
        Method::GET,
        &format!("/v1/admin/deliveries/{item_id}"),
        &admin,
    )
    .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["attempt_log"][0]["provider"], "inbox", "{detail}");
    let (status, page) = call(&stack, Method::GET, "/v1/me/inbox", &token).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["items"][0]["id"], item_id.as_str());

    // Two tabs mark it read at once, five times each: it is read once, the counts move once,
    // and every stream gets exactly one `read` change.
    let marks = (0..10).map(|i| {
        let (stack, token, item_id) = (&stack, &token, &item_id);
        async move {
            let verb = if i % 2 == 0 { "read" } else { "seen" };
            call(
                stack,
                Method::POST,
                &format!("/v1/me/inbox/{item_id}/{verb}"),
                token,
            )
            .await
        }
    });
    for (status, body) in futures::future::join_all(marks).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        counts_agree(&stack, user, &token).await,
        json!({ "unread": 0, "unseen": 0 })
    );
    // `read` is the last change (after it, every mark finds the item marked already).
    let mut changes_seen = Vec::new();
    for tab in tabs.iter_mut() {
        let mut got: Vec<(i64, String)> = Vec::new();
        while got.last().is_none_or(|(_, kind)| kind != "read") {
            let e = tab.next(Duration::from_secs(10)).await;
            got.push((e.id.unwrap(), e.data["kind"].as_str().unwrap().to_owned()));
        }
        if let Some(Some(extra)) = tab.maybe(Duration::from_millis(500)).await {
            panic!("a change after the read: {extra:?} (before: {got:?})");
        }
        changes_seen.push(got);
    }
    // `seen` then `read`, or `read` alone (read implies seen): no change twice, none missing.
    for got in &changes_seen {
        assert_eq!(got, &changes_seen[0], "every tab sees the same changes");
        let ids: Vec<i64> = got.iter().map(|(id, _)| *id).collect();
        assert_eq!(
            ids,
            (2..2 + ids.len() as i64).collect::<Vec<_>>(),
            "{got:?}"
        );
        assert_eq!(
            got.iter().filter(|(_, k)| k == "read").count(),
            1,
            "{got:?}"
        );
    }

    // More items; one tab reads everything while the other archives one: counts stay right.
    let mut newer = Vec::new();
    for n in 0..3 {
        send(&stack, user, &format!("Item {n}")).await;
        let e = tabs[0].next(Duration::from_secs(10)).await;
        newer.push(e.data["item"]["id"].as_str().unwrap().to_owned());
    }
    let read_all = call(&stack, Method::POST, "/v1/me/inbox/read-all", &token);
    let archive_path = format!("/v1/me/inbox/{}/archive", newer[1]);
    let archive = call(&stack, Method::POST, &archive_path, &token);
    let ((s1, b1), (s2, b2)) = tokio::join!(read_all, archive);
    assert_eq!((s1, s2), (200, 200), "{b1} {b2}");
    assert_eq!(
        counts_agree(&stack, user, &token).await,
        json!({ "unread": 0, "unseen": 0 })
    );
    let (_, archived) = call(&stack, Method::GET, "/v1/me/inbox?status=archived", &token).await;
    assert_eq!(archived["items"].as_array().unwrap().len(), 1, "{archived}");
    let (_, inbox) = call(&stack, Method::GET, "/v1/me/inbox?limit=2", &token).await;
    assert_eq!(inbox["items"].as_array().unwrap().len(), 2, "{inbox}");
    let cursor = inbox["next_cursor"].as_str().unwrap();
    let (_, rest) = call(
        &stack,
        Method::GET,
        &format!("/v1/me/inbox?limit=2&cursor={cursor}"),
        &token,
    )
    .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1, "{rest}");
    assert!(rest.get("next_cursor").is_none(), "{rest}");

    // Marks show in the delivery's history and in the stats.
    let (_, detail) = call(
        &stack,
        Method::GET,
        &format!("/v1/admin/deliveries/{item_id}"),
        &admin,
    )
    .await;
    assert!(detail["inbox"]["read_at"].is_string(), "{detail}");
    assert!(detail["inbox"]["seen_at"].is_string(), "{detail}");
    let (_, stats) = call(&stack, Method::GET, "/v1/admin/stats", &admin).await;
    let inbox = &stats["inbox"];
    assert_eq!(
        (&inbox["items"], &inbox["archived"], &inbox["clicked"]),
        (&json!(4), &json!(1), &json!(0)),
        "{stats}"
    );
    // Read-all skips the item archived just before it (when the archive won the race).
    let read = inbox["read"].as_i64().unwrap();
    assert!((3..=4).contains(&read) && inbox["seen"] == read, "{stats}");

    // Bad input changes nothing.
    for (path, want) in [
        (format!("/v1/me/inbox/{}/unknown", newer[0]), 404),
        ("/v1/me/inbox/not-a-uuid/read".to_owned(), 404),
        (format!("/v1/me/inbox/{}/read", Uuid::new_v4()), 404),
    ] {
        let (status, body) = call(&stack, Method::POST, &path, &token).await;
        assert_eq!(status, want, "{path}: {body}");
    }
    for q in ["status=new", "status=", "limit=0", "limit=101", "cursor=x"] {
        let (status, body) = call(&stack, Method::GET, &format!("/v1/me/inbox?{q}"), &token).await;
        assert_eq!(status, 422, "{q}: {body}");
        assert_eq!(body["type"], "validation_failed", "{q}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resuming_with_last_event_id_gets_exactly_what_it_missed() {
    let stack = stack(Options::default()).await;
    let user = stack.register_user("resume@example.com").await.unwrap();
    let token = stack.token(Role::User, &user.to_string());

    send(&stack, user, "First").await;
    let (_, s, _) = open(&stack.url(), &token, None).await;
    let mut s = s.unwrap();
    // The first item may land before or after the stream opened: wait for it either way.
    let mut last = 0;
    while last < 1 {
        let e = s.next(Duration::from_secs(10)).await;
        last = e.id.unwrap();
    }
    drop(s);

    // Missed while away: two items and a mark.
    let second = send(&stack, user, "Second").await;
    send(&stack, user, "Third").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let item: String = loop {
        let found: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM inbox_items WHERE notification_id = $1::text::uuid")
                .bind(&second)
                .fetch_optional(&stack.notify_pool)
                .await
                .unwrap();
        if let Some(id) = found
            && stack
                .notify_count(&format!(
                    "SELECT count(*) FROM inbox_items WHERE user_id = '{user}'"
                ))
                .await
                == 3
        {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "the items were not stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, _) = call(
        &stack,
        Method::POST,
        &format!("/v1/me/inbox/{item}/read"),
        &token,
    )
    .await;
    assert_eq!(status, 200);

    let (status, s, body) = open(&bff(&stack, 1), &token, Some(&last.to_string())).await;
    assert_eq!(status, 200, "{body}");
    let mut s = s.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let e = s.next(Duration::from_secs(5)).await;
        got.push((e.id.unwrap(), e.data["kind"].as_str().unwrap().to_owned()));
    }
    assert_eq!(
        got,
        vec![(2, "new".into()), (3, "new".into()), (4, "read".into())]
    );
    assert!(
        s.maybe(Duration::from_millis(800)).await.is_none(),
        "nothing more was missed"
    );
    // And it is live after the replay.
    send(&stack, user, "Fourth").await;
    let e = s.next(Duration::from_secs(10)).await;
    assert_eq!(e.id, Some(5), "{e:?}");

    // Resuming from further back than is kept, or ahead of the sequence: a `reset`.
    sqlx::query("DELETE FROM inbox_events WHERE user_id = $1 AND seq <= 2")
        .bind(user)
        .execute(&stack.notify_pool)
        .await
        .unwrap();
    for from in ["1", "99"] {
        let (_, s, _) = open(&stack.url(), &token, Some(from)).await;
        let e = s.unwrap().next(Duration::from_secs(5)).await;
        assert_eq!(e.event, "reset", "from {from}: {e:?}");
        assert_eq!(e.id, Some(5), "from {from}: {e:?}");
        assert_eq!(e.data["unread"], 3, "from {from}: {e:?}");
    }
    let (status, _, body) = open(&stack.url(), &token, Some("abc")).await;
    assert_eq!((status, &body["type"]), (400, &json!("bad_last_event_id")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_sees_another_users_inbox_and_opted_out_users_get_nothing() {
    let stack = stack(Options::default()).await;
    let alice = stack.register_user("alice@example.com").await.unwrap();
    let bob = stack.register_user("bob@example.com").await.unwrap();
    let (a, b) = (
        stack.token(Role::User, &alice.to_string()),
        stack.token(Role::User, &bob.to_string()),
    );
    let (_, bob_stream, _) = open(&stack.url(), &b, None).await;
    let mut bob_stream = bob_stream.unwrap();
    assert_eq!(
        bob_stream.next(Duration::from_secs(5)).await.event,
        "counts"
    );

    send(&stack, alice, "For Alice").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let item: Uuid = loop {
        let found: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM inbox_items WHERE user_id = $1")
                .bind(alice)
                .fetch_optional(&stack.notify_pool)
                .await
                .unwrap();
        if let Some(id) = found {
            break id;
        }
        assert!(Instant::now() < deadline, "Alice's item was not stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Bob sees none of it: not in his list, counts or stream, and her item is a 404 to him.
    let (_, page) = call(&stack, Method::GET, "/v1/me/inbox", &b).await;
    assert_eq!(page["items"], json!([]), "{page}");
    let (_, counts) = call(&stack, Method::GET, "/v1/me/inbox/counts", &b).await;
    assert_eq!(counts, json!({ "unread": 0, "unseen": 0 }));
    for verb in ["read", "seen", "archive", "click"] {
        let (status, body) = call(
            &stack,
            Method::POST,
            &format!("/v1/me/inbox/{item}/{verb}"),
            &b,
        )
        .await;
        assert_eq!(status, 404, "{verb}: {body}");
    }
    assert!(
        bob_stream.maybe(Duration::from_millis(800)).await.is_none(),
        "Bob's stream got nothing"
    );
    let (_, counts) = call(&stack, Method::GET, "/v1/me/inbox/counts", &a).await;
    assert_eq!(counts, json!({ "unread": 1, "unseen": 1 }));
    // Only users have an inbox; no token, no stream.
    for role in [Role::Service, Role::Admin] {
        let t = stack.token(role, &alice.to_string());
        let (status, _, body) = open(&stack.url(), &t, None).await;
        assert_eq!(status, 403, "{role:?}: {body}");
        let (status, body) = call(&stack, Method::GET, "/v1/me/inbox", &t).await;
        assert_eq!(status, 403, "{role:?}: {body}");
    }
    let resp = client()
        .get(format!("{}/v1/me/inbox/stream", stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Bob turns in-app off: his sends are suppressed `opted_out`, nothing reaches him. Quiet
    // hours do not hold an in-app item back (Alice has them all day).
    let (status, body) = stack
        .call(
            Method::PUT,
            "/v1/me/preferences",
            Some(&b),
            Some(json!({ "channels": { "in_app": false } })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = stack
        .call(
            Method::PUT,
            "/v1/me/preferences",
            Some(&a),
            Some(json!({ "quiet_hours": { "start": "00:00", "end": "23:59", "timezone": "UTC" } })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    for u in [alice, bob] {
        stack
            .wait_profile_evicted(u, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let admin = stack.token(Role::Admin, "ops");
    let to_bob = send(&stack, bob, "Not for Bob").await;
    let view = stack
        .wait_settled(&to_bob, &admin, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(view["deliveries"][0]["status"], "suppressed", "{view}");
    assert_eq!(view["deliveries"][0]["reason"], "opted_out", "{view}");
    let to_alice = send(&stack, alice, "Quiet hours do not hold it").await;
    let view = stack
        .wait_settled(&to_alice, &admin, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
    assert!(
        bob_stream.maybe(Duration::from_millis(800)).await.is_none(),
        "Bob's stream still got nothing"
    );
    assert_eq!(
        stack
            .notify_count(&format!(
                "SELECT count(*) FROM inbox_items WHERE user_id = '{bob}'"
            ))
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_capped_per_user_and_end_when_the_token_expires() {
    let stack = stack(Options {
        inbox_streams: bff::inbox_stream::StreamConfig {
            max_streams_per_user: 2,
            heartbeat_secs: 1,
            ..Default::default()
        },
        ..Options::default()
    })
    .await;
    let user = stack.register_user("caps@example.com").await.unwrap();
    let token = stack.token(Role::User, &user.to_string());
    // Two streams on two instances: the cap is the user's, across instances.
    let (_, first, _) = open(&bff(&stack, 0), &token, None).await;
    let (_, second, _) = open(&bff(&stack, 1), &token, None).await;
    let (status, none, body) = open(&bff(&stack, 0), &token, None).await;
    assert!(none.is_none());
    assert_eq!(
        (status, &body["type"]),
        (429, &json!("too_many_streams")),
        "{body}"
    );
    // Closing one frees its place.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, s, body) = open(&bff(&stack, 1), &token, None).await;
        if status == 200 {
            drop(s);
            break;
        }
        assert_eq!(status, 429, "{body}");
        assert!(
            Instant::now() < deadline,
            "the closed stream's place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(second);

    // A token that expires in 3 s: heartbeats, then `expired`, then the end.
    let now = chrono::Utc::now().timestamp();
    let short = stack.sign(&common::auth::Claims {
        sub: user.to_string(),
        role: Role::User,
        exp: now + 3,
        iat: now,
        nbf: None,
        iss: stack.jwt.issuer.clone(),
        aud: stack.jwt.audience.clone(),
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        let (status, s, body) = open(&stack.url(), &short, None).await;
        if status == 200 {
            break s.unwrap();
        }
        assert_eq!(status, 429, "{body}");
        assert!(Instant::now() < deadline, "no place for the stream");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s.next(Duration::from_secs(5)).await.event, "counts");
    let e = s.next(Duration::from_secs(6)).await;
    assert_eq!(e.event, "expired", "{e:?}");
    assert!(
        matches!(s.maybe(Duration::from_secs(3)).await, Some(None)),
        "the stream ends after `expired`"
    );
}
