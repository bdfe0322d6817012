//! Dead letters: `GET /v1/admin/dead-letters` (deliveries that ended `dead`, filtered by
//! channel, error code, provider and time of death, newest first, keyset-paginated) and
//! `POST /v1/admin/dead-letters/redrive` (by ids or by the same filter).
//!
//! A re-drive gives the delivery a new attempt (`current_attempt + 1`, a fresh dispatch in the
//! outbox, the whole retry schedule again) and writes who did it to `redrives`
//! (`delivery::redrive`). Deliveries that are no longer dead are left alone and
//! counted as skipped; one whose address is on the suppression list (it bounced hard, or the
//! person complained) is refused, with the reason, and stays dead.

use api::admin::{
    DeadLetterFilter, DeadLetterQuery, DeliveryPage, MAX_REDRIVE_IDS, RedriveBody, Redriven,
};
use axum::{
    Json, Router,
    extract::{Query, State},
    routing::{get, post},
};
use chrono::Utc;
use common::{
    auth::{Principal, Role},
    events::Channel,
    http::AppJson,
    problem::{ApiError, FieldError},
};
use delivery::{LockedDelivery, RedriveKind};
use uuid::Uuid;

use crate::{
    AppState,
    routes::admin::{cursor_of, page_args},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/dead-letters", get(list))
        .route("/v1/admin/dead-letters/redrive", post(redrive))
}

/// Deliveries re-driven per transaction when re-driving by filter.
const BATCH: i64 = 500;

/// Every broken field of `filter` (names prefixed with `prefix`) into `errors`.
fn check(filter: &DeadLetterFilter, prefix: &str, errors: &mut Vec<FieldError>) {
    if filter
        .channel
        .as_deref()
        .is_some_and(|c| Channel::parse(c).is_none())
    {
        errors.push(FieldError::new(
            format!("{prefix}channel"),
            "is not a channel",
        ));
    }
    for (name, v) in [
        ("error_code", &filter.error_code),
        ("provider", &filter.provider),
    ] {
        if v.as_ref().is_some_and(|v| v.is_empty() || v.len() > 200) {
            errors.push(FieldError::new(
                format!("{prefix}{name}"),
                "must be 1 to 200 characters",
            ));
        }
    }
    // `until` at or before `since` is an empty range: it matches no dead letter.
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<DeadLetterQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    principal.require(&[Role::Admin])?;
    let filter = q.filter();
    let mut errors = Vec::new();
    check(&filter, "", &mut errors);
    let (limit, cursor) = page_args(q.limit, q.cursor.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }

    let mut conn = state.pool.acquire().await?;
    let ids = crate::db::dead_letters::page(&mut conn, &filter, cursor, limit + 1).await?;
    let more = ids.len() as i64 > limit;
    let ids: Vec<Uuid> = ids.into_iter().take(limit as usize).collect();
    let mut items = crate::db::notifications::deliveries(&mut conn, &ids).await?;
    // Same order as the keyset.
    items.sort_by_key(|d| std::cmp::Reverse((d.updated_at, d.id)));
    let next_cursor = if more {
        items.last().map(|d| cursor_of(d.updated_at, d.id))
    } else {
        None
    };
    Ok(Json(DeliveryPage { items, next_cursor }))
}

async fn redrive(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(body): AppJson<RedriveBody>,
) -> Result<Json<Redriven>, ApiError> {
    principal.require(&[Role::Admin])?;
    let mut errors = Vec::new();
    match (&body.ids, &body.filter) {
        (Some(_), Some(_)) | (None, None) => errors.push(FieldError::new(
            "ids",
            "give either `ids` or `filter` (an empty filter re-drives every dead letter)",
        )),
        (Some(ids), None) if ids.is_empty() || ids.len() > MAX_REDRIVE_IDS => {
            errors.push(FieldError::new("ids", "must hold 1 to 1000 delivery ids"))
        }
        (None, Some(f)) => check(f, "filter.", &mut errors),
        _ => {}
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let actor = principal.claims.sub.clone();
    let out = match (body.ids, body.filter) {
        (Some(ids), _) => redrive_ids(&state, &ids, &actor).await?,
        (None, Some(filter)) => redrive_filter(&state, &filter, &actor).await?,
        (None, None) => unreachable!("checked above"),
    };
    state.metrics.dead_letters_redriven.inc_by(out.redriven);
    tracing::info!(actor = %actor, redriven = out.redriven, skipped = out.skipped.len(), "dead letters re-driven");
    Ok(Json(out))
}

/// What a re-drive did with one delivery.
enum Redrive {
    Redriven,
    /// Its address is on the suppression list (a hard bounce, a complaint): sending again
    /// would hurt the sender's reputation, so it stays dead. The reason says which.
    Refused(&'static str),
    /// Not (or no longer) dead.
    NotDead,
}

/// Locks the delivery and re-drives it if it is (still) dead and its address is not
/// suppressed.
async fn redrive_if_dead(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    actor: &str,
) -> anyhow::Result<Redrive> {
    match LockedDelivery::lock(conn, id).await? {
        Some(d) if d.status == delivery::Status::Dead => {
            if let Some(address) = d.address.as_deref()
                && let Some(reason) =
                    crate::suppression::suppressed(conn, d.channel, address).await?
            {
                return Ok(Redrive::Refused(reason));
            }
            delivery::redrive(conn, &d, RedriveKind::DeadLetter, actor, d.status.as_str()).await?;
            Ok(Redrive::Redriven)
        }
        _ => Ok(Redrive::NotDead),
    }
}

/// Re-drives each dead one of `ids` in one transaction.
async fn redrive_ids(state: &AppState, ids: &[Uuid], actor: &str) -> anyhow::Result<Redriven> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    let mut tx = state.pool.begin().await?;
    let mut out = Redriven::default();
    for id in ids {
        match redrive_if_dead(&mut tx, id, actor).await? {
            Redrive::Redriven => out.redriven += 1,
            Redrive::Refused(reason) => out.refuse(id, reason),
            Redrive::NotDead => out.skipped.push(id),
        }
    }
    tx.commit().await?;
    Ok(out)
}

/// Re-drives every dead letter matching `filter` that died before this request, in batches.
async fn redrive_filter(
    state: &AppState,
    filter: &DeadLetterFilter,
    actor: &str,
) -> anyhow::Result<Redriven> {
    let started = Utc::now();
    let mut out = Redriven::default();
    let mut refused_ids = std::collections::HashSet::new();
    loop {
        let mut tx = state.pool.begin().await?;
        // One that dies again during this request is not re-driven twice; one refused stays
        // dead and matches again, so the batch leaves it out.
        let mut ids = crate::db::dead_letters::lock_batch(
            &mut tx,
            filter,
            started,
            BATCH + refused_ids.len() as i64,
        )
        .await?;
        ids.retain(|id| !refused_ids.contains(id));
        if ids.is_empty() {
            break;
        }
        for id in ids {
            match redrive_if_dead(&mut tx, id, actor).await? {
                Redrive::Redriven => out.redriven += 1,
                Redrive::Refused(reason) => {
                    refused_ids.insert(id);
                    out.refuse(id, reason);
                }
                Redrive::NotDead => {}
            }
        }
        tx.commit().await?;
    }
    Ok(out)
}
