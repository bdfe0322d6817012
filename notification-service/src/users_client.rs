//! The client of users-service's internal endpoints: delivery profiles, with a short Redis
//! cache (evicted by `preferences.updated` events), and topics' subscribers for fan-outs.

use std::time::Duration;

use api::{
    profiles::{DeliveryProfile, ProfilesResponse},
    topics::{Bounds, BoundsRequest, Chunk, ChunkRequest, TopicInfo},
};
use common::{
    auth::{JwtConfig, Role},
    problem::ApiError,
    redis::RedisConfig,
    telemetry::RequestContext,
};
use redis::AsyncCommands;
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::config::UsersClientConfig;

pub struct UsersClient {
    http: reqwest::Client,
    base_url: String,
    cache: Option<(redis::aio::ConnectionManager, RedisConfig, u64)>,
    service_token: Option<String>,
    jwt: JwtConfig,
}

/// Ids per call (users-service's limit).
const BATCH: usize = 1000;

impl UsersClient {
    pub fn new(
        cfg: &UsersClientConfig,
        jwt: &JwtConfig,
        cache: Option<(redis::aio::ConnectionManager, RedisConfig)>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(cfg.timeout_ms))
                .pool_max_idle_per_host(32)
                .build()?,
            base_url: cfg.base_url.trim_end_matches('/').to_owned(),
            cache: cache
                .filter(|_| cfg.cache_ttl_secs > 0)
                .map(|(c, k)| (c, k, cfg.cache_ttl_secs)),
            service_token: cfg
                .service_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned()),
            jwt: jwt.clone(),
        })
    }

    fn cache_key(keys: &RedisConfig, id: Uuid) -> String {
        keys.key(&format!("profile:{id}"))
    }

    /// This service's own token, for calls made on nobody's behalf (the welcome flow).
    pub fn service_token(&self) -> Result<String, ApiError> {
        match &self.service_token {
            Some(t) => Ok(t.clone()),
            None => common::auth::mint_hs256(&self.jwt, "notification-service", Role::Service, 300)
                .map_err(|e| {
                    ApiError::internal(
                        e.context("no users.service_token configured and cannot mint one"),
                    )
                }),
        }
    }

    /// Evicts a cached profile.
    pub async fn evict(&self, id: Uuid) -> redis::RedisResult<()> {
        if let Some((conn, keys, _)) = &self.cache {
            conn.clone().del::<_, ()>(Self::cache_key(keys, id)).await?;
        }
        Ok(())
    }

    /// Profiles of `ids` (unknown ids are absent): cached ones from Redis in one round trip,
    /// the rest from users-service in as few calls as the batch limit allows, authenticated
    /// with `token`.
    pub async fn profiles(
        &self,
        token: &str,
        ids: &[Uuid],
    ) -> Result<Vec<DeliveryProfile>, ApiError> {
        let mut out = Vec::with_capacity(ids.len());
        let mut missing: Vec<Uuid> = ids.to_vec();
        if let Some((conn, keys, _)) = &self.cache {
            let cache_keys: Vec<String> = ids.iter().map(|id| Self::cache_key(keys, *id)).collect();
            match conn
                .clone()
                .mget::<_, Vec<Option<String>>>(&cache_keys)
                .await
            {
                Ok(hits) => {
                    missing.clear();
                    for (id, hit) in ids.iter().zip(hits) {
                        match hit
                            .and_then(|json| serde_json::from_str::<DeliveryProfile>(&json).ok())
                        {
                            Some(p) => out.push(p),
                            None => missing.push(*id),
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "profile cache unavailable; asking users-service")
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let fetched = self.fetch(token, &missing).await?;
        if let Some((conn, keys, ttl)) = &self.cache {
            let mut pipe = redis::pipe();
            for p in &fetched {
                pipe.set_ex(
                    Self::cache_key(keys, p.user_id),
                    serde_json::to_string(p).unwrap_or_default(),
                    *ttl,
                )
                .ignore();
            }
            if let Err(e) = pipe.query_async::<()>(&mut conn.clone()).await {
                tracing::warn!(error = %e, "could not cache profiles");
            }
        }
        out.extend(fetched);
        Ok(out)
    }

    async fn fetch(&self, token: &str, ids: &[Uuid]) -> Result<Vec<DeliveryProfile>, ApiError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH) {
            let body: ProfilesResponse = self
                .call(
                    reqwest::Method::POST,
                    "/internal/v1/profiles/batch",
                    token,
                    Some(&serde_json::json!({ "user_ids": chunk })),
                    "the profile lookup",
                )
                .await?
                .ok_or_else(|| anyhow::anyhow!("users-service answered 404 to a profile lookup"))?;
            out.extend(body.profiles);
        }
        Ok(out)
    }

    /// A topic's key and subscriber count; `None` when no topic has this key. Never cached:
    /// a send to a topic created a moment ago must find it.
    pub async fn topic(&self, token: &str, key: &str) -> Result<Option<TopicInfo>, ApiError> {
        self.call::<(), _>(
            reqwest::Method::GET,
            &format!("/internal/v1/topics/{key}"),
            token,
            None,
            "the topic lookup",
        )
        .await
    }

    /// How a fan-out splits the topic's subscribers (`None`: the topic is gone).
    pub async fn topic_bounds(
        &self,
        token: &str,
        key: &str,
        req: &BoundsRequest,
    ) -> Result<Option<Bounds>, ApiError> {
        self.call(
            reqwest::Method::POST,
            &format!("/internal/v1/topics/{key}/bounds"),
            token,
            Some(req),
            "the fan-out split",
        )
        .await
    }

    /// One chunk of a fan-out: its subscribers' delivery profiles (not cached: each is read
    /// once per fan-out, and a million of them would only fill Redis).
    pub async fn topic_chunk(
        &self,
        token: &str,
        key: &str,
        req: &ChunkRequest,
    ) -> Result<Vec<DeliveryProfile>, ApiError> {
        let chunk: Option<Chunk> = self
            .call(
                reqwest::Method::POST,
                &format!("/internal/v1/topics/{key}/chunk"),
                token,
                Some(req),
                "the fan-out chunk",
            )
            .await?;
        Ok(chunk.map(|c| c.profiles).unwrap_or_default())
    }

    /// One call to users-service: its answer, `None` on 404, 503 when it is away or refuses.
    async fn call<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&B>,
        what: &str,
    ) -> Result<Option<T>, ApiError> {
        let ctx = RequestContext::current_or_new();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(token)
            .header(common::telemetry::REQUEST_ID, &ctx.request_id)
            .header(common::telemetry::TRACEPARENT, &ctx.traceparent);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| {
            tracing::warn!(error = %e, "users-service unreachable");
            ApiError::unavailable("users-service is unavailable; nothing was accepted, retry")
        })?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            tracing::warn!(%status, body, "users-service refused {what}");
            return Err(ApiError::unavailable(format!(
                "users-service answered {status} to {what}; nothing was accepted"
            )));
        }
        let body = resp.json().await.map_err(|e| {
            ApiError::internal(anyhow::anyhow!("users-service's answer to {what}: {e}"))
        })?;
        Ok(Some(body))
    }
}
