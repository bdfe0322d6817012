//! A stand-in for every HTTP provider on the local stack (`make up`): it answers the way each
//! provider answers a success and records every request as a JSON file under
//! `<dir>/<channel>/`, so a developer sees exactly what would have been sent.
//!
//! Paths (the workers' base URLs point at `http://<addr>/<channel>`):
//! - `POST /sms/2010-04-01/Accounts/{sid}/Messages.json` (Twilio) → 201 `{sid}`
//! - `POST /telegram/bot{token}/sendMessage` → `{ok: true, result: {message_id}}`
//! - `POST /fcm/token` (OAuth, not recorded) and `POST /fcm/v1/projects/{p}/messages:send`
//! - `POST /apns/3/device/{token}` over HTTP/2 (h2c) → 200 with `apns-id`
//! - `POST /webhook/...` → 204 (point a webhook recipient at it)

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};

/// A running sink. Its server thread lives as long as the process.
#[derive(Debug, Clone)]
pub struct HttpSink {
    addr: SocketAddr,
}

struct Sink {
    /// `None`: answer without recording (benchmarks).
    dir: Option<PathBuf>,
    seq: AtomicU64,
}

impl HttpSink {
    /// Starts on `127.0.0.1:port` (0 = any free port), recording into `dir` when given.
    pub fn start(port: u16, dir: Option<&Path>) -> anyhow::Result<Self> {
        let sink = Arc::new(Sink {
            dir: dir.map(Path::to_owned),
            seq: AtomicU64::new(0),
        });
        let app = Router::new().fallback(move |method, uri, headers, body| {
            let sink = sink.clone();
            async move { sink.handle(method, uri, headers, body) }
        });
        // HTTP/1.1 for most providers, cleartext HTTP/2 for APNs.
        let addr = crate::serve::on_thread("http-sink", port, app)?;
        Ok(Self { addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL for one channel's provider.
    pub fn url(&self, channel: &str) -> String {
        format!("http://{}/{channel}", self.addr)
    }
}

impl Sink {
    fn handle(&self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let path = uri.path();
        let channel = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        if method != Method::POST {
            return StatusCode::METHOD_NOT_ALLOWED.into_response();
        }
        if path == "/fcm/token" {
            return axum::Json(serde_json::json!({
                "access_token": "dev-sink-token", "expires_in": 3600, "token_type": "Bearer"
            }))
            .into_response();
        }
        let answer = match channel {
            "sms" => (
                StatusCode::CREATED,
                axum::Json(
                    serde_json::json!({ "sid": format!("SMdev{n:08}"), "status": "queued" }),
                ),
            )
                .into_response(),
            "telegram" => {
                axum::Json(serde_json::json!({ "ok": true, "result": { "message_id": n } }))
                    .into_response()
            }
            "fcm" => {
                axum::Json(serde_json::json!({ "name": format!("projects/dev/messages/{n}") }))
                    .into_response()
            }
            "apns" => {
                let id = headers
                    .get("apns-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("00000000-0000-0000-0000-000000000000")
                    .to_owned();
                (StatusCode::OK, [("apns-id", id)]).into_response()
            }
            "webhook" => StatusCode::NO_CONTENT.into_response(),
            _ => return StatusCode::NOT_FOUND.into_response(),
        };
        self.record(channel, n, &method, &uri, &headers, &body);
        answer
    }

    fn record(
        &self,
        channel: &str,
        n: u64,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) {
        let Some(dir) = &self.dir else { return };
        let dir = dir.join(channel);
        let headers: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
                )
            })
            .collect();
        let body = serde_json::from_slice::<serde_json::Value>(body)
            .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned().into());
        let record = serde_json::json!({
            "method": method.as_str(),
            // (HTTP/2 requests carry the absolute URI.)
            "path": uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.to_string()),
            "headers": headers,
            "body": body,
        });
        let name = format!(
            "{}-{n:06}.json",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
        );
        let written = std::fs::create_dir_all(&dir).and_then(|_| {
            std::fs::write(
                dir.join(name),
                serde_json::to_vec_pretty(&record).unwrap_or_default(),
            )
        });
        if let Err(e) = written {
            tracing::warn!(error = %e, "could not record a provider request");
        }
    }
}
