//! The `POST /v1/notifications` body, and its validation into a [`SendRequest`] the rest of
//! the service trusts.

use chrono::{DateTime, Utc};
use common::{
    address::EmailAddress,
    events::{Channel, Content},
    problem::{ApiError, FieldError},
};
use serde::Deserialize;
use uuid::Uuid;

use crate::config::PlanningConfig;

/// Most recipients in one request.
pub const MAX_RECIPIENTS: usize = 1000;

/// The body as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    pub recipients: Vec<RecipientBody>,
    pub category: String,
    #[serde(default)]
    pub priority: Priority,
    pub channels: Option<Vec<String>>,
    pub template: Option<String>,
    pub data: Option<serde_json::Value>,
    pub content: Option<ContentBody>,
    pub send_at: Option<DateTime<Utc>>,
    pub ttl_seconds: Option<i64>,
    pub fallback: Option<Vec<String>>,
}

/// Exactly one of the fields must be set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientBody {
    pub user_id: Option<Uuid>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub device: Option<serde_json::Value>,
    pub webhook: Option<serde_json::Value>,
    pub telegram: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentBody {
    pub subject: Option<String>,
    pub text: String,
    pub html: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// A recipient after validation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Recipient {
    User(Uuid),
    Email(String),
}

impl Recipient {
    /// The recipient as the caller gave it, stored with each delivery.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Recipient::User(id) => serde_json::json!({ "user_id": id }),
            Recipient::Email(e) => serde_json::json!({ "email": e }),
        }
    }
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
}

impl SendBody {
    /// Checks every rule and reports every broken field at once (422).
    pub fn validate(
        self,
        cfg: &PlanningConfig,
        now: DateTime<Utc>,
    ) -> Result<SendRequest, ApiError> {
        let mut errors = Vec::new();
        let mut err = |field: String, msg: &str| errors.push(FieldError::new(field, msg));

        if self.recipients.is_empty() || self.recipients.len() > MAX_RECIPIENTS {
            err(
                "recipients".into(),
                "must hold between 1 and 1000 recipients",
            );
        }
        let category_ok = !self.category.is_empty()
            && self.category.len() <= 64
            && self
                .category
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if !category_ok {
            err(
                "category".into(),
                "must be 1-64 characters of a-z, 0-9, '_', '.', '-'",
            );
        }

        let mut channels = None;
        if let Some(names) = &self.channels {
            let mut parsed = Vec::new();
            for (i, name) in names.iter().enumerate() {
                match Channel::parse(name) {
                    None => err(
                        format!("channels[{i}]"),
                        "unknown channel (email, sms, push, webhook, telegram)",
                    ),
                    Some(c) if !cfg.enabled_channels.contains(&c) => err(
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

        let mut recipients = Vec::with_capacity(self.recipients.len());
        for (i, r) in self.recipients.iter().enumerate() {
            let set = [
                r.user_id.is_some(),
                r.email.is_some(),
                r.phone.is_some(),
                r.device.is_some(),
                r.webhook.is_some(),
                r.telegram.is_some(),
            ]
            .iter()
            .filter(|s| **s)
            .count();
            if set != 1 {
                err(
                    format!("recipients[{i}]"),
                    "must have exactly one of user_id, email, phone, device, webhook, telegram",
                );
                continue;
            }
            let recipient = if let Some(id) = r.user_id {
                Recipient::User(id)
            } else if let Some(email) = &r.email {
                match EmailAddress::parse(email) {
                    Ok(e) => Recipient::Email(e.as_str().to_owned()),
                    Err(msg) => {
                        err(format!("recipients[{i}].email"), &msg);
                        continue;
                    }
                }
            } else {
                err(
                    format!("recipients[{i}]"),
                    "this recipient kind's channel is not enabled in this deployment",
                );
                continue;
            };
            if let (Recipient::Email(_), Some(chs)) = (&recipient, &self.channels)
                && !chs.iter().any(|c| c == "email")
            {
                err(
                    format!("recipients[{i}].email"),
                    "an email recipient needs the email channel",
                );
            }
            if !recipients.contains(&recipient) {
                recipients.push(recipient);
            }
        }

        let template = self.template.clone();
        if let Some(t) = &template {
            let ok = !t.is_empty()
                && t.len() <= 64
                && t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
            if !ok {
                err("template".into(), "is not a template name");
            }
            if self.content.is_some() {
                err(
                    "content".into(),
                    "send either `template` (with `data`) or `content`, not both",
                );
            }
        }
        if self.data.as_ref().is_some_and(|d| !d.is_object()) {
            err("data".into(), "must be an object");
        }
        if self.fallback.is_some() {
            err("fallback".into(), "channel fallback is not supported yet");
        }
        let content = match &self.content {
            // Rendered from the template at intake (templates::apply).
            None if template.is_some() => Some(Content {
                subject: None,
                text: String::new(),
                html: None,
                data: self.data.clone(),
            }),
            None => {
                err("content".into(), "is required (or name a `template`)");
                None
            }
            Some(c) => {
                if c.text.trim().is_empty() {
                    err("content.text".into(), "must not be empty");
                }
                if c.text.len() > 100_000 || c.html.as_ref().is_some_and(|h| h.len() > 200_000) {
                    err("content".into(), "is too large");
                }
                if c.subject
                    .as_ref()
                    .is_some_and(|s| s.len() > 998 || s.contains(['\r', '\n']))
                {
                    err(
                        "content.subject".into(),
                        "must be one line of at most 998 characters",
                    );
                }
                Some(Content {
                    subject: c.subject.clone(),
                    text: c.text.clone(),
                    html: c.html.clone(),
                    data: self.data.clone(),
                })
            }
        };
        if self
            .ttl_seconds
            .is_some_and(|ttl| !(1..=30 * 86_400).contains(&ttl))
        {
            err(
                "ttl_seconds".into(),
                "must be between 1 and 2592000 (30 days)",
            );
        }
        if self
            .send_at
            .is_some_and(|at| at > now + chrono::Duration::days(365))
        {
            err("send_at".into(), "must be within one year");
        }

        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok(SendRequest {
            recipients,
            category: self.category,
            priority: self.priority,
            channels,
            content: content.expect("checked above"),
            send_at: self.send_at.filter(|at| *at > now),
            ttl_seconds: self.ttl_seconds,
            template,
            data: self.data,
            localized: None,
        })
    }
}

/// A BCP 47 language tag, loosely: `en`, `de-AT`, `zh-Hant-TW`.
pub fn valid_locale(raw: &str) -> Result<(), String> {
    let ok = !raw.is_empty()
        && raw.len() <= 35
        && raw
            .split('-')
            .all(|p| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_alphanumeric()))
        && raw.split('-').next().is_some_and(|l| {
            (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphabetic())
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{raw}` is not a language tag"))
    }
}
