//! `notifyctl dead-letters list|redrive`: the deliveries that ended `dead`, by channel, error
//! code, provider and time of death; a re-drive gives each a new attempt.
//!
//! A re-drive by filter first lists what matches, says how many, asks (or takes `--yes`),
//! then re-drives exactly those ids in batches with a progress bar: what the operator
//! confirmed is what moves, even while new dead letters arrive.

use std::io::{IsTerminal, Write};

use api::{
    admin::{DeliveryPage, MAX_REDRIVE_IDS, RedriveBody, Redriven},
    notifications::DeliveryView,
};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use uuid::Uuid;

use super::{
    As, Client, Target, address_cell, error_text, parse_time, provider_cell, query, table, when,
};

/// Ids re-driven per request: small enough for a progress bar to move, far under the API's
/// limit of [`MAX_REDRIVE_IDS`].
const BATCH: usize = 100;

#[derive(clap::Subcommand, Debug, Clone)]
pub enum DeadLettersCmd {
    /// The newest dead letters matching the filter.
    List {
        #[command(flatten)]
        filter: Filter,
        /// At most this many (pages through the API as needed).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        target: Target,
    },
    /// Give dead letters a new attempt: by --id, or every one matching the filter.
    Redrive {
        /// A dead delivery's id. Repeatable; the filter is not used with it.
        #[arg(long = "id", conflicts_with_all = ["channel", "error_code", "provider", "since", "until", "all"])]
        ids: Vec<Uuid>,
        #[command(flatten)]
        filter: Filter,
        /// With no filter and no --id: every dead letter.
        #[arg(long)]
        all: bool,
        /// Do not ask before re-driving.
        #[arg(long, short)]
        yes: bool,
        /// Only say how many would be re-driven.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Filter {
    /// email, sms, push, webhook, telegram.
    #[arg(long)]
    pub channel: Option<String>,
    /// The last error's code, e.g. smtp_550, fcm_unregistered.
    #[arg(long)]
    pub error_code: Option<String>,
    /// The last attempt's provider, e.g. smtp, twilio, fcm.
    #[arg(long)]
    pub provider: Option<String>,
    /// Died at or after: RFC 3339 or an age (15m, 2h, 7d).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Died before: RFC 3339 or an age.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.channel.is_none()
            && self.error_code.is_none()
            && self.provider.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }

    fn query(&self, limit: usize, cursor: Option<String>) -> String {
        query(&[
            ("channel", self.channel.clone()),
            ("error_code", self.error_code.clone()),
            ("provider", self.provider.clone()),
            ("since", self.since.map(|t| t.to_rfc3339())),
            ("until", self.until.map(|t| t.to_rfc3339())),
            ("limit", Some(limit.to_string())),
            ("cursor", cursor),
        ])
    }
}

pub fn run(cmd: &DeadLettersCmd) -> anyhow::Result<()> {
    match cmd {
        DeadLettersCmd::List {
            filter,
            limit,
            target,
        } => {
            let client = target.client(As::Admin)?;
            let items = super::block_on(list(&client, filter, *limit))?;
            if target.json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                print!("{}", render(&items));
            }
            Ok(())
        }
        DeadLettersCmd::Redrive {
            ids,
            filter,
            all,
            yes,
            dry_run,
            target,
        } => {
            anyhow::ensure!(
                !ids.is_empty() || !filter.is_empty() || *all,
                "say which: --id, a filter (--channel, --error-code, --provider, --since, --until) or --all"
            );
            let client = target.client(As::Admin)?;
            super::block_on(redrive(&client, ids, filter, *yes, *dry_run, target.json))
        }
    }
}

/// Up to `limit` dead letters matching `filter`, newest first.
pub async fn list(
    client: &Client,
    filter: &Filter,
    limit: usize,
) -> anyhow::Result<Vec<DeliveryView>> {
    let mut items = Vec::new();
    let mut cursor = None;
    while items.len() < limit {
        let page: DeliveryPage = client
            .get(&format!(
                "/v1/admin/dead-letters{}",
                filter.query((limit - items.len()).min(200), cursor)
            ))
            .await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(items)
}

pub fn render(items: &[DeliveryView]) -> String {
    if items.is_empty() {
        return "no dead letters match\n".to_owned();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.channel.clone(),
                address_cell(d),
                provider_cell(d),
                d.attempts.to_string(),
                when(d.updated_at),
                error_text(d.last_error.as_ref()),
            ]
        })
        .collect();
    table::render(
        &[
            "DELIVERY", "CHANNEL", "ADDRESS", "PROVIDER", "ATTEMPTS", "DIED", "ERROR",
        ],
        &rows,
    )
}

async fn redrive(
    client: &Client,
    ids: &[Uuid],
    filter: &Filter,
    yes: bool,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    let ids: Vec<Uuid> = if ids.is_empty() {
        list(client, filter, usize::MAX)
            .await?
            .into_iter()
            .map(|d| d.id)
            .collect()
    } else {
        ids.to_vec()
    };
    let out = std::io::stdout();
    if ids.is_empty() || dry_run {
        if json {
            println!(
                "{}",
                serde_json::json!({ "matching": ids.len(), "redriven": 0 })
            );
        } else {
            println!("{} dead letters match; none re-driven", ids.len());
        }
        return Ok(());
    }
    if !yes {
        let stdin = std::io::stdin();
        anyhow::ensure!(
            stdin.is_terminal(),
            "{} dead letters would be re-driven: pass --yes to do it without being asked",
            ids.len()
        );
        eprint!("Re-drive {} dead letters? [y/N] ", ids.len());
        std::io::stderr().flush()?;
        let mut answer = String::new();
        stdin.read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            anyhow::bail!("nothing re-driven");
        }
    }
    let bar = if json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(ids.len() as u64).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} re-driven  {eta} left")
                .expect("a valid template"),
        )
    };
    let mut total = Redriven::default();
    for batch in ids.chunks(BATCH.min(MAX_REDRIVE_IDS)) {
        let (answer, _): (Redriven, _) = client
            .post(
                "/v1/admin/dead-letters/redrive",
                &RedriveBody {
                    ids: Some(batch.to_vec()),
                    filter: None,
                },
                &[],
            )
            .await
            .inspect_err(|_| bar.abandon())?;
        total.redriven += answer.redriven;
        total.skipped.extend(answer.skipped);
        for r in &answer.refused {
            total.refuse(r.id, &r.reason);
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    let Redriven {
        redriven,
        skipped,
        refused,
        refused_total,
    } = &total;
    if json {
        println!("{}", serde_json::to_string(&total)?);
    } else {
        let mut out = out.lock();
        writeln!(out, "re-drove {redriven} dead letters")?;
        if *refused_total > 0 {
            writeln!(
                out,
                "refused {refused_total} whose address is suppressed (they stay dead): {}",
                refused
                    .iter()
                    .map(|r| format!("{} ({})", r.id, r.reason))
                    .collect::<Vec<_>>()
                    .join(" ")
            )?;
        }
        if !skipped.is_empty() {
            writeln!(
                out,
                "skipped {} that were no longer dead: {}",
                skipped.len(),
                skipped
                    .iter()
                    .map(Uuid::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            )?;
        }
    }
    Ok(())
}
