//! The `POST /v1/notifications` body, and its validation into a [`SendRequest`] the rest of
//! the service trusts.

use chrono::{DateTime, Utc};
use common::{
    address::EmailAddress,
    events::{Channel, Content, Platform},
    problem::{ApiError, FieldError},
};
use uuid::Uuid;

pub use api::notifications::{ContentBody, MAX_RECIPIENTS, RecipientBody, SendBody};
pub use common::events::Priority;

impl SendRequest {
    /// A request the platform makes itself: `recipients`, `category`, normal priority, every
    /// other field empty (its content rendered later: from a template, or a digest's items).
    pub fn internal(recipients: Vec<Recipient>, category: &str) -> Self {
        SendRequest {
            recipients,
            category: category.to_owned(),
            priority: Priority::Normal,
            channels: None,
            content: Content {
                subject: None,
                text: String::new(),
                html: None,
                data: None,
            },
            send_at: None,
            ttl_seconds: None,
            template: None,
            data: None,
            localized: None,
            fallback: None,
            digest: None,
            cap: None,
        }
    }

    /// The topic the request names, if any (at most one).
    pub fn topic(&self) -> Option<&str> {
        self.recipients.iter().find_map(|r| match r {
            Recipient::Topic(key) => Some(key.as_str()),
            _ => None,
        })
    }

    /// The users the request names directly.
    pub fn user_ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.recipients.iter().filter_map(|r| match r {
            Recipient::User(id) => Some(*id),
            _ => None,
        })
    }

    /// The request a stored notification was accepted as, for one of its users: what channel
    /// fallback plans the next channel with.
    pub fn stored(d: &delivery::LockedDelivery, user_id: Uuid) -> Self {
        SendRequest {
            recipients: vec![Recipient::User(user_id)],
            category: d.category.clone(),
            priority: d.priority,
            channels: None,
            content: d.content.0.clone(),
            send_at: d.send_at,
            ttl_seconds: d.ttl_seconds.map(i64::from),
            template: d.template.clone(),
            data: None,
            localized: d.localized.as_ref().map(|l| l.0.clone()),
            fallback: d.fallback.as_ref().map(|f| f.0.clone()),
            digest: None,
            cap: None,
        }
    }
}

/// A send's digest (`digest` on the request, or its category's default): sends with the same
/// key to the same recipient and channel inside the window become one delivery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DigestSpec {
    pub key: String,
    pub window_seconds: i64,
}

/// A frequency cap: at most `limit` deliveries per user and channel per fixed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cap {
    pub limit: i32,
    pub window_seconds: i64,
}

/// A recipient after validation. Raw addresses are normalised; one that cannot be used
/// becomes `Invalid` and is planned as a `suppressed` delivery (`invalid_address`) — one bad
/// address does not reject a 1,000-recipient request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    User(Uuid),
    Email(String),
    /// E.164.
    Phone(String),
    Device {
        platform: Platform,
        token: String,
    },
    Webhook(String),
    /// A Telegram chat id.
    Telegram(String),
    /// Every subscriber of a topic (its key), as of acceptance: fanned out in chunks
    /// (`crate::fanout`), never planned inline.
    Topic(String),
    Invalid {
        channel: Channel,
        given: serde_json::Value,
    },
}

impl Recipient {
    /// The recipient as stored with each delivery (normalised where it could be).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Recipient::User(id) => serde_json::json!({ "user_id": id }),
            Recipient::Email(e) => serde_json::json!({ "email": e }),
            Recipient::Phone(p) => serde_json::json!({ "phone": p }),
            Recipient::Device { platform, token } => {
                serde_json::json!({ "device": { "platform": platform.as_str(), "token": token } })
            }
            Recipient::Webhook(url) => serde_json::json!({ "webhook": { "url": url } }),
            Recipient::Telegram(chat) => serde_json::json!({ "telegram": { "chat_id": chat } }),
            Recipient::Topic(key) => serde_json::json!({ "topic": key }),
            Recipient::Invalid { given, .. } => given.clone(),
        }
    }

    /// The recipient a digest (or another stored row) was planned for: the user, or the raw
    /// address as it was stored (`None` when it no longer parses).
    pub fn stored(user_id: Option<Uuid>, recipient: &serde_json::Value) -> Option<Self> {
        if let Some(id) = user_id {
            return Some(Recipient::User(id));
        }
        let body: RecipientBody = serde_json::from_value(recipient.clone()).ok()?;
        match parse_raw(&body).ok()? {
            Recipient::Invalid { .. } => None,
            r => Some(r),
        }
    }

    /// The channel a raw-address recipient is reached on (`None` for users).
    pub fn channel(&self) -> Option<Channel> {
        match self {
            Recipient::User(_) | Recipient::Topic(_) => None,
            Recipient::Email(_) => Some(Channel::Email),
            Recipient::Phone(_) => Some(Channel::Sms),
            Recipient::Device { .. } => Some(Channel::Push),
            Recipient::Webhook(_) => Some(Channel::Webhook),
            Recipient::Telegram(_) => Some(Channel::Telegram),
            Recipient::Invalid { channel, .. } => Some(*channel),
        }
    }
}

