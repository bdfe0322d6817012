//! Retention of `notify`'s tables that only grow: receipts (matched after 7 days, unmatched
//! after a day), bounce report ids, skipped events — deleted by age, a bounded batch at a
//! time, so a backlog is worked off over rounds; what is younger stays.

use common::retention::{RetentionConfig, purge_round};
use devkit::pg::TestDatabase;
use notification_service::db::retention::RetentionSettings;
use sqlx::PgPool;

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_rows_go_a_bounded_batch_at_a_time_and_young_ones_stay() {
    let db = TestDatabase::create("retention").await.unwrap();
    let pool = PgPool::connect(db.url()).await.unwrap();
    notification_service::MIGRATOR.run(&pool).await.unwrap();
    // 250 old bounce report ids and 10 fresh ones; receipts: old unmatched, fresh unmatched.
    sqlx::query(
        "INSERT INTO bounce_reports (id, received_at)
         SELECT 'old-' || n, now() - interval '3 days' FROM generate_series(1, 250) n
         UNION ALL SELECT 'new-' || n, now() FROM generate_series(1, 10) n",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO receipts (provider, provider_message_id, status, received_at)
         VALUES ('twilio', 'SM-old', 'delivered', now() - interval '2 days'),
                ('twilio', 'SM-new', 'delivered', now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO skipped_events (topic, kafka_partition, kafka_offset, event_type, payload, error, skipped_at)
         VALUES ('t', 0, 1, 'user.registered', '{}', 'x', now() - interval '31 days'),
                ('t', 0, 2, 'user.registered', '{}', 'x', now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    // Cap counters: one whose hour ended two hours ago, one of a day still running.
    sqlx::query(
        "INSERT INTO cap_counts (user_id, channel, scope, window_seconds, window_start, count, cap_limit)
         VALUES (gen_random_uuid(), 'email', '*', 3600, now() - interval '3 hours', 3, 3),
                (gen_random_uuid(), 'email', '*', 86400, now() - interval '20 hours', 1, 3)",
    )
    .execute(&pool)
    .await
    .unwrap();

    let settings = RetentionSettings::default();
    let bounded = RetentionConfig {
        batch_size: 100,
        max_batches_per_round: 2,
        ..settings.purge.clone()
    };
    // One round deletes at most 2 × 100 of a table.
    let done = purge_round(&pool, &settings.rules(), &bounded)
        .await
        .unwrap();
    assert!(done.contains(&("bounce_reports", 200)), "{done:?}");
    assert!(done.contains(&("receipts_unmatched", 1)), "{done:?}");
    assert!(done.contains(&("skipped_events", 1)), "{done:?}");
    assert!(done.contains(&("cap_counts", 1)), "{done:?}");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM bounce_reports").await,
        60
    );
    // The next round finishes the backlog, and leaves the young rows.
    let done = purge_round(&pool, &settings.rules(), &bounded)
        .await
        .unwrap();
    assert!(done.contains(&("bounce_reports", 50)), "{done:?}");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM bounce_reports WHERE id LIKE 'new-%'"
        )
        .await,
        10
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM receipts WHERE provider_message_id = 'SM-new'"
        )
        .await,
        1
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM skipped_events").await, 1);
    assert_eq!(
        count(&pool, "SELECT window_seconds::bigint FROM cap_counts").await,
        86_400
    );
}
