//! Content stored once. Intake writes a notification's dispatches without their content — the
//! `notifications` row holds it (and its renderings per locale) once for every delivery, so a
//! 1,000-recipient request does not write its text 1,000 times into the outbox — and the relay
//! puts it back just before publishing: one query per relay batch for the distinct
//! notifications of its rows. The message on Kafka is the same self-contained one as before;
//! the workers do not change. Rows written with their content (the repeater's retries and
//! re-drives) pass untouched.

use common::outbox::gate::GateRow;
use delivery::dispatch::{CONTENT_HEADER, CONTENT_OF_NOTIFICATION, fill_content};
use sqlx::PgConnection;
use uuid::Uuid;

/// For each row, in order: its payload with the content filled in when it was written by
/// reference, `None` when it carries its own.
pub async fn fill(
    conn: &mut PgConnection,
    rows: &[GateRow],
) -> anyhow::Result<Vec<Option<String>>> {
    let mut parsed: Vec<Option<serde_json::Value>> = Vec::with_capacity(rows.len());
    let mut ids: Vec<Uuid> = Vec::new();
    for row in rows {
        let by_reference =
            row.headers.get(CONTENT_HEADER).map(String::as_str) == Some(CONTENT_OF_NOTIFICATION);
        if !by_reference {
            parsed.push(None);
            continue;
        }
        let payload: serde_json::Value = serde_json::from_str(&row.payload)?;
        let id = notification_of(&payload)
            .ok_or_else(|| anyhow::anyhow!("outbox row {} names no notification", row.id))?;
        ids.push(id);
        parsed.push(Some(payload));
    }
    if ids.is_empty() {
        return Ok(vec![None; rows.len()]);
    }
    ids.sort_unstable();
    ids.dedup();
    let contents = crate::db::notifications::contents(conn, &ids).await?;
    parsed
        .into_iter()
        .zip(rows)
        .map(|(payload, row)| {
            let Some(mut payload) = payload else {
                return Ok(None);
            };
            let id = notification_of(&payload).expect("checked above");
            // Deliveries reference their notification: it cannot be gone while one is due.
            let (content, localized) = contents.get(&id).ok_or_else(|| {
                anyhow::anyhow!("outbox row {}: notification {id} not found", row.id)
            })?;
            fill_content(&mut payload, content, localized.as_ref())?;
            Ok(Some(payload.to_string()))
        })
        .collect()
}

fn notification_of(payload: &serde_json::Value) -> Option<Uuid> {
    payload.get("notification_id")?.as_str()?.parse().ok()
}
