//! Postgres: the pool, and creating a service's database on first start.

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::{
    ConnectOptions, Connection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// Connection settings of one database.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// `postgres://user:pass@host:port/dbname`.
    pub url: SecretString,
    /// Pool size. Small on purpose: Postgres does best with few busy connections.
    pub max_connections: u32,
    /// How long a request waits for a connection before it gets 503.
    pub acquire_timeout_ms: u64,
    /// Postgres `statement_timeout` of the service's connections: a statement running longer
    /// is cancelled (the request fails visibly instead of holding a connection and its locks).
    /// Migrations run without it.
    pub statement_timeout_ms: u64,
    /// Postgres `idle_in_transaction_session_timeout`: a connection left inside a transaction
    /// this long (a stuck task) is closed and its locks released. Longer than the relay's wait
    /// for Kafka inside its transaction (the producer's 30 s message timeout).
    pub idle_in_transaction_timeout_ms: u64,
}

impl DatabaseConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: SecretString::from(url.into()),
            ..Self::default()
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://postgres@127.0.0.1:5432/notify"),
            max_connections: 8,
            acquire_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            idle_in_transaction_timeout_ms: 60_000,
        }
    }
}

fn options(url: &str) -> anyhow::Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url)
        .context("database.url is not a valid postgres URL")?
        .application_name("notify")
        .log_statements(tracing::log::LevelFilter::Trace))
}

/// Opens the pool. Connections are made lazily so a service can start (and answer
/// `/healthz`) while the database is still coming up; `/readyz` tells the truth. Every
/// connection has the configured statement and idle-in-transaction timeouts.
pub fn connect_lazy(cfg: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let timeouts = [
        (
            "statement_timeout",
            format!("{}ms", cfg.statement_timeout_ms),
        ),
        (
            "idle_in_transaction_session_timeout",
            format!("{}ms", cfg.idle_in_transaction_timeout_ms),
        ),
    ];
    Ok(PgPoolOptions::new()
        .max_connections(cfg.max_connections)
        .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms))
        .connect_lazy_with(options(cfg.url.expose_secret())?.options(timeouts)))
}

/// Creates the database named in `url` if it does not exist yet (connecting to the server's
/// `postgres` database to do so).
pub async fn ensure_database(url: &SecretString) -> anyhow::Result<()> {
    let opts = options(url.expose_secret())?;
    let name = opts
        .get_database()
        .context("database.url names no database")?
        .to_owned();
    let mut conn = sqlx::PgConnection::connect_with(&opts.clone().database("postgres"))
        .await
        .context("connecting to the postgres server")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut conn)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it between our check and our CREATE.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e).context("creating the database"),
        }
    }
    conn.close().await.ok();
    Ok(())
}

/// Creates the database if needed and applies `migrator`'s pending migrations.
pub async fn migrate(
    cfg: &DatabaseConfig,
    migrator: &sqlx::migrate::Migrator,
) -> anyhow::Result<()> {
    ensure_database(&cfg.url).await?;
    // No statement timeout: an index build on a large table may take minutes.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms))
        .connect_lazy_with(options(cfg.url.expose_secret())?);
    migrator.run(&pool).await?;
    pool.close().await;
    Ok(())
}

/// Readiness check: one round trip.
pub async fn ping(pool: &PgPool) -> Result<(), String> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Takes the session-level advisory lock `key` if no other session holds it. Release it with
/// [`advisory_unlock`] on the same connection (or close the connection).
pub async fn try_advisory_lock(conn: &mut sqlx::PgConnection, key: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(conn)
        .await
}

pub async fn advisory_unlock(conn: &mut sqlx::PgConnection, key: i64) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .execute(conn)
        .await
        .map(drop)
}

/// The database's clock (`clock_timestamp()`): what schedules and scans compare with, the
/// same on every host.
pub async fn clock(pool: &PgPool) -> sqlx::Result<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await
}
