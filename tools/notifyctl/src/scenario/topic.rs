//! `topic`: a topic of `--backlog` subscribers, one send to it, and urgent sends at `--rate`
//! while its deliveries drain to the SMS sink. Measures how fast the fan-out plans (from
//! acceptance until the fan-out is `done`, read from `fanouts`) and what the urgent lane sees
//! meanwhile; the drain and the loss accounting are the backlog's, as in `urgent-under-bulk`.
//!
//! The subscribers are users written in SQL (the API registers one per call), each with an
//! SMS number, subscribed through the API 10,000 per call (that rate is reported too).

use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use super::result::Backlog;
use crate::stack::StackFile;

/// Users written per statement while seeding.
const SEED_BATCH: u64 = 100_000;
/// User ids per subscribe call (the API's most).
const PER_CALL: usize = 10_000;

/// The send to the topic, once planned.
pub(super) struct Planned {
    pub id: String,
    pub backlog: Backlog,
    /// Wall-clock seconds (Unix) of the acceptance and of the fan-out's end.
    pub window: (f64, f64),
}

fn wall() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Seeds `subscribers` users, subscribes them to a new topic, sends to it and waits until the
/// fan-out has planned every chunk.
pub(super) async fn prepare(
    http: &reqwest::Client,
    stack: &StackFile,
    notify: &sqlx::PgPool,
    subscribers: u64,
    quiet: bool,
) -> anyhow::Result<Planned> {
    anyhow::ensure!(
        !stack.users_database_url.is_empty(),
        "the stack file names no users database (written by an older `notifyctl up`): restart the stack"
    );
    let users = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&stack.users_database_url)
        .await?;
    let base = stack.url.trim_end_matches('/');
    let token = &stack.tokens.service;
    let key = format!("bench.topic.{}", wall() as u64);

    // Users, each with a valid Berlin number (+49 30 and seven digits).
    let started = Instant::now();
    let mut ids: Vec<uuid::Uuid> = Vec::with_capacity(subscribers as usize);
    while (ids.len() as u64) < subscribers {
        let n = SEED_BATCH.min(subscribers - ids.len() as u64) as i64;
        let batch: Vec<uuid::Uuid> = sqlx::query_scalar(
            "WITH u AS (INSERT INTO users (id) SELECT gen_random_uuid() FROM generate_series(1, $1)
                        RETURNING id)
             INSERT INTO contacts (user_id, phone)
             SELECT id, '+4930' || (1000000 + (row_number() OVER ()) % 9000000)::text FROM u
             RETURNING user_id",
        )
        .bind(n)
        .fetch_all(&users)
        .await?;
        ids.extend(batch);
    }
    if !quiet {
        eprintln!(
            "  topic: {} users written in {:.1} s",
            ids.len(),
            started.elapsed().as_secs_f64()
        );
    }

    let put = |path: String, body: serde_json::Value| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            let resp = http
                .put(format!("{base}{path}"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            anyhow::ensure!(status.is_success(), "PUT {path}: {status} {text}");
            anyhow::Ok(())
        }
    };
    put(
        format!("/v1/topics/{key}"),
        serde_json::json!({ "name": "Bench broadcast" }),
    )
    .await?;
    let started = Instant::now();
    let calls: Vec<&[uuid::Uuid]> = ids.chunks(PER_CALL).collect();
    for pair in calls.chunks(2) {
        futures::future::try_join_all(pair.iter().map(|c| {
            put(
                format!("/v1/topics/{key}/subscribers"),
                serde_json::json!({ "user_ids": c }),
            )
        }))
        .await?;
    }
    let subscribed_in_s = started.elapsed().as_secs_f64();
    if !quiet {
        eprintln!(
            "  topic: {} subscribed in {subscribed_in_s:.1} s ({:.0}/s, {PER_CALL} per call, 2 at a time)",
            ids.len(),
            ids.len() as f64 / subscribed_in_s
        );
    }
    drop(ids);

    // The send, then its fan-out to the end.
    let body = serde_json::json!({
        "recipients": [{ "topic": key }],
        "category": "bench",
        "channels": ["sms"],
        "content": { "text": "Broadcast: something happened." }
    });
    let accepted_at = wall();
    let t = Instant::now();
    let resp = http
        .post(format!("{base}/v1/notifications"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let accept_ms = t.elapsed().as_secs_f64() * 1000.0;
    let status = resp.status();
    let view: serde_json::Value = resp.json().await.unwrap_or_default();
    anyhow::ensure!(status.as_u16() == 202, "the topic send: {status} {view}");
    let id = view["id"].as_str().context("an id")?.to_owned();
    let uuid: uuid::Uuid = id.parse()?;
    let deadline = Instant::now() + Duration::from_secs(900);
    let (planned, planned_in_s) = loop {
        let row: Option<(String, i64, f64)> = sqlx::query_as(
            "SELECT f.state, f.planned, extract(epoch FROM f.updated_at - n.created_at)::float8
             FROM fanouts f JOIN notifications n ON n.id = f.notification_id
             WHERE f.notification_id = $1",
        )
        .bind(uuid)
        .fetch_optional(notify)
        .await?;
        let (state, planned, secs) = row.context("the topic send has no fan-out row")?;
        if !quiet {
            eprint!(
                "\r  topic: {planned} planned, {state}, {:.0} s   ",
                t.elapsed().as_secs_f64()
            );
        }
        if state == "done" {
            break (planned, secs);
        }
        anyhow::ensure!(state != "cancelled", "the fan-out was cancelled");
        anyhow::ensure!(
            Instant::now() < deadline,
            "the fan-out did not finish in 900 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !quiet {
        eprintln!(
            "\n  topic: {planned} subscribers planned in {planned_in_s:.1} s ({:.0}/s)",
            planned as f64 / planned_in_s.max(0.001)
        );
    }
    Ok(Planned {
        id,
        backlog: Backlog {
            deliveries: planned as u64,
            accepted_in_s: accept_ms / 1000.0,
            max_request_ms: accept_ms,
            subscribed_in_s: Some(subscribed_in_s),
            planned_in_s: Some(planned_in_s),
            ..Backlog::default()
        },
        window: (accepted_at, accepted_at + planned_in_s),
    })
}
