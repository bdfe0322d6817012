//! The in-app inbox's tables (migration 0017, decision 0029).
//!
//! Every change to a user's inbox — an item stored, a mark, a purge — first locks that user's
//! `inbox_counts` row, so a user's changes are serialised: each takes `last_seq + 1`, numbers
//! are given in commit order, and the counts move with the items in the same transaction
//! (two tabs marking the same item at once change the counts once).

use api::inbox::{InboxCounts, InboxEvent, InboxItem, Mark};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row, postgres::PgRow};
use uuid::Uuid;

/// An item to store (from an `in_app` dispatch).
pub struct NewItem<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub notification_id: Uuid,
    pub subject: Option<&'a str>,
    pub text: &'a str,
    pub data: Option<&'a serde_json::Value>,
}

const ITEM_COLUMNS: &str = "i.id, i.notification_id, i.seq, i.category, i.subject, i.text, \
     i.data, i.created_at, i.seen_at, i.read_at, i.archived_at, i.clicked_at";

fn item_of(row: &PgRow) -> sqlx::Result<InboxItem> {
    Ok(InboxItem {
        id: row.try_get("id")?,
        notification_id: row.try_get("notification_id")?,
        seq: row.try_get("seq")?,
        category: row.try_get("category")?,
        subject: row.try_get("subject")?,
        text: row.try_get("text")?,
        data: row.try_get("data")?,
        created_at: row.try_get("created_at")?,
        seen_at: row.try_get("seen_at")?,
        read_at: row.try_get("read_at")?,
        archived_at: row.try_get("archived_at")?,
        clicked_at: row.try_get("clicked_at")?,
    })
}

/// Locks the user's counts row (created if missing): `(last_seq, counts)`.
async fn lock(conn: &mut PgConnection, user: Uuid) -> sqlx::Result<(i64, InboxCounts)> {
    let row = sqlx::query(
        "INSERT INTO inbox_counts (user_id) VALUES ($1)
         ON CONFLICT (user_id) DO UPDATE SET last_seq = inbox_counts.last_seq
         RETURNING last_seq, unread, unseen",
    )
    .bind(user)
    .fetch_one(&mut *conn)
    .await?;
    Ok((
        row.try_get("last_seq")?,
        InboxCounts {
            unread: row.try_get("unread")?,
            unseen: row.try_get("unseen")?,
        },
    ))
}

/// Records change `seq` with the counts after it; answers when it was made.
async fn log(
    conn: &mut PgConnection,
    user: Uuid,
    seq: i64,
    kind: &str,
    item: Option<Uuid>,
    counts: InboxCounts,
) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query(
        "WITH c AS (
             UPDATE inbox_counts SET last_seq = $2, unread = $5, unseen = $6 WHERE user_id = $1
         )
         INSERT INTO inbox_events (user_id, seq, kind, item_id, unread, unseen)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING at",
    )
    .bind(user)
    .bind(seq)
    .bind(kind)
    .bind(item)
    .bind(counts.unread)
    .bind(counts.unseen)
    .fetch_one(&mut *conn)
    .await?
    .try_get("at")
}

/// Stores an item unless it is stored already (a dispatch handled twice): the change it made.
pub async fn store(
    conn: &mut PgConnection,
    item: &NewItem<'_>,
) -> sqlx::Result<Option<InboxEvent>> {
    let user = item.user_id;
    let (last, counts) = lock(conn, user).await?;
    let seq = last + 1;
    let row = sqlx::query(&format!(
        "WITH i AS (
             INSERT INTO inbox_items (id, user_id, seq, notification_id, category, subject, text, data)
             SELECT $1, $2, $3, $4, n.category, $5, $6, $7 FROM notifications n WHERE n.id = $4
             ON CONFLICT (id) DO NOTHING
             RETURNING *
         )
         SELECT {ITEM_COLUMNS} FROM i"
    ))
    .bind(item.id)
    .bind(item.user_id)
    .bind(seq)
    .bind(item.notification_id)
    .bind(item.subject)
    .bind(item.text)
    .bind(item.data)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let item = item_of(&row)?;
    let counts = InboxCounts {
        unread: counts.unread + 1,
        unseen: counts.unseen + 1,
    };
    let at = log(conn, user, seq, "new", Some(item.id), counts).await?;
    Ok(Some(InboxEvent {
        seq,
        kind: "new".into(),
        item: Some(item),
        counts,
        at,
    }))
}

