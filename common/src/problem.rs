//! The one error shape of the public API: `application/problem+json` (RFC 9457).
//!
//! Every service returns [`ApiError`]; its `type` is a stable snake_case string that clients
//! may branch on. Internal errors become a 500 that reveals nothing and is logged once, inside
//! the request span, with the request id the client also receives.

use axum::{
    Json,
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use crate::telemetry::RequestContext;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid input field.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON path of the field, e.g. `recipients[0].email`.
    #[schema(example = "recipients[0].email")]
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem: the body of every error of the API.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable snake_case; clients branch on it.
    #[serde(rename = "type")]
    #[schema(example = "validation_failed")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// An error a handler returns; rendered as problem+json.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    headers: Vec<(HeaderName, HeaderValue)>,
    source: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            headers: Vec::new(),
            source: None,
        }
    }

    /// 400 — the body is not JSON or not the expected media type.
    pub fn bad_request(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, detail)
    }

    /// 422 — well-formed input that breaks a rule; each broken field is named.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        Self {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                detail,
            )
        }
    }

    /// 422 for one field.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn conflict(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, kind, detail)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body exceeds {limit} bytes"),
        )
    }

    /// 503 — a dependency (database, another service) is unavailable; safe to retry.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "dependency_unavailable",
            detail,
        )
    }

    /// 500 — logged with its cause, rendered without it.
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self {
            source: Some(err.into()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "an internal error occurred",
            )
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The body this error renders to.
    pub fn problem(&self) -> Problem {
        Problem {
            kind: self.kind.to_owned(),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            request_id: RequestContext::current().map(|c| c.request_id),
            errors: self.errors.clone(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.kind, self.detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(source) = &self.source {
            tracing::error!(error = ?source, "request failed with an internal error");
        }
        let body = self.problem();
        let mut resp = (self.status, Json(body)).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in self.headers {
            resp.headers_mut().insert(name, value);
        }
        resp
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::RowNotFound => Self::not_found("no such resource"),
            sqlx::Error::PoolTimedOut => Self::unavailable("the database is busy, retry later"),
            // Deadlock or serialization victim: nothing was written, the same request succeeds
            // when retried.
            sqlx::Error::Database(e) if matches!(e.code().as_deref(), Some("40P01" | "40001")) => {
                Self::unavailable(
                    "a conflicting change was in progress; nothing was written, retry",
                )
                .with_header(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("1"),
                )
            }
            // The connection broke (a database restart or failover): nothing to fix in the
            // request, retry.
            e if connection_lost(&e) => Self::connection_lost(),
            other => Self::internal(other),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    /// Internal, unless the cause is the database connection breaking (then 503, as for a
    /// `sqlx::Error` returned directly).
    fn from(err: anyhow::Error) -> Self {
        match err
            .chain()
            .find_map(|cause| cause.downcast_ref::<sqlx::Error>())
        {
            Some(sqlx::Error::PoolTimedOut) => {
                Self::unavailable("the database is busy, retry later")
            }
            Some(e) if connection_lost(e) => Self::connection_lost(),
            _ => Self::internal(err),
        }
    }
}

/// Whether `e` means the connection to Postgres broke or the server is shutting down or
/// starting (SQLSTATE classes 57P and 08), rather than anything about the request.
fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}

impl ApiError {
    /// 503 — the database connection broke. A write may or may not have been committed, so a
    /// retry should carry the same Idempotency-Key.
    fn connection_lost() -> Self {
        Self::unavailable(
            "the connection to the database was lost; retry (a write may have been applied: \
             retry with the same Idempotency-Key)",
        )
        .with_header(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        )
    }
}

#[cfg(test)]
mod database_errors {
    use super::*;

    #[test]
    fn a_broken_database_connection_is_a_503_to_retry_not_a_500() {
        let eof = || {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "expected to read 5 bytes, got 0 bytes at EOF",
            ))
        };
        for err in [
            ApiError::from(eof()),
            ApiError::from(anyhow::Error::from(eof()).context("accepting the notification")),
        ] {
            assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
            assert_eq!(err.kind, "dependency_unavailable");
            let resp = err.into_response();
            assert_eq!(resp.headers()[http::header::RETRY_AFTER], "1");
        }
        let other = ApiError::from(anyhow::anyhow!("a bug"));
        assert_eq!(other.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
