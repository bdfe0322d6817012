//! The idempotency fast path keeps only bounded answers in Redis: the same Redis holds the
//! workers' send claims, and a full Redis stops sending. A larger answer is left to Postgres.

use bff::idempotency::{Entry, IdempotencyCache, MAX_CACHED_BYTES};
use devkit::redis::TestPrefix;

#[tokio::test]
async fn answers_over_the_cap_are_not_cached() {
    let keys = TestPrefix::local();
    let cfg = common::redis::RedisConfig {
        key_prefix: keys.prefix().to_owned(),
        ..Default::default()
    };
    let redis = common::redis::connect(&cfg).await.unwrap();
    let cache = IdempotencyCache::new(redis, cfg);
    let entry = |bytes: usize| Entry {
        hash: "h".into(),
        body: serde_json::json!({ "pad": "x".repeat(bytes) }),
    };
    cache.put("billing", "small", &entry(1_000)).await;
    cache.put("billing", "big", &entry(MAX_CACHED_BYTES)).await;
    assert!(cache.get("billing", "small").await.is_some());
    assert!(
        cache.get("billing", "big").await.is_none(),
        "an answer over {MAX_CACHED_BYTES} bytes stays out of Redis"
    );
}
