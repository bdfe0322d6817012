//! Queries. Each takes a connection (or transaction) so the caller owns the transaction.

use std::collections::HashMap;

use api::profiles::{Contacts, DeliveryProfile, Device, Preferences};
use chrono::{DateTime, Utc};
use common::events::Platform;
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

#[derive(sqlx::FromRow)]
struct DeviceRow {
    id: Uuid,
    user_id: Uuid,
    platform: String,
    token: String,
    created_at: DateTime<Utc>,
    last_seen: DateTime<Utc>,
}

impl DeviceRow {
    fn into_device(self) -> Device {
        Device {
            id: self.id,
            platform: Platform::parse(&self.platform).unwrap_or(Platform::Fcm),
            token: self.token,
            created_at: self.created_at,
            last_seen: self.last_seen,
        }
    }
}

#[derive(sqlx::FromRow)]
struct PreferencesRow {
    user_id: Uuid,
    prefs: sqlx::types::Json<Preferences>,
}

const PREFERENCES_SELECT: &str =
    "SELECT user_id, jsonb_build_object('channels', channels, 'categories', categories,
                                          'quiet_hours', quiet_hours) AS prefs
                                  FROM preferences WHERE user_id = ANY($1)";

const DEVICE_COLUMNS: &str = "id, user_id, platform, token, created_at, last_seen";

/// Delivery profiles of the given users in three queries whatever their number; unknown ids
/// are simply absent.
pub async fn profiles(
    conn: &mut PgConnection,
    ids: &[Uuid],
    mandatory_categories: &[String],
) -> sqlx::Result<Vec<DeliveryProfile>> {
    let rows: Vec<ProfileRow> = sqlx::query_as(
        "SELECT u.id, u.locale, u.timezone, c.email, c.phone, c.telegram_chat_id
         FROM users u LEFT JOIN contacts c ON c.user_id = u.id
         WHERE u.id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let devices: Vec<DeviceRow> = sqlx::query_as(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = ANY($1) ORDER BY created_at"
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let prefs: Vec<PreferencesRow> = sqlx::query_as(PREFERENCES_SELECT)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
    let mut devices_by_user: HashMap<Uuid, Vec<Device>> = HashMap::new();
    for d in devices {
        devices_by_user
            .entry(d.user_id)
            .or_default()
            .push(d.into_device());
    }
    let mut prefs_by_user: HashMap<Uuid, Preferences> =
        prefs.into_iter().map(|p| (p.user_id, p.prefs.0)).collect();
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
            devices: devices_by_user.remove(&r.id).unwrap_or_default(),
            preferences: prefs_by_user.remove(&r.id).unwrap_or_default(),
            mandatory_categories: mandatory_categories.to_vec(),
        })
        .collect())
}

/// A user's own record.
#[derive(Debug, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub locale: String,
    pub timezone: String,
    pub created_at: DateTime<Utc>,
}

pub async fn user(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as("SELECT id, locale, timezone, created_at FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn contacts(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Contacts> {
    let row: Option<(Option<String>, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT email, phone, telegram_chat_id FROM contacts WHERE user_id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(row
        .map(|(email, phone, telegram_chat_id)| Contacts {
            email,
            phone,
            telegram_chat_id,
        })
        .unwrap_or_default())
}

pub async fn replace_contacts(conn: &mut PgConnection, id: Uuid, c: &Contacts) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO contacts (user_id, email, phone, telegram_chat_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id) DO UPDATE
         SET email = EXCLUDED.email, phone = EXCLUDED.phone, telegram_chat_id = EXCLUDED.telegram_chat_id,
             updated_at = now()",
    )
    .bind(id)
    .bind(&c.email)
    .bind(&c.phone)
    .bind(&c.telegram_chat_id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn preferences(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Preferences> {
    let row: Option<PreferencesRow> = sqlx::query_as(PREFERENCES_SELECT)
        .bind([id])
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| r.prefs.0).unwrap_or_default())
}

pub async fn replace_preferences(
    conn: &mut PgConnection,
    id: Uuid,
    p: &Preferences,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO preferences (user_id, channels, categories, quiet_hours) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id) DO UPDATE
         SET channels = EXCLUDED.channels, categories = EXCLUDED.categories, quiet_hours = EXCLUDED.quiet_hours,
             updated_at = now()",
    )
    .bind(id)
    .bind(sqlx::types::Json(&p.channels))
    .bind(sqlx::types::Json(&p.categories))
    .bind(p.quiet_hours.as_ref().map(sqlx::types::Json))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_locale(conn: &mut PgConnection, id: Uuid, locale: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET locale = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(locale)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn devices(conn: &mut PgConnection, user: Uuid) -> sqlx::Result<Vec<Device>> {
    let rows: Vec<DeviceRow> = sqlx::query_as(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 ORDER BY created_at"
    ))
    .bind(user)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(DeviceRow::into_device).collect())
}

/// Registers a push token for `user`. A token is one app install: registering one that
/// belongs to someone else moves it to `user` (the install changed hands). Returns the device
/// and whether it is new to this user.
/// Locks `user`'s row (concurrent registrations of one user's devices queue up) and counts
/// the user's devices other than (`platform`, `token`).
pub async fn lock_and_count_other_devices(
    conn: &mut PgConnection,
    user: Uuid,
    platform: Platform,
    token: &str,
) -> sqlx::Result<i64> {
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
        .bind(user)
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar(
        "SELECT count(*) FROM devices
         WHERE user_id = $1 AND NOT (platform = $2 AND token = $3)",
    )
    .bind(user)
    .bind(platform.as_str())
    .bind(token)
    .fetch_one(conn)
    .await
}

pub async fn add_device(
    conn: &mut PgConnection,
    user: Uuid,
    platform: Platform,
    token: &str,
) -> sqlx::Result<(Device, bool)> {
    let previous: Option<Uuid> = sqlx::query_scalar(
        "SELECT user_id FROM devices WHERE platform = $1 AND token = $2 FOR UPDATE",
    )
    .bind(platform.as_str())
    .bind(token)
    .fetch_optional(&mut *conn)
    .await?;
    let row: DeviceRow = sqlx::query_as(&format!(
        "INSERT INTO devices (id, user_id, platform, token) VALUES ($1, $2, $3, $4)
         ON CONFLICT (platform, token) DO UPDATE SET user_id = EXCLUDED.user_id, last_seen = now()
         RETURNING {DEVICE_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(user)
    .bind(platform.as_str())
    .bind(token)
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.into_device(), previous != Some(user)))
}

/// Removes one of `user`'s devices; false if `user` has no such device.
/// Removes the device with this platform and token, whoever registered it; returns its owners.
pub async fn delete_device_by_token(
    conn: &mut PgConnection,
    platform: Platform,
    token: &str,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar("DELETE FROM devices WHERE platform = $1 AND token = $2 RETURNING user_id")
        .bind(platform.as_str())
        .bind(token)
        .fetch_all(conn)
        .await
}

pub async fn delete_device(conn: &mut PgConnection, user: Uuid, id: Uuid) -> sqlx::Result<bool> {
    let res = sqlx::query("DELETE FROM devices WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user)
        .execute(conn)
        .await?;
    Ok(res.rows_affected() == 1)
}
pub mod retention;
pub mod telegram;
pub mod topics;
