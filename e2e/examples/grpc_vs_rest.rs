//! gRPC `Send` against its REST twin on a running stack (`make up`, or a release build's
//! `notifyctl up`): the same email notification, `--concurrency` callers each, REST and gRPC
//! rounds alternated so both see the same machine. Prints accepted/s and latency percentiles
//! of each and their ratio (figures: docs/benchmarks.md, "Issue 16").
//!
//!   cargo run --release -p e2e --example grpc_vs_rest -- [.dev/stack.json] [requests] [concurrency]

use std::time::{Duration, Instant};

use proto::v1::{Content, Recipient, SendRequest, notifications_client::NotificationsClient};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let stack: Value = serde_json::from_str(&std::fs::read_to_string(
        args.get(1).map_or(".dev/stack.json", String::as_str),
    )?)?;
    let requests: usize = args.get(2).map_or(Ok(4000), |a| a.parse())?;
    let concurrency: usize = args.get(3).map_or(Ok(16), |a| a.parse())?;
    let url = stack["url"].as_str().unwrap_or_default().to_owned();
    let grpc_url = stack["grpc_url"].as_str().unwrap_or_default().to_owned();
    let token = stack["tokens"]["service"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(!grpc_url.is_empty(), "stack.json has no grpc_url");
    let http = reqwest::Client::new();
    let channel = tonic::transport::Channel::from_shared(grpc_url)?
        .connect()
        .await?;

    let mut rest_all = Vec::new();
    let mut grpc_all = Vec::new();
    let (mut rest_time, mut grpc_time) = (Duration::ZERO, Duration::ZERO);
    let rounds = 4;
    for round in 0..rounds {
        let per_round = requests / rounds;
        let (lat, took) = run(per_round, concurrency, |i| {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            async move {
                let resp = http
                    .post(format!("{url}/v1/notifications"))
                    .bearer_auth(&token)
                    .json(&json!({
                        "recipients": [{ "email": format!("rest{round}-{i}@example.com") }],
                        "category": "bench",
                        "content": { "subject": "bench", "text": "grpc vs rest" }
                    }))
                    .send()
                    .await?;
                anyhow::ensure!(resp.status() == 202, "REST answered {}", resp.status());
                Ok(())
            }
        })
        .await?;
        rest_all.extend(lat);
        rest_time += took;
        let (lat, took) = run(per_round, concurrency, |i| {
            let mut client = NotificationsClient::new(channel.clone());
            let token = token.clone();
            async move {
                let mut req = tonic::Request::new(SendRequest {
                    recipients: vec![Recipient {
                        to: Some(proto::v1::recipient::To::Email(format!(
                            "grpc{round}-{i}@example.com"
                        ))),
                    }],
                    category: "bench".into(),
                    content: Some(Content {
                        subject: Some("bench".into()),
                        text: "grpc vs rest".into(),
                        html: None,
                    }),
                    ..SendRequest::default()
                });
                req.metadata_mut()
                    .insert("authorization", format!("Bearer {token}").parse()?);
                client.send(req).await?;
                Ok(())
            }
        })
        .await?;
        grpc_all.extend(lat);
        grpc_time += took;
    }
    let report = |name: &str, lat: &mut Vec<Duration>, took: Duration| {
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        let rate = lat.len() as f64 / took.as_secs_f64();
        println!(
            "{name:5} {:6} sends  {rate:8.0}/s  p50 {:6.2} ms  p99 {:6.2} ms",
            lat.len(),
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
        );
        (rate, pct(0.50), pct(0.99))
    };
    let rest = report("REST", &mut rest_all, rest_time);
    let grpc = report("gRPC", &mut grpc_all, grpc_time);
    println!(
        "gRPC / REST: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
        grpc.0 / rest.0,
        grpc.1.as_secs_f64() / rest.1.as_secs_f64(),
        grpc.2.as_secs_f64() / rest.2.as_secs_f64(),
    );
    Ok(())
}

/// `n` calls of `call(i)`, `concurrency` at a time: each one's latency, and the wall time.
async fn run<F, Fut>(
    n: usize,
    concurrency: usize,
    call: F,
) -> anyhow::Result<(Vec<Duration>, Duration)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use futures::StreamExt;
    let start = Instant::now();
    let lat: Vec<anyhow::Result<Duration>> = futures::stream::iter(0..n)
        .map(|i| {
            let fut = call(i);
            async move {
                let t = Instant::now();
                fut.await?;
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let lat = lat.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok((lat, start.elapsed()))
}
