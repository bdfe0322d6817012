//! The retry rule: attempt n failed transiently → attempt n+1 after `schedule[n-1]` ± jitter,
//! honouring a provider's `Retry-After` within [1×, 2×] of the scheduled delay; no entry left
//! → dead.

use std::time::Duration;

use common::events::Channel;
use rand::Rng;
use serde::Deserialize;

/// The delay before the attempt after `failed_attempt` (1-based within the current retry run),
/// or `None` when `schedule` is exhausted.
pub fn next_delay(
    schedule: &[f64],
    jitter: f64,
    failed_attempt: u32,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Option<Duration> {
    let base = *schedule.get(failed_attempt.checked_sub(1)? as usize)?;
    let jitter = jitter.clamp(0.0, 1.0);
    let factor = if jitter > 0.0 {
        rng.random_range(1.0 - jitter..=1.0 + jitter)
    } else {
        1.0
    };
    let scheduled = Duration::from_secs_f64((base * factor).max(0.0));
    Some(match retry_after {
        Some(ra) => ra.clamp(scheduled, scheduled * 2),
        None => scheduled,
    })
}

/// When transient failures are tried again.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RetryConfig {
    /// Delay before attempt n+1 after attempt n failed; its length is the number of retries.
    pub schedule_secs: Vec<f64>,
    /// ± fraction of random jitter on each delay.
    pub jitter: f64,
    /// A schedule per channel that replaces `schedule_secs` for it (`[retry.channels]
    /// sms = [10, 60]`).
    pub channels: std::collections::BTreeMap<Channel, Vec<f64>>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            schedule_secs: vec![5.0, 30.0, 120.0, 600.0, 1800.0, 7200.0],
            jitter: 0.2,
            channels: Default::default(),
        }
    }
}

impl RetryConfig {
    /// The schedule of `channel` (its own, or the default one).
    pub fn schedule(&self, channel: &str) -> &[f64] {
        Channel::parse(channel)
            .and_then(|c| self.channels.get(&c))
            .unwrap_or(&self.schedule_secs)
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    #[test]
    fn follows_the_schedule_with_bounded_jitter_then_gives_up() {
        let cfg = RetryConfig::default();
        let mut rng = StdRng::seed_from_u64(7);
        let delays: Vec<f64> = (0..100)
            .map(|_| {
                next_delay(&cfg.schedule_secs, cfg.jitter, 1, None, &mut rng)
                    .unwrap()
                    .as_secs_f64()
            })
            .collect();
        for d in &delays {
            assert!((4.0..=6.0).contains(d), "{d}");
        }
        // Jitter spreads them (a range check alone passes with none): both halves of the
        // ±20 % band are used, and no two of the first ten are equal.
        assert!(delays.iter().any(|d| *d < 4.5) && delays.iter().any(|d| *d > 5.5));
        let mut first: Vec<f64> = delays[..10].to_vec();
        first.sort_by(f64::total_cmp);
        first.dedup();
        assert_eq!(first.len(), 10, "{delays:?}");
        let d = next_delay(&cfg.schedule_secs, cfg.jitter, 3, None, &mut rng)
            .unwrap()
            .as_secs_f64();
        assert!((96.0..=144.0).contains(&d), "{d}");
        assert!(next_delay(&cfg.schedule_secs, cfg.jitter, 7, None, &mut rng).is_none());
        assert!(next_delay(&cfg.schedule_secs, cfg.jitter, 0, None, &mut rng).is_none());
    }

    #[test]
    fn retry_after_is_clamped_to_one_to_two_times_the_schedule() {
        let cfg = RetryConfig {
            schedule_secs: vec![10.0],
            jitter: 0.0,
            ..RetryConfig::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        let mut at = |ra| {
            next_delay(
                &cfg.schedule_secs,
                cfg.jitter,
                1,
                Some(Duration::from_secs(ra)),
                &mut rng,
            )
            .unwrap()
            .as_secs()
        };
        assert_eq!(at(1), 10);
        assert_eq!(at(15), 15);
        assert_eq!(at(600), 20);
    }
}
