//! Telegram linking and intake against a local fake of the Bot API: a user asks for a
//! one-time code, sends `/start <code>` to the bot and is linked (their contact, shown in
//! `GET /v1/me`); a code works once; notifications reach the chat; a message to the bot is
//! published as `telegram.message`; `/stop` opts the user out (shown in `GET /v1/me`, the
//! next notification is `opted_out`); the webhook refuses a request without the secret token,
//! and a retried update is taken once.

use std::time::Duration;

use common::{
    auth::Role,
    events::{Channel, DomainEvent},
};
use e2e::{Options, Stack};
use reqwest::Method;
use serde_json::{Value, json};
use users_service::routes::telegram::{SECRET_HEADER, TelegramConfig};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

const BOT_TOKEN: &str = "123456:test-token";
const SECRET: &str = "webhook-secret-token";
const CHAT: i64 = 4242;

fn options(bot_api: &MockServer) -> Options {
    Options {
        welcome: false,
        enabled_channels: vec![Channel::Email, Channel::Telegram],
        workers: workers::Config {
            channels: vec![Channel::Email, Channel::Telegram],
            telegram: workers::telegram::TelegramConfig {
                base_url: bot_api.uri(),
                bot_token: BOT_TOKEN.to_owned().into(),
                timeout_ms: 2_000,
            },
            ..Default::default()
        },
        telegram: TelegramConfig {
            webhook_secret: SECRET.to_owned().into(),
            bot_username: "notify_test_bot".into(),
            api_base_url: bot_api.uri(),
            bot_token: BOT_TOKEN.to_owned().into(),
            code_ttl_secs: 900,
        },
        ..Options::default()
    }
}

