//! What a test does with a running [`Stack`]: addresses, tokens, calls through the public
//! URL, metrics, and waiting for states (never for times).

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;

use common::auth::Role;
use devkit::kafka::DevCluster;
use serde_json::Value;

use crate::{READY_TIMEOUT, Service, Stack, http_cfg, listener};

impl Stack {
    /// The Kafka cluster of this stack (fault injection: brokers down, round-trip time).
    pub fn kafka(&self) -> &DevCluster {
        self.kafka
            .as_ref()
            .expect("the cluster lives as long as the stack")
    }

    /// Where `service` listens (health, readiness, metrics; the API for users/notifications;
    /// for the bff, its metrics port).
    pub fn addr(&self, service: Service) -> SocketAddr {
        if service == Service::Bff {
            return self.bffs[0].metrics_addr;
        }
        self.addrs
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, a)| *a)
            .expect("every service has an address")
    }

    /// `GET /metrics` of one service instance: only what that instance counted.
    pub async fn metrics(&self, service: Service) -> anyhow::Result<String> {
        let resp = self
            .http
            .get(format!("http://{}/metrics", self.addr(service)))
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "/metrics answered {}",
            resp.status()
        );
        Ok(resp.text().await?)
    }

    /// Checks that each service's `/metrics` holds its line (`name{labels} value`); the error
    /// shows the whole exposition of the first service that lacks one.
    pub async fn expect_metrics(&self, lines: &[(Service, &str)]) -> anyhow::Result<()> {
        for (service, line) in lines {
            let metrics = self.metrics(*service).await?;
            anyhow::ensure!(
                metrics.lines().any(|l| l == *line),
                "{line} missing from {service:?}'s /metrics:\n{metrics}"
            );
        }
        Ok(())
    }

    /// Starts one more workers instance with `cfg` (its address, Kafka, Redis and SMTP URL are
    /// the stack's), stopped with the stack; returns once it is ready.
    pub async fn spawn_workers(&mut self, cfg: workers::Config) -> anyhow::Result<SocketAddr> {
        let (l, addr) = listener().await;
        let cfg = workers::Config {
            http: http_cfg(addr),
            kafka: self.kafka_cfg.clone(),
            redis: self.redis.clone(),
            email: workers::config::EmailConfig {
                smtp_url: self.smtp.url(),
                timeout_ms: 5_000,
                ..cfg.email.clone()
            },
            ..cfg
        };
        let token = self.services.token();
        self.services
            .spawn("extra-workers", workers::run(cfg, l, token));
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let ready = self.http.get(format!("http://{addr}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(addr);
            }
            anyhow::ensure!(
                self.services.finished().is_none(),
                "a service exited: {:?}",
                self.services.finished()
            );
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the extra workers were not ready within {READY_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until consumer group `group` has committed past `offset` of `topic`'s partition
    /// `partition` (both unprefixed): the message there was handled and will not come back.
    pub async fn wait_consumed(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        offset: i64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let (bootstrap, group, topic) = (
            self.kafka_cfg.bootstrap_servers.clone(),
            self.kafka_cfg.topic(group),
            self.kafka_cfg.topic(topic),
        );
        tokio::task::spawn_blocking(move || {
            devkit::kafka::wait_committed(&bootstrap, &group, &topic, partition, offset, timeout)
        })
        .await?
    }

    /// The names of the stack's two databases (they are dropped with the stack).
    pub fn database_names(&self) -> Vec<String> {
        self.databases.iter().map(|d| d.name().to_owned()).collect()
    }

    /// The public URL: nginx when running, else the first bff.
    pub fn url(&self) -> String {
        match &self.nginx {
            Some(n) => format!("http://{}", n.addr),
            None => format!("http://{}", self.bffs[0].addr),
        }
    }

    /// The public gRPC endpoint (`notify.v1`): nginx's gRPC port when running, else the first
    /// bff (which serves gRPC on its REST port).
    pub fn grpc_url(&self) -> String {
        match &self.nginx {
            Some(n) => format!("http://{}", n.grpc_addr),
            None => format!("http://{}", self.bffs[0].addr),
        }
    }

    pub fn token(&self, role: Role, sub: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        self.sign(&common::auth::Claims {
            sub: sub.to_owned(),
            role,
            exp: now + 600,
            iat: now,
            nbf: None,
            iss: self.jwt.issuer.clone(),
            aud: self.jwt.audience.clone(),
        })
    }

    /// Signs arbitrary claims the way this stack's issuer would.
    pub fn sign(&self, claims: &common::auth::Claims) -> String {
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        match (&self.signing_key_pem, self.jwt.algorithm) {
            (None, _) => common::auth::mint_claims(&self.jwt, claims).expect("mint"),
            (Some(pem), common::auth::JwtAlgorithm::RS256) => {
                let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa key");
                jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).expect("sign")
            }
            (Some(pem), _) => {
                let key = EncodingKey::from_ed_pem(pem.as_bytes()).expect("ed key");
                jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &key).expect("sign")
            }
        }
    }

    /// Stops bff instance `i` gracefully and waits until it has.
    /// Stops bff `i` (its in-flight requests finish first); panics if it has not stopped
    /// within 30 s rather than hanging the test.
    pub async fn stop_bff(&mut self, i: usize) {
        let bff = &mut self.bffs[i];
        bff.shutdown.cancel();
        if let Some(t) = bff.task.take() {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("bff did not stop within 30 s")
                .ok();
        }
    }

    /// `POST /v1/users` with a service token; returns the new user's id.
    pub async fn register_user(&self, email: &str) -> anyhow::Result<uuid::Uuid> {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/users",
                Some(&self.token(Role::Service, "signup")),
                Some(serde_json::json!({ "email": email })),
            )
            .await?;
        anyhow::ensure!(status == 201, "register answered {status}: {body}");
        Ok(body["user_id"].as_str().unwrap_or_default().parse()?)
    }

    /// `SELECT count(*) …` (or any one-integer query) on the stack's `notify` database.
    pub async fn notify_count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.notify_pool)
            .await
            .expect("a one-integer query on notify")
    }

    /// One JSON call to the public URL.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.url()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, json))
    }

    /// `POST /v1/notifications` with `token`; the 202 answer, or an error naming what came
    /// instead.
    pub async fn send(&self, token: &str, body: Value) -> anyhow::Result<Value> {
        let (status, view) = self
            .call(
                reqwest::Method::POST,
                "/v1/notifications",
                Some(token),
                Some(body),
            )
            .await?;
        anyhow::ensure!(
            status == 202,
            "POST /v1/notifications answered {status}: {view}"
        );
        Ok(view)
    }

    /// Sends `body` as the service `billing` and waits until the notification is settled; its
    /// view as an admin sees it.
    pub async fn send_settled(&self, body: Value) -> anyhow::Result<Value> {
        let view = self
            .send(&self.token(Role::Service, "billing"), body)
            .await?;
        let id = view["id"].as_str().unwrap_or_default().to_owned();
        self.wait_settled(
            &id,
            &self.token(Role::Admin, "ops"),
            Duration::from_secs(20),
        )
        .await
    }

    /// Waits until notification-service no longer holds `user`'s profile in its Redis cache
    /// (after a change users-service announced): the next send reads the profile afresh.
    pub async fn wait_profile_evicted(
        &self,
        user: uuid::Uuid,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let key = self.redis.key(&format!("profile:{user}"));
        let mut redis = common::redis::connect(&self.redis).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let cached: bool = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut redis)
                .await?;
            if !cached {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{user}'s cached profile was not evicted within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every delivery of the notification `view` (an answer of `POST` or `GET
    /// /v1/notifications/{id}`): its inline ones, then the pages of
    /// `GET /v1/notifications/{id}/deliveries` from its `deliveries_next_cursor`.
    pub async fn all_deliveries(&self, token: &str, view: &Value) -> anyhow::Result<Vec<Value>> {
        let id = view["id"]
            .as_str()
            .context("a notification view has an id")?;
        let mut all = view["deliveries"]
            .as_array()
            .context("a notification view has deliveries")?
            .clone();
        let mut cursor = view["deliveries_next_cursor"].as_str().map(str::to_owned);
        while let Some(c) = cursor {
            let (status, page) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/notifications/{id}/deliveries?limit=500&cursor={c}"),
                    Some(token),
                    None,
                )
                .await?;
            anyhow::ensure!(status == 200, "GET deliveries answered {status}: {page}");
            let items = page["items"].as_array().context("a page has items")?;
            anyhow::ensure!(!items.is_empty(), "an empty page with a cursor: {page}");
            all.extend(items.iter().cloned());
            cursor = page["next_cursor"].as_str().map(str::to_owned);
        }
        Ok(all)
    }

    /// Polls `GET /v1/notifications/{id}` until every delivery has left the open states and
    /// returns that view; an error (with the last view) if `timeout` passes first.
    pub async fn wait_settled(
        &self,
        id: &str,
        token: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (status, body) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/notifications/{id}"),
                    Some(token),
                    None,
                )
                .await?;
            anyhow::ensure!(status == 200, "GET answered {status}: {body}");
            // Every delivery is counted, however many are inline.
            let counts = &body["delivery_counts"]["by_status"];
            let open = ["pending", "queued", "sending", "retrying"]
                .iter()
                .any(|s| counts[s].as_i64().unwrap_or(0) > 0)
                || !counts.is_object();
            if !open {
                return Ok(body);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "notification {id} not settled within {timeout:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
