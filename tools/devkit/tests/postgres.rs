//! A private Postgres: initdb, start, an immediate (crash-like) restart that keeps committed
//! data, and nothing left when it is dropped.

use devkit::postgres::PostgresServer;
use sqlx::{Connection, PgConnection};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_postgres_keeps_committed_data_across_an_immediate_restart() {
    let mut pg = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap()
        .unwrap();
    let url = format!("{}/postgres", pg.url());
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE kept (n int)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO kept VALUES (42)")
        .execute(&mut conn)
        .await
        .unwrap();
    pg = tokio::task::spawn_blocking(move || {
        pg.restart().unwrap();
        pg
    })
    .await
    .unwrap();
    assert!(
        sqlx::query("SELECT 1").execute(&mut conn).await.is_err(),
        "the old connection was cut"
    );
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let n: i32 = sqlx::query_scalar("SELECT n FROM kept")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 42);
    drop(conn);
    let port = pg.port();
    drop(pg);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
