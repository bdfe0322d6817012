//! A fresh Postgres database per test, on the machine's server, dropped when the test ends.

use std::time::Duration;

use sqlx::{Connection, PgConnection};

/// The server tests and the local stack use; `NOTIFY_TEST_PG` overrides it.
pub fn server_url() -> String {
    std::env::var("NOTIFY_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Set `NOTIFY_TEST_KEEP_DB=1` to keep every test database for inspection (`make
/// clean-test-dbs` drops them later).
fn keep() -> bool {
    std::env::var("NOTIFY_TEST_KEEP_DB").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// An empty database with a unique name (`t_<label>_<uuid>`), dropped (`WITH (FORCE)`,
/// closing whatever is still connected) when this value is dropped — also while a failed test
/// unwinds.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    name: String,
}

impl TestDatabase {
    pub async fn create(label: &str) -> anyhow::Result<Self> {
        let name = format!("t_{label}_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&format!("{}/postgres", server_url())).await?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(Self {
            url: format!("{}/{name}", server_url()),
            name,
        })
    }

    /// Takes charge of database `name`, which something else (a launcher under test) creates:
    /// it is dropped with this value, like one [`create`](Self::create) made.
    pub fn adopt(name: &str) -> Self {
        Self {
            url: format!("{}/{name}", server_url()),
            name: name.to_owned(),
        }
    }

    /// `postgres://…/<name>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if keep() {
            return;
        }
        if let Err(e) = drop_database(&self.name, Duration::from_secs(10)) {
            eprintln!("test database {} not dropped: {e:#}", self.name);
        }
    }
}

/// Drops database `name` from a thread of its own (callable from `Drop`, inside or outside a
/// runtime), waiting at most `timeout`.
pub fn drop_database(name: &str, timeout: Duration) -> anyhow::Result<()> {
    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("drop-test-db".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| {
                    rt.block_on(async {
                        let mut conn =
                            PgConnection::connect(&format!("{}/postgres", server_url())).await?;
                        sqlx::query(&sql).execute(&mut conn).await?;
                        conn.close().await?;
                        Ok(())
                    })
                });
            let _ = tx.send(result);
        })?;
    rx.recv_timeout(timeout)
        .map_err(|_| anyhow::anyhow!("DROP DATABASE did not finish within {timeout:?}"))?
}

/// Whether database `name` exists on the server.
pub async fn exists(name: &str) -> anyhow::Result<bool> {
    let mut conn = PgConnection::connect(&format!("{}/postgres", server_url())).await?;
    let found: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    conn.close().await?;
    Ok(found)
}
