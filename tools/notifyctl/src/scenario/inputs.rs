//! A scenario's requests, the processes it samples and the backlogs it watches.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{procs::Target, stack::StackFile};

use super::LoadChannel;

/// A recipient on `channel` that the stack's providers accept at once.
pub(super) fn recipient(channel: LoadChannel, stack: &StackFile, n: u64) -> serde_json::Value {
    match channel {
        LoadChannel::Email => serde_json::json!({ "email": format!("load{n}@bench.test") }),
        // Distinct URLs: identical recipients of one request are planned once.
        LoadChannel::Webhook => {
            serde_json::json!({ "webhook": { "url": format!("{}/{n}", stack.webhook_sink) } })
        }
        // Valid Berlin numbers (+49 30 and seven digits): planning refuses numbers outside the
        // numbering plan (`suppressed`), which would measure nothing.
        LoadChannel::Sms => {
            serde_json::json!({ "phone": format!("+4930{}", 1_000_000 + n % 9_000_000) })
        }
        LoadChannel::Push => {
            serde_json::json!({ "device": { "platform": "fcm", "token": format!("bench-token-{n}") } })
        }
    }
}

pub(super) fn body(
    channel: LoadChannel,
    stack: &StackFile,
    n: u64,
    recipients: usize,
    priority: &str,
) -> serde_json::Value {
    let first = n * recipients as u64;
    let recipients: Vec<_> = (0..recipients as u64)
        .map(|i| recipient(channel, stack, first + i))
        .collect();
    serde_json::json!({
        "recipients": recipients,
        "category": "bench",
        "priority": priority,
        "content": { "subject": "Your order has shipped", "text": format!("Order {n} is on its way.") }
    })
}

/// Processes to sample: everything in the stack file, the launcher (embedded Kafka and the
/// sinks), and every Postgres process.
pub(super) fn targets(stack: &StackFile) -> Vec<(String, Target)> {
    let mut t: Vec<(String, Target)> = stack
        .processes
        .iter()
        .map(|(n, p)| (n.clone(), Target::Pid(*p)))
        .collect();
    t.push(("postgres".into(), Target::Comm("postgres".into())));
    t.push(("notifyctl load".into(), Target::Pid(std::process::id())));
    t
}

/// Unpublished outbox rows and open deliveries, once a second until `stop` (one point per
/// second; a point not measured repeats the last). Counting a million rows is work for
/// Postgres too: a count that took `t` is not taken again for `10 t`, so the sampler keeps to
/// about a tenth of one backend however large the backlog (measured: counting every second
/// behind a million-delivery topic send kept a backend busy all the time).
pub(super) async fn sample_backlogs(pool: PgPool, stop: CancellationToken) -> (Vec<i64>, Vec<i64>) {
    let (mut outbox, mut open) = (Vec::new(), Vec::new());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return (outbox, open),
            _ = tick.tick() => {}
        }
        if tokio::time::Instant::now() < next {
            outbox.push(outbox.last().copied().unwrap_or(-1));
            open.push(open.last().copied().unwrap_or(-1));
            continue;
        }
        let started = tokio::time::Instant::now();
        let row: Result<(i64, i64), _> = sqlx::query_as(
            "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL AND failed_at IS NULL),
                    (SELECT count(*) FROM deliveries WHERE status IN ('pending', 'queued', 'sending', 'retrying'))",
        )
        .fetch_one(&pool)
        .await;
        next = tokio::time::Instant::now() + started.elapsed() * 10;
        let (o, d) = row.unwrap_or((-1, -1));
        outbox.push(o);
        open.push(d);
    }
}

/// Sends SIG`name` to `pid` (the workers named in the stack file).
pub(super) fn signal(pid: u32, name: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}
