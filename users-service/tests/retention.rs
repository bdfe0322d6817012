//! Retention of `users`' tables that only grow: the Telegram bot's update ids and link codes,
//! deleted by age, a bounded batch at a time; what is younger stays.

use common::retention::purge_round;
use devkit::pg::TestDatabase;
use sqlx::PgPool;
use users_service::db::retention::RetentionSettings;

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_update_ids_and_expired_codes_are_deleted_and_young_ones_stay() {
    let db = TestDatabase::create("retention").await.unwrap();
    let pool = PgPool::connect(db.url()).await.unwrap();
    users_service::MIGRATOR.run(&pool).await.unwrap();
    let user = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO users (id) VALUES ($1)")
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO telegram_updates (update_id, received_at)
         SELECT n, now() - interval '3 days' FROM generate_series(1, 120) n
         UNION ALL SELECT 1000 + n, now() FROM generate_series(1, 5) n",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO telegram_link_codes (code, user_id, expires_at)
         VALUES ('old', $1, now() - interval '2 days'), ('live', $1, now() + interval '10 minutes')",
    )
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    let settings = RetentionSettings::default();
    let mut cfg = settings.purge.clone();
    cfg.batch_size = 50;
    cfg.max_batches_per_round = 2;
    let done = purge_round(&pool, &settings.rules(), &cfg).await.unwrap();
    assert_eq!(
        done,
        vec![("telegram_updates", 100), ("telegram_link_codes", 1)]
    );
    let done = purge_round(&pool, &settings.rules(), &cfg).await.unwrap();
    assert_eq!(
        done,
        vec![("telegram_updates", 20), ("telegram_link_codes", 0)]
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM telegram_updates").await,
        5
    );
    let codes: Vec<String> = sqlx::query_scalar("SELECT code FROM telegram_link_codes")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(codes, ["live"]);
}
