//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): what the platform signs
//! its outgoing webhooks with (the workers) and checks incoming ones with (bounce and complaint
//! reports). `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`,
//! with `webhook-id` and `webhook-timestamp` (unix seconds) beside it.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A signing key, from its `whsec_<base64>` form.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// Why a signed request was not believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A header is missing or malformed.
    Unsigned,
    /// The timestamp is further from now than the tolerance (a replay, or a wrong clock).
    Stale,
    /// No signature matches.
    Mismatch,
}

impl SigningKey {
    /// `whsec_<base64>` of at least 24 bytes.
    pub fn from_secret(secret: &str) -> anyhow::Result<Self> {
        let encoded = secret
            .strip_prefix("whsec_")
            .ok_or_else(|| anyhow::anyhow!("a signing secret is `whsec_<base64>`"))?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|e| anyhow::anyhow!("the signing secret is not base64: {e}"))?;
        anyhow::ensure!(key.len() >= 24, "a signing secret holds at least 24 bytes");
        Ok(Self(key))
    }

    /// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body)))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }

    /// Checks a request's `webhook-id`, `webhook-timestamp` and `webhook-signature` (any of
    /// its space-separated `v1,` signatures may match) against `body`, with the timestamp
    /// within `tolerance_secs` of `now` (unix seconds).
    pub fn verify(
        &self,
        id: Option<&str>,
        timestamp: Option<&str>,
        signatures: Option<&str>,
        body: &[u8],
        now: i64,
        tolerance_secs: i64,
    ) -> Result<(), Refused> {
        let (Some(id), Some(ts), Some(sigs)) = (id, timestamp, signatures) else {
            return Err(Refused::Unsigned);
        };
        let ts: i64 = ts.trim().parse().map_err(|_| Refused::Unsigned)?;
        // Checked: a timestamp near i64::MIN must not wrap into "within the tolerance".
        let off_by = now.checked_sub(ts).map(i64::unsigned_abs);
        if off_by.is_none_or(|d| d > tolerance_secs.unsigned_abs()) {
            return Err(Refused::Stale);
        }
        let expected = self.mac(id, ts, body);
        let matches = sigs.split(' ').any(|s| {
            s.strip_prefix("v1,")
                .and_then(|b| STANDARD.decode(b).ok())
                .is_some_and(|given| constant_time_eq(&given, &expected))
        });
        if matches {
            Ok(())
        } else {
            Err(Refused::Mismatch)
        }
    }
}

/// Compares without stopping at the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `now - ts` used to be plain arithmetic: a timestamp at the edge of i64 panicked in a
    /// debug build and wrapped in release (`(now - (now - 2^63)).abs()` is i64::MIN, "within"
    /// any tolerance).
    #[test]
    fn timestamps_at_the_edges_of_i64_are_stale_not_a_panic_or_a_wrap() {
        let key = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let now = 1_700_000_000_i64;
        for ts in [i64::MIN, i64::MAX, now.wrapping_sub(i64::MIN), i64::MIN + 1] {
            let sig = key.sign("msg_1", ts, b"{}");
            assert_eq!(
                key.verify(
                    Some("msg_1"),
                    Some(&ts.to_string()),
                    Some(&sig),
                    b"{}",
                    now,
                    300
                ),
                Err(Refused::Stale),
                "{ts}"
            );
        }
    }

    #[test]
    fn what_is_signed_verifies_and_nothing_else_does() {
        let key = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = key.sign("msg_1", 1_700_000_000, b"{}");
        let ok = |id, ts: &str, sig: &str, body: &[u8], now| {
            key.verify(Some(id), Some(ts), Some(sig), body, now, 300)
        };
        assert_eq!(
            ok("msg_1", "1700000000", &sig, b"{}", 1_700_000_100),
            Ok(())
        );
        assert_eq!(
            ok(
                "msg_1",
                "1700000000",
                &format!("v1,AAAA {sig}"),
                b"{}",
                1_700_000_000
            ),
            Ok(())
        );
        assert_eq!(
            ok("msg_2", "1700000000", &sig, b"{}", 1_700_000_000),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            ok("msg_1", "1700000000", &sig, b"{ }", 1_700_000_000),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            ok("msg_1", "1700000000", &sig, b"{}", 1_700_000_301),
            Err(Refused::Stale)
        );
        assert_eq!(
            key.verify(None, Some("1"), Some(&sig), b"{}", 1, 300),
            Err(Refused::Unsigned)
        );
        assert!(SigningKey::from_secret("nope").is_err());
    }
}
