//! The rules admins set per category (a default digest window, a frequency cap), read by
//! planning on every send: cached per instance for `planning.rules_cache_ms` (a change made
//! through another instance applies within that; through this one, at once).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use sqlx::PgPool;

use crate::db::rules::Rule;

pub type Rules = Arc<HashMap<String, Rule>>;

pub struct Cache {
    pool: PgPool,
    ttl: Duration,
    held: RwLock<Option<(Instant, Rules)>>,
}

impl Cache {
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self {
            pool,
            ttl,
            held: RwLock::new(None),
        }
    }

    /// Every category's rules, at most `ttl` old.
    pub async fn get(&self) -> sqlx::Result<Rules> {
        if let Some((at, rules)) = self.held.read().expect("not poisoned").as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(rules.clone());
        }
        let rules: Rules = Arc::new(crate::db::rules::all(&self.pool).await?);
        *self.held.write().expect("not poisoned") = Some((Instant::now(), rules.clone()));
        Ok(rules)
    }

    /// Forgets what is held (a rule changed through this instance).
    pub fn forget(&self) {
        *self.held.write().expect("not poisoned") = None;
    }
}

/// `PUT /v1/admin/categories/{category}`: checks the body (422 naming the field) and stores
/// it; this instance applies it at once.
pub async fn put(
    state: &crate::AppState,
    category: &str,
    body: &api::digests::CategoryRulesBody,
) -> Result<api::digests::CategoryRules, common::problem::ApiError> {
    use common::problem::{ApiError, FieldError};
    let mut errors = Vec::new();
    if common::address::parse_name(category).is_err() {
        errors.push(FieldError::new("category", "is not a category name"));
    }
    let digest_window_seconds = body.digest_window.as_deref().and_then(|w| {
        let s = api::rules::seconds(&api::rules::DIGEST_WINDOW, w);
        if s.is_none() {
            errors.push(FieldError::new(
                "digest_window",
                "must be like 30s, 10m, 2h or 1d (1s to 7d)",
            ));
        }
        s
    });
    let cap = body.cap.as_ref().and_then(|c| match c.check() {
        Ok((limit, window_seconds)) => Some(crate::request::Cap {
            limit,
            window_seconds,
        }),
        Err((field, why)) => {
            errors.push(FieldError::new(format!("cap.{field}"), why));
            None
        }
    });
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let rule = Rule {
        digest_window_seconds,
        cap,
    };
    let mut conn = state.pool.acquire().await?;
    let stored = crate::db::rules::put(&mut conn, category, &rule).await?;
    state.rules.forget();
    Ok(stored)
}

/// `DELETE /v1/admin/categories/{category}`: false when it had no rules.
pub async fn delete(
    state: &crate::AppState,
    category: &str,
) -> Result<bool, common::problem::ApiError> {
    let mut conn = state.pool.acquire().await?;
    let deleted = crate::db::rules::delete(&mut conn, category).await?;
    state.rules.forget();
    Ok(deleted)
}

/// What `GET /v1/admin/categories` and `GET /v1/me/delivery-rules` show: the deployment's
/// cap, the categories never capped nor digested, every category's rules.
pub async fn view(
    state: &crate::AppState,
) -> Result<api::digests::DeliveryRules, common::problem::ApiError> {
    let mut conn = state.pool.acquire().await?;
    let categories = crate::db::rules::list(&mut conn).await?;
    Ok(api::digests::DeliveryRules {
        cap: state
            .planning
            .cap()
            .map(|c| api::digests::CapBody::stored(c.limit, c.window_seconds)),
        exempt_categories: state.planning.urgent_categories.clone(),
        categories,
    })
}
