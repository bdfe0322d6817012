//! Intake: the one owner of turning a request into written notifications.
//!
//! Every path that creates deliveries calls [`accept`], which runs the same steps in the same
//! order: the recipients' delivery profiles (one users-service call) → planning with
//! preferences, contacts and quiet hours, then the suppression list → the template rendered in
//! the locales that will be sent → the size bound → written durably ([`writer`]). The request's
//! [`Origin`] says only how it is written: a service's send (REST, batch, and gRPC through the
//! bff's REST twin, via [`submit`]) is a new notification written by group commit with its
//! idempotency key's answer; the welcome of a new user (`events`) a notification whose id is
//! derived from the user's, written once; channel fallback (`fallback`) deliveries added to the
//! dead delivery's notification, on the first channel of its list that can carry them.

mod writer;

use std::collections::HashMap;

use api::profiles::DeliveryProfile;
use chrono::{DateTime, Utc};
use common::{auth::Principal, events::Channel, problem::ApiError};
use uuid::Uuid;

pub use writer::{ChunkOf, Intake, IntakeConfig, Planned};

use crate::{
    AppState,
    db::idempotency::{self as idem, Claim},
    planning::{self, PlannedDelivery, PlannedStatus},
    request::{Recipient, SendBody, SendRequest},
    views::NotificationView,
};

/// What became of a submitted send request.
pub enum Submitted {
    /// Written durably: the answer a service sees.
    Accepted(Box<NotificationView>),
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

/// Where a request comes from: what it may plan, and how it is written.
pub enum Origin<'a> {
    /// A service's send: a new notification, its idempotency key's answer stored in the same
    /// transaction.
    Service {
        principal: &'a Principal,
        key: Option<&'a str>,
    },
    /// The welcome of a new user: only the channels the user has (no suppressed rows for
    /// contacts they never gave); `id` derived from the user's, so a redelivered event writes
    /// nothing twice.
    Welcome { id: Uuid },
    /// Channel fallback for the dead delivery `of` (read as `dead`): the first of `channels`
    /// that can carry it — those that cannot (opted out, no contact) are written as suppressed
    /// deliveries on the way, so the chain explains itself — added to its notification.
    Fallback {
        of: Uuid,
        dead: &'a delivery::LockedDelivery,
        channels: &'a [Channel],
    },
    /// A chunk of a send to a topic (`crate::fanout`): the subscribers in `profiles` (read
    /// with the chunk), planned like any user recipient and added to the notification once.
    /// Its content was rendered when the send was accepted.
    TopicChunk {
        chunk: writer::ChunkOf<'a>,
        profiles: &'a HashMap<Uuid, DeliveryProfile>,
    },
    /// The close of a digest (`crate::digest`): its items rendered as one notification to its
    /// recipient on its channel, written with the digest marked closed, once.
    Digest {
        folded: &'a crate::folding::Folded<'a>,
    },
}

