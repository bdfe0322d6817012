//! The in-flight limit of a service's API, adapted to latency: overload is answered at once
//! (503 `overloaded` with `Retry-After`), not queued until callers time out.
//!
//! A fixed limit (`http.max_in_flight`, 1,024) is either too high — requests pile up inside,
//! each waiting longer for the database, and every answer gets slow — or too low for a fast
//! instance. Here the limit moves (AIMD): every `window_ms`, if more than a tenth of the
//! requests finished in that window took longer than `latency_target_ms`, it shrinks by a
//! fifth (never below `min_limit`); if they were within the target and the requests in flight
//! came near the limit, it grows by an eighth (never above `max_in_flight`). A request over the
//! limit is refused before any work is done, so the ones let in keep their latency.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// `[http.concurrency]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ConcurrencyConfig {
    /// Adapt the limit to latency; off: `max_in_flight` is a fixed limit.
    pub adaptive: bool,
    /// The latency a request should finish within (the slowest tenth may take longer).
    pub latency_target_ms: u64,
    /// The limit never goes below this many requests.
    pub min_limit: usize,
    /// Where the limit starts (at most `max_in_flight`).
    pub initial_limit: usize,
    /// How often the limit is adjusted.
    pub window_ms: u64,
}

impl Default for ConcurrencyConfig {
    fn default() -> Self {
        Self {
            adaptive: true,
            latency_target_ms: 250,
            min_limit: 16,
            // The ceiling: a fresh instance takes what a fixed limit would, and the limit
            // comes down within seconds of sustained slowness (×0.8 per window).
            initial_limit: 1024,
            window_ms: 200,
        }
    }
}

/// Fewer samples than this in a window: not enough to judge; the window goes on.
const MIN_SAMPLES: u32 = 8;

struct Window {
    started: Instant,
    samples: u32,
    over_target: u32,
    peak_in_flight: usize,
}

/// The limit; cheap to share (`Arc`).
pub struct ConcurrencyLimit {
    limit: AtomicUsize,
    /// Shows `limit` on `/metrics`.
    gauge: crate::metrics::Gauge,
    in_flight: AtomicUsize,
    max: usize,
    cfg: ConcurrencyConfig,
    target: Duration,
    window: Mutex<Window>,
}

/// A request's place under the limit; given back when dropped.
pub struct Permit {
    owner: Arc<ConcurrencyLimit>,
    started: Instant,
}

