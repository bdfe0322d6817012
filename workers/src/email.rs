//! Email over SMTP with lettre (pooled connections with `TCP_NODELAY`, concurrent sends:
//! [`crate::smtp_pool`]).
//!
//! Header injection is impossible by construction: the recipient must parse as one mailbox
//! (a CR/LF makes it `invalid_address`), control characters in the subject are replaced by
//! spaces before lettre encodes it, and the unsubscribe URL is re-serialised by `url` (which
//! drops tabs and newlines) and must be `https:` or `mailto:`.

use std::time::Duration;

use common::events::{DispatchMessage, Outcome};
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{
        Mailbox, MultiPart,
        header::{ContentType, Header, HeaderName, HeaderValue},
    },
    transport::smtp::{
        PoolConfig,
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
        extension::ClientId,
    },
};

use crate::{
    config::EmailConfig,
    provider::{Provider, ProviderResult},
};

/// How messages reach the server.
enum Transport {
    /// `smtp://` (plain or STARTTLS): sockets with `TCP_NODELAY`.
    Nodelay(Box<crate::smtp_pool::NodelayPool>),
    /// `smtps://` (TLS from the first byte): lettre's own pooled transport, whose sockets keep
    /// Nagle's algorithm (≥ 40 ms a message on a quiet connection; docs/benchmarks.md).
    Lettre(AsyncSmtpTransport<Tokio1Executor>),
}

pub struct EmailProvider {
    /// `smtp`, or `smtp_secondary` for the second relay.
    name: &'static str,
    transport: Transport,
    /// Hard limit on one send, beyond lettre's socket timeouts: a server that stalls
    /// mid-session must not hold a delivery (and its consumer slot) forever.
    deadline: Duration,
    from: Mailbox,
    domain: String,
}

impl EmailProvider {
    /// The configured relays in order: `smtp_url`, then `secondary_smtp_url` if set.
    pub fn relays(cfg: &EmailConfig) -> anyhow::Result<Vec<Self>> {
        let mut relays = vec![Self::new(cfg)?];
        if let Some(url) = &cfg.secondary_smtp_url {
            let secondary = EmailConfig {
                smtp_url: url.clone(),
                ..cfg.clone()
            };
            relays.push(Self {
                name: "smtp_secondary",
                ..Self::new(&secondary)?
            });
        }
        Ok(relays)
    }

    pub fn new(cfg: &EmailConfig) -> anyhow::Result<Self> {
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("email.from `{}` is not a mailbox: {e}", cfg.from))?;
        let ca_tls = match &cfg.tls_ca_path {
            Some(ca) => Some(tls_with_ca(&cfg.smtp_url, ca)?),
            None => None,
        };
        let url = url::Url::parse(&cfg.smtp_url)
            .map_err(|e| anyhow::anyhow!("email.smtp_url is invalid: {e}"))?;
        let transport = if url.scheme() == "smtp" {
            Transport::Nodelay(Box::new(nodelay_pool(&url, cfg, ca_tls)?))
        } else {
            let mut lettre = AsyncSmtpTransport::<Tokio1Executor>::from_url(&cfg.smtp_url)
                .map_err(|e| anyhow::anyhow!("email.smtp_url is invalid: {e}"))?;
            if let Some(tls) = ca_tls {
                lettre = lettre.tls(tls);
            }
            Transport::Lettre(
                lettre
                    .timeout(Some(Duration::from_millis(cfg.timeout_ms)))
                    .pool_config(PoolConfig::new().max_size(cfg.pool_size.max(1)))
                    .build(),
            )
        };
        let domain = from.email.domain().to_owned();
        Ok(Self {
            name: "smtp",
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
        let subject: String = msg
            .content
            .subject
            .as_deref()
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id.to_owned()));
        if let Some(url) = unsubscribe_url(msg) {
            // RFC 8058 one-click unsubscribe for https links.
            if url.scheme() == "https" {
                builder = builder.header(ListUnsubscribePost);
            }
            builder = builder.header(ListUnsubscribe(format!("<{url}>")));
        }
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

/// The pool for an `smtp://` URL, read the way lettre reads it: port 25, or 587 with
/// `?tls=required|opportunistic` (STARTTLS); credentials from the user info; the path as the
/// EHLO name.
fn nodelay_pool(
    url: &url::Url,
    cfg: &EmailConfig,
    ca_tls: Option<Tls>,
) -> anyhow::Result<crate::smtp_pool::NodelayPool> {
    let host = url
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("email.smtp_url has no host"))?
        .to_owned();
    let mode = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let tls = match (ca_tls, mode.as_deref()) {
        (Some(tls), _) => tls,
        (None, None) => Tls::None,
        (None, Some("required")) => Tls::Required(TlsParameters::new(host.clone())?),
        (None, Some("opportunistic")) => Tls::Opportunistic(TlsParameters::new(host.clone())?),
        (None, Some(other)) => anyhow::bail!("email.smtp_url: unknown tls={other}"),
    };
    let port = url.port().unwrap_or(if mode.is_some() { 587 } else { 25 });
    let decode = |s: &str| -> anyhow::Result<String> {
        Ok(percent_encoding::percent_decode_str(s)
            .decode_utf8()?
            .into_owned())
    };
    let credentials = match url.password() {
        Some(password) => Some(Credentials::new(decode(url.username())?, decode(password)?)),
        None => None,
    };
    let hello = if url.path().len() > 1 {
        ClientId::Domain(url.path().trim_matches('/').to_owned())
    } else {
        ClientId::default()
    };
    Ok(crate::smtp_pool::NodelayPool::new(
        host,
        port,
        tls,
        credentials,
        hello,
        Duration::from_millis(cfg.timeout_ms),
        cfg.pool_size as usize,
    ))
}

