//! Admin reads: `GET /v1/admin/notifications` (filters, keyset pagination; the same search
//! answers a service's `GET /v1/notifications` with its own notifications),
//! `GET /v1/admin/deliveries/{id}` (every attempt and re-drive), `GET /v1/admin/stats?window=`,
//! `GET /v1/admin/attempts` (every provider attempt in the order it was recorded: what
//! `notifyctl tail` follows).

use api::admin::{
    AttemptFeed, AttemptQuery, DeliveryDetail, NotificationPage, NotificationQuery,
    SkippedEventPage, SkippedEventQuery, Stats, StatsQuery,
};
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::get,
};
use chrono::{DateTime, Utc};
use common::{
    auth::{Principal, Role},
    events::Channel,
    problem::ApiError,
};
use uuid::Uuid;

use crate::{AppState, db::notifications as db};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/notifications", get(list))
        .route("/v1/admin/deliveries/{id}", get(delivery))
        .route("/v1/admin/stats", get(stats))
        .route("/v1/admin/attempts", get(attempts))
        .route("/v1/admin/skipped-events", get(skipped_events))
}

/// `<timestamp in µs>_<id>`: the keyset position handed out as `next_cursor`.
pub(crate) fn cursor_of(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}_{}", at.timestamp_micros(), id)
}

pub(crate) fn parse_cursor(c: &str) -> Option<(DateTime<Utc>, Uuid)> {
    if !api::rules::PAGE_CURSOR.is_match(c) {
        return None;
    }
    let (micros, id) = c.split_once('_')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        Uuid::parse_str(id).ok()?,
    ))
}

/// An admin list's `limit` (1..=200, default 50) and `cursor`, each problem added to `errors`.
pub(crate) fn page_args(
    limit: Option<i64>,
    cursor: Option<&str>,
    errors: &mut Vec<common::problem::FieldError>,
) -> (i64, Option<(DateTime<Utc>, Uuid)>) {
    let limit = limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        errors.push(common::problem::FieldError::new(
            "limit",
            "must be from 1 to 200",
        ));
    }
    let cursor = cursor.filter(|c| !c.is_empty()).and_then(|c| {
        let parsed = parse_cursor(c);
        if parsed.is_none() {
            errors.push(common::problem::FieldError::new(
                "cursor",
                "is not a cursor this API gave out",
            ));
        }
        parsed
    });
    (limit, cursor)
}

/// `GET /v1/admin/notifications`: every sender's notifications.
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<NotificationQuery>,
) -> Result<Json<NotificationPage>, ApiError> {
    principal.require(&[Role::Admin])?;
    search(&state, &q, None).await.map(Json)
}

/// Notifications matching every given filter (and sent by `owner`, when given), newest
/// first. The SQL holds only the filters given, so each combination gets a plan on its own
/// index.
pub(crate) async fn search(
    state: &AppState,
    q: &NotificationQuery,
    owner: Option<&str>,
) -> Result<NotificationPage, ApiError> {
    let mut errors = Vec::new();
    if q.status
        .as_deref()
        .is_some_and(|s| delivery::Status::parse(s).is_none())
    {
        errors.push(common::problem::FieldError::new(
            "status",
            "is not a delivery status",
        ));
    }
    if q.channel
        .as_deref()
        .is_some_and(|c| Channel::parse(c).is_none())
    {
        errors.push(common::problem::FieldError::new(
            "channel",
            "is not a channel",
        ));
    }
    if q.category
        .as_deref()
        .is_some_and(|c| common::address::parse_name(c).is_err())
    {
        errors.push(common::problem::FieldError::new(
            "category",
            common::address::NAME_RULE,
        ));
    }
    if q.recipient
        .as_deref()
        .is_some_and(|r| r.chars().count() > api::rules::MAX_ADDRESS_CHARS)
    {
        errors.push(common::problem::FieldError::new(
            "recipient",
            "must be at most 320 characters",
        ));
    }
    let (limit, cursor) = page_args(q.limit, q.cursor.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }

    let mut conn = state.pool.acquire().await?;
    let mut items = crate::db::admin::search(&mut conn, q, owner, cursor, limit + 1).await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|n| cursor_of(n.created_at, n.id))
    } else {
        None
    };
    Ok(NotificationPage { items, next_cursor })
}

