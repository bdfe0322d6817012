//! A REST answer's problem as a `google.rpc.Status`: the code from the HTTP status (and, for
//! 409, the problem type), the problem's `detail` as the message, and the details every
//! error carries — ErrorInfo (`reason` = the problem `type`, domain `notify`, the HTTP status
//! in `metadata`), RequestInfo (the request id) — plus BadRequest field violations for
//! INVALID_ARGUMENT, a PreconditionFailure for a Cancel that came too late and RetryInfo from
//! `Retry-After`.

use std::{collections::HashMap, time::Duration};

use axum::{
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
};
use common::problem::{ApiError, FieldError, Problem};
use tonic::{Code, Status, metadata::MetadataMap};
use tonic_types::{ErrorDetails, FieldViolation, PreconditionViolation, StatusExt};

/// The problem domain named in every ErrorInfo.
pub const DOMAIN: &str = "notify";

/// The status of a REST route's error answer.
pub fn from_answer(http: StatusCode, headers: &HeaderMap, body: &[u8]) -> Status {
    let problem = serde_json::from_slice::<Problem>(body).unwrap_or_else(|_| Problem {
        kind: "internal".into(),
        title: "Internal Server Error".into(),
        status: http.as_u16(),
        detail: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
        request_id: None,
        errors: Vec::new(),
    });
    let retry_after = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let request_id = problem.request_id.clone().or_else(|| {
        headers
            .get(common::telemetry::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    build(problem, retry_after, request_id)
}

/// The status of an error found before the REST route was called.
pub fn from_error(err: ApiError, meta: &MetadataMap) -> Status {
    let mut problem = err.problem();
    if problem.request_id.is_none() {
        problem.request_id = meta
            .get(common::telemetry::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
    }
    let headers = err.into_response().headers().clone();
    let body = serde_json::to_vec(&problem).expect("a problem serialises");
    from_answer(
        StatusCode::from_u16(problem.status).unwrap_or_default(),
        &headers,
        &body,
    )
}

/// INVALID_ARGUMENT naming each field, for a message that does not convert.
pub fn invalid(errors: Vec<FieldError>, meta: &MetadataMap) -> Status {
    from_error(ApiError::validation(errors), meta)
}

fn code_of(status: u16, kind: &str) -> Code {
    match status {
        400 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 if kind == "already_dispatched" => Code::FailedPrecondition,
        409 => Code::Aborted,
        413 | 429 => Code::ResourceExhausted,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        400..=499 => Code::FailedPrecondition,
        500..=599 => Code::Internal,
        _ => Code::Unknown,
    }
}

fn build(problem: Problem, retry_after: Option<Duration>, request_id: Option<String>) -> Status {
    let code = code_of(problem.status, &problem.kind);
    let mut details = ErrorDetails::new();
    details.set_error_info(
        problem.kind.clone(),
        DOMAIN,
        HashMap::from([("status".to_owned(), problem.status.to_string())]),
    );
    if let Some(id) = &request_id {
        details.set_request_info(id.clone(), "");
    }
    match code {
        Code::InvalidArgument if !problem.errors.is_empty() => {
            details.set_bad_request(
                problem
                    .errors
                    .iter()
                    .map(|e| FieldViolation::new(&e.field, &e.message))
                    .collect::<Vec<_>>(),
            );
        }
        Code::FailedPrecondition => {
            details.set_precondition_failure(
                problem
                    .errors
                    .iter()
                    .map(|e| PreconditionViolation::new(problem.kind.clone(), &e.field, &e.message))
                    .collect::<Vec<_>>(),
            );
        }
        _ => {}
    }
    if retry_after.is_some() {
        details.set_retry_info(retry_after);
    }
    Status::with_error_details(code, problem.detail, details)
}
