//! `Idempotency-Key` plumbing shared by the bff (Redis fast path) and notification-service
//! (Postgres, the source of truth): the header, its validation and the body fingerprint.

use sha2::{Digest, Sha256};

use crate::problem::ApiError;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The response header set on a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";
/// How long a key is remembered.
pub const TTL_SECS: u64 = 24 * 3600;

/// Validates a key: 1..=255 visible ASCII characters.
pub fn parse_key(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    match raw {
        None => Ok(None),
        Some(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_owned()))
        }
        Some(_) => Err(ApiError::invalid_field(
            "Idempotency-Key",
            "must be 1-255 visible ASCII characters",
        )),
    }
}

/// sha256 of the body's canonical JSON (object keys sorted, whitespace dropped), so the same
/// request formatted differently is still the same request. A body that is not JSON is hashed
/// as is.
pub fn body_hash(body: &[u8]) -> String {
    let canonical = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => {
            let mut out = String::with_capacity(body.len());
            canonical(&v, &mut out);
            out.into_bytes()
        }
        Err(_) => body.to_vec(),
    };
    let digest = Sha256::digest(&canonical);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serialises with object keys sorted explicitly (serde_json may be built with
/// `preserve_order`, which keeps insertion order).
fn canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_does_not_change_the_hash_but_content_does() {
        let a = body_hash(br#"{"b": 1, "a": [1, 2], "c": {"y": 1, "x": 2}}"#);
        assert_eq!(a, body_hash(br#"{"c":{"x":2,"y":1},"a":[1,2],"b":1}"#));
        assert_ne!(a, body_hash(br#"{"a":[2,1],"b":1,"c":{"x":2,"y":1}}"#));
    }

    #[test]
    fn keys_are_validated() {
        assert_eq!(
            parse_key(Some("order-42")).unwrap().as_deref(),
            Some("order-42")
        );
        assert!(parse_key(Some("")).is_err());
        assert!(parse_key(Some("has space")).is_err());
        assert!(parse_key(None).unwrap().is_none());
    }
}
