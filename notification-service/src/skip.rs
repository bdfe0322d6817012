//! Messages of this service's consumers that can never be handled (they do not decode, a
//! welcome's template does not render): recorded in `skipped_events` with why, counted, and
//! skipped, so the rest of their topic flows. Admins read them at
//! `GET /v1/admin/skipped-events`.

use common::kafka::runner::HandleError;
use rdkafka::{Message, message::OwnedMessage};

use crate::AppState;

/// The most of a skipped message that is kept.
const KEPT_PAYLOAD_BYTES: usize = 4096;

/// Records `raw` as skipped, with why; counted.
pub async fn skip(
    state: &AppState,
    raw: &OwnedMessage,
    event_type: &str,
    error: &str,
) -> Result<(), HandleError> {
    tracing::error!(
        event_type,
        error,
        topic = raw.topic(),
        offset = raw.offset(),
        "event cannot be handled; recorded and skipped"
    );
    let payload = String::from_utf8_lossy(raw.payload().unwrap_or_default());
    let mut end = payload.len().min(KEPT_PAYLOAD_BYTES);
    while !payload.is_char_boundary(end) {
        end -= 1;
    }
    let key = raw.key().map(String::from_utf8_lossy);
    let mut conn = state
        .pool
        .acquire()
        .await
        .map_err(|e| HandleError::Retry(e.into()))?;
    crate::db::skipped::record(
        &mut conn,
        &crate::db::skipped::Skipped {
            topic: raw.topic(),
            partition: raw.partition(),
            offset: raw.offset(),
            event_type,
            key: key.as_deref(),
            payload: &payload[..end],
            error,
        },
    )
    .await
    .map_err(|e| HandleError::Retry(e.into()))?;
    state.metrics.event_skipped(event_type);
    Ok(())
}
