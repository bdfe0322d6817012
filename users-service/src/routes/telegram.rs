//! Telegram linking and the bot's webhook (seed 000).
//!
//! - `POST /v1/me/telegram/link` (user): a one-time code (valid `telegram.code_ttl_secs`,
//!   single use) and the deep link `https://t.me/<bot>?start=<code>` that sends it.
//! - `POST /v1/telegram/webhook` (the Bot API, through the bff without a token): believed only
//!   with `X-Telegram-Bot-Api-Secret-Token` = `telegram.webhook_secret` (403 otherwise).
//!   `/start <code>` links the chat to the code's user (their `telegram_chat_id`; the telegram
//!   channel is switched back on); `/stop` switches the telegram channel off for the chat's
//!   user; anything else is published as `telegram.message` on `notify.events`. Each update is
//!   taken once (`update_id`: Telegram retries until it gets a 2xx). The bot answers in the
//!   chat (best effort). Both changes show in `GET /v1/me` (contacts, preferences).

use api::users::TelegramLink;
use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use common::{
    auth::Principal,
    events::{Channel, DomainEvent, EVENTS_TOPIC, SCHEMA},
    outbox::{self, OutboxMessage},
    problem::ApiError,
};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::PgConnection;

use crate::{AppState, db};

/// The bot's settings (`[telegram]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TelegramConfig {
    /// The secret set with `setWebhook`'s `secret_token`; empty: the webhook answers 404.
    pub webhook_secret: SecretString,
    /// The bot's username (for deep links).
    pub bot_username: String,
    /// Where the Bot API is, and the bot's token (for its replies; empty: no replies).
    pub api_base_url: String,
    pub bot_token: SecretString,
    /// How long a link code is valid.
    pub code_ttl_secs: i64,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        Self {
            webhook_secret: SecretString::from(""),
            bot_username: "notify_bot".into(),
            api_base_url: "https://api.telegram.org".into(),
            bot_token: SecretString::from(""),
            code_ttl_secs: 900,
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/me/telegram/link", post(link))
        .route("/v1/telegram/webhook", post(webhook))
}

async fn link(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<(StatusCode, Json<TelegramLink>), ApiError> {
    let user = super::me::me(&principal)?;
    let code: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    let expires_at = chrono::Utc::now() + chrono::Duration::seconds(state.telegram.code_ttl_secs);
    let mut conn = state.pool.acquire().await?;
    super::me::existing(&mut conn, user).await?;
    db::telegram::add_code(&mut conn, &code, user, expires_at).await?;
    Ok((
        StatusCode::CREATED,
        Json(TelegramLink {
            deep_link: format!("https://t.me/{}?start={code}", state.telegram.bot_username),
            code,
            expires_at,
        }),
    ))
}

#[derive(Deserialize)]
struct Update {
    update_id: i64,
    message: Option<Message>,
}

#[derive(Deserialize)]
struct Message {
    message_id: i64,
    chat: Chat,
    text: Option<String>,
}

#[derive(Deserialize)]
struct Chat {
    id: i64,
}

pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let secret = state.telegram.webhook_secret.expose_secret();
    if secret.is_empty() {
        return Err(ApiError::not_found(
            "this deployment has no Telegram bot (telegram.webhook_secret is not set)",
        ));
    }
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !common::signing::constant_time_eq(given, secret.as_bytes()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_signature",
            "the X-Telegram-Bot-Api-Secret-Token header is missing or wrong",
        ));
    }
    let update: Update = common::http::parse_json(&body)?;
    let mut tx = state.pool.begin().await?;
    if !db::telegram::first_update(&mut tx, update.update_id).await? {
        return Ok(StatusCode::OK); // Telegram retried: taken already.
    }
    let Some(message) = update.message else {
        tx.commit().await?;
        return Ok(StatusCode::OK); // edits, joins, …: nothing to do
    };
    let chat = message.chat.id.to_string();
    let text = message.text.unwrap_or_default();
    let reply = match text.split_once(' ').unwrap_or((text.as_str(), "")) {
        ("/start", code) if !code.trim().is_empty() => start(&mut tx, &chat, code.trim()).await?,
        ("/stop", _) => stop(&mut tx, &chat).await?,
        _ => {
            let event = DomainEvent::TelegramMessage {
                schema: SCHEMA,
                user_id: db::telegram::user_of_chat(&mut tx, &chat).await?,
                chat_id: chat.clone(),
                message_id: message.message_id,
                text,
                at: chrono::Utc::now(),
            };
            outbox::enqueue(
                &mut tx,
                &[OutboxMessage::new(EVENTS_TOPIC, chat.clone(), &event)?],
            )
            .await?;
            None
        }
    };
    tx.commit().await?;
    if let Some(reply) = reply {
        state.telegram_replies.send(&chat, reply).await;
    }
    Ok(StatusCode::OK)
}

/// `/start <code>`: the chat becomes the code's user's Telegram contact.
async fn start(
    conn: &mut PgConnection,
    chat: &str,
    code: &str,
) -> Result<Option<&'static str>, ApiError> {
    let Some(user) = db::telegram::use_code(conn, code).await? else {
        return Ok(Some(
            "This link code is unknown, used or expired. Ask for a new one in your settings.",
        ));
    };
    for other in db::telegram::release_chat(conn, chat, user).await? {
        super::me::changed(conn, other).await?;
    }
    let mut contacts = db::contacts(conn, user).await?;
    contacts.telegram_chat_id = Some(chat.to_owned());
    db::replace_contacts(conn, user, &contacts).await?;
    let mut prefs = db::preferences(conn, user).await?;
    if prefs.channels.get(&Channel::Telegram) == Some(&false) {
        prefs.channels.insert(Channel::Telegram, true);
        db::replace_preferences(conn, user, &prefs).await?;
    }
    super::me::changed(conn, user).await?;
    Ok(Some(
        "Linked: notifications will come here. Send /stop to stop them.",
    ))
}

/// `/stop`: the chat's user no longer gets Telegram notifications.
async fn stop(conn: &mut PgConnection, chat: &str) -> Result<Option<&'static str>, ApiError> {
    let Some(user) = db::telegram::user_of_chat(conn, chat).await? else {
        return Ok(Some("This chat is not linked to an account."));
    };
    let mut prefs = db::preferences(conn, user).await?;
    prefs.channels.insert(Channel::Telegram, false);
    db::replace_preferences(conn, user, &prefs).await?;
    super::me::changed(conn, user).await?;
    Ok(Some(
        "Stopped: no more notifications here. Link again from your settings to resume.",
    ))
}

/// The bot's answers in the chat, best effort (a failed reply changes nothing taken).
pub struct Replies {
    http: reqwest::Client,
    url: Option<String>,
}

impl Replies {
    pub fn new(cfg: &TelegramConfig) -> anyhow::Result<Self> {
        let token = cfg.bot_token.expose_secret();
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()?,
            url: (!token.is_empty()).then(|| {
                format!(
                    "{}/bot{token}/sendMessage",
                    cfg.api_base_url.trim_end_matches('/')
                )
            }),
        })
    }

    async fn send(&self, chat: &str, text: &str) {
        let Some(url) = &self.url else { return };
        let sent = self
            .http
            .post(url)
            .json(&serde_json::json!({ "chat_id": chat, "text": text }))
            .send()
            .await;
        if let Err(e) = sent.and_then(|r| r.error_for_status()) {
            tracing::warn!(error = %e.without_url(), "the Telegram bot's reply failed");
        }
    }
}
