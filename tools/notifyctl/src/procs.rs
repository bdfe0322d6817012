//! Per-process CPU and memory, read from `/proc` once a second while a load runs.
//!
//! A named process is a pid and its children (nginx's workers under its master); "postgres"
//! is every process of that name on the machine (the server and each connection's backend).

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

/// One process's series: CPU in percent of one core and RSS in MiB, one point a second.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessSeries {
    pub cpu_percent: Vec<f64>,
    pub rss_mib: Vec<f64>,
}

impl ProcessSeries {
    pub fn max_rss_mib(&self) -> f64 {
        self.rss_mib.iter().copied().fold(0.0, f64::max)
    }

    pub fn mean_cpu_percent(&self) -> f64 {
        if self.cpu_percent.is_empty() {
            return 0.0;
        }
        self.cpu_percent.iter().sum::<f64>() / self.cpu_percent.len() as f64
    }
}

/// What is sampled: a name and how to find its pids.
#[derive(Debug, Clone)]
pub enum Target {
    /// This pid and its direct children.
    Pid(u32),
    /// Every process whose `comm` is this.
    Comm(String),
}

/// `/proc` counts CPU time in USER_HZ ticks, 100 a second on every Linux architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime (ticks) and RSS (bytes) of one pid.
fn stat(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the name start at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some((utime + stime, rss_kib * 1024))
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

fn by_comm(name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end() == name)
            {
                out.push(pid);
            }
        }
    }
    out
}

impl Target {
    fn pids(&self) -> Vec<u32> {
        match self {
            Target::Pid(pid) => {
                let mut pids = vec![*pid];
                pids.extend(children(*pid));
                pids
            }
            Target::Comm(name) => by_comm(name),
        }
    }

    /// Total CPU ticks (of the processes alive now) and RSS in bytes.
    fn sample(&self) -> (u64, u64) {
        self.pids()
            .into_iter()
            .filter_map(stat)
            .fold((0, 0), |(t, r), (dt, dr)| (t + dt, r + dr))
    }
}

/// Samples `targets` every second until `stop` is cancelled; returns each one's series.
pub async fn sample(
    targets: Vec<(String, Target)>,
    stop: tokio_util::sync::CancellationToken,
) -> BTreeMap<String, ProcessSeries> {
    let hz = TICKS_PER_SECOND;
    let read = |targets: &[(String, Target)]| -> Vec<(u64, u64)> {
        targets.iter().map(|(_, t)| t.sample()).collect()
    };
    let mut out: BTreeMap<String, ProcessSeries> = targets
        .iter()
        .map(|(n, _)| (n.clone(), ProcessSeries::default()))
        .collect();
    let mut last = tokio::task::block_in_place(|| read(&targets));
    let mut last_at = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return out,
            _ = tick.tick() => {}
        }
        let now = tokio::task::block_in_place(|| read(&targets));
        let secs = last_at.elapsed().as_secs_f64().max(0.001);
        last_at = std::time::Instant::now();
        for (((name, _), (ticks, rss)), (last_ticks, _)) in targets.iter().zip(&now).zip(&last) {
            let series = out.get_mut(name).expect("every target has a series");
            // A process that restarted or a backend that exited can make the sum go down.
            let used = ticks.saturating_sub(*last_ticks) as f64 / hz;
            series.cpu_percent.push(100.0 * used / secs);
            series.rss_mib.push(*rss as f64 / (1024.0 * 1024.0));
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let (ticks, rss) = Target::Pid(std::process::id()).sample();
        assert!(rss > 1024 * 1024, "rss {rss}");
        // Burn a little CPU so the tick count cannot be zero.
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let (after, _) = Target::Pid(std::process::id()).sample();
        assert!(after > ticks, "{ticks} → {after}");
    }
}