/// What a mark did to one item.
pub enum MarkResult {
    /// No such item of this user.
    NotFound,
    /// It had the mark already: nothing changed.
    Unchanged(InboxItem, InboxCounts),
    Changed(InboxEvent),
}

/// Marks the user's item `id`.
pub async fn mark(
    conn: &mut PgConnection,
    user: Uuid,
    id: Uuid,
    mark: Mark,
) -> sqlx::Result<MarkResult> {
    let (last, counts) = lock(conn, user).await?;
    let row = sqlx::query(&format!(
        "SELECT {ITEM_COLUMNS} FROM inbox_items i WHERE i.id = $1 AND i.user_id = $2"
    ))
    .bind(id)
    .bind(user)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(MarkResult::NotFound);
    };
    let before = item_of(&row)?;
    let (after, counts) = marked(&before, counts, mark, Utc::now());
    if after == before {
        return Ok(MarkResult::Unchanged(before, counts));
    }
    sqlx::query(
        "UPDATE inbox_items SET seen_at = $2, read_at = $3, archived_at = $4, clicked_at = $5
         WHERE id = $1",
    )
    .bind(id)
    .bind(after.seen_at)
    .bind(after.read_at)
    .bind(after.archived_at)
    .bind(after.clicked_at)
    .execute(&mut *conn)
    .await?;
    let seq = last + 1;
    let at = log(conn, user, seq, mark.as_str(), Some(id), counts).await?;
    Ok(MarkResult::Changed(InboxEvent {
        seq,
        kind: mark.as_str().into(),
        item: Some(after),
        counts,
        at,
    }))
}

/// An item and the counts after `mark` (read and clicked imply seen; clicked implies read;
/// an archived item counts as neither unread nor unseen).
pub fn marked(
    item: &InboxItem,
    counts: InboxCounts,
    mark: Mark,
    now: DateTime<Utc>,
) -> (InboxItem, InboxCounts) {
    let mut after = item.clone();
    let set = |t: &mut Option<DateTime<Utc>>| {
        t.get_or_insert(now);
    };
    match mark {
        Mark::Seen => set(&mut after.seen_at),
        Mark::Read => {
            set(&mut after.seen_at);
            set(&mut after.read_at);
        }
        Mark::Clicked => {
            set(&mut after.seen_at);
            set(&mut after.read_at);
            set(&mut after.clicked_at);
        }
        Mark::Archived => set(&mut after.archived_at),
    }
    let unread = |i: &InboxItem| i64::from(i.read_at.is_none() && i.archived_at.is_none());
    let unseen = |i: &InboxItem| i64::from(i.seen_at.is_none() && i.archived_at.is_none());
    let counts = InboxCounts {
        unread: counts.unread - unread(item) + unread(&after),
        unseen: counts.unseen - unseen(item) + unseen(&after),
    };
    (after, counts)
}

/// Marks every unread item read (`Mark::Read`) or every unseen item seen (`Mark::Seen`); the
/// change, when there was one.
pub async fn mark_all(
    conn: &mut PgConnection,
    user: Uuid,
    mark: Mark,
) -> sqlx::Result<(Option<InboxEvent>, InboxCounts)> {
    let (last, counts) = lock(conn, user).await?;
    let (sql, kind, after) = match mark {
        Mark::Read => (
            "UPDATE inbox_items SET read_at = now(), seen_at = coalesce(seen_at, now())
             WHERE user_id = $1 AND read_at IS NULL AND archived_at IS NULL",
            "read_all",
            InboxCounts {
                unread: 0,
                unseen: 0,
            },
        ),
        _ => (
            "UPDATE inbox_items SET seen_at = now()
             WHERE user_id = $1 AND seen_at IS NULL AND archived_at IS NULL",
            "seen_all",
            InboxCounts {
                unread: counts.unread,
                unseen: 0,
            },
        ),
    };
    let changed = sqlx::query(sql)
        .bind(user)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if changed == 0 && after == counts {
        return Ok((None, counts));
    }
    let seq = last + 1;
    let at = log(conn, user, seq, kind, None, after).await?;
    Ok((
        Some(InboxEvent {
            seq,
            kind: kind.into(),
            item: None,
            counts: after,
            at,
        }),
        after,
    ))
}

