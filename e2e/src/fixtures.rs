//! Fixtures: a counting proxy in front of users-service, FCM settings for a fake FCM, and
//! hand-made tokens.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Forwards every request to `upstream`, counting `POST /internal/v1/profiles/batch`.
pub(crate) async fn counting_proxy(
    listener: TcpListener,
    upstream: SocketAddr,
    lookups: Arc<AtomicUsize>,
    down: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (client, lookups, down) = (client.clone(), lookups.clone(), down.clone());
        async move {
            if down.load(Ordering::SeqCst) {
                // users-service as its load balancer reports it when no instance answers.
                let mut r = axum::response::Response::new(axum::body::Body::empty());
                *r.status_mut() = axum::http::StatusCode::BAD_GATEWAY;
                return r;
            }
            let (parts, body) = req.into_parts();
            if parts.uri.path() == "/internal/v1/profiles/batch" {
                lookups.fetch_add(1, Ordering::SeqCst);
            }
            let bytes = axum::body::to_bytes(body, 64 * 1024 * 1024)
                .await
                .unwrap_or_default();
            let url = format!(
                "http://{upstream}{}",
                parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/")
            );
            let mut out = client.request(parts.method, url).body(bytes);
            for (name, value) in &parts.headers {
                if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
                    out = out.header(name, value);
                }
            }
            match out.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let body = resp.bytes().await.unwrap_or_default();
                    let mut r = axum::response::Response::new(axum::body::Body::from(body));
                    *r.status_mut() = status;
                    *r.headers_mut() = headers;
                    r
                }
                Err(_) => {
                    let mut r = axum::response::Response::new(axum::body::Body::empty());
                    *r.status_mut() = axum::http::StatusCode::BAD_GATEWAY;
                    r
                }
            }
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// SMS settings for a fake Twilio-style gateway at `base_url` (wiremock): account `AC0123`,
/// so messages go to `/2010-04-01/Accounts/AC0123/Messages.json`.
pub fn sms_config(base_url: &str) -> workers::sms::SmsConfig {
    workers::sms::SmsConfig {
        base_url: base_url.to_owned(),
        account_sid: "AC0123".into(),
        auth_token: "secret".to_owned().into(),
        from: "+15550000000".into(),
        timeout_ms: 2_000,
        ..Default::default()
    }
}

/// FCM settings for a fake FCM at `base_url` (wiremock): project `notify-e2e`, a service
/// account signed with the repository's test RSA key, the OAuth token endpoint at
/// `<base_url>/token`.
pub fn fcm_config(base_url: &str) -> workers::fcm::FcmConfig {
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "notify-e2e",
        "private_key": devkit::fixtures::RSA_PRIVATE_PEM,
        "client_email": "sender@notify-e2e.iam.gserviceaccount.com",
        "token_uri": format!("{base_url}/token"),
    });
    workers::fcm::FcmConfig {
        base_url: base_url.to_owned(),
        service_account_json: Some(key.to_string().into()),
        timeout_ms: 2_000,
        ..Default::default()
    }
}

/// base64url without padding (the JWT encoding), for hand-made tokens.
pub fn base64url(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An unsigned `alg: none` token carrying `claims`: every deployment must refuse it.
pub fn alg_none_token(claims: &impl serde::Serialize) -> String {
    format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(serde_json::to_string(claims).expect("claims").as_bytes())
    )
}
