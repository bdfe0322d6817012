//! Dead letters: deliveries that ended `dead`, found by the admin's filter.

use api::admin::DeadLetterFilter;
use chrono::{DateTime, Utc};
use delivery::Status;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

/// `SELECT d.id FROM deliveries d WHERE d.status = <dead> AND …` for each field given (the
/// provider is the last attempt's).
fn select(filter: &DeadLetterFilter) -> QueryBuilder<'static, Postgres> {
    let mut sql = QueryBuilder::new("SELECT d.id FROM deliveries d WHERE d.status = ");
    sql.push_bind(Status::Dead.as_str());
    if let Some(c) = &filter.channel {
        sql.push(" AND d.channel = ").push_bind(c.clone());
    }
    if let Some(code) = &filter.error_code {
        sql.push(" AND d.last_error ->> 'code' = ")
            .push_bind(code.clone());
    }
    if let Some(p) = &filter.provider {
        sql.push(
            " AND (SELECT a.provider FROM attempts a WHERE a.delivery_id = d.id
                   ORDER BY a.attempt DESC LIMIT 1) = ",
        )
        .push_bind(p.clone());
    }
    if let Some(s) = filter.since {
        sql.push(" AND d.updated_at >= ").push_bind(s);
    }
    if let Some(u) = filter.until {
        sql.push(" AND d.updated_at < ").push_bind(u);
    }
    sql
}

/// Dead letters matching `filter`, newest death first, after `cursor`, at most `limit`.
pub async fn page(
    conn: &mut PgConnection,
    filter: &DeadLetterFilter,
    cursor: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    let mut sql = select(filter);
    if let Some((at, id)) = cursor {
        sql.push(" AND (d.updated_at, d.id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    sql.push(" ORDER BY d.updated_at DESC, d.id DESC LIMIT ")
        .push_bind(limit);
    sql.build_query_scalar().fetch_all(conn).await
}

/// Up to `limit` dead letters matching `filter` that died before `before`, oldest first,
/// locked for re-drive (rows another re-drive holds are skipped).
pub async fn lock_batch(
    conn: &mut PgConnection,
    filter: &DeadLetterFilter,
    before: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    let mut sql = select(filter);
    sql.push(" AND d.updated_at < ").push_bind(before);
    sql.push(" ORDER BY d.updated_at, d.id LIMIT ")
        .push_bind(limit)
        .push(" FOR NO KEY UPDATE OF d SKIP LOCKED");
    sql.build_query_scalar().fetch_all(conn).await
}