/// Parses one raw-address recipient; `Err` is a structural error (422), an unusable address is
/// `Ok(Invalid)`.
fn parse_raw(r: &RecipientBody) -> Result<Recipient, (&'static str, String)> {
    let invalid = |channel, given: serde_json::Value| Recipient::Invalid { channel, given };
    if let Some(email) = &r.email {
        return Ok(match EmailAddress::parse(email) {
            Ok(e) => Recipient::Email(e.as_str().to_owned()),
            Err(_) => invalid(Channel::Email, serde_json::json!({ "email": email })),
        });
    }
    if let Some(phone) = &r.phone {
        return Ok(match common::address::PhoneE164::parse(phone) {
            Ok(p) => Recipient::Phone(p.as_str().to_owned()),
            Err(_) => invalid(Channel::Sms, serde_json::json!({ "phone": phone })),
        });
    }
    if let Some(device) = &r.device {
        let platform = device.get("platform").and_then(|p| p.as_str());
        let token = device.get("token").and_then(|t| t.as_str());
        let (Some(platform), Some(token)) = (platform, token) else {
            return Err(("device", "must be {platform: fcm | apns, token}".into()));
        };
        let Some(platform) = Platform::parse(platform) else {
            return Err(("device.platform", "must be fcm or apns".into()));
        };
        return Ok(
            if common::address::check_push_token(platform, token).is_ok() {
                Recipient::Device {
                    platform,
                    token: token.to_owned(),
                }
            } else {
                invalid(Channel::Push, serde_json::json!({ "device": device }))
            },
        );
    }
    if let Some(webhook) = &r.webhook {
        let Some(url) = webhook.get("url").and_then(|u| u.as_str()) else {
            return Err(("webhook", "must be {url}".into()));
        };
        let usable = reqwest::Url::parse(url).is_ok_and(|u| {
            matches!(u.scheme(), "https" | "http") && u.host_str().is_some() && url.len() <= 2048
        });
        return Ok(if usable {
            Recipient::Webhook(url.to_owned())
        } else {
            invalid(Channel::Webhook, serde_json::json!({ "webhook": webhook }))
        });
    }
    if let Some(telegram) = &r.telegram {
        let chat = match telegram.get("chat_id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => return Err(("telegram", "must be {chat_id}".into())),
        };
        return Ok(
            if let Ok(chat) = common::address::parse_telegram_chat_id(&chat) {
                Recipient::Telegram(chat)
            } else {
                invalid(
                    Channel::Telegram,
                    serde_json::json!({ "telegram": telegram }),
                )
            },
        );
    }
    Err((
        "",
        "must have exactly one of user_id, email, phone, device, webhook, telegram, topic".into(),
    ))
}

/// A validated send request.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub recipients: Vec<Recipient>,
    pub category: String,
    pub priority: Priority,
    pub channels: Option<Vec<Channel>>,
    pub content: Content,
    pub send_at: Option<DateTime<Utc>>,
    pub ttl_seconds: Option<i64>,
    /// The template `content` is rendered from, with its `data`.
    pub template: Option<String>,
    pub data: Option<serde_json::Value>,
    /// Renderings per recipient locale (template requests), filled in at intake.
    pub localized: Option<std::collections::BTreeMap<String, Content>>,
    /// The channel order to fall back along when a user's delivery ends `dead`.
    pub fallback: Option<Vec<Channel>>,
    /// Fold into a digest (the send's own, or its category's default, set at intake).
    pub digest: Option<DigestSpec>,
    /// The send's own cap (stricter than the category's and the deployment's).
    pub cap: Option<Cap>,
}

