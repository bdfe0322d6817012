//! The circuit breakers are shared through Redis: what one worker instance records, every
//! other instance obeys — failures counted together open it for all, one probe at a time
//! across instances when it half-opens, and a success anywhere closes it everywhere.

use devkit::redis::TestPrefix;
use workers::breaker::{BreakerConfig, Breakers, Permit, State};

async fn instance(keys: &TestPrefix, cfg: &BreakerConfig) -> Breakers {
    let redis_cfg = common::redis::RedisConfig {
        url: keys.url().to_owned(),
        key_prefix: keys.prefix().to_owned(),
        ..Default::default()
    };
    // Each instance its own connection, as two worker processes have.
    let redis = common::redis::connect(&redis_cfg).await.unwrap();
    Breakers::new(redis, redis_cfg, cfg.clone())
}

#[tokio::test]
async fn two_instances_share_one_breaker() {
    let keys = TestPrefix::local();
    let cfg = BreakerConfig {
        consecutive_failures: 4,
        open_secs: 600.0,
        probe_timeout_secs: 60.0,
    };
    let (a, b) = (instance(&keys, &cfg).await, instance(&keys, &cfg).await);
    // Failures in a row, counted across both instances: the fourth opens it.
    assert_eq!(a.record("gw", false).await, State::Closed);
    assert_eq!(b.record("gw", false).await, State::Closed);
    assert_eq!(a.record("gw", false).await, State::Closed);
    assert_eq!(b.record("gw", false).await, State::Open);
    assert_eq!(
        a.allow("gw").await,
        Permit::Open,
        "open for the other instance too"
    );
    assert_eq!(a.allow("other").await, Permit::Closed, "per provider");

    // The open period ends (Redis's clock, moved here): one probe across both instances.
    let mut redis = devkit::redis::connect(keys.url()).await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("{}breaker:gw", keys.prefix()))
        .arg("until")
        .arg(0)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(b.allow("gw").await, Permit::Probe);
    assert_eq!(
        a.allow("gw").await,
        Permit::Open,
        "the other waits for the probe"
    );
    // The probe's success, recorded by one, closes it for both.
    assert_eq!(b.record("gw", true).await, State::Closed);
    assert_eq!(a.allow("gw").await, Permit::Closed);
}
