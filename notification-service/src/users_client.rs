//! The client of users-service's internal profile endpoint.

use std::time::Duration;

use common::{events::DeliveryProfile, problem::ApiError, telemetry::RequestContext};
use serde::Deserialize;
use uuid::Uuid;

use crate::config::UsersClientConfig;

pub struct UsersClient {
    http: reqwest::Client,
    base_url: String,
}

#[derive(Deserialize)]
struct ProfilesResponse {
    profiles: Vec<DeliveryProfile>,
}

/// Ids per call (users-service's limit).
const BATCH: usize = 1000;

impl UsersClient {
    pub fn new(cfg: &UsersClientConfig) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(cfg.timeout_ms))
                .pool_max_idle_per_host(32)
                .build()?,
            base_url: cfg.base_url.trim_end_matches('/').to_owned(),
        })
    }

    /// Profiles of `ids` (unknown ids are absent), in as few calls as the batch limit allows,
    /// authenticated with the caller's token.
    pub async fn profiles(
        &self,
        token: &str,
        ids: &[Uuid],
    ) -> Result<Vec<DeliveryProfile>, ApiError> {
        let ctx = RequestContext::current_or_new();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH) {
            let resp = self
                .http
                .post(format!("{}/internal/v1/profiles/batch", self.base_url))
                .bearer_auth(token)
                .header(common::telemetry::REQUEST_ID, &ctx.request_id)
                .header(common::telemetry::TRACEPARENT, &ctx.traceparent)
                .json(&serde_json::json!({ "user_ids": chunk }))
                .send()
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "users-service unreachable");
                    ApiError::unavailable(
                        "users-service is unavailable; nothing was accepted, retry",
                    )
                })?;
            if !resp.status().is_success() {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                tracing::warn!(%status, body, "users-service refused the profile lookup");
                return Err(ApiError::unavailable(format!(
                    "users-service answered {status} to the profile lookup; nothing was accepted"
                )));
            }
            let body: ProfilesResponse = resp.json().await.map_err(|e| {
                ApiError::internal(anyhow::anyhow!("users-service profile response: {e}"))
            })?;
            out.extend(body.profiles);
        }
        Ok(out)
    }
}
