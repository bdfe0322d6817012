//! Open-loop load: requests start at a constant arrival rate whatever the answers take, and
//! each is timed from the moment it was *due*, not from when it got sent — a slow answer
//! neither delays the next request nor hides its own queueing (no coordinated omission).
//! Results are kept per second of the run and in an HdrHistogram of latencies.
//!
//! `notifyctl load` (its scenarios: [`crate::bench`]) and `notifyctl chaos` drive their traffic
//! with this.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::{sync::Semaphore, time::Instant};

/// How much load, for how long.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Requests started per second.
    pub rate: f64,
    pub duration: Duration,
    /// At most this many requests in flight; a request due while the limit is reached is not
    /// sent and counts as `skipped` (the system under test could not keep up).
    pub max_in_flight: usize,
}

/// What one request came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Accepted, with the id the system gave it.
    Accepted(String),
    /// A batch answered: the ids of its accepted notifications (each counts as accepted; the
    /// latency is the batch's).
    Batch(Vec<String>),
    /// Answered with an error status.
    Refused(u16),
    /// No answer (connection refused, timeout).
    Failed,
}

/// Posts `body` to `url` as the service: its answer when the status is `ok`, else the outcome
/// (refused with its status, or no usable answer).
async fn post<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
    ok: u16,
) -> Result<T, Outcome> {
    match http.post(url).bearer_auth(token).json(body).send().await {
        Ok(r) if r.status().as_u16() == ok => r.json::<T>().await.map_err(|_| Outcome::Failed),
        Ok(r) => Err(Outcome::Refused(r.status().as_u16())),
        Err(_) => Err(Outcome::Failed),
    }
}

/// Posts one notification request (`POST /v1/notifications`) and says what it came to: the
/// outcome every load driver here counts.
pub async fn post_notification(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
) -> Outcome {
    match post::<serde_json::Value>(http, url, token, body, 202).await {
        Ok(v) => Outcome::Accepted(v["id"].as_str().unwrap_or_default().to_owned()),
        Err(outcome) => outcome,
    }
}

