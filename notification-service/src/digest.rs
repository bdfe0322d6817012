//! Digests (decision 0030): sends with the same `digest.key` to the same recipient and
//! channel inside a window become one delivery at the window's end.
//!
//! - At intake, a send's deliveries that would go out (queued, or pending for quiet hours) are
//!   planned `digested` instead (`crate::folding::mark`; never on the urgent lane) and written
//!   folded into their window (`db::digests::fold`, in the transaction that writes them). A
//!   category's default window applies to sends that do not ask for their own.
//! - The close ([`DigestHandler`], `notify.digest`, due at the window's end through the
//!   outbox) renders the items — the template's digest form in the recipient's locale, or the
//!   built-in form for `content` sends (`crate::folding::render`) — and plans the one delivery
//!   through intake like any send (preferences, quiet hours, suppression), written with the
//!   digest marked `closed` in one transaction.

use chrono::Utc;
use common::kafka::runner::{HandleError, MessageHandler};
use rdkafka::{Message, message::OwnedMessage};
use uuid::Uuid;

use crate::{
    AppState,
    db::digests::{self as db, CloseStep},
    folding::{Folded, MAX_RENDERED_ITEMS},
    intake::{self, Accepted, Origin},
    request::{Recipient, SendRequest},
};

/// The consumer of `notify.digest`: closes each window once it is due.
pub struct DigestHandler {
    pub state: AppState,
}

impl MessageHandler for DigestHandler {
    async fn handle(&self, raw: &OwnedMessage) -> Result<(), HandleError> {
        let step: CloseStep = match serde_json::from_slice(raw.payload().unwrap_or_default()) {
            Ok(s) => s,
            Err(e) => {
                let why = format!("undecodable digest close: {e}");
                return crate::skip::skip(&self.state, raw, "digest", &why).await;
            }
        };
        match close(&self.state, step.digest_id).await {
            Ok(None) => Ok(()),
            Ok(Some(never)) => {
                if let Err(e) = db::fail(&self.state.pool, step.digest_id, &never).await {
                    return Err(HandleError::Retry(e.into()));
                }
                crate::skip::skip(&self.state, raw, "digest", &never).await
            }
            Err(e) => Err(HandleError::Retry(e)),
        }
    }
}

/// Closes digest `id`: no send joins it any more, its items are rendered and planned as one
/// notification. `Some(why)` when it can never be sent (the caller marks it failed).
pub async fn close(state: &AppState, id: Uuid) -> anyhow::Result<Option<String>> {
    let Some(digest) = db::begin_close(&state.pool, id).await? else {
        return Ok(None);
    };
    let mut conn = state.pool.acquire().await?;
    let items = db::items(&mut conn, id, MAX_RENDERED_ITEMS).await?;
    let total = i64::from(digest.items);
    let last = if total > items.len() as i64 {
        db::last_item(&mut conn, id).await?
    } else {
        None
    };
    let template = match &digest.template {
        Some(name) => crate::db::templates::get(&mut conn, name).await?,
        None => None,
    };
    drop(conn);
    let (Some(channel), Some(recipient)) = (
        digest.channel(),
        Recipient::stored(digest.user_id, &digest.recipient),
    ) else {
        return Ok(Some(format!(
            "digest {id}: its channel or recipient is not one this version plans"
        )));
    };
    if items.is_empty() {
        return Ok(Some(format!("digest {id} has no items")));
    }
    let mut req = SendRequest::internal(vec![recipient], &digest.category);
    req.channels = Some(vec![channel]);
    let folded = Folded {
        digest: &digest,
        items: &items,
        last: last.as_ref(),
        total,
        template: template.as_ref(),
    };
    match intake::accept(state, Origin::Digest { folded: &folded }, req, Utc::now()).await {
        Ok(Accepted::Written { deliveries, .. }) => {
            state.metrics.digest_closed(total);
            tracing::info!(digest_id = %id, items = total, deliveries, "digest closed");
            Ok(None)
        }
        Ok(other) => {
            tracing::info!(digest_id = %id, ?other, "digest not written");
            Ok(None)
        }
        Err(e) if e.status.is_client_error() => {
            Ok(Some(format!("digest {id} cannot be sent: {}", e.detail)))
        }
        Err(e) => Err(anyhow::anyhow!("digest {id}: {e}")),
    }
}
