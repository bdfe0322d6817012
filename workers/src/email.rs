//! Email over SMTP with lettre (pooled connections, concurrent sends).

use std::time::Duration;

use common::events::{DispatchMessage, Outcome};
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart, header::ContentType},
    transport::smtp::PoolConfig,
};

use crate::{
    config::EmailConfig,
    provider::{Provider, ProviderResult},
};

pub struct EmailProvider {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// Hard limit on one send, beyond lettre's socket timeouts: a server that stalls
    /// mid-session must not hold a delivery (and its consumer slot) forever.
    deadline: Duration,
    from: Mailbox,
    domain: String,
}

impl EmailProvider {
    pub fn new(cfg: &EmailConfig) -> anyhow::Result<Self> {
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("email.from `{}` is not a mailbox: {e}", cfg.from))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&cfg.smtp_url)
            .map_err(|e| anyhow::anyhow!("email.smtp_url is invalid: {e}"))?
            .timeout(Some(Duration::from_millis(cfg.timeout_ms)))
            .pool_config(PoolConfig::new().max_size(cfg.pool_size.max(1)))
            .build();
        let domain = from.email.domain().to_owned();
        Ok(Self {
            transport,
            from,
            domain,
            deadline: Duration::from_millis(cfg.timeout_ms.saturating_mul(2)),
        })
    }

    fn build(&self, msg: &DispatchMessage, message_id: &str) -> Result<Message, ProviderResult> {
        let to: Mailbox = msg.recipient.address.parse().map_err(|e| {
            ProviderResult::failed(Outcome::InvalidAddress, "invalid_address", format!("{e}"))
        })?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(msg.content.subject.clone().unwrap_or_default())
            .message_id(Some(message_id.to_owned()));
        let built = match &msg.content.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                msg.content.text.clone(),
                html.clone(),
            )),
            None => builder
                .header(ContentType::TEXT_PLAIN)
                .body(msg.content.text.clone()),
        };
        built.map_err(|e| {
            ProviderResult::failed(Outcome::PermanentFailure, "message_build", e.to_string())
        })
    }
}

impl Provider for EmailProvider {
    fn name(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, msg: &DispatchMessage) -> ProviderResult {
        let message_id = format!("<{}.{}@{}>", msg.delivery_id, msg.attempt, self.domain);
        let email = match self.build(msg, &message_id) {
            Ok(m) => m,
            Err(failed) => return failed,
        };
        let sent = match tokio::time::timeout(self.deadline, self.transport.send(email)).await {
            Ok(res) => res,
            Err(_) => {
                return ProviderResult::failed(
                    Outcome::TransientFailure,
                    "smtp_timeout",
                    format!("the SMTP server did not finish within {:?}", self.deadline),
                );
            }
        };
        match sent {
            Ok(_) => ProviderResult::sent(Some(message_id)),
            Err(e) => {
                let code = e.status().map(|c| format!("smtp_{c}")).unwrap_or_else(|| {
                    if e.is_timeout() {
                        "smtp_timeout".into()
                    } else {
                        "smtp_connection".into()
                    }
                });
                let outcome = if e.is_permanent() {
                    Outcome::PermanentFailure
                } else {
                    Outcome::TransientFailure
                };
                ProviderResult::failed(outcome, code, e.to_string())
            }
        }
    }
}
