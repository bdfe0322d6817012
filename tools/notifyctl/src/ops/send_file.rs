//! `notifyctl send --file items.jsonl`: one send body per line (each may carry its own
//! `idempotency_key`), sent through `POST /v1/notifications/batch` in batches, with a progress
//! bar on a terminal; one line per item that was not accepted (or, with `--json`, one result
//! per item), then the totals. Exit 1 when any item was refused.

use std::{io::BufRead, path::Path};

use api::notifications::{
    BatchAnswer, BatchResult, MAX_BATCH_BYTES, MAX_BATCH_ITEMS, MAX_BATCH_RECIPIENTS,
};
use serde_json::{Value, json};

use super::{As, Target};

/// A batch is closed below the route's byte limit, leaving room for the envelope.
const BATCH_BYTES: usize = MAX_BATCH_BYTES - 64 * 1024;

/// One line of the file: its number, its item and its size.
struct Line {
    number: usize,
    item: Value,
    bytes: usize,
    recipients: usize,
}

/// The items of `path` (`-`: standard input); blank lines skipped. A line that is not a JSON
/// object stops everything before any request, naming the line.
fn read(path: &Path) -> anyhow::Result<Vec<Line>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        ))
    };
    let mut lines = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let number = i + 1;
        let value: Value = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{}:{number}: not JSON: {e}", path.display()))?;
        anyhow::ensure!(
            value.is_object(),
            "{}:{number}: not a JSON object (one send body per line)",
            path.display()
        );
        let recipients = value["recipients"].as_array().map_or(0, Vec::len);
        lines.push(Line {
            number,
            bytes: line.len(),
            item: value,
            recipients,
        });
    }
    Ok(lines)
}

/// The lines cut into batches of at most `size` items, [`MAX_BATCH_RECIPIENTS`] recipients and
/// [`BATCH_BYTES`] bytes (a line over a limit alone goes in a batch of its own: the service
/// answers for it).
fn batches(lines: &[Line], size: usize) -> Vec<&[Line]> {
    let mut out = Vec::new();
    let mut start = 0;
    let (mut recipients, mut bytes) = (0, 0);
    for (i, line) in lines.iter().enumerate() {
        let full = i - start == size
            || recipients + line.recipients > MAX_BATCH_RECIPIENTS
            || bytes + line.bytes + 1 > BATCH_BYTES;
        if i > start && full {
            out.push(&lines[start..i]);
            start = i;
            (recipients, bytes) = (0, 0);
        }
        recipients += line.recipients;
        bytes += line.bytes + 1;
    }
    if start < lines.len() {
        out.push(&lines[start..]);
    }
    out
}

pub fn run(path: &Path, batch_size: usize, target: &Target) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_BATCH_ITEMS).contains(&batch_size),
        "--batch-size: 1 to {MAX_BATCH_ITEMS}"
    );
    let lines = read(path)?;
    anyhow::ensure!(!lines.is_empty(), "{}: no item", path.display());
    let client = target.client(As::Service)?;
    let bar = indicatif::ProgressBar::new(lines.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} items  {per_sec}  eta {eta}")
            .expect("a valid template"),
    );
    if target.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (mut accepted, mut replayed, mut refused) = (0usize, 0usize, 0usize);
    super::block_on(async {
        for batch in batches(&lines, batch_size) {
            let items: Vec<&Value> = batch.iter().map(|l| &l.item).collect();
            let body = json!({ "notifications": items });
            let answer: BatchAnswer = match client.post("/v1/notifications/batch", &body, &[]).await
            {
                Ok((answer, _)) => answer,
                Err(e) => {
                    bar.abandon();
                    anyhow::bail!(
                        "{e}\nlines {} to the end were not sent, or their answer was lost ({accepted} accepted and {replayed} replayed before): send them again — items with an idempotency_key are safe to send twice",
                        batch[0].number
                    );
                }
            };
            anyhow::ensure!(
                answer.results.len() == batch.len(),
                "{} results for {} items",
                answer.results.len(),
                batch.len()
            );
            for (line, result) in batch.iter().zip(answer.results) {
                match result.status {
                    202 => accepted += 1,
                    200 => replayed += 1,
                    _ => refused += 1,
                }
                report(line.number, result, target.json, &bar)?;
            }
            bar.inc(batch.len() as u64);
        }
        bar.finish_and_clear();
        Ok(())
    })?;
    if !target.json {
        println!(
            "{} items: {accepted} accepted, {replayed} replayed, {refused} refused",
            lines.len()
        );
    }
    if refused > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// One item's result: every result with `--json`, otherwise only what was not accepted.
fn report(
    number: usize,
    result: BatchResult,
    json_out: bool,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    if json_out {
        println!(
            "{}",
            json!({ "line": number, "status": result.status, "id": result.id, "problem": result.problem })
        );
        return Ok(());
    }
    if let Some(p) = result.problem {
        let mut text = format!("line {number}: {} {}: {}", result.status, p.kind, p.detail);
        for e in &p.errors {
            text.push_str(&format!("\n  {}: {}", e.field, e.message));
        }
        bar.suspend(|| println!("{text}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(number: usize, recipients: usize, bytes: usize) -> Line {
        Line {
            number,
            item: Value::Null,
            bytes,
            recipients,
        }
    }

    #[test]
    fn batches_close_at_the_item_recipient_and_byte_limits() {
        let lines: Vec<Line> = (1..=250).map(|n| line(n, 1, 10)).collect();
        let sizes: Vec<usize> = batches(&lines, 100).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);

        let lines: Vec<Line> = (1..=5).map(|n| line(n, 4_000, 10)).collect();
        let sizes: Vec<usize> = batches(&lines, 100).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [2, 2, 1], "10,000 recipients a batch at most");

        let lines: Vec<Line> = (1..=3).map(|n| line(n, 1, BATCH_BYTES / 2)).collect();
        let sizes: Vec<usize> = batches(&lines, 100).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [1, 1, 1], "bytes");

        // A line over a limit on its own goes alone; the service answers for it.
        let lines = vec![line(1, 1, 10), line(2, 20_000, 10), line(3, 1, 10)];
        let sizes: Vec<usize> = batches(&lines, 100).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [1, 1, 1]);
    }
}