async fn delivery(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<DeliveryDetail>, ApiError> {
    principal.require(&[Role::Admin])?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("no delivery has this id"))?;
    let mut conn = state.pool.acquire().await?;
    let delivery = db::deliveries(&mut conn, &[id])
        .await?
        .pop()
        .ok_or_else(|| ApiError::not_found("no delivery has this id"))?;
    let attempt_log = crate::db::admin::attempts(&mut conn, id).await?;
    let redrives = crate::db::admin::redrives(&mut conn, id).await?;
    let inbox = if delivery.channel == common::events::Channel::InApp.as_str() {
        crate::db::inbox::item(&mut conn, id)
            .await?
            .map(|i| api::admin::InboxMarks {
                seen_at: i.seen_at,
                read_at: i.read_at,
                archived_at: i.archived_at,
                clicked_at: i.clicked_at,
            })
    } else {
        None
    };
    Ok(Json(DeliveryDetail {
        delivery,
        attempt_log,
        redrives,
        inbox,
    }))
}

/// How long the attempts feed holds back what was just recorded (see
/// `db::admin::attempts_after`).
const FEED_SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// `<timestamp in µs>_<delivery id>_<attempt>`: a position in the attempts feed.
fn feed_cursor((at, id, attempt): crate::db::admin::FeedPosition) -> String {
    format!("{}_{id}_{attempt}", at.timestamp_micros())
}

fn parse_feed_cursor(c: &str) -> Option<crate::db::admin::FeedPosition> {
    if !api::rules::FEED_CURSOR.is_match(c) {
        return None;
    }
    let mut parts = c.splitn(3, '_');
    let at =
        DateTime::from_timestamp_micros(parts.next()?.parse().ok()?).filter(in_database_range)?;
    let id = Uuid::parse_str(parts.next()?).ok()?;
    let attempt = parts.next()?.parse().ok()?;
    Some((at, id, attempt))
}

/// Postgres's `timestamptz` holds less than chrono's `DateTime`: outside it, a query fails.
fn in_database_range(t: &DateTime<Utc>) -> bool {
    (1..=9999).contains(&chrono::Datelike::year(t))
}

