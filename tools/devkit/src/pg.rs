//! A fresh Postgres database per test, on the machine's server.

use sqlx::{Connection, PgConnection};

/// The server tests and the local stack use; `NOTIFY_TEST_PG` overrides it.
pub fn server_url() -> String {
    std::env::var("NOTIFY_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Creates an empty database with a unique name and returns its URL.
pub async fn fresh_database(label: &str) -> anyhow::Result<String> {
    let base = server_url();
    let name = format!("t_{label}_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&format!("{base}/postgres")).await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(format!("{base}/{name}"))
}
