//! `notifyctl status <id> [--follow]`: a notification and each delivery's status; following,
//! one line per change until every delivery has settled.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use api::notifications::NotificationView;
use uuid::Uuid;

use super::{As, Client, Target, address_cell, error_text, provider_cell, table, when};

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// The notification's id (what `send` printed).
    pub id: Uuid,
    /// Print each delivery's status changes until all have settled; exits 1 if any failed.
    #[arg(long, short)]
    pub follow: bool,
    /// Stop following after this many seconds (exit 1).
    #[arg(long)]
    pub timeout: Option<u64>,
    #[command(flatten)]
    pub target: Target,
}

pub fn run(args: &StatusArgs) -> anyhow::Result<()> {
    let client = args.target.client(As::Admin)?;
    super::block_on(async {
        if args.follow {
            follow(&client, args.id, args.target.json, args.timeout).await
        } else {
            let view = fetch(&client, args.id).await?;
            if args.target.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", render(&view));
            }
            Ok(())
        }
    })
}

pub async fn fetch(client: &Client, id: Uuid) -> anyhow::Result<NotificationView> {
    client.get(&format!("/v1/notifications/{id}")).await
}

/// The notification's line, then one row per delivery.
pub fn render(n: &NotificationView) -> String {
    let mut out = format!(
        "notification {}  {}  category {}  priority {}  created {}\n",
        n.id,
        n.status,
        n.category,
        n.priority,
        when(n.created_at)
    );
    if let Some(f) = &n.fanout {
        out.push_str(&fanout_line(f, &n.delivery_counts));
        out.push('\n');
    }
    let rows: Vec<Vec<String>> = n
        .deliveries
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.channel.clone(),
                address_cell(d),
                d.status.clone(),
                d.attempts.to_string(),
                provider_cell(d),
                error_text(d.last_error.as_ref()),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &[
            "DELIVERY", "CHANNEL", "ADDRESS", "STATUS", "ATTEMPTS", "PROVIDER", "ERROR",
        ],
        &rows,
    ));
    if n.deliveries_next_cursor.is_some() {
        let counts: Vec<String> = n
            .delivery_counts
            .by_status
            .iter()
            .map(|(status, k)| format!("{k} {status}"))
            .collect();
        out.push_str(&format!(
            "the first {} of {} deliveries ({})\n",
            n.deliveries.len(),
            n.delivery_counts.total,
            counts.join(", ")
        ));
    }
    out
}

/// A send to a topic's progress: subscribers planned of the total, chunks, and the counts of
/// what was planned so far.
fn fanout_line(
    f: &api::notifications::FanoutView,
    counts: &api::notifications::DeliveryCounts,
) -> String {
    let total = f.total.map_or("?".to_owned(), |t| t.to_string());
    let chunks = f.chunks.map_or("?".to_owned(), |c| c.to_string());
    let by_status: Vec<String> = counts
        .by_status
        .iter()
        .map(|(status, k)| format!("{k} {status}"))
        .collect();
    format!(
        "fan-out to topic {}: {}, {} of {total} subscribers planned (chunk {} of {chunks}); deliveries: {}",
        f.topic,
        f.state,
        f.planned,
        f.chunks_done,
        if by_status.is_empty() {
            "none yet".to_owned()
        } else {
            by_status.join(", ")
        }
    )
}

/// Whether every delivery has settled, and whether all of them well.
fn settled(n: &NotificationView) -> Option<bool> {
    match n.status.as_str() {
        "completed" => Some(true),
        "failed" | "partially_failed" | "cancelled" => Some(false),
        _ => None,
    }
}

/// Polls the notification, printing each delivery's status change (or, with `json`, the
/// whole view each time something changed), until every delivery has settled.
pub async fn follow(
    client: &Client,
    id: Uuid,
    json: bool,
    timeout: Option<u64>,
) -> anyhow::Result<()> {
    let deadline = timeout.map(|s| Instant::now() + Duration::from_secs(s));
    let mut last: BTreeMap<Uuid, String> = BTreeMap::new();
    let mut last_fanout = String::new();
    let mut first = true;
    loop {
        let view = match fetch(client, id).await {
            Ok(v) => v,
            // A deployment restarting under us: say so and keep following.
            Err(e) if is_unreachable(&e) => {
                eprintln!("notifyctl: {e:#}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut changed = false;
        for d in &view.deliveries {
            let before = last.insert(d.id, d.status.clone());
            if before.as_deref() == Some(d.status.as_str()) {
                continue;
            }
            changed = true;
            if !json && !first {
                let err = error_text(d.last_error.as_ref());
                println!(
                    "{}  {}  {}  {} → {}{}",
                    when(d.updated_at),
                    d.id,
                    d.channel,
                    before.as_deref().unwrap_or("?"),
                    d.status,
                    if err.is_empty() {
                        String::new()
                    } else {
                        format!("  ({err})")
                    }
                );
            }
        }
        // A fan-out's progress: one line whenever it moved (its deliveries are too many to
        // follow one by one).
        if let Some(f) = &view.fanout {
            let line = fanout_line(f, &view.delivery_counts);
            if line != last_fanout {
                changed = true;
                if !json && !first {
                    println!("{}  {line}", when(chrono::Utc::now()));
                }
                last_fanout = line;
            }
        }
        if json && changed {
            println!("{}", serde_json::to_string(&view)?);
        } else if first {
            print!("{}", render(&view));
        }
        first = false;
        if let Some(ok) = settled(&view) {
            if !json {
                println!("settled: {}", view.status);
            }
            anyhow::ensure!(ok, "notification {id} ended {}", view.status);
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            anyhow::bail!("notification {id} still {} after the timeout", view.status);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn is_unreachable(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<super::ApiFailure>(),
        Some(super::ApiFailure::Unreachable(_))
    )
}