/// Checks every rule of a send request and reports every broken field at once (422).
pub fn validate(
    body: SendBody,
    enabled_channels: &[Channel],
    now: DateTime<Utc>,
) -> Result<SendRequest, ApiError> {
    {
        let mut errors = Vec::new();
        let mut err = |field: String, msg: &str| errors.push(FieldError::new(field, msg));

        if body.recipients.is_empty() || body.recipients.len() > MAX_RECIPIENTS {
            err(
                "recipients".into(),
                "must hold between 1 and 1000 recipients",
            );
        }
        if let Err(rule) = common::address::parse_name(&body.category) {
            err("category".into(), rule);
        }

        let mut channels = None;
        if let Some(names) = &body.channels {
            let mut parsed = Vec::new();
            for (i, name) in names.iter().enumerate() {
                match Channel::parse(name) {
                    None => err(
                        format!("channels[{i}]"),
                        "unknown channel (email, sms, push, webhook, telegram)",
                    ),
                    Some(c) if !enabled_channels.contains(&c) => err(
                        format!("channels[{i}]"),
                        "this channel is not enabled in this deployment",
                    ),
                    Some(c) if !parsed.contains(&c) => parsed.push(c),
                    Some(_) => {}
                }
            }
            if names.is_empty() {
                err(
                    "channels".into(),
                    "must not be empty when given (omit it to follow preferences)",
                );
            }
            channels = Some(parsed);
        }

        let mut recipients = Vec::with_capacity(body.recipients.len());
        for (i, r) in body.recipients.iter().enumerate() {
            let set = [
                r.user_id.is_some(),
                r.email.is_some(),
                r.phone.is_some(),
                r.device.is_some(),
                r.webhook.is_some(),
                r.telegram.is_some(),
                r.topic.is_some(),
            ]
            .iter()
            .filter(|s| **s)
            .count();
            if set != 1 {
                err(
                    format!("recipients[{i}]"),
                    "must have exactly one of user_id, email, phone, device, webhook, telegram, topic",
                );
                continue;
            }
            if let Some(key) = &r.topic {
                if common::address::parse_name(key).is_err() {
                    err(
                        format!("recipients[{i}].topic"),
                        "is not a topic key (1-64 characters of a-z, 0-9, `_`, `.`, `-`)",
                    );
                    continue;
                }
                if recipients.iter().any(|r| matches!(r, Recipient::Topic(_))) {
                    err(
                        format!("recipients[{i}].topic"),
                        "one topic per request: send once per topic",
                    );
                    continue;
                }
            }
            let recipient = match (&r.user_id, &r.topic) {
                (Some(id), _) => Recipient::User(*id),
                (_, Some(key)) => Recipient::Topic(key.clone()),
                _ => match parse_raw(r) {
                    Ok(recipient) => recipient,
                    Err((sub, msg)) => {
                        let field = if sub.is_empty() {
                            format!("recipients[{i}]")
                        } else {
                            format!("recipients[{i}].{sub}")
                        };
                        err(field, &msg);
                        continue;
                    }
                },
            };
            if let Some(channel) = recipient.channel()
                && !enabled_channels.contains(&channel)
            {
                err(
                    format!("recipients[{i}]"),
                    &format!(
                        "the {} channel is not enabled in this deployment",
                        channel.as_str()
                    ),
                );
            }
            if !recipients.contains(&recipient) {
                recipients.push(recipient);
            }
        }

        let template = body.template.clone();
        if let Some(t) = &template {
            if common::address::parse_name(t).is_err() {
                err("template".into(), "is not a template name");
            }
            if body.content.is_some() {
                err(
                    "content".into(),
                    "send either `template` (with `data`) or `content`, not both",
                );
            }
        }
        if body.data.as_ref().is_some_and(|d| !d.is_object()) {
            err("data".into(), "must be an object");
        }
        let mut fallback = None;
        if let Some(names) = &body.fallback {
            let mut parsed = Vec::new();
            for (i, name) in names.iter().enumerate() {
                match Channel::parse(name) {
                    None => err(
                        format!("fallback[{i}]"),
                        "unknown channel (email, sms, push, webhook, telegram)",
                    ),
                    Some(c) if !enabled_channels.contains(&c) => err(
                        format!("fallback[{i}]"),
                        "this channel is not enabled in this deployment",
                    ),
                    Some(c) if parsed.contains(&c) => {
                        err(format!("fallback[{i}]"), "names a channel twice")
                    }
                    Some(c) => parsed.push(c),
                }
            }
            if !(2..=Channel::ALL.len()).contains(&names.len()) {
                err(
                    "fallback".into(),
                    "must name 2 to 5 channels, in the order to try them",
                );
            }
            fallback = Some(parsed);
        }
        let content = match &body.content {
            // Rendered from the template at intake (templates::apply).
            None if template.is_some() => Some(Content {
                subject: None,
                text: String::new(),
                html: None,
                data: body.data.clone(),
            }),
            None => {
                err("content".into(), "is required (or name a `template`)");
                None
            }
            Some(c) => {
                // Blank is ASCII white space only, as the document's pattern says.
                if c.text.trim_ascii().is_empty() {
                    err("content.text".into(), "must not be empty");
                }
                if let Some(problem) = content_too_large(&c.text, c.html.as_deref()) {
                    err("content".into(), &problem);
                }
                if c.subject.as_ref().is_some_and(|s| {
                    s.chars().count() > MAX_SUBJECT_CHARS || s.contains(['\r', '\n'])
                }) {
                    err(
                        "content.subject".into(),
                        "must be one line of at most 998 characters",
                    );
                }
                Some(Content {
                    subject: c.subject.clone(),
                    text: c.text.clone(),
                    html: c.html.clone(),
                    data: body.data.clone(),
                })
            }
        };
        if body
            .ttl_seconds
            .is_some_and(|ttl| !(1..=30 * 86_400).contains(&ttl))
        {
            err(
                "ttl_seconds".into(),
                "must be between 1 and 2592000 (30 days)",
            );
        }
        if body
            .send_at
            .is_some_and(|at| at > now + chrono::Duration::days(365))
        {
            err("send_at".into(), "must be within one year");
        }

        let digest = match &body.digest {
            None => None,
            Some(d) => match d.check() {
                Ok(window_seconds) => Some(DigestSpec {
                    key: d.key.clone(),
                    window_seconds,
                }),
                Err((field, msg)) => {
                    err(field.into(), msg);
                    None
                }
            },
        };
        if digest.is_some() && body.send_at.is_some() {
            err(
                "digest".into(),
                "cannot be combined with `send_at`: a digest goes out at its window's end",
            );
        }
        if digest.is_some() && body.priority == Priority::High {
            err(
                "digest".into(),
                "urgent sends (`priority: high`) are never digested",
            );
        }
        let cap = match &body.cap {
            None => None,
            Some(c) => match c.check() {
                Ok((limit, window_seconds)) => Some(Cap {
                    limit,
                    window_seconds,
                }),
                Err((field, msg)) => {
                    err(format!("cap.{field}"), msg);
                    None
                }
            },
        };

        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok(SendRequest {
            recipients,
            category: body.category,
            priority: body.priority,
            channels,
            content: content.expect("checked above"),
            send_at: body.send_at.filter(|at| *at > now),
            ttl_seconds: body.ttl_seconds,
            template,
            data: body.data,
            localized: None,
            fallback,
            digest,
            cap,
        })
    }
}

/// Largest text part of a notification's content (given inline or rendered from a template).
pub const MAX_TEXT_BYTES: usize = 100_000;
/// Largest HTML part.
pub const MAX_HTML_BYTES: usize = 200_000;
/// Longest subject, in characters (RFC 5322's line length; longer encoded lines are folded).
pub const MAX_SUBJECT_CHARS: usize = 998;

/// Why content is too large to accept, if it is.
pub fn content_too_large(text: &str, html: Option<&str>) -> Option<String> {
    if text.len() > MAX_TEXT_BYTES {
        return Some(format!(
            "is too large: the text is {} bytes, at most {MAX_TEXT_BYTES} are allowed",
            text.len()
        ));
    }
    match html {
        Some(h) if h.len() > MAX_HTML_BYTES => Some(format!(
            "is too large: the HTML is {} bytes, at most {MAX_HTML_BYTES} are allowed",
            h.len()
        )),
        _ => None,
    }
}

#[cfg(test)]
pub mod tests_support {
    use super::*;

    /// A content send of `category` to nobody yet.
    pub fn request(category: &str) -> SendRequest {
        let mut r = SendRequest::internal(Vec::new(), category);
        r.content.text = "hi".into();
        r
    }
}