/// What [`accept`] wrote.
#[derive(Debug)]
pub enum Accepted {
    /// A service's new notification, as the service sees it.
    Notification(Box<NotificationView>),
    /// Deliveries written; `channel`: the one a fallback chose.
    Written {
        deliveries: usize,
        channel: Option<Channel>,
    },
    /// Written before: a redelivered event, a fallback already planned.
    AlreadyWritten,
    /// Nothing to write, and why.
    Nothing(&'static str),
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
        let abandoned = state.intake.abandoned_claim_secs();
        match idem::claim(&state.pool, caller, key, hash, abandoned).await? {
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
    let origin = Origin::Service {
        principal,
        key: key.as_deref(),
    };
    let accepted = accept(state, origin, req, now).await;
    if accepted.is_err()
        && let Some(key) = &key
        && let Err(e) = idem::release(&state.pool, caller, key).await
    {
        tracing::warn!(error = %e, "could not release an idempotency key");
    }
    match accepted? {
        Accepted::Notification(view) => Ok(Submitted::Accepted(view)),
        other => Err(anyhow::anyhow!("a service's send was answered {other:?}").into()),
    }
}

/// Plans, renders, bounds and writes `req` (already validated) as `origin` asks; returns once
/// it is committed. A 4xx names what in the request cannot be sent (a missing template, a
/// rendering that fails, too much content); a 5xx is a dependency that may be back later.
pub async fn accept(
    state: &AppState,
    origin: Origin<'_>,
    mut req: SendRequest,
    now: DateTime<Utc>,
) -> Result<Accepted, ApiError> {
    let fetched;
    let profiles = match &origin {
        Origin::TopicChunk { profiles, .. } => *profiles,
        _ => {
            fetched = profiles_for(state, &req).await?;
            &fetched
        }
    };
    // A service's send to a topic: the topic must exist; its subscribers are planned later.
    let topic = match &origin {
        Origin::Service { .. } => topic_of(state, &req).await?,
        _ => None,
    };
    // A digest the sender asked for needs its template's digest form; a category's default
    // digest falls back to the built-in form.
    let asked_digest = req.digest.is_some();
    if let Origin::Service { .. } = origin {
        crate::folding::with_default(state, &mut req).await?;
    }
    let (deliveries, channel) = match &origin {
        Origin::Fallback { channels, .. } => {
            first_deliverable(state, &mut req, profiles, channels, now).await?
        }
        Origin::Welcome { .. } => {
            let mut deliveries = plan(state, &req, profiles, now).await?;
            deliveries.retain(|d| d.reason != Some("no_contact"));
            if deliveries.is_empty() {
                return Ok(Accepted::Nothing("the user has no reachable channel"));
            }
            (deliveries, None)
        }
        Origin::Service { .. } | Origin::TopicChunk { .. } | Origin::Digest { .. } => {
            (plan(state, &req, profiles, now).await?, None)
        }
    };
    let mut deliveries = deliveries;
    // Frequency caps count what a service sends; a digest is exempt (it is the reduction).
    if let Origin::Service { .. } | Origin::TopicChunk { .. } = origin {
        crate::caps::apply(state, &req, profiles, &mut deliveries, now).await?;
    }
    // A topic chunk was rendered and bounded when its send was accepted; its size is the
    // chunk's, and a bound here could only stop a fan-out half way.
    if let Origin::Digest { folded } = &origin {
        crate::folding::render(
            &mut req,
            &deliveries,
            folded,
            &state.planning.default_locale,
        )?;
    } else if !matches!(origin, Origin::TopicChunk { .. }) {
        render(state, &mut req, &deliveries, topic.is_some(), asked_digest).await?;
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
    }
    let count = deliveries.len();
    let written = match origin {
        Origin::Service { principal, key } => {
            let fanout = topic.map(|topic| crate::planned::NewFanout {
                topic,
                channels: req.channels.clone(),
                exclude: req.user_ids().collect(),
                as_of: now,
            });
            let mut planned = Planned::new(principal.subject(), req, deliveries, now)?;
            if let Some(fanout) = fanout {
                planned = planned.with_fanout(fanout)?;
            }
            tracing::Span::current().record("notification_id", tracing::field::display(planned.id));
            // Only services send: the answer (stored for replays too) shows what a service may
            // see.
            let mut view = crate::views::for_service(planned.notification().view());
            if let Some(f) = &planned.fanout {
                crate::views::with_fanout(&mut view, crate::views::accepted_fanout(&f.topic));
            }
            if let Some(key) = key {
                let response = serde_json::to_value(&view).map_err(anyhow::Error::from)?;
                planned.idempotency = Some((key.to_owned(), response));
            }
            // Committed (possibly together with concurrent requests) before this returns.
            state.intake.write(planned).await?;
            tracing::info!(deliveries = count, "notification accepted");
            return Ok(Accepted::Notification(Box::new(view)));
        }
        Origin::Welcome { id } => {
            writer::write_once(&state.pool, id, &req, &deliveries, now).await?
        }
        Origin::Fallback { of, dead, .. } => {
            writer::add_to(&state.pool, dead, of, &req, &deliveries, now).await?
        }
        Origin::TopicChunk { chunk, .. } => {
            writer::write_chunk(&state.pool, &chunk, &req, &deliveries, now).await?
        }
        Origin::Digest { folded } => {
            writer::write_digest(&state.pool, folded, &req, &deliveries, now).await?
        }
    };
    Ok(match written {
        writer::Written::Yes => Accepted::Written {
            deliveries: count,
            channel,
        },
        writer::Written::Before => Accepted::AlreadyWritten,
        writer::Written::NotNow(why) => Accepted::Nothing(why),
    })
}

/// The delivery profiles of the request's `user_id` recipients, in one users-service call (as
/// notification-service itself: users-service serves profiles to it only).
async fn profiles_for(
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

/// The topic a service's send names, once users-service confirmed it exists (a 404 naming
/// it otherwise: the body is well formed, the topic is missing).
async fn topic_of(state: &AppState, req: &SendRequest) -> Result<Option<String>, ApiError> {
    let Some(key) = req.topic() else {
        return Ok(None);
    };
    match state
        .users
        .topic(&state.users.service_token()?, key)
        .await?
    {
        Some(_) => Ok(Some(key.to_owned())),
        None => Err(ApiError::not_found(format!(
            "no topic has the key `{key}` (PUT /v1/topics/{key} creates it); nothing was sent"
        ))),
    }
}

/// The deliveries `req` becomes: planned (preferences, contacts, quiet hours), then checked
/// against the suppression list; those of a digest send that would go out are `digested`.
async fn plan(
    state: &AppState,
    req: &SendRequest,
    profiles: &HashMap<Uuid, DeliveryProfile>,
    now: DateTime<Utc>,
) -> Result<Vec<PlannedDelivery>, ApiError> {
    let mut deliveries = planning::plan(req, profiles, &state.planning, now);
    crate::suppression::apply(&state.pool, &mut deliveries).await?;
    crate::folding::mark(req, &mut deliveries);
    Ok(deliveries)
}

/// [`plan`] on each of `channels` in turn until one has a delivery that is not suppressed;
/// the deliveries of every channel tried, and the last channel tried (`req.channels` is left
/// set to it).
async fn first_deliverable(
    state: &AppState,
    req: &mut SendRequest,
    profiles: &HashMap<Uuid, DeliveryProfile>,
    channels: &[Channel],
    now: DateTime<Utc>,
) -> Result<(Vec<PlannedDelivery>, Option<Channel>), ApiError> {
    let mut planned = Vec::new();
    let mut chosen = None;
    for &channel in channels {
        req.channels = Some(vec![channel]);
        let ds = plan(state, req, profiles, now).await?;
        let deliverable = ds.iter().any(|p| p.status != PlannedStatus::Suppressed);
        planned.extend(ds);
        chosen = Some(channel);
        if deliverable {
            break;
        }
    }
    Ok((planned, chosen))
}

/// Renders a template request in the locales of the deliveries that will be sent (a send to a
/// topic: in every locale of its template; nothing for a request with its own content). A
/// missing template or a failed rendering is a 422 naming `template` or `data`.
async fn render(
    state: &AppState,
    req: &mut SendRequest,
    deliveries: &[PlannedDelivery],
    every_locale: bool,
    digest_form_needed: bool,
) -> Result<(), ApiError> {
    use crate::templates::Wanted;
    if req.template.is_none() {
        return Ok(());
    }
    let mut conn = state.pool.acquire().await?;
    let locales = planning::locales_to_render(deliveries);
    let wanted = if every_locale {
        Wanted::All
    } else {
        Wanted::Locales(&locales)
    };
    crate::templates::apply(
        &mut conn,
        req,
        wanted,
        &state.planning.default_locale,
        digest_form_needed,
    )
    .await
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
    use api::notifications::{BatchAnswer, BatchResult};
    use futures::StreamExt;

    let items = body.notifications;
    let recipients: usize = items
        .iter()
        .map(|i| {
            i.get("recipients")
                .and_then(|r| r.as_array())
                .map_or(0, Vec::len)
        })
        .sum();
    api::notifications::check_batch_size(items.len(), recipients)
        .map_err(|e| ApiError::validation(vec![e]))?;
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
