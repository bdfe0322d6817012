//! What each calling service may send (decision 0016).
//!
//! Sending is a privilege per JWT subject, not a default: a service uses only the categories
//! its grant lists, a *privileged* category (a mandatory one, which ignores users' opt-outs,
//! or an urgent one, which skips the bulk lane) only when its grant names it, and
//! `priority: high` only when granted. A refusal is a 403 problem naming the field.

use std::collections::BTreeMap;

use common::problem::{ApiError, FieldError};
use serde::Deserialize;

use crate::request::{Priority, SendRequest};

/// `permissions.*` in the service's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PermissionsConfig {
    /// Categories only a service granted them may use.
    pub privileged_categories: Vec<String>,
    /// The grant of a service not listed in `services`.
    pub default: Grant,
    /// Grants by JWT subject.
    pub services: BTreeMap<String, Grant>,
}

impl Default for PermissionsConfig {
    fn default() -> Self {
        Self {
            privileged_categories: vec!["security".into(), "otp".into()],
            default: Grant::default(),
            services: BTreeMap::new(),
        }
    }
}

/// What one service may send.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Grant {
    /// Categories it may use; `"*"` = any category that is not privileged.
    pub categories: Vec<String>,
    /// Privileged categories it may use too.
    pub privileged: Vec<String>,
    /// Whether it may send `priority: high`.
    pub high_priority: bool,
}

impl Default for Grant {
    /// Any ordinary category at normal or low priority.
    fn default() -> Self {
        Self {
            categories: vec!["*".into()],
            privileged: Vec::new(),
            high_priority: false,
        }
    }
}

impl Grant {
    /// Everything: every category, privileged ones included, and high priority.
    pub fn everything() -> Self {
        Self {
            categories: vec!["*".into()],
            privileged: vec!["*".into()],
            high_priority: true,
        }
    }
}

impl PermissionsConfig {
    /// The grant of service `subject`.
    pub fn grant(&self, subject: &str) -> &Grant {
        self.services.get(subject).unwrap_or(&self.default)
    }

    /// 403 naming what `subject` may not send in `req`.
    pub fn check(&self, subject: &str, req: &SendRequest) -> Result<(), ApiError> {
        let grant = self.grant(subject);
        let any = |list: &[String], item: &str| list.iter().any(|c| c == "*" || c == item);
        let mut errors = Vec::new();
        let category = req.category.as_str();
        if self.privileged_categories.iter().any(|c| c == category) {
            if !any(&grant.privileged, category) {
                errors.push(FieldError::new(
                    "category",
                    format!("`{category}` is a privileged category this service is not granted"),
                ));
            }
        } else if !any(&grant.categories, category) {
            errors.push(FieldError::new(
                "category",
                format!("this service may not send category `{category}`"),
            ));
        }
        if req.priority == Priority::High && !grant.high_priority {
            errors.push(FieldError::new(
                "priority",
                "this service is not granted `high` priority",
            ));
        }
        if errors.is_empty() {
            return Ok(());
        }
        let mut err = ApiError::forbidden(format!(
            "service `{subject}` may not send this: {}",
            errors
                .iter()
                .map(|e| e.field.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        err.errors = errors;
        Err(err)
    }
}