/// What the fake Bot API was asked to send, as (chat_id, text).
async fn sent(bot_api: &MockServer) -> Vec<(String, String)> {
    bot_api
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .map(|b| {
            (
                b["chat_id"].to_string().trim_matches('"').to_owned(),
                b["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Posts an update with `text` from `chat` to the bot's webhook through the bff.
async fn update(stack: &Stack, update_id: i64, chat: i64, text: &str, secret: Option<&str>) -> u16 {
    let mut req = stack
        .http
        .post(format!("{}/v1/telegram/webhook", stack.url()))
        .json(&json!({
            "update_id": update_id,
            "message": { "message_id": update_id * 10, "date": 1_700_000_000,
                         "chat": { "id": chat, "type": "private" }, "text": text }
        }));
    if let Some(secret) = secret {
        req = req.header(SECRET_HEADER, secret);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn me(stack: &Stack, token: &str) -> Value {
    let (status, me) = stack
        .call(Method::GET, "/v1/me", Some(token), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{me}");
    me
}

async fn notify(stack: &Stack, user: &str) -> Value {
    let view = stack
        .send_settled(json!({ "recipients": [{ "user_id": user }], "category": "billing",
                              "channels": ["telegram"], "content": { "text": "Invoice 42 is ready" } }))
        .await
        .unwrap();
    view["deliveries"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_links_their_chat_receives_and_stops() {
    let bot_api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/bot{BOT_TOKEN}/sendMessage")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "ok": true, "result": { "message_id": 1 } })),
        )
        .mount(&bot_api)
        .await;
    let stack = Stack::start(options(&bot_api)).await.unwrap();
    let user = stack
        .register_user("tg@example.test")
        .await
        .unwrap()
        .to_string();
    let token = stack.token(Role::User, &user);

    let (status, link) = stack
        .call(Method::POST, "/v1/me/telegram/link", Some(&token), None)
        .await
        .unwrap();
    assert_eq!(status, 201, "{link}");
    let code = link["code"].as_str().unwrap().to_owned();
    assert_eq!(
        link["deep_link"],
        format!("https://t.me/notify_test_bot?start={code}")
    );

    // Without the secret token, or with another one: refused, nothing linked.
    assert_eq!(
        update(&stack, 1, CHAT, &format!("/start {code}"), None).await,
        403
    );
    assert_eq!(
        update(&stack, 1, CHAT, &format!("/start {code}"), Some("guess")).await,
        403
    );
    assert!(me(&stack, &token).await["contacts"]["telegram_chat_id"].is_null());

    // `/start <code>` links the chat and the bot says so.
    assert_eq!(
        update(&stack, 1, CHAT, &format!("/start {code}"), Some(SECRET)).await,
        200
    );
    assert_eq!(
        me(&stack, &token).await["contacts"]["telegram_chat_id"],
        CHAT.to_string()
    );
    assert!(
        sent(&bot_api)
            .await
            .iter()
            .any(|(c, t)| c == "4242" && t.starts_with("Linked"))
    );
    // A code works once: another chat cannot take it.
    assert_eq!(
        update(&stack, 2, 9999, &format!("/start {code}"), Some(SECRET)).await,
        200
    );
    assert_eq!(
        me(&stack, &token).await["contacts"]["telegram_chat_id"],
        CHAT.to_string()
    );
    assert!(
        sent(&bot_api)
            .await
            .iter()
            .any(|(c, t)| c == "9999" && t.contains("unknown, used or expired"))
    );

    // Notifications reach the chat.
    let d = notify(&stack, &user).await;
    assert_eq!(d["status"], "sent", "{d}");
    assert!(
        sent(&bot_api)
            .await
            .contains(&("4242".to_owned(), "Invoice 42 is ready".to_owned()))
    );

    // A message to the bot is published for other services.
    assert_eq!(
        update(&stack, 3, CHAT, "where is my parcel?", Some(SECRET)).await,
        200
    );
    let (bootstrap, topic) = (
        stack.kafka_cfg.bootstrap_servers.clone(),
        stack.kafka_cfg.topic(common::events::EVENTS_TOPIC),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (b, t) = (bootstrap.clone(), topic.clone());
        let events: Vec<DomainEvent> = tokio::task::spawn_blocking(move || {
            devkit::kafka::read_topic(&b, &t, Duration::from_secs(5)).unwrap()
        })
        .await
        .unwrap()
        .iter()
        .filter_map(|m| rdkafka::Message::payload(m).and_then(|p| serde_json::from_slice(p).ok()))
        .collect();
        let found = events.iter().any(|e| {
            matches!(e, DomainEvent::TelegramMessage { chat_id, user_id, text, .. }
                if chat_id == "4242" && user_id.map(|u| u.to_string()) == Some(user.clone())
                    && text == "where is my parcel?")
        });
        if found {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no telegram.message event: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // `/stop` opts out; a retried update is taken once.
    assert_eq!(update(&stack, 4, CHAT, "/stop", Some(SECRET)).await, 200);
    let replies = sent(&bot_api).await.len();
    assert_eq!(update(&stack, 4, CHAT, "/stop", Some(SECRET)).await, 200);
    assert_eq!(
        sent(&bot_api).await.len(),
        replies,
        "a retried update was handled twice"
    );
    assert_eq!(
        me(&stack, &token).await["preferences"]["channels"]["telegram"],
        false
    );
    stack
        .wait_profile_evicted(user.parse().unwrap(), Duration::from_secs(10))
        .await
        .unwrap();
    let d = notify(&stack, &user).await;
    assert_eq!(
        (d["status"].as_str(), d["reason"].as_str()),
        (Some("suppressed"), Some("opted_out")),
        "{d}"
    );
}

/// A chat id proves nothing: before this, `PUT /v1/me/contacts` and `POST /v1/users` took any
/// chat id, so anyone could route another person's chat to their account (and `/stop` from
/// that chat picked one of its "owners"). Now a chat is claimed only with a link code, or set
/// by an admin, and it has at most one user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_is_claimed_only_through_the_link_flow_and_has_one_user() {
    let bot_api = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "ok": true })))
        .mount(&bot_api)
        .await;
    let stack = Stack::start(options(&bot_api)).await.unwrap();
    let owner = stack.register_user("owner@example.test").await.unwrap();
    let owner_token = stack.token(Role::User, &owner.to_string());
    let (_, link) = stack
        .call(
            Method::POST,
            "/v1/me/telegram/link",
            Some(&owner_token),
            None,
        )
        .await
        .unwrap();
    let code = link["code"].as_str().unwrap();
    assert_eq!(
        update(&stack, 1, CHAT, &format!("/start {code}"), Some(SECRET)).await,
        200
    );
    let chat = CHAT.to_string();

    // Another user names the owner's chat (or any chat) as theirs: 409, nothing changes.
    let intruder = stack.register_user("intruder@example.test").await.unwrap();
    let intruder_token = stack.token(Role::User, &intruder.to_string());
    for claimed in [chat.as_str(), "777"] {
        let (status, problem) = stack
            .call(
                Method::PUT,
                "/v1/me/contacts",
                Some(&intruder_token),
                Some(json!({ "email": "intruder@example.test", "telegram_chat_id": claimed })),
            )
            .await
            .unwrap();
        assert_eq!(status, 409, "{problem}");
        assert_eq!(problem["type"], "telegram_chat_not_linked", "{problem}");
    }
    assert!(me(&stack, &intruder_token).await["contacts"]["telegram_chat_id"].is_null());
    let holders: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT user_id FROM contacts WHERE telegram_chat_id = $1")
            .bind(&chat)
            .fetch_all(&stack.users_pool)
            .await
            .unwrap();
    assert_eq!(holders, vec![owner]);

    // A service may not register a user with a chat; an admin may, but not one that is taken.
    let users_before: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&stack.users_pool)
        .await
        .unwrap();
    let stack = &stack;
    let register = |role: Role, chat_id: &str| {
        let body = json!({ "email": "new@example.test", "telegram_chat_id": chat_id });
        let token = stack.token(role, "onboarding");
        async move {
            stack
                .call(Method::POST, "/v1/users", Some(&token), Some(body))
                .await
                .unwrap()
        }
    };
    let (status, problem) = register(Role::Service, "5555").await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (403, Some("forbidden")),
        "{problem}"
    );
    let (status, problem) = register(Role::Admin, &chat).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (409, Some("telegram_chat_taken")),
        "{problem}"
    );
    let users_after: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&stack.users_pool)
        .await
        .unwrap();
    assert_eq!(
        users_after, users_before,
        "a refused registration wrote a user"
    );
    let (status, created) = register(Role::Admin, "5555").await;
    assert_eq!(status, 201, "{created}");

    // The owner keeps the chat by sending it back, and drops it with null.
    let put = |chat_id: Value| {
        let body = json!({ "email": "owner@example.test", "telegram_chat_id": chat_id });
        let token = owner_token.clone();
        let stack = &stack;
        async move {
            stack
                .call(Method::PUT, "/v1/me/contacts", Some(&token), Some(body))
                .await
                .unwrap()
        }
    };
    let (status, kept) = put(json!(chat)).await;
    assert_eq!(
        (status, &kept["telegram_chat_id"]),
        (200, &json!(chat)),
        "{kept}"
    );
    let (status, dropped) = put(Value::Null).await;
    assert_eq!(status, 200, "{dropped}");
    assert!(me(stack, &owner_token).await["contacts"]["telegram_chat_id"].is_null());
}
