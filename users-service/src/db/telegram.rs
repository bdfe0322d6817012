//! Telegram link codes, the bot's updates taken, and chats linked to users.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// Stores a new code for `user`, valid until `expires_at`.
pub async fn add_code(
    conn: &mut PgConnection,
    code: &str,
    user: Uuid,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO telegram_link_codes (code, user_id, expires_at) VALUES ($1, $2, $3)")
        .bind(code)
        .bind(user)
        .bind(expires_at)
        .execute(conn)
        .await
        .map(drop)
}

/// Uses `code` (once, before it expires); the user it was made for.
pub async fn use_code(conn: &mut PgConnection, code: &str) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar(
        "UPDATE telegram_link_codes SET used_at = now()
         WHERE code = $1 AND used_at IS NULL AND expires_at > now()
         RETURNING user_id",
    )
    .bind(code)
    .fetch_optional(conn)
    .await
}

/// Records an update; false when it was taken before (Telegram retried it).
pub async fn first_update(conn: &mut PgConnection, update_id: i64) -> sqlx::Result<bool> {
    Ok(
        sqlx::query("INSERT INTO telegram_updates (update_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(update_id)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}

/// The user whose contacts hold this chat (at most one: a unique index).
pub async fn user_of_chat(conn: &mut PgConnection, chat_id: &str) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar("SELECT user_id FROM contacts WHERE telegram_chat_id = $1")
        .bind(chat_id)
        .fetch_optional(conn)
        .await
}

/// Takes the chat away from any other user (a chat belongs to one user).
pub async fn release_chat(
    conn: &mut PgConnection,
    chat_id: &str,
    keep: Uuid,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "UPDATE contacts SET telegram_chat_id = NULL, updated_at = now()
         WHERE telegram_chat_id = $1 AND user_id <> $2 RETURNING user_id",
    )
    .bind(chat_id)
    .bind(keep)
    .fetch_all(conn)
    .await
}

/// A write that would give a chat a second user (the unique index `contacts_telegram`) as a
/// 409; any other error as it is.
pub fn taken_as_conflict(err: sqlx::Error) -> common::problem::ApiError {
    match &err {
        sqlx::Error::Database(e) if e.constraint() == Some("contacts_telegram") => {
            common::problem::ApiError::conflict(
                "telegram_chat_taken",
                "this Telegram chat belongs to another user",
            )
        }
        _ => err.into(),
    }
}
