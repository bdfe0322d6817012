//! The commented example configs in `config/` load into each service's typed config strictly
//! (no key the service does not have), so the documentation cannot drift from the code
//! unnoticed.

use std::path::PathBuf;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(format!("{name}.example.toml"))
}

#[test]
fn every_example_config_loads() {
    let bff: bff::Config = common::config::load_strict(Some(&example("bff"))).unwrap();
    assert_eq!(bff.upstreams.users_url, "http://127.0.0.1:8081");
    assert_eq!(bff.rate_limits.user.requests, 120);
    let users: users_service::Config =
        common::config::load_strict(Some(&example("users-service"))).unwrap();
    assert_eq!(users.relay.batch_size, 500);
    assert_eq!(users.mandatory_categories, vec!["security"]);
    let notify: notification_service::Config =
        common::config::load_strict(Some(&example("notification-service"))).unwrap();
    assert_eq!(notify.planning.urgent_categories, vec!["security", "otp"]);
    assert_eq!(notify.users.cache_ttl_secs, 60);
    assert_eq!(notify.welcome.template, "welcome");
    assert_eq!(notify.planning.default_locale, "en");
    assert_eq!(notify.intake.max_batched_deliveries, 64);
    let workers: workers::Config = common::config::load_strict(Some(&example("workers"))).unwrap();
    assert_eq!(workers.email.pool_size, 16);
    assert_eq!(workers.channels, vec![common::events::Channel::Email]);
    assert_eq!(workers.telegram.timeout_ms, 10000);
    assert!(!workers.webhook.allow_loopback);
    let repeater: repeater::Config =
        common::config::load_strict(Some(&example("repeater"))).unwrap();
    assert_eq!(
        repeater.retry.schedule_secs,
        vec![5.0, 30.0, 120.0, 600.0, 1800.0, 7200.0]
    );
}
