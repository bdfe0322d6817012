//! Queries. Each takes a connection (or transaction) so the caller owns the transaction.

use common::events::{Contacts, DeliveryProfile};
use sqlx::PgConnection;
use uuid::Uuid;

/// A new user and their contacts.
pub struct NewUser<'a> {
    pub id: Uuid,
    pub locale: &'a str,
    pub timezone: &'a str,
    pub contacts: &'a Contacts,
}

pub async fn insert_user(conn: &mut PgConnection, user: &NewUser<'_>) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO users (id, locale, timezone) VALUES ($1, $2, $3)")
        .bind(user.id)
        .bind(user.locale)
        .bind(user.timezone)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO contacts (user_id, email, phone, telegram_chat_id) VALUES ($1, $2, $3, $4)",
    )
    .bind(user.id)
    .bind(&user.contacts.email)
    .bind(&user.contacts.phone)
    .bind(&user.contacts.telegram_chat_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ProfileRow {
    id: Uuid,
    locale: String,
    timezone: String,
    email: Option<String>,
    phone: Option<String>,
    telegram_chat_id: Option<String>,
}

/// Delivery profiles of the given users in one query; unknown ids are simply absent.
pub async fn profiles(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<DeliveryProfile>> {
    let rows: Vec<ProfileRow> = sqlx::query_as(
        "SELECT u.id, u.locale, u.timezone, c.email, c.phone, c.telegram_chat_id
         FROM users u LEFT JOIN contacts c ON c.user_id = u.id
         WHERE u.id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DeliveryProfile {
            user_id: r.id,
            locale: r.locale,
            timezone: r.timezone,
            contacts: Contacts {
                email: r.email,
                phone: r.phone,
                telegram_chat_id: r.telegram_chat_id,
            },
        })
        .collect())
}