/// Posts one batch (`POST /v1/notifications/batch`) and says what it came to: the ids of the
/// items accepted (202) or replayed (200).
pub async fn post_batch(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
) -> Outcome {
    match post::<api::notifications::BatchAnswer>(http, url, token, body, 200).await {
        Ok(a) => Outcome::Batch(
            a.results
                .into_iter()
                .filter(|r| r.status == 200 || r.status == 202)
                .filter_map(|r| r.id.map(|id| id.to_string()))
                .collect(),
        ),
        Err(outcome) => outcome,
    }
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Second {
    pub accepted: u64,
    pub refused: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Slowest accepted request due in this second, in milliseconds.
    pub max_ms: f64,
    /// Median and 99th percentile of the accepted requests due in this second, ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// What the run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Ids of accepted requests, with the second of the run each was due in.
    pub accepted: Vec<(String, usize)>,
    pub seconds: Vec<Second>,
    /// Latency of accepted requests, microseconds.
    pub latency: Histogram<u64>,
    /// Latency of refused requests (how fast overload is answered), microseconds.
    pub refused_latency: Histogram<u64>,
    pub refused: u64,
    pub failed: u64,
    pub skipped: u64,
    pub elapsed: Duration,
}

impl Report {
    /// Latency quantile `q` (0..1) of accepted requests, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

struct State {
    accepted: Vec<(String, usize)>,
    seconds: Vec<Second>,
    latency: Histogram<u64>,
    refused_latency: Histogram<u64>,
    /// Latencies of each second's accepted requests, microseconds.
    per_second: Vec<Histogram<u64>>,
}

/// A latency histogram in microseconds, 1 µs to 1 h, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds")
}

impl State {
    fn second(&mut self, s: usize) -> &mut Second {
        if self.seconds.len() <= s {
            self.seconds.resize(s + 1, Second::default());
        }
        &mut self.seconds[s]
    }

    fn record(&mut self, s: usize, us: u64) {
        let _ = self.latency.record(us);
        while self.per_second.len() <= s {
            self.per_second.push(histogram());
        }
        let _ = self.per_second[s].record(us);
    }

    /// The seconds with their percentiles filled in.
    fn finished_seconds(&self) -> Vec<Second> {
        let mut seconds = self.seconds.clone();
        for (s, h) in seconds.iter_mut().zip(&self.per_second) {
            if !h.is_empty() {
                s.p50_ms = h.value_at_quantile(0.5) as f64 / 1000.0;
                s.p99_ms = h.value_at_quantile(0.99) as f64 / 1000.0;
            }
        }
        seconds
    }
}

/// Runs `request(n)` for n = 0, 1, 2 … at `plan.rate` per second for `plan.duration`, then
/// waits for the requests still in flight. `progress` is called once a second with the
/// second just finished.
pub async fn run<F, Fut>(plan: Plan, request: F, mut progress: impl FnMut(usize, &Second)) -> Report
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let state = Arc::new(Mutex::new(State {
        accepted: Vec::new(),
        seconds: Vec::new(),
        latency: histogram(),
        refused_latency: histogram(),
        per_second: Vec::new(),
    }));
    let in_flight = Arc::new(Semaphore::new(plan.max_in_flight.max(1)));
    let interval = Duration::from_secs_f64(1.0 / plan.rate.max(0.001));
    let start = Instant::now();
    let mut reported = 0usize;
    let mut n: u64 = 0;
    loop {
        let due = start + interval.mul_f64(n as f64);
        if due - start >= plan.duration {
            break;
        }
        tokio::time::sleep_until(due).await;
        let second = (due - start).as_secs() as usize;
        while reported < second {
            let s = state.lock().expect("load state").second(reported).clone();
            progress(reported, &s);
            reported += 1;
        }
        match in_flight.clone().try_acquire_owned() {
            Ok(permit) => {
                let fut = request(n);
                let state = state.clone();
                tokio::spawn(async move {
                    let outcome = fut.await;
                    let took = due.elapsed();
                    let mut st = state.lock().expect("load state");
                    let accepted = match outcome {
                        Outcome::Accepted(id) => vec![id],
                        Outcome::Batch(ids) => ids,
                        Outcome::Refused(_) => {
                            let us = (took.as_micros() as u64).clamp(1, 3_600_000_000);
                            let _ = st.refused_latency.record(us);
                            st.second(second).refused += 1;
                            Vec::new()
                        }
                        Outcome::Failed => {
                            st.second(second).failed += 1;
                            Vec::new()
                        }
                    };
                    if !accepted.is_empty() {
                        let us = (took.as_micros() as u64).clamp(1, 3_600_000_000);
                        st.record(second, us);
                        let n = accepted.len() as u64;
                        st.accepted
                            .extend(accepted.into_iter().map(|id| (id, second)));
                        let s = st.second(second);
                        s.accepted += n;
                        s.max_ms = s.max_ms.max(us as f64 / 1000.0);
                    }
                    drop(permit);
                });
            }
            Err(_) => state.lock().expect("load state").second(second).skipped += 1,
        }
        n += 1;
    }
    // Everything sent has an answer (or a timeout) before the report is made.
    let _ = in_flight
        .acquire_many(plan.max_in_flight.max(1) as u32)
        .await;
    let elapsed = start.elapsed();
    let st = state.lock().expect("load state");
    let total = |f: fn(&Second) -> u64| st.seconds.iter().map(f).sum();
    Report {
        accepted: st.accepted.clone(),
        seconds: st.finished_seconds(),
        latency: st.latency.clone(),
        refused_latency: st.refused_latency.clone(),
        refused: total(|s| s.refused),
        failed: total(|s| s.failed),
        skipped: total(|s| s.skipped),
        elapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Time is paused: sleeps advance the clock at once, so the figures are exact.
    #[tokio::test(start_paused = true)]
    async fn requests_start_at_the_rate_whatever_the_answers_take() {
        // Every answer takes 300 ms; at 50/s for 1 s, 50 requests still start, and each is
        // timed from when it was due.
        let report = run(
            Plan {
                rate: 50.0,
                duration: Duration::from_secs(1),
                max_in_flight: 100,
            },
            |n| async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Outcome::Accepted(n.to_string())
            },
            |_, _| {},
        )
        .await;
        assert_eq!(report.accepted.len(), 50);
        assert!(report.quantile_ms(0.5) >= 300.0);
        // Open loop: the last request started at 0.98 s and took 0.3 s (a closed loop, one
        // after the other, would have taken 15 s).
        assert!(
            report.elapsed < Duration::from_millis(1_400),
            "{:?}",
            report.elapsed
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_over_the_in_flight_limit_are_skipped_and_counted() {
        let report = run(
            Plan {
                rate: 100.0,
                duration: Duration::from_millis(500),
                max_in_flight: 5,
            },
            |_| async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Outcome::Failed
            },
            |_, _| {},
        )
        .await;
        assert_eq!(report.failed, 5);
        assert_eq!(report.skipped, 45);
    }
}