/// Which items a page lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Every item not archived.
    Inbox,
    Unread,
    Read,
    Archived,
}

/// A page of the user's items older than `before` (a `seq`), newest first.
pub async fn list(
    conn: &mut PgConnection,
    user: Uuid,
    filter: Filter,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<InboxItem>> {
    let condition = match filter {
        Filter::Inbox => "i.archived_at IS NULL",
        Filter::Unread => "i.read_at IS NULL AND i.archived_at IS NULL",
        Filter::Read => "i.read_at IS NOT NULL AND i.archived_at IS NULL",
        Filter::Archived => "i.archived_at IS NOT NULL",
    };
    sqlx::query(&format!(
        "SELECT {ITEM_COLUMNS} FROM inbox_items i
         WHERE i.user_id = $1 AND {condition} AND ($2::bigint IS NULL OR i.seq < $2)
         ORDER BY i.seq DESC LIMIT $3"
    ))
    .bind(user)
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(item_of)
    .collect()
}

/// The user's counts and latest change (zeros for a user with no inbox yet).
pub async fn counts(conn: &mut PgConnection, user: Uuid) -> sqlx::Result<(InboxCounts, i64)> {
    let row = sqlx::query("SELECT unread, unseen, last_seq FROM inbox_counts WHERE user_id = $1")
        .bind(user)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        None => (InboxCounts::default(), 0),
        Some(r) => (
            InboxCounts {
                unread: r.try_get("unread")?,
                unseen: r.try_get("unseen")?,
            },
            r.try_get("last_seq")?,
        ),
    })
}

/// Up to `limit` changes after `after`, oldest first, each with its item as it is now.
pub async fn changes(
    conn: &mut PgConnection,
    user: Uuid,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<InboxEvent>> {
    let rows = sqlx::query(&format!(
        "SELECT e.seq AS event_seq, e.kind, e.unread, e.unseen, e.at, e.item_id,
                {ITEM_COLUMNS}
         FROM inbox_events e LEFT JOIN inbox_items i ON i.id = e.item_id
         WHERE e.user_id = $1 AND e.seq > $2
         ORDER BY e.seq LIMIT $3"
    ))
    .bind(user)
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let has_item = r.try_get::<Option<Uuid>, _>("id")?.is_some();
            Ok(InboxEvent {
                seq: r.try_get("event_seq")?,
                kind: r.try_get("kind")?,
                item: if has_item { Some(item_of(r)?) } else { None },
                counts: InboxCounts {
                    unread: r.try_get("unread")?,
                    unseen: r.try_get("unseen")?,
                },
                at: r.try_get("at")?,
            })
        })
        .collect()
}

