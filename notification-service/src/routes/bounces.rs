//! Bounce and complaint reports: `POST /v1/bounces`, from a mail system's event webhook (an
//! adapter for SES-over-SNS, Postmark, Mailgun … posts this generic shape), through the bff
//! without a token. Signed per Standard Webhooks with `bounces.secret` (`common::signing`):
//! unsigned, wrongly signed or older than `bounces.tolerance_secs` → 403; the same
//! `webhook-id` again → 409 `report_replayed`; nothing changes.
//!
//! A hard bounce or a complaint suppresses the address at once; soft bounces are counted and
//! suppress it at `bounces.soft_bounce_threshold`. Planning then writes deliveries to it
//! `suppressed` (`bounced` / `complained`); admins remove entries
//! (`DELETE /v1/admin/suppressions/{id}`).

use api::notifications::{BounceAnswer, BounceReport};
use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use common::{
    address::EmailAddress,
    events::Channel,
    problem::ApiError,
    signing::{Refused, SigningKey},
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{AppState, db::suppressions as db};

/// Bounce-report settings (`[bounces]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BouncesConfig {
    /// `whsec_<base64>`; empty: the endpoint answers 404.
    pub secret: SecretString,
    /// Soft bounces that suppress an address.
    pub soft_bounce_threshold: i32,
    /// How far a report's `webhook-timestamp` may be from now.
    pub tolerance_secs: i64,
}

impl Default for BouncesConfig {
    fn default() -> Self {
        Self {
            secret: SecretString::from(""),
            soft_bounce_threshold: 3,
            tolerance_secs: 300,
        }
    }
}

impl BouncesConfig {
    /// The signing key, checked at start (`None`: no reports are taken).
    pub fn key(&self) -> anyhow::Result<Option<SigningKey>> {
        let secret = self.secret.expose_secret();
        if secret.is_empty() {
            return Ok(None);
        }
        SigningKey::from_secret(secret)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("bounces.secret: {e}"))
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/bounces", post(report))
}

async fn report(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<BounceAnswer>, ApiError> {
    let cfg = &state.bounces;
    let Some(key) = &state.bounce_key else {
        return Err(ApiError::not_found(
            "this deployment takes no bounce reports (bounces.secret is not set)",
        ));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let id = header("webhook-id");
    if let Err(why) = key.verify(
        id,
        header("webhook-timestamp"),
        header("webhook-signature"),
        &body,
        chrono::Utc::now().timestamp(),
        cfg.tolerance_secs,
    ) {
        let detail = match why {
            Refused::Unsigned => "webhook-id, webhook-timestamp and webhook-signature are required",
            Refused::Stale => "webhook-timestamp is too far from now",
            Refused::Mismatch => "webhook-signature does not match this request",
        };
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_signature",
            detail,
        ));
    }
    let id = id.unwrap_or_default();
    let report: BounceReport = common::http::parse_json(&body)?;
    let address =
        EmailAddress::parse(&report.email).map_err(|m| ApiError::invalid_field("email", m))?;
    let address = address.as_str();
    let channel = Channel::Email.as_str();
    let detail = report.detail.as_deref();

    let mut tx = state.pool.begin().await?;
    if !db::first_report(&mut tx, id).await? {
        return Err(ApiError::conflict(
            "report_replayed",
            "a report with this webhook-id was taken before; nothing changed",
        ));
    }
    let answer = match report.r#type.as_str() {
        "hard_bounce" | "complaint" => {
            let reason = if report.r#type == "complaint" {
                db::Reason::Complaint
            } else {
                db::Reason::HardBounce
            };
            db::add(&mut tx, channel, address, reason, detail).await?;
            BounceAnswer {
                suppressed: true,
                soft_bounces: None,
            }
        }
        "soft_bounce" => {
            let count = db::soft_bounce(&mut tx, channel, address).await?;
            let suppressed = count >= cfg.soft_bounce_threshold;
            if suppressed {
                db::add(&mut tx, channel, address, db::Reason::SoftBounces, detail).await?;
            }
            BounceAnswer {
                suppressed,
                soft_bounces: Some(count),
            }
        }
        _ => {
            return Err(ApiError::invalid_field(
                "type",
                "must be hard_bounce, soft_bounce or complaint",
            ));
        }
    };
    tx.commit().await?;
    tracing::info!(kind = %report.r#type, suppressed = answer.suppressed, "bounce report taken");
    Ok(Json(answer))
}