/// `GET /v1/admin/attempts`: every provider attempt after a position, oldest first.
async fn attempts(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<AttemptQuery>,
) -> Result<Json<AttemptFeed>, ApiError> {
    principal.require(&[Role::Admin])?;
    let mut errors = Vec::new();
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        errors.push(common::problem::FieldError::new(
            "limit",
            "must be from 1 to 500",
        ));
    }
    let cursor = q.cursor.as_deref().filter(|c| !c.is_empty());
    let after = cursor.and_then(parse_feed_cursor);
    if cursor.is_some() && after.is_none() {
        errors.push(common::problem::FieldError::new(
            "cursor",
            "is not a cursor this API gave out",
        ));
    }
    if q.since.is_some_and(|s| !in_database_range(&s)) {
        errors.push(common::problem::FieldError::new(
            "since",
            "must be between the years 1 and 9999",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let mut conn = state.pool.acquire().await?;
    // A start position sorts before every attempt recorded at that instant (no delivery has
    // the nil id).
    let after = match (after, q.since) {
        // Both: whichever is later.
        (Some(after), Some(since)) => after.max((since, Uuid::nil(), 0)),
        (Some(after), None) => after,
        (None, Some(since)) => (since, Uuid::nil(), 0),
        (None, None) => (
            crate::db::admin::feed_start(&mut conn, FEED_SETTLE).await?,
            Uuid::nil(),
            0,
        ),
    };
    let items = crate::db::admin::attempts_after(&mut conn, after, FEED_SETTLE, limit).await?;
    let last = items
        .last()
        .map_or(after, |e| (e.recorded_at, e.delivery_id, e.attempt.attempt));
    Ok(Json(AttemptFeed {
        items,
        cursor: feed_cursor(last),
    }))
}

/// A length of time as [`api::rules::DURATION`] says it: 1 s to 31 days.
fn parse_window(w: &str) -> Option<i64> {
    api::rules::seconds(&api::rules::DURATION, w)
}

async fn stats(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<StatsQuery>,
) -> Result<Json<Stats>, ApiError> {
    principal.require(&[Role::Admin])?;
    let window_secs = parse_window(q.window.as_deref().unwrap_or("1h")).ok_or_else(|| {
        ApiError::invalid_field("window", "must be like 30s, 15m, 1h or 7d (at most 31d)")
    })?;
    // At most 500 buckets and none longer than the window: a bucket outside that is widened
    // or narrowed to fit, and the answer says which length was used.
    let bucket_secs = match q.bucket.as_deref() {
        None => None,
        Some(b) => Some(
            parse_window(b)
                .ok_or_else(|| {
                    ApiError::invalid_field("bucket", "must be like 1m, 5m or 1h (at most 31d)")
                })?
                .clamp((window_secs + 499) / 500, window_secs),
        ),
    };
    let mut conn = state.pool.acquire().await?;
    let (counts, suppressed) = crate::db::admin::counts(&mut conn, window_secs).await?;
    let latency_ms = crate::db::admin::latency(&mut conn, window_secs).await?;
    let inbox = crate::db::inbox::stats(&mut conn, window_secs).await?;
    let series = match bucket_secs {
        Some(b) => Some(crate::db::admin::series(&mut conn, window_secs, b).await?),
        None => None,
    };
    Ok(Json(Stats {
        window_secs,
        bucket_secs,
        counts,
        suppressed,
        latency_ms,
        inbox,
        series,
    }))
}

/// `GET /v1/admin/skipped-events`: events of `notify.events` that could never be handled,
/// newest first (a welcome whose template does not render, a message that does not decode).
async fn skipped_events(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<SkippedEventQuery>,
) -> Result<Json<SkippedEventPage>, ApiError> {
    principal.require(&[Role::Admin])?;
    let mut errors = Vec::new();
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        errors.push(common::problem::FieldError::new(
            "limit",
            "must be from 1 to 200",
        ));
    }
    let cursor = q.cursor.as_deref().filter(|c| !c.is_empty());
    let before = cursor.and_then(|c| {
        if !api::rules::SKIPPED_CURSOR.is_match(c) {
            return None;
        }
        let (micros, id) = c.split_once('_')?;
        Some((
            DateTime::from_timestamp_micros(micros.parse().ok()?).filter(in_database_range)?,
            id.parse::<i64>().ok()?,
        ))
    });
    if cursor.is_some() && before.is_none() {
        errors.push(common::problem::FieldError::new(
            "cursor",
            "is not a cursor this API gave out",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let mut conn = state.pool.acquire().await?;
    let mut items = crate::db::skipped::list(&mut conn, before, limit + 1).await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items
            .last()
            .map(|e| format!("{}_{}", e.skipped_at.timestamp_micros(), e.id))
    } else {
        None
    };
    Ok(Json(SkippedEventPage { items, next_cursor }))
}

#[cfg(test)]
mod tests {
    use super::{feed_cursor, parse_feed_cursor, parse_window};

    #[test]
    fn feed_cursors_round_trip_and_others_are_refused() {
        let pos = (
            chrono::DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
            uuid::Uuid::new_v4(),
            3,
        );
        assert_eq!(parse_feed_cursor(&feed_cursor(pos)), Some(pos));
        let id = uuid::Uuid::nil();
        for bad in [
            String::new(),
            "1_2_3".into(),
            format!("x_{id}_1"),
            format!("1_{id}"),
            format!("1_{id}_x"),
            // Outside what Postgres stores: refused, not a 500.
            format!("-62198755200000000_{id}_1"),
            format!("{}_{id}_1", i64::MAX),
        ] {
            assert_eq!(parse_feed_cursor(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn windows_parse_and_anything_else_is_refused_without_a_panic() {
        assert_eq!(parse_window("30s"), Some(30));
        assert_eq!(parse_window("15m"), Some(900));
        assert_eq!(parse_window("1h"), Some(3600));
        assert_eq!(parse_window("31d"), Some(31 * 86_400));
        assert_eq!(parse_window("32d"), None);
        // Found by schemathesis: a multi-byte last character panicked (500), a huge number
        // overflowed.
        for bad in [
            "¿",
            "1¿",
            "",
            "h",
            "0h",
            "-1h",
            "9223372036854775807d",
            "1 h",
        ] {
            assert_eq!(parse_window(bad), None, "{bad:?}");
        }
    }
}
