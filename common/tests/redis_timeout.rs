//! A Redis that accepts connections and never answers (hung, not dead) costs a caller at most
//! about `redis.timeout_ms`, never a hang: every use of Redis has a fallback or fails
//! visibly, so it must learn quickly that Redis is gone.

use std::time::{Duration, Instant};

use common::redis::RedisConfig;

/// A server that accepts every connection and never writes a byte.
async fn hung_redis() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    format!("redis://{addr}")
}

#[tokio::test]
async fn a_hung_redis_is_given_up_on_within_the_timeout() {
    let cfg = RedisConfig {
        url: hung_redis().await,
        timeout_ms: 300,
        ..Default::default()
    };
    let started = Instant::now();
    let connected = tokio::time::timeout(Duration::from_secs(20), common::redis::connect(&cfg))
        .await
        .expect("connect hung past 20 s");
    assert!(
        connected.is_err(),
        "a server that never answers is no Redis"
    );
    // The bound is the timeout and a couple of retries, not the client's default minute.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "gave up after {took:?}");
}
