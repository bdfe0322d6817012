//! Intake: the one owner of turning a validated request into written notifications.
//!
//! Every path that creates deliveries goes through here, in the same order: the recipients'
//! delivery profiles (one users-service call, [`profiles_for`]) → planning with preferences,
//! contacts and quiet hours, then the suppression list ([`plan`]) → the template rendered in
//! the locales that will be sent ([`render`]) → written durably. The send route
//! ([`accept`]: the gRPC twin reaches it through the bff), the welcome of a new user
//! (`events`) and channel fallback (`fallback`) differ only in what they write: a new
//! notification with its idempotency key, a notification with a deterministic id written once,
//! deliveries added to an existing notification.
//!
//! [`writer`] is how accepted requests are committed (group commit).

mod writer;

use std::collections::HashMap;

use api::profiles::DeliveryProfile;
use chrono::{DateTime, Utc};
use common::{auth::Principal, problem::ApiError};
use uuid::Uuid;

pub use writer::{Intake, IntakeConfig, Planned};

use crate::{
    AppState,
    db::idempotency::{self as idem, Claim},
    planning::{self, PlannedDelivery},
    request::{Recipient, SendBody, SendRequest},
    views::NotificationView,
};

/// What became of a submitted send request.
pub enum Submitted {
    /// Written durably: the answer a service sees.
    Accepted(NotificationView),
    /// An earlier request with the same `Idempotency-Key` and body: its stored answer.
    Replayed(serde_json::Value),
}

/// An idempotency key with the hash of the body it came with, and the field a problem names
/// (`Idempotency-Key` for a single send, `idempotency_key` for a batch item).
pub struct Keyed {
    pub key: String,
    pub hash: String,
    pub field: &'static str,
}

/// A service's send request as it arrived (parsed, with its idempotency key): validated,
/// checked against the caller's grants, its key claimed, then [`accept`]ed; a key is released
/// again if accepting fails, so a retry can succeed.
pub async fn submit(
    state: &AppState,
    principal: &Principal,
    body: SendBody,
    key: Option<Keyed>,
) -> Result<Submitted, ApiError> {
    let now = Utc::now();
    // Invalid requests are refused before the key is claimed: nothing is remembered for them.
    let req = crate::request::validate(body, &state.planning.enabled_channels, now)?;
    state.permissions.check(principal.subject(), &req)?;
    let caller = principal.subject();
    if let Some(Keyed { key, hash, field }) = &key {
        match idem::claim(&state.pool, caller, key, hash).await? {
            Claim::New => {}
            Claim::Replay(response) => return Ok(Submitted::Replayed(response)),
            Claim::InFlight => {
                return Err(ApiError::conflict(
                    "idempotency_in_flight",
                    "a request with this Idempotency-Key is still being handled; retry shortly",
                )
                .with_header(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                ));
            }
            Claim::Mismatch => {
                return Err(ApiError::invalid_field(
                    *field,
                    "was already used with a different request body",
                ));
            }
        }
    }
    let key = key.map(|k| k.key);
    let accepted = accept(state, principal, &req, key.as_deref(), now).await;
    if accepted.is_err()
        && let Some(key) = &key
        && let Err(e) = idem::release(&state.pool, caller, key).await
    {
        tracing::warn!(error = %e, "could not release an idempotency key");
    }
    accepted.map(Submitted::Accepted)
}

/// The delivery profiles of the request's `user_id` recipients, in one users-service call (as
/// notification-service itself: users-service serves profiles to it only).
pub async fn profiles_for(
    state: &AppState,
    req: &SendRequest,
) -> Result<HashMap<Uuid, DeliveryProfile>, ApiError> {
    let user_ids: Vec<Uuid> = req
        .recipients
        .iter()
        .filter_map(|r| match r {
            Recipient::User(id) => Some(*id),
            _ => None,
        })
        .collect();
    if user_ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(state
        .users
        .profiles(&state.users.service_token()?, &user_ids)
        .await?
        .into_iter()
        .map(|p| (p.user_id, p))
        .collect())
}

/// The deliveries `req` becomes: planned (preferences, contacts, quiet hours), then checked
/// against the suppression list.
pub async fn plan(
    state: &AppState,
    req: &SendRequest,
    profiles: &HashMap<Uuid, DeliveryProfile>,
    now: DateTime<Utc>,
) -> Result<Vec<PlannedDelivery>, ApiError> {
    let mut deliveries = planning::plan(req, profiles, &state.planning, now);
    crate::suppression::apply(&state.pool, &mut deliveries).await?;
    Ok(deliveries)
}

/// Renders a template request in the locales of the deliveries that will be sent (nothing for
/// a request with its own content). A missing template or a failed rendering is a 422 naming
/// `template` or `data`.
pub async fn render(
    state: &AppState,
    req: &mut SendRequest,
    deliveries: &[PlannedDelivery],
) -> Result<(), ApiError> {
    if req.template.is_none() {
        return Ok(());
    }
    let mut conn = state.pool.acquire().await?;
    crate::templates::apply(
        &mut conn,
        req,
        &planning::locales_to_render(deliveries),
        &state.planning.default_locale,
    )
    .await
}

