//! Delivery receipts from providers: `POST /v1/receipts/twilio` (Twilio's `StatusCallback`,
//! reached through the bff without a token). The request is believed only when its
//! `X-Twilio-Signature` verifies: HMAC-SHA1 with the account's auth token over the URL Twilio
//! was given (`receipts.twilio.url`, as it is outside every proxy) followed by each form
//! parameter's name and value in name order, base64. Unsigned or wrongly signed → 403
//! `invalid_signature`; the same receipt twice → 409 `receipt_replayed`; nothing changes.
//!
//! `delivered` moves a `sent` delivery to `delivered`; `undelivered` and `failed` to
//! `undelivered`; the intermediate statuses (`queued`, `sending`, `sent`, …) answer 204.

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::Engine;
use common::problem::ApiError;
use delivery::{Status, receipts::Receipt};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::AppState;

/// Receipt settings (`[receipts]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReceiptsConfig {
    /// Twilio's status callbacks; absent: the endpoint answers 404.
    pub twilio: Option<TwilioReceipts>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TwilioReceipts {
    /// The account's auth token (the key of the signature).
    pub auth_token: SecretString,
    /// The callback URL exactly as Twilio calls it (the workers' `sms.status_callback_url`).
    pub url: String,
}

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/receipts/twilio", post(twilio))
}

pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// Twilio's signature of a form POST to `url`.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

async fn twilio(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(cfg) = state.receipts.twilio.as_ref() else {
        return Err(ApiError::not_found(
            "this deployment takes no Twilio receipts (receipts.twilio is not set)",
        ));
    };
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let given = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let expected = twilio_signature(cfg.auth_token.expose_secret(), &cfg.url, &params);
    if given.is_empty() || !common::signing::constant_time_eq(given.as_bytes(), expected.as_bytes())
    {
        state.metrics.receipt("twilio", "invalid_signature");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_signature",
            "the X-Twilio-Signature header is missing or does not match this request",
        ));
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some(sid), Some(status)) = (param("MessageSid"), param("MessageStatus")) else {
        return Err(ApiError::invalid_field(
            "MessageSid",
            "a status callback names MessageSid and MessageStatus",
        ));
    };
    let status = match status {
        "delivered" => Status::Delivered,
        "undelivered" | "failed" => Status::Undelivered,
        _ => return Ok(StatusCode::NO_CONTENT.into_response()),
    };
    let mut tx = state.pool.begin().await?;
    let receipt = delivery::receipts::record(
        &mut tx,
        common::events::SMS_GATEWAY_PROVIDER,
        sid,
        status,
        param("ErrorCode"),
    )
    .await?;
    tx.commit().await?;
    let (outcome, delivery_id) = match receipt {
        Receipt::Replayed => {
            state.metrics.receipt("twilio", "replayed");
            return Err(ApiError::conflict(
                "receipt_replayed",
                "this receipt was received before; nothing changed",
            ));
        }
        Receipt::Applied { delivery_id } => ("applied", Some(delivery_id)),
        Receipt::Ignored { delivery_id } => ("ignored", Some(delivery_id)),
        Receipt::Unmatched => ("unmatched", None),
    };
    state.metrics.receipt("twilio", outcome);
    Ok(Json(api::notifications::ReceiptAnswer {
        outcome: outcome.to_owned(),
        delivery_id,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Twilio's documented example (security docs): this token, URL and parameters sign to
    /// this value.
    #[test]
    fn the_signature_matches_twilios_example() {
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            twilio_signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }
}
