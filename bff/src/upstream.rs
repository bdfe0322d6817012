//! Forwarding a request to the service that owns it, with the caller's token, request id and
//! trace context. The upstream's status, problem+json errors and body pass through unchanged.

use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::Response,
};
use common::{auth::Principal, problem::ApiError, telemetry::RequestContext};

use crate::config::UpstreamsConfig;

/// Which service.
#[derive(Debug, Clone, Copy)]
pub enum Service {
    Users,
    Notifications,
}

pub struct Upstreams {
    http: reqwest::Client,
    users: String,
    notifications: String,
}

/// Request headers the services need besides auth and tracing (a provider's signature of a
/// receipt is verified by the service that owns the key).
const PASSED_REQUEST_HEADERS: [header::HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::HeaderName::from_static("x-twilio-signature"),
    header::HeaderName::from_static("webhook-id"),
    header::HeaderName::from_static("webhook-timestamp"),
    header::HeaderName::from_static("webhook-signature"),
    header::HeaderName::from_static("x-telegram-bot-api-secret-token"),
];
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Response headers passed back to the caller.
const PASSED_RESPONSE_HEADERS: [header::HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::RETRY_AFTER,
    header::LOCATION,
    header::HeaderName::from_static(common::idempotency::REPLAYED),
];

impl Upstreams {
    pub fn new(cfg: &UpstreamsConfig) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(cfg.timeout_ms))
                .pool_max_idle_per_host(64)
                .build()?,
            users: cfg.users_url.trim_end_matches('/').to_owned(),
            notifications: cfg.notifications_url.trim_end_matches('/').to_owned(),
        })
    }

    fn base(&self, service: Service) -> &str {
        match service {
            Service::Users => &self.users,
            Service::Notifications => &self.notifications,
        }
    }

    /// `GET {base}/healthz`, for readiness.
    pub async fn ping(&self, service: Service) -> Result<(), String> {
        match self
            .http
            .get(format!("{}/healthz", self.base(service)))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("answered {}", r.status())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// `GET path` as the caller; the status and the JSON body (for aggregation).
    pub async fn get_json(
        &self,
        service: Service,
        path: &str,
        principal: &Principal,
    ) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let resp = self
            .forward(
                service,
                Method::GET,
                path,
                principal,
                &HeaderMap::new(),
                Bytes::new(),
            )
            .await?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!("reading an upstream body: {e}")))?;
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok((status, json))
    }

    /// Forwards `method path_and_query` with `body` and the caller's token, and returns the
    /// upstream's answer.
    pub async fn forward(
        &self,
        service: Service,
        method: Method,
        path_and_query: &str,
        principal: &Principal,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response, ApiError> {
        self.forward_as(
            service,
            method,
            path_and_query,
            Some(principal),
            headers,
            body,
        )
        .await
    }

    /// [`Self::forward`] without a token: for callers that prove themselves to the service
    /// some other way (a provider's signed receipt).
    pub async fn forward_anonymous(
        &self,
        service: Service,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response, ApiError> {
        self.forward_as(service, method, path_and_query, None, headers, body)
            .await
    }

    async fn forward_as(
        &self,
        service: Service,
        method: Method,
        path_and_query: &str,
        principal: Option<&Principal>,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response, ApiError> {
        let ctx = RequestContext::current_or_new();
        let writes = method != Method::GET && method != Method::HEAD;
        let mut req = self
            .http
            .request(method, format!("{}{path_and_query}", self.base(service)));
        if let Some(principal) = principal {
            req = req.bearer_auth(&principal.token);
        }
        req = req
            .header(common::telemetry::REQUEST_ID, &ctx.request_id)
            .header(common::telemetry::TRACEPARENT, &ctx.traceparent);
        for name in PASSED_REQUEST_HEADERS
            .iter()
            .chain([&header::HeaderName::from_static(IDEMPOTENCY_KEY)])
        {
            if let Some(v) = headers.get(name) {
                req = req.header(name, v);
            }
        }
        let resp = req.body(body).send().await.map_err(|e| {
            tracing::warn!(error = %e, ?service, "upstream unreachable");
            if e.is_timeout() && writes {
                // The service may have done it and not answered in time: say so.
                ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "the service did not answer in time; the request may have been carried out — retry with the same Idempotency-Key to get its result",
                )
            } else {
                ApiError::unavailable("the service behind this endpoint is unavailable; retry")
            }
        })?;
        let status = resp.status();
        let mut out_headers = HeaderMap::new();
        for name in PASSED_RESPONSE_HEADERS {
            if let Some(v) = resp.headers().get(&name) {
                out_headers.insert(name, v.clone());
            }
        }
        let bytes = read_capped(resp, MAX_ANSWER_BYTES).await.map_err(|e| match e {
            Capped::TooLarge => {
                tracing::error!(?service, path = path_and_query, limit = MAX_ANSWER_BYTES, "upstream answer over the bff's cap");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_answer_too_large",
                    if writes {
                        "the service's answer is larger than the bff passes on; the request may have been carried out — retry with the same Idempotency-Key"
                    } else {
                        "the service's answer is larger than the bff passes on: ask for less (a smaller `limit`)"
                    },
                )
            }
            Capped::Cut(e) => {
                tracing::warn!(error = %e, ?service, "upstream response cut off");
                ApiError::unavailable(
                    "the service behind this endpoint did not finish its answer; retry",
                )
            }
        })?;
        let mut out = Response::new(Body::from(bytes));
        *out.status_mut() = status;
        *out.headers_mut() = out_headers;
        if !out.headers().contains_key(header::CONTENT_TYPE) {
            out.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        Ok(out)
    }
}

/// The largest answer the bff buffers from a service and passes on (4 MiB). Every service
/// answer is bounded well below it (lists carry counts, deliveries come in pages); the cap
/// keeps a bug or a future route from holding unbounded memory per request in the bff.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

enum Capped {
    TooLarge,
    Cut(reqwest::Error),
}

/// The body of `resp`, or [`Capped::TooLarge`] as soon as it passes `limit` bytes (by its
/// `Content-Length`, or while reading): never more than `limit` buffered.
async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Bytes, Capped> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(Capped::TooLarge);
    }
    let mut buf = Vec::with_capacity(resp.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(Capped::Cut)? {
        if buf.len() + chunk.len() > limit {
            return Err(Capped::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}