/// Accepts a validated send request: planned, rendered, bounded, and written durably (with its
/// idempotency key's answer, in the same transaction) before it returns the answer a service
/// sees.
pub async fn accept(
    state: &AppState,
    principal: &Principal,
    req: &SendRequest,
    key: Option<&str>,
    now: DateTime<Utc>,
) -> Result<NotificationView, ApiError> {
    let profiles = profiles_for(state, req).await?;
    let deliveries = plan(state, req, &profiles, now).await?;
    let mut req = req.clone();
    render(state, &mut req, &deliveries).await?;
    let planned = planning::planned_bytes(&req, &deliveries);
    if planned > planning::MAX_PLANNED_BYTES {
        return Err(ApiError::invalid_field(
            "recipients",
            format!(
                "this request would write {} MB of dispatch messages (every delivery carries the content); at most {} MB: send fewer recipients per request or smaller content",
                planned / 1_000_000,
                planning::MAX_PLANNED_BYTES / 1_000_000
            ),
        ));
    }
    let mut planned = Planned::new(principal.subject(), req, deliveries, now)?;
    tracing::Span::current().record("notification_id", tracing::field::display(planned.id));
    // Only services send: the answer (stored for replays too) shows what a service may see.
    let view = crate::views::for_service(planned.notification().view());
    if let Some(key) = key {
        let response = serde_json::to_value(&view).map_err(anyhow::Error::from)?;
        planned.idempotency = Some((key.to_owned(), response));
    }
    let deliveries = planned.deliveries.len();
    // Committed (possibly together with concurrent requests) before this returns.
    state.intake.write(planned).await?;
    tracing::info!(deliveries, "notification accepted");
    Ok(view)
}

/// How many items of a batch are planned at once (their writes share group commits).
const BATCH_CONCURRENCY: usize = 32;

/// `POST /v1/notifications/batch`: each item submitted as a single send would be (its own
/// validation, grant check and idempotency key), several at once so their writes share
/// transactions; one answer per item, in order. One bad item never fails the others. The
/// whole request is refused (422, nothing written) only for what no item can fix: not 1 to
/// 1,000 items, or more than 10,000 recipients in all.
pub async fn submit_batch(
    state: &AppState,
    principal: &Principal,
    body: api::notifications::BatchBody,
) -> Result<api::notifications::BatchAnswer, ApiError> {
    use api::notifications::{BatchAnswer, BatchResult, MAX_BATCH_ITEMS, MAX_BATCH_RECIPIENTS};
    use futures::StreamExt;

    let items = body.notifications;
    if !(1..=MAX_BATCH_ITEMS).contains(&items.len()) {
        return Err(ApiError::invalid_field(
            "notifications",
            format!("must hold 1 to {MAX_BATCH_ITEMS} notifications"),
        ));
    }
    let recipients: usize = items
        .iter()
        .map(|i| {
            i.get("recipients")
                .and_then(|r| r.as_array())
                .map_or(0, Vec::len)
        })
        .sum();
    if recipients > MAX_BATCH_RECIPIENTS {
        return Err(ApiError::invalid_field(
            "notifications",
            format!(
                "hold {recipients} recipients in all; at most {MAX_BATCH_RECIPIENTS} per batch"
            ),
        ));
    }
    let results: Vec<BatchResult> = futures::stream::iter(items.into_iter().enumerate())
        .map(|(i, item)| async move {
            let outcome = match batch_item(item) {
                Ok((body, key)) => submit(state, principal, body, key).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(Submitted::Accepted(view)) => BatchResult {
                    status: 202,
                    id: Some(view.id),
                    problem: None,
                },
                Ok(Submitted::Replayed(answer)) => BatchResult {
                    status: 200,
                    id: answer["id"].as_str().and_then(|id| id.parse().ok()),
                    problem: None,
                },
                Err(e) => {
                    if e.status.is_server_error() {
                        tracing::warn!(item = i, error = %e, "a batch item was not accepted");
                    }
                    BatchResult {
                        status: e.status.as_u16(),
                        id: None,
                        problem: Some(e.problem()),
                    }
                }
            }
        })
        .buffered(BATCH_CONCURRENCY)
        .collect()
        .await;
    Ok(BatchAnswer { results })
}

/// One item of a batch: its send body and its idempotency key with the hash of the rest (the
/// same key and item within 24 h are a replay, as for a single send).
fn batch_item(mut item: serde_json::Value) -> Result<(SendBody, Option<Keyed>), ApiError> {
    let key = match item
        .as_object_mut()
        .and_then(|o| o.remove("idempotency_key"))
    {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(k)) => Some(
            common::idempotency::parse_key(Some(k.as_str()))
                .ok()
                .flatten()
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "idempotency_key",
                        "must be 1-255 visible ASCII characters",
                    )
                })?,
        ),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "idempotency_key",
                "must be 1-255 visible ASCII characters",
            ));
        }
    };
    let bytes = serde_json::to_vec(&item).map_err(anyhow::Error::from)?;
    let body: SendBody = common::http::parse_json(&bytes)?;
    let key = key.map(|key| Keyed {
        key,
        hash: common::idempotency::body_hash(&bytes),
        field: "idempotency_key",
    });
    Ok((body, key))
}