/// The URL's TLS mode (`smtps:` wrapper, `?tls=required` STARTTLS, `?tls=opportunistic`)
/// with `ca` trusted in addition to the public roots.
fn tls_with_ca(smtp_url: &str, ca: &std::path::Path) -> anyhow::Result<Tls> {
    let url = url::Url::parse(smtp_url)?;
    let host = url
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("email.smtp_url has no host"))?;
    let pem = std::fs::read(ca)
        .map_err(|e| anyhow::anyhow!("email.tls_ca_path {}: {e}", ca.display()))?;
    let params = TlsParameters::builder(host.to_owned())
        .add_root_certificate(
            Certificate::from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("email.tls_ca_path is not a PEM certificate: {e}"))?,
        )
        .build_rustls()?;
    let mode = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    Ok(match (url.scheme(), mode.as_deref()) {
        ("smtps", _) => Tls::Wrapper(params),
        (_, Some("required")) => Tls::Required(params),
        (_, Some("opportunistic")) => Tls::Opportunistic(params),
        _ => anyhow::bail!(
            "email.tls_ca_path needs a TLS URL (smtps://, or smtp://...?tls=required|opportunistic)"
        ),
    })
}

/// `data.unsubscribe_url` when it is an `https:` or `mailto:` URL.
fn unsubscribe_url(msg: &DispatchMessage) -> Option<url::Url> {
    let raw = msg
        .content
        .data
        .as_ref()?
        .get("unsubscribe_url")?
        .as_str()?;
    let url = url::Url::parse(raw).ok()?;
    matches!(url.scheme(), "https" | "mailto").then_some(url)
}

/// `List-Unsubscribe: <url>` (RFC 2369).
#[derive(Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).
#[derive(Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_owned())
    }
}

impl Provider for EmailProvider {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn send(&self, msg: &DispatchMessage) -> ProviderResult {
        let message_id = format!("<{}.{}@{}>", msg.delivery_id, msg.attempt, self.domain);
        let email = match self.build(msg, &message_id) {
            Ok(m) => m,
            Err(failed) => return failed,
        };
        let sending = async {
            match &self.transport {
                Transport::Nodelay(pool) => pool.send(email.envelope(), &email.formatted()).await,
                Transport::Lettre(t) => t
                    .send(email)
                    .await
                    .map(|_| ())
                    .map_err(crate::smtp_pool::SendError::Smtp),
            }
        };
        let sent = match tokio::time::timeout(self.deadline, sending).await {
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
            Err(crate::smtp_pool::SendError::Connect(e)) => ProviderResult::failed(
                Outcome::TransientFailure,
                if e.kind() == std::io::ErrorKind::TimedOut {
                    "smtp_timeout"
                } else {
                    "smtp_connection"
                },
                format!("connecting to the SMTP server: {e}"),
            ),
            Err(crate::smtp_pool::SendError::Smtp(e)) => {
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
