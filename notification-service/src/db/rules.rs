//! Rules per category (a default digest window, a frequency cap) and the cap counters
//! (migration 0018, decision 0030).

use api::digests::{CapBody, CategoryRules};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::request::Cap;

/// A category's rules as planning uses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub digest_window_seconds: Option<i64>,
    pub cap: Option<Cap>,
}

#[derive(sqlx::FromRow)]
struct Row {
    category: String,
    digest_window_seconds: Option<i32>,
    cap_limit: Option<i32>,
    cap_window_seconds: Option<i32>,
    updated_at: DateTime<Utc>,
}

impl Row {
    fn rule(&self) -> Rule {
        Rule {
            digest_window_seconds: self.digest_window_seconds.map(i64::from),
            cap: self
                .cap_limit
                .zip(self.cap_window_seconds)
                .map(|(limit, w)| Cap {
                    limit,
                    window_seconds: i64::from(w),
                }),
        }
    }

    fn view(self) -> CategoryRules {
        let rule = self.rule();
        CategoryRules {
            category: self.category,
            digest_window: rule.digest_window_seconds.map(api::digests::window_text),
            cap: rule.cap.map(|c| CapBody::stored(c.limit, c.window_seconds)),
            updated_at: self.updated_at,
        }
    }
}

const COLUMNS: &str = "category, digest_window_seconds, cap_limit, cap_window_seconds, updated_at";

/// Every category's rules, by name.
pub async fn all(pool: &PgPool) -> sqlx::Result<std::collections::HashMap<String, Rule>> {
    let rows: Vec<Row> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM category_rules"))
        .fetch_all(pool)
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.category.clone(), r.rule()))
        .collect())
}

/// Every category's rules, as the API shows them (by name).
pub async fn list(conn: &mut PgConnection) -> sqlx::Result<Vec<CategoryRules>> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM category_rules ORDER BY category"
    ))
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Row::view).collect())
}

/// Sets `category`'s rules (replacing what it had).
pub async fn put(
    conn: &mut PgConnection,
    category: &str,
    rule: &Rule,
) -> sqlx::Result<CategoryRules> {
    let row: Row = sqlx::query_as(&format!(
        "INSERT INTO category_rules (category, digest_window_seconds, cap_limit, cap_window_seconds)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (category) DO UPDATE SET digest_window_seconds = $2, cap_limit = $3,
             cap_window_seconds = $4, updated_at = now()
         RETURNING {COLUMNS}"
    ))
    .bind(category)
    .bind(rule.digest_window_seconds.map(|w| w as i32))
    .bind(rule.cap.map(|c| c.limit))
    .bind(rule.cap.map(|c| c.window_seconds as i32))
    .fetch_one(conn)
    .await?;
    Ok(row.view())
}

/// Removes `category`'s rules; false when it had none.
pub async fn delete(conn: &mut PgConnection, category: &str) -> sqlx::Result<bool> {
    let n = sqlx::query("DELETE FROM category_rules WHERE category = $1")
        .bind(category)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// One counter a delivery group takes a place in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Counter {
    pub user_id: Uuid,
    pub channel: &'static str,
    /// `*` (the deployment's cap) or the category.
    pub scope: String,
    pub window_seconds: i64,
    pub window_start: DateTime<Utc>,
    pub limit: i32,
    /// The group (a user × channel of one request) it counts for.
    pub group: usize,
}

/// Takes a place in every counter of each group, all or nothing per group: a group refused
/// by one of its counters takes no place in the others. Returns the refused groups. One
/// transaction, two statements however many groups; counters are locked in key order (two
/// requests for the same user never deadlock) and held to the commit, so concurrent requests
/// from any instance see each other's counts.
pub async fn take(
    pool: &PgPool,
    counters: &[Counter],
) -> sqlx::Result<std::collections::BTreeSet<usize>> {
    let mut refused = std::collections::BTreeSet::new();
    if counters.is_empty() {
        return Ok(refused);
    }
    let mut sorted: Vec<&Counter> = counters.iter().collect();
    sorted.sort();
    let mut tx = pool.begin().await?;
    // Not waiting for this commit's WAL flush loses nothing that matters: the request's
    // deliveries are written by a later transaction whose (flushed) commit flushes this one's
    // WAL with it — a count lost in a crash is one whose delivery was never written. Waiting
    // made a check cost a flush (docs/benchmarks.md "Issue 32").
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    // Each counter below its limit moves up by one; those at it are left and not returned.
    let taken: Vec<(Uuid, String, String, i32, DateTime<Utc>)> = sqlx::query_as(
        "INSERT INTO cap_counts AS c (user_id, channel, scope, window_seconds, window_start, count, cap_limit)
         SELECT user_id, channel, scope, window_seconds, window_start, 1, lim
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int[], $5::timestamptz[], $6::int[])
              WITH ORDINALITY AS u(user_id, channel, scope, window_seconds, window_start, lim, ord)
         ORDER BY ord
         ON CONFLICT (user_id, channel, scope, window_seconds, window_start)
         DO UPDATE SET count = c.count + 1, cap_limit = EXCLUDED.cap_limit
             WHERE c.count < EXCLUDED.cap_limit
         RETURNING user_id, channel, scope, window_seconds, window_start",
    )
    .bind(sorted.iter().map(|c| c.user_id).collect::<Vec<_>>())
    .bind(sorted.iter().map(|c| c.channel).collect::<Vec<_>>())
    .bind(sorted.iter().map(|c| c.scope.as_str()).collect::<Vec<_>>())
    .bind(
        sorted
            .iter()
            .map(|c| c.window_seconds as i32)
            .collect::<Vec<_>>(),
    )
    .bind(sorted.iter().map(|c| c.window_start).collect::<Vec<_>>())
    .bind(sorted.iter().map(|c| c.limit).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let key = |c: &Counter| {
        (
            c.user_id,
            c.channel.to_owned(),
            c.scope.clone(),
            c.window_seconds as i32,
            c.window_start,
        )
    };
    let taken: std::collections::BTreeSet<_> = taken.into_iter().collect();
    for c in &sorted {
        if !taken.contains(&key(c)) {
            refused.insert(c.group);
        }
    }
    // A refused group gives back the places its other counters took.
    let give_back: Vec<&&Counter> = sorted
        .iter()
        .filter(|c| refused.contains(&c.group) && taken.contains(&key(c)))
        .collect();
    if !give_back.is_empty() {
        sqlx::query(
            "UPDATE cap_counts c SET count = c.count - 1
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int[], $5::timestamptz[])
                  AS u(user_id, channel, scope, window_seconds, window_start)
             WHERE (c.user_id, c.channel, c.scope, c.window_seconds, c.window_start)
                 = (u.user_id, u.channel, u.scope, u.window_seconds, u.window_start)",
        )
        .bind(give_back.iter().map(|c| c.user_id).collect::<Vec<_>>())
        .bind(give_back.iter().map(|c| c.channel).collect::<Vec<_>>())
        .bind(
            give_back
                .iter()
                .map(|c| c.scope.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            give_back
                .iter()
                .map(|c| c.window_seconds as i32)
                .collect::<Vec<_>>(),
        )
        .bind(give_back.iter().map(|c| c.window_start).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(refused)
}