/// The marks of the in-app delivery `id` (for its history), when it was stored.
pub async fn item(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<InboxItem>> {
    sqlx::query(&format!(
        "SELECT {ITEM_COLUMNS} FROM inbox_items i WHERE i.id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(item_of)
    .transpose()
}

/// In-app items stored in the last `window_secs`, and how many were seen, read, archived,
/// clicked (`inbox_items_created`).
pub async fn stats(
    conn: &mut PgConnection,
    window_secs: i64,
) -> sqlx::Result<api::admin::InboxStats> {
    let r = sqlx::query(
        "SELECT count(*) AS items, count(seen_at) AS seen, count(read_at) AS read,
                count(archived_at) AS archived, count(clicked_at) AS clicked
         FROM inbox_items WHERE created_at > now() - make_interval(secs => $1)",
    )
    .bind(window_secs as f64)
    .fetch_one(&mut *conn)
    .await?;
    Ok(api::admin::InboxStats {
        items: r.try_get("items")?,
        seen: r.try_get("seen")?,
        read: r.try_get("read")?,
        archived: r.try_get("archived")?,
        clicked: r.try_get("clicked")?,
    })
}

/// Deletes items created before `before` for up to `users` users (each user's in a
/// transaction of its own, with its counts corrected) and changes older than
/// `events_before`: how many items went.
pub async fn purge(
    pool: &sqlx::PgPool,
    before: DateTime<Utc>,
    events_before: DateTime<Utc>,
    users: i64,
) -> sqlx::Result<u64> {
    let mut conn = pool.acquire().await?;
    sqlx::query(
        "DELETE FROM inbox_events WHERE ctid = ANY (ARRAY(
             SELECT ctid FROM inbox_events WHERE at < $1 LIMIT 10000))",
    )
    .bind(events_before)
    .execute(&mut *conn)
    .await?;
    let owners: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT user_id FROM (
             SELECT user_id FROM inbox_items WHERE created_at < $1 LIMIT $2 * 100) o",
    )
    .bind(before)
    .bind(users)
    .fetch_all(&mut *conn)
    .await?;
    drop(conn);
    let mut gone = 0;
    for user in owners.into_iter().take(users as usize) {
        let mut tx = pool.begin().await?;
        let (_, counts) = lock(&mut tx, user).await?;
        let row = sqlx::query(
            "WITH d AS (
                 DELETE FROM inbox_items WHERE user_id = $1 AND created_at < $2
                 RETURNING read_at IS NULL AND archived_at IS NULL AS unread,
                           seen_at IS NULL AND archived_at IS NULL AS unseen
             )
             SELECT count(*) AS n, count(*) FILTER (WHERE unread) AS unread,
                    count(*) FILTER (WHERE unseen) AS unseen FROM d",
        )
        .bind(user)
        .bind(before)
        .fetch_one(&mut *tx)
        .await?;
        let (n, unread, unseen): (i64, i64, i64) = (
            row.try_get("n")?,
            row.try_get("unread")?,
            row.try_get("unseen")?,
        );
        sqlx::query("UPDATE inbox_counts SET unread = $2, unseen = $3 WHERE user_id = $1")
            .bind(user)
            .bind((counts.unread - unread).max(0))
            .bind((counts.unseen - unseen).max(0))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        gone += n as u64;
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> InboxItem {
        InboxItem {
            id: Uuid::nil(),
            notification_id: Uuid::nil(),
            seq: 1,
            category: "c".into(),
            subject: None,
            text: "t".into(),
            data: None,
            created_at: Utc::now(),
            seen_at: None,
            read_at: None,
            archived_at: None,
            clicked_at: None,
        }
    }

    #[test]
    fn marks_move_the_counts_once() {
        let now = Utc::now();
        let c = InboxCounts {
            unread: 3,
            unseen: 2,
        };
        let (read, after) = marked(&item(), c, Mark::Read, now);
        assert_eq!((read.read_at, read.seen_at), (Some(now), Some(now)));
        assert_eq!(
            after,
            InboxCounts {
                unread: 2,
                unseen: 1
            }
        );
        // Again: nothing moves.
        let (again, twice) = marked(&read, after, Mark::Read, now);
        assert_eq!((again, twice), (read.clone(), after));
        // Archiving a read item changes no count; archiving an unread unseen one both.
        assert_eq!(marked(&read, after, Mark::Archived, now).1, after);
        assert_eq!(
            marked(&item(), c, Mark::Archived, now).1,
            InboxCounts {
                unread: 2,
                unseen: 1
            }
        );
        // Seen leaves it unread; clicked reads it.
        assert_eq!(
            marked(&item(), c, Mark::Seen, now).1,
            InboxCounts {
                unread: 3,
                unseen: 1
            }
        );
        let (clicked, _) = marked(&item(), c, Mark::Clicked, now);
        assert!(clicked.clicked_at.is_some() && clicked.read_at.is_some());
    }
}
