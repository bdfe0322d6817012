//! Dead letters: `GET /v1/admin/dead-letters` (deliveries that ended `dead`, filtered by
//! channel, error code, provider and time of death, newest first, keyset-paginated) and
//! `POST /v1/admin/dead-letters/redrive` (by ids or by the same filter).
//!
//! A re-drive gives the delivery a new attempt (`current_attempt + 1`, a fresh dispatch in the
//! outbox, the whole retry schedule again) and writes who did it to `redrives`
//! (`delivery::redrive`). Deliveries that are no longer dead are left alone and
//! counted as skipped.

use axum::{
    Json, Router,
    extract::{Query, State},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use common::{
    auth::{Principal, Role},
    events::Channel,
    http::AppJson,
    problem::{ApiError, FieldError},
};
use delivery::{LockedDelivery, RedriveKind};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::{
    AppState,
    routes::admin::{Page, cursor_of, page_args},
    views::DeliveryView,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/dead-letters", get(list))
        .route("/v1/admin/dead-letters/redrive", post(redrive))
}

/// Most ids in one re-drive request.
const MAX_IDS: usize = 1000;
/// Deliveries re-driven per transaction when re-driving by filter.
const BATCH: i64 = 500;

/// Which dead letters: every field given must match.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub channel: Option<String>,
    /// `last_error.code`, e.g. `smtp_550`, `fcm_unregistered`.
    pub error_code: Option<String>,
    /// The provider of the last attempt (`smtp`, `twilio`, `fcm`, `apns`, ...).
    pub provider: Option<String>,
    /// Died at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Died before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

impl Filter {
    fn check(&self, prefix: &str, errors: &mut Vec<FieldError>) {
        if self
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
            ("error_code", &self.error_code),
            ("provider", &self.provider),
        ] {
            if v.as_ref().is_some_and(|v| v.is_empty() || v.len() > 200) {
                errors.push(FieldError::new(
                    format!("{prefix}{name}"),
                    "must be 1 to 200 characters",
                ));
            }
        }
        if let (Some(s), Some(u)) = (self.since, self.until)
            && s >= u
        {
            errors.push(FieldError::new(
                format!("{prefix}until"),
                "must be after `since`",
            ));
        }
    }

    /// ` AND …` for each field given, on `deliveries d` (dead) with the last attempt `a`.
    fn push(&self, sql: &mut QueryBuilder<'_, Postgres>) {
        if let Some(c) = &self.channel {
            sql.push(" AND d.channel = ").push_bind(c.clone());
        }
        if let Some(code) = &self.error_code {
            sql.push(" AND d.last_error ->> 'code' = ")
                .push_bind(code.clone());
        }
        if let Some(p) = &self.provider {
            sql.push(
                " AND (SELECT a.provider FROM attempts a WHERE a.delivery_id = d.id
                       ORDER BY a.attempt DESC LIMIT 1) = ",
            )
            .push_bind(p.clone());
        }
        if let Some(s) = self.since {
            sql.push(" AND d.updated_at >= ").push_bind(s);
        }
        if let Some(u) = self.until {
            sql.push(" AND d.updated_at < ").push_bind(u);
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub channel: Option<String>,
    pub error_code: Option<String>,
    pub provider: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

impl ListQuery {
    fn filter(&self) -> Filter {
        Filter {
            channel: self.channel.clone(),
            error_code: self.error_code.clone(),
            provider: self.provider.clone(),
            since: self.since,
            until: self.until,
        }
    }
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<DeliveryView>>, ApiError> {
    principal.require(&[Role::Admin])?;
    let filter = q.filter();
    let mut errors = Vec::new();
    filter.check("", &mut errors);
    let (limit, cursor) = page_args(q.limit, q.cursor.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }

    let mut sql: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT d.id FROM deliveries d WHERE d.status = 'dead'");
    filter.push(&mut sql);
    if let Some((at, id)) = cursor {
        sql.push(" AND (d.updated_at, d.id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    sql.push(" ORDER BY d.updated_at DESC, d.id DESC LIMIT ")
        .push_bind(limit + 1);
    let mut conn = state.pool.acquire().await?;
    let ids: Vec<Uuid> = sql.build_query_scalar().fetch_all(&mut *conn).await?;
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
    Ok(Json(Page { items, next_cursor }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveBody {
    pub ids: Option<Vec<Uuid>>,
    pub filter: Option<Filter>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Redriven {
    /// Dead letters given a new attempt.
    pub redriven: u64,
    /// Ids given that were not (or no longer) dead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Uuid>,
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
        (Some(ids), None) if ids.is_empty() || ids.len() > MAX_IDS => {
            errors.push(FieldError::new("ids", "must hold 1 to 1000 delivery ids"))
        }
        (None, Some(f)) => f.check("filter.", &mut errors),
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

/// Locks the delivery and re-drives it if it is (still) dead.
async fn redrive_if_dead(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    actor: &str,
) -> anyhow::Result<bool> {
    match LockedDelivery::lock(conn, id).await? {
        Some(d) if d.status == "dead" => {
            delivery::redrive(conn, &d, RedriveKind::DeadLetter, actor, "dead").await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Re-drives each dead one of `ids` in one transaction.
async fn redrive_ids(state: &AppState, ids: &[Uuid], actor: &str) -> anyhow::Result<Redriven> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    let mut tx = state.pool.begin().await?;
    let mut out = Redriven {
        redriven: 0,
        skipped: Vec::new(),
    };
    for id in ids {
        if redrive_if_dead(&mut tx, id, actor).await? {
            out.redriven += 1;
        } else {
            out.skipped.push(id);
        }
    }
    tx.commit().await?;
    Ok(out)
}

/// Re-drives every dead letter matching `filter` that died before this request, in batches.
async fn redrive_filter(
    state: &AppState,
    filter: &Filter,
    actor: &str,
) -> anyhow::Result<Redriven> {
    let started = Utc::now();
    let mut redriven = 0;
    loop {
        let mut tx = state.pool.begin().await?;
        let mut sql: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT d.id FROM deliveries d WHERE d.status = 'dead'");
        filter.push(&mut sql);
        // One that dies again during this request is not re-driven twice.
        sql.push(" AND d.updated_at < ").push_bind(started);
        sql.push(" ORDER BY d.updated_at, d.id LIMIT ")
            .push_bind(BATCH)
            .push(" FOR NO KEY UPDATE OF d SKIP LOCKED");
        let ids: Vec<Uuid> = sql.build_query_scalar().fetch_all(&mut *tx).await?;
        if ids.is_empty() {
            break;
        }
        for id in ids {
            redriven += u64::from(redrive_if_dead(&mut tx, id, actor).await?);
        }
        tx.commit().await?;
    }
    Ok(Redriven {
        redriven,
        skipped: Vec::new(),
    })
}
