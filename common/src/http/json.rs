//! JSON bodies: an extractor whose every rejection is problem+json naming the field, the raw
//! body within the limit, and the one JSON parser the services' bodies go through.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::problem::{ApiError, FieldError};

/// A JSON body extractor whose every rejection is problem+json: a wrong media type or broken
/// JSON is 400, a body that does not fit the type is 422 naming the field, an oversized body
/// is 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime_lite::Mime>().ok())
            .is_some_and(|m| m.is_json());
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected `Content-Type: application/json`",
            ));
        }
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(AppJson)
    }
}

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The raw body, within the body limit; an oversized body is a 413 problem.
#[derive(Debug, Clone, Default)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        rejection.body_text(),
                    )
                } else {
                    ApiError::bad_request("malformed_request", rejection.body_text())
                }
            })
    }
}

/// Parses a JSON body, turning serde's errors into a 400 (syntax) or a 422 naming the field.
/// A NUL character (`\u0000`) in any string or key is a 422 naming where: no store here can
/// keep one (Postgres refuses it in `text` and `jsonb`). An array is a 422: every body is an
/// object.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Only a body that spells `\u0000` can hold a NUL (a raw one is invalid JSON).
    if bytes.windows(6).any(|w| w == b"\\u0000")
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Some(field) = nul_path(&value, String::new())
    {
        return Err(ApiError::validation(vec![FieldError::new(
            field,
            "must not contain a NUL character (\\u0000)",
        )]));
    }
    // Every body of this API is an object; serde would take a struct from an array too
    // (`[null, null]` as two absent fields).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::validation(vec![FieldError::new(
            "",
            "the body must be a JSON object",
        )]));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => {
                    let message = strip_position(&inner.to_string());
                    let field = match missing_field(&message) {
                        Some(name) if path == "." => name.to_owned(),
                        Some(name) => format!("{path}.{name}"),
                        None => path,
                    };
                    Err(ApiError::validation(vec![FieldError::new(field, message)]))
                }
                _ => Err(ApiError::bad_request(
                    "malformed_json",
                    format!("the body is not valid JSON: {inner}"),
                )),
            }
        }
    }
}

/// The path (`a.b[2].c`, as serde names fields) of the first string or key holding a NUL.
fn nul_path(v: &serde_json::Value, at: String) -> Option<String> {
    let join = |key: &str| {
        if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        }
    };
    match v {
        serde_json::Value::String(s) if s.contains('\0') => Some(at),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, format!("{at}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, item)| {
            if k.contains('\0') {
                Some(if at.is_empty() {
                    "(a key)".to_owned()
                } else {
                    at.clone()
                })
            } else {
                nul_path(item, join(k))
            }
        }),
        _ => None,
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn missing_field(msg: &str) -> Option<&str> {
    msg.strip_prefix("missing field `")?.strip_suffix('`')
}

/// Minimal media-type parsing: `application/json` and any `+json` suffix, parameters ignored.
mod mime_lite {
    pub struct Mime(String);

    impl std::str::FromStr for Mime {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let essence = s
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if essence.contains('/') {
                Ok(Mime(essence))
            } else {
                Err(())
            }
        }
    }

    impl Mime {
        pub fn is_json(&self) -> bool {
            self.0 == "application/json"
                || (self.0.starts_with("application/") && self.0.ends_with("+json"))
        }
    }
}

#[cfg(test)]
mod round_trip_tests {
    /// What Postgres answers for a stored JSON number near f64::MAX (every digit) parses back.
    #[test]
    fn a_number_postgres_spells_out_in_full_parses_back() {
        let spelled = format!("{{\"a\": 17976931348623157{}}}", "0".repeat(292));
        let v: serde_json::Value = serde_json::from_str(&spelled).unwrap();
        assert_eq!(v["a"].as_f64(), Some(1.7976931348623157e308));
    }
}
