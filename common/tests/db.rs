//! The pool's connections are bounded: a statement that runs too long is cancelled, a
//! transaction left idle too long is closed (and its locks released).

use std::time::Duration;

use common::db::{DatabaseConfig, connect_lazy};
use devkit::pg::TestDatabase;

#[tokio::test]
async fn statements_and_idle_transactions_are_bounded() {
    let db = TestDatabase::create("bounds").await.unwrap();
    let pool = connect_lazy(&DatabaseConfig {
        statement_timeout_ms: 300,
        idle_in_transaction_timeout_ms: 500,
        ..DatabaseConfig::new(db.url())
    })
    .unwrap();

    let err = sqlx::query("SELECT pg_sleep(5)")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, sqlx::Error::Database(e) if e.code().as_deref() == Some("57014")),
        "not cancelled by statement_timeout: {err}"
    );

    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        sqlx::query("SELECT 1").execute(&mut *tx).await.is_err(),
        "the idle transaction was not closed"
    );
    drop(tx);

    // The defaults production runs with.
    let defaults = connect_lazy(&DatabaseConfig::new(db.url())).unwrap();
    let (statement, idle): (String, String) = sqlx::query_as(
        "SELECT current_setting('statement_timeout'), current_setting('idle_in_transaction_session_timeout')",
    )
    .fetch_one(&defaults)
    .await
    .unwrap();
    assert_eq!((statement.as_str(), idle.as_str()), ("30s", "1min"));
}
