//! Frequency caps (decision 0030): at most N deliveries per user and channel per window —
//! the deployment's (`planning.cap`), the category's (`PUT /v1/admin/categories/{c}`) and a
//! send's own (`cap`), each counted in Postgres (`db::rules::take`). A group (one request's
//! deliveries to one user on one channel: a push to two devices is one) past any of them is
//! `suppressed` with reason `throttled`. Urgent sends and the user's mandatory categories are
//! exempt; so are digests (they are already the reduction) and what a digest folds (counted
//! once, when the digest is planned — it is exempt then).
//!
//! Windows are fixed (aligned to the epoch: `1h` is each clock hour, `1d` each UTC day). A
//! place taken by a request whose write then fails is not given back: a cap may let one fewer
//! through in that window, never one more.

use std::collections::{BTreeMap, HashMap};

use api::profiles::DeliveryProfile;
use chrono::{DateTime, TimeZone, Utc};
use common::{events::Lane, problem::ApiError};
use uuid::Uuid;

use crate::{
    AppState,
    db::rules::Counter,
    planning::{PlannedDelivery, PlannedStatus},
    request::{Cap, SendRequest},
};

/// The reason of a delivery a cap held back.
pub const THROTTLED: &str = "throttled";

/// The caps a send of `req` counts in: `(scope, cap)`, a send's own cap on its category's
/// counter (the lower limit where the category's cap has the same window).
pub fn caps_for(
    deployment: Option<Cap>,
    category: Option<Cap>,
    req: &SendRequest,
) -> Vec<(String, Cap)> {
    let mut caps: Vec<(String, Cap)> = Vec::new();
    if let Some(c) = deployment {
        caps.push(("*".into(), c));
    }
    for c in [category, req.cap].into_iter().flatten() {
        match caps
            .iter_mut()
            .find(|(s, have)| *s == req.category && have.window_seconds == c.window_seconds)
        {
            Some((_, have)) => have.limit = have.limit.min(c.limit),
            None => caps.push((req.category.clone(), c)),
        }
    }
    caps
}

/// The start of the fixed window of `seconds` that `now` is in.
pub fn window_start(now: DateTime<Utc>, seconds: i64) -> DateTime<Utc> {
    let s = now.timestamp();
    Utc.timestamp_opt(s - s.rem_euclid(seconds.max(1)), 0)
        .single()
        .unwrap_or(now)
}

/// Holds back the deliveries of `req` past a cap (`suppressed` / `throttled`).
pub async fn apply(
    state: &AppState,
    req: &SendRequest,
    profiles: &HashMap<Uuid, DeliveryProfile>,
    deliveries: &mut [PlannedDelivery],
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    if crate::planning::lane(req, &state.planning) == Lane::Urgent {
        return Ok(());
    }
    let rules = state.rules.get().await?;
    let category = rules.get(&req.category).and_then(|r| r.cap);
    let caps = caps_for(state.planning.cap(), category, req);
    if caps.is_empty() {
        return Ok(());
    }
    let mut groups: BTreeMap<(Uuid, common::events::Channel), Vec<usize>> = BTreeMap::new();
    for (i, d) in deliveries.iter().enumerate() {
        let Some(user) = d.user_id else { continue };
        let counted = matches!(d.status, PlannedStatus::Queued | PlannedStatus::Pending);
        let mandatory = profiles
            .get(&user)
            .is_some_and(|p| p.mandatory_categories.contains(&req.category));
        if counted && !mandatory {
            groups.entry((user, d.channel)).or_default().push(i);
        }
    }
    let keys: Vec<(Uuid, common::events::Channel)> = groups.keys().copied().collect();
    let counters: Vec<Counter> = keys
        .iter()
        .enumerate()
        .flat_map(|(group, (user, channel))| {
            caps.iter().map(move |(scope, cap)| Counter {
                user_id: *user,
                channel: channel.as_str(),
                scope: scope.clone(),
                window_seconds: cap.window_seconds,
                window_start: window_start(now, cap.window_seconds),
                limit: cap.limit,
                group,
            })
        })
        .collect();
    let refused = crate::db::rules::take(&state.pool, &counters).await?;
    for group in refused {
        for &i in &groups[&keys[group]] {
            let d = &mut deliveries[i];
            d.status = PlannedStatus::Suppressed;
            d.reason = Some(THROTTLED);
            d.available_at = None;
            state.metrics.throttled(d.channel);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_fixed_and_aligned() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            window_start(at("2026-12-07T10:42:13Z"), 3600),
            at("2026-12-07T10:00:00Z")
        );
        assert_eq!(
            window_start(at("2026-12-07T10:42:13Z"), 86_400),
            at("2026-12-07T00:00:00Z")
        );
        assert_eq!(
            window_start(at("2026-12-07T10:42:13Z"), 600),
            at("2026-12-07T10:40:00Z")
        );
    }

    #[test]
    fn a_sends_own_cap_tightens_its_categorys_counter_or_adds_one() {
        let cap = |limit, window_seconds| Cap {
            limit,
            window_seconds,
        };
        let mut req = crate::request::tests_support::request("billing");
        req.cap = Some(cap(2, 3600));
        let caps = caps_for(Some(cap(10, 86_400)), Some(cap(5, 3600)), &req);
        assert_eq!(
            caps,
            vec![
                ("*".into(), cap(10, 86_400)),
                ("billing".into(), cap(2, 3600))
            ]
        );
        req.cap = Some(cap(1, 60));
        let caps = caps_for(None, Some(cap(5, 3600)), &req);
        assert_eq!(
            caps,
            vec![
                ("billing".into(), cap(5, 3600)),
                ("billing".into(), cap(1, 60))
            ]
        );
        req.cap = None;
        assert!(caps_for(None, None, &req).is_empty());
    }
}
