//! The operator's commands: `send`, `status`, `dead-letters`, `stats`, `tail` — the public
//! API of any deployment (`--url` / `NOTIFY_URL`, `--token` / `NOTIFY_TOKEN`), or of the stack
//! `make up` started (`.dev/stack.json`) when neither is given.
//!
//! Human tables by default, `--json` for scripts (one JSON document, or one per line for the
//! commands that follow something). A problem+json answer becomes an error naming its
//! `type`, detail and fields; the exit status is non-zero.

pub mod dead_letters;
pub mod send;
pub mod send_file;
pub mod stats;
pub mod status;
pub mod table;
pub mod tail;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};

use crate::stack::StackFile;

/// Where and as whom: shared by every operator command.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// The deployment's public URL (nginx or a bff), e.g. https://notify.example.com.
    #[arg(long, env = "NOTIFY_URL")]
    pub url: Option<String>,
    /// A bearer token (JWT) for it: a service's to send, an admin's for the rest.
    #[arg(long, env = "NOTIFY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Without --url: the stack `make up` started.
    #[arg(long, default_value = ".dev/stack.json")]
    pub stack: PathBuf,
    /// JSON for scripts instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Which of the dev stack's tokens a command uses when no `--token` is given.
#[derive(Debug, Clone, Copy)]
pub enum As {
    Service,
    Admin,
}

/// The API of one deployment, as one principal.
pub struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Target {
    pub fn client(&self, role: As) -> anyhow::Result<Client> {
        let stack = || {
            StackFile::read(&self.stack).context(
                "give --url and --token (or NOTIFY_URL and NOTIFY_TOKEN) for a deployment, \
                 or run `make up` for the local one",
            )
        };
        let url = match &self.url {
            Some(u) => u.clone(),
            None => stack()?.url,
        };
        let token = match &self.token {
            Some(t) => t.clone(),
            None if self.url.is_some() => anyhow::bail!(
                "--url needs a token: --token or NOTIFY_TOKEN (an admin's, or a service's to send)"
            ),
            None => {
                let s = stack()?;
                match role {
                    As::Service => s.tokens.service,
                    As::Admin => s.tokens.admin,
                }
            }
        };
        Ok(Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .connect_timeout(Duration::from_secs(5))
                .build()?,
            url: url.trim_end_matches('/').to_owned(),
            token,
        })
    }
}

impl Client {
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(self.http.get(format!("{}{path}", self.url)), path)
            .await
            .map(|(t, _)| t)
    }

    /// The answer and its `X-Request-Id` (what the trace and every log line carry).
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(T, Option<String>)> {
        let mut req = self.http.post(format!("{}{path}", self.url)).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.call(req, path).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        path: &str,
    ) -> anyhow::Result<(T, Option<String>)> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| ApiFailure::Unreachable(format!("{}: {e}", self.url)))?;
        let status = resp.status();
        let request_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .bytes()
            .await
            .map_err(|e| ApiFailure::Unreachable(format!("{}: {e}", self.url)))?;
        if !status.is_success() {
            return Err(ApiFailure::Refused(problem_text(status.as_u16(), &body)).into());
        }
        let answer = serde_json::from_slice(&body)
            .with_context(|| format!("{path}: an answer this notifyctl does not understand"))?;
        Ok((answer, request_id))
    }
}

/// Why a call failed: the network (worth retrying when following) or the API's answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiFailure {
    #[error("cannot reach {0}")]
    Unreachable(String),
    #[error("{0}")]
    Refused(String),
}

/// `403 forbidden: detail (request …)` and one line per invalid field.
fn problem_text(status: u16, body: &[u8]) -> String {
    match serde_json::from_slice::<common::problem::Problem>(body) {
        Ok(p) => {
            let mut s = format!("{status} {}: {}", p.kind, p.detail);
            if let Some(id) = &p.request_id {
                s.push_str(&format!(" (request {id})"));
            }
            for e in &p.errors {
                s.push_str(&format!("\n  {}: {}", e.field, e.message));
            }
            if status == 401 {
                s.push_str("\n  (pass a valid token with --token or NOTIFY_TOKEN)");
            }
            s
        }
        Err(_) => format!(
            "{status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ),
    }
}

/// A current-thread runtime for one command.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

/// A point in time on the command line: RFC 3339, or an age such as `90s`, `15m`, `2h`, `7d`.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    parse_age(s)
        .map(|age| Utc::now() - age)
        .ok_or_else(|| format!("{s:?} is neither RFC 3339 nor an age like 90s, 15m, 2h, 7d"))
}

fn parse_age(s: &str) -> Option<chrono::Duration> {
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    if n < 0 {
        return None;
    }
    match unit {
        's' => chrono::Duration::try_seconds(n),
        'm' => chrono::Duration::try_minutes(n),
        'h' => chrono::Duration::try_hours(n),
        'd' => chrono::Duration::try_days(n),
        _ => None,
    }
}

/// `key=value&…` with each value percent-encoded; `None`s left out.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = String::new();
    for (k, v) in pairs {
        if let Some(v) = v {
            q.push(if q.is_empty() { '?' } else { '&' });
            q.push_str(k);
            q.push('=');
            q.push_str(&percent(v));
        }
    }
    q
}

fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A time as tables show it: UTC, to the second.
pub fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A delivery's address as a table shows it.
pub fn address_cell(d: &api::notifications::DeliveryView) -> String {
    table::shorten(d.address.as_deref().unwrap_or("-"), 40)
}

/// The provider of a delivery's last attempt, empty before the first.
pub fn provider_cell(d: &api::notifications::DeliveryView) -> String {
    d.last_attempt
        .as_ref()
        .map_or_else(String::new, |a| a.provider.clone())
}

/// `last_error` of a delivery as `code: message`, shortened for a table.
pub fn error_text(e: Option<&serde_json::Value>) -> String {
    let Some(e) = e else { return String::new() };
    let code = e["code"].as_str().unwrap_or("");
    let message = e["message"].as_str().unwrap_or("");
    table::shorten(&format!("{code}: {message}"), 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_an_age() {
        assert_eq!(
            parse_time("2026-01-02T03:04:05Z").unwrap().to_rfc3339(),
            "2026-01-02T03:04:05+00:00"
        );
        let ago = Utc::now() - parse_time("15m").unwrap();
        assert!((ago.num_seconds() - 900).abs() < 5, "{ago}");
        for bad in ["", "m", "-5m", "5y", "yesterday", "5é"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queries_leave_out_what_is_not_given_and_encode_the_rest() {
        assert_eq!(query(&[("a", None)]), "");
        assert_eq!(
            query(&[
                ("since", Some("2026-01-01T00:00:00+01:00".into())),
                ("x", None),
                ("to", Some("a b@c".into()))
            ]),
            "?since=2026-01-01T00%3A00%3A00%2B01%3A00&to=a%20b%40c"
        );
    }

    #[test]
    fn problems_read_as_one_line_per_field() {
        let body = br#"{"type":"validation_failed","title":"t","status":422,"detail":"bad","request_id":"r1","errors":[{"field":"limit","message":"must be from 1 to 200"}]}"#;
        assert_eq!(
            problem_text(422, body),
            "422 validation_failed: bad (request r1)\n  limit: must be from 1 to 200"
        );
        assert_eq!(problem_text(502, b"<html>"), "502: <html>");
    }
}