impl ConcurrencyLimit {
    /// `max`: `http.max_in_flight`, the ceiling (and the fixed limit when not adaptive);
    /// `gauge` shows the limit.
    pub fn new(max: usize, cfg: &ConcurrencyConfig, gauge: crate::metrics::Gauge) -> Arc<Self> {
        let max = max.max(1);
        let min = cfg.min_limit.clamp(1, max);
        let initial = if cfg.adaptive {
            cfg.initial_limit.clamp(min, max)
        } else {
            max
        };
        gauge.set(initial as i64);
        Arc::new(Self {
            limit: AtomicUsize::new(initial),
            gauge,
            in_flight: AtomicUsize::new(0),
            max,
            cfg: ConcurrencyConfig {
                min_limit: min,
                ..cfg.clone()
            },
            target: Duration::from_millis(cfg.latency_target_ms.max(1)),
            window: Mutex::new(Window {
                started: Instant::now(),
                samples: 0,
                over_target: 0,
                peak_in_flight: 0,
            }),
        })
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// A place, or `None` when the limit is reached (the request is to be refused).
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let limit = self.limit();
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            if current >= limit {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        if self.cfg.adaptive {
            let mut w = self.window.lock().expect("limit window");
            w.peak_in_flight = w.peak_in_flight.max(current + 1);
        }
        Some(Permit {
            owner: self.clone(),
            started: Instant::now(),
        })
    }

    /// Records a finished request's latency and, once a window is over, adjusts the limit.
    fn record(&self, took: Duration, now: Instant) {
        if !self.cfg.adaptive {
            return;
        }
        let mut w = self.window.lock().expect("limit window");
        w.samples += 1;
        if took > self.target {
            w.over_target += 1;
        }
        if now.duration_since(w.started) < Duration::from_millis(self.cfg.window_ms)
            || w.samples < MIN_SAMPLES
        {
            return;
        }
        let limit = self.limit();
        let next = if w.over_target * 10 > w.samples {
            (limit - limit / 5).max(self.cfg.min_limit)
        } else if w.peak_in_flight * 10 >= limit * 8 {
            (limit + (limit / 8).max(1)).min(self.max)
        } else {
            limit
        };
        if next != limit {
            tracing::debug!(
                from = limit,
                to = next,
                samples = w.samples,
                over = w.over_target,
                "concurrency limit adjusted"
            );
        }
        self.limit.store(next, Ordering::Relaxed);
        self.gauge.set(next as i64);
        *w = Window {
            started: now,
            samples: 0,
            over_target: 0,
            peak_in_flight: self.in_flight.load(Ordering::Relaxed),
        };
    }
}

impl Permit {
    /// The request finished (answered): its latency counts.
    pub fn finish(self) {
        let now = Instant::now();
        self.owner.record(now.duration_since(self.started), now);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.owner.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ConcurrencyConfig {
        ConcurrencyConfig {
            adaptive: true,
            latency_target_ms: 100,
            min_limit: 4,
            initial_limit: 40,
            window_ms: 200,
        }
    }

    /// Holds `n` places, then finishes them all with latency `took`, a window's length apart.
    fn window(l: &Arc<ConcurrencyLimit>, n: usize, took: Duration, at: Instant) -> Vec<Permit> {
        let permits: Vec<Permit> = (0..n).filter_map(|_| l.try_acquire()).collect();
        for p in &permits {
            p.owner.record(took, at);
        }
        permits
    }

    #[test]
    fn slow_answers_shrink_the_limit_and_fast_busy_ones_grow_it() {
        let l = ConcurrencyLimit::new(100, &cfg(), Default::default());
        assert_eq!(l.limit(), 40);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Busy (40 in flight) and slow: ×0.8 per window, down to the minimum.
        drop(window(&l, 40, ms(300), t0 + ms(250)));
        assert_eq!(l.limit(), 32);
        for i in 2..20 {
            drop(window(&l, 40, ms(300), t0 + ms(250 * i)));
        }
        assert_eq!(l.limit(), 4, "never below min_limit");
        // Fast and at the limit: +1/8 per window, up to max_in_flight.
        let mut at = t0 + ms(10_000);
        let mut last = l.limit();
        for _ in 0..60 {
            at += ms(250);
            let n = l.limit();
            drop(window(&l, n.max(8), ms(5), at));
            assert!(l.limit() >= last);
            last = l.limit();
        }
        assert_eq!(l.limit(), 100, "never above max_in_flight");

        // Fast but far from the limit (one request at a time): it stays where it is.
        let l = ConcurrencyLimit::new(100, &cfg(), Default::default());
        for i in 1..5 {
            for _ in 0..8 {
                drop(window(&l, 1, ms(5), t0 + ms(250 * i)));
            }
        }
        assert_eq!(l.limit(), 40);
    }

    #[test]
    fn over_the_limit_nothing_is_let_in_and_a_finished_request_frees_its_place() {
        let l = ConcurrencyLimit::new(
            3,
            &ConcurrencyConfig {
                adaptive: false,
                ..cfg()
            },
            Default::default(),
        );
        let held: Vec<Permit> = (0..3).map(|_| l.try_acquire().unwrap()).collect();
        assert!(l.try_acquire().is_none());
        drop(held);
        assert!(l.try_acquire().is_some());
        assert_eq!(l.limit(), 3, "not adaptive: the limit is max_in_flight");
    }
}
