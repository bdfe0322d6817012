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

/// A service's send request as it arrived (parsed, with its `Idempotency-Key` and the hash of
/// its body): validated, checked against the caller's grants, its key claimed, then
/// [`accept`]ed; a key is released again if accepting fails, so a retry can succeed.
pub async fn submit(
    state: &AppState,
    principal: &Principal,
    body: SendBody,
    key: Option<(String, String)>,
) -> Result<Submitted, ApiError> {
    let now = Utc::now();
    // Invalid requests are refused before the key is claimed: nothing is remembered for them.
    let req = crate::request::validate(body, &state.planning.enabled_channels, now)?;
    state.permissions.check(principal.subject(), &req)?;
    let caller = principal.subject();
    if let Some((key, hash)) = &key {
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
                    "Idempotency-Key",
                    "was already used with a different request body",
                ));
            }
        }
    }
    let key = key.map(|(k, _)| k);
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
