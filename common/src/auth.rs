//! JWT verification and the roles of the public API.
//!
//! The algorithm is pinned by configuration and never taken from the token header, so
//! `alg: none` and algorithm-confusion tokens fail. `exp`, `nbf`, `iss` and `aud` are checked
//! with a 30 s leeway. The bff verifies every token and forwards it; users-service and
//! notification-service verify it again (no trust in network position).

use std::sync::Arc;

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{header, request::Parts},
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::problem::ApiError;

/// Who the caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An end user: only their own data.
    User,
    /// An internal service that sends notifications.
    Service,
    /// An operator: sees everything.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Service => "service",
            Role::Admin => "admin",
        }
    }
}

/// The claims every token carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub exp: i64,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub iss: String,
    pub aud: String,
}

/// Which signature algorithm the deployment uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum JwtAlgorithm {
    #[default]
    HS256,
    RS256,
    EdDSA,
}

impl From<JwtAlgorithm> for Algorithm {
    fn from(a: JwtAlgorithm) -> Self {
        match a {
            JwtAlgorithm::HS256 => Algorithm::HS256,
            JwtAlgorithm::RS256 => Algorithm::RS256,
            JwtAlgorithm::EdDSA => Algorithm::EdDSA,
        }
    }
}

/// JWT settings, shared by every service of a deployment.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct JwtConfig {
    /// Pinned algorithm; tokens signed with anything else are rejected.
    pub algorithm: JwtAlgorithm,
    /// HS256 shared secret: at least 32 bytes, never one published anywhere. No default: a
    /// service refuses to start without one (see [`JwtConfig::check`]).
    pub secret: SecretString,
    /// PEM public key for RS256 / EdDSA.
    pub public_key_pem: Option<String>,
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// Clock skew tolerated on `exp` / `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Development only: start with an HS256 secret shorter than 32 bytes or one that is
    /// published (the old example configs' secret). Never set in a deployment: anyone who
    /// knows the secret can mint an admin token.
    pub allow_weak_secret: bool,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            algorithm: JwtAlgorithm::HS256,
            secret: SecretString::from(""),
            public_key_pem: None,
            issuer: "notify-dev".into(),
            audience: "notify".into(),
            leeway_secs: 30,
            allow_weak_secret: false,
        }
    }
}

/// The shortest HS256 secret a deployment may use (RFC 7518 §3.2: a key at least as long as
/// the hash output).
pub const MIN_SECRET_BYTES: usize = 32;

/// Secrets that were published as examples (this repository's old example configs and
/// defaults, jwt.io's sample) or are placeholders: never accepted outside development.
const PUBLISHED_SECRETS: &[&str] = &[
    "dev-only-secret-change-me-dev-only-secret",
    "your-256-bit-secret",
    "change-me",
    "changeme",
    "secret",
];

impl JwtConfig {
    /// HS256 settings with a fresh random 32-byte secret (hex): what a development stack or a
    /// test signs with, so no two stacks accept each other's tokens.
    pub fn with_random_secret() -> Self {
        use rand::Rng as _;
        let bytes: [u8; 32] = rand::rng().random();
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            secret: secret.into(),
            ..Self::default()
        }
    }

    /// Refuses settings anyone could forge tokens for: an HS256 secret that is missing,
    /// shorter than [`MIN_SECRET_BYTES`] or published, unless `allow_weak_secret` is set.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.algorithm != JwtAlgorithm::HS256 {
            return Ok(());
        }
        let secret = self.secret.expose_secret();
        anyhow::ensure!(
            !secret.is_empty(),
            "jwt.secret is not set: set NOTIFY_JWT__SECRET to at least {MIN_SECRET_BYTES} random \
             bytes (e.g. `openssl rand -hex 32`), the same for every service of the deployment, \
             or use jwt.algorithm = \"RS256\"/\"EdDSA\" with jwt.public_key_pem"
        );
        if self.allow_weak_secret {
            return Ok(());
        }
        let published = PUBLISHED_SECRETS
            .iter()
            .any(|p| p.eq_ignore_ascii_case(secret.trim()));
        anyhow::ensure!(
            !published,
            "jwt.secret is a published example secret: anyone can sign an admin token with it. \
             Set NOTIFY_JWT__SECRET to at least {MIN_SECRET_BYTES} random bytes (e.g. `openssl \
             rand -hex 32`); jwt.allow_weak_secret = true accepts it on a development machine only"
        );
        anyhow::ensure!(
            secret.len() >= MIN_SECRET_BYTES,
            "jwt.secret is {} bytes, shorter than the {MIN_SECRET_BYTES} HS256 needs to resist \
             guessing: set NOTIFY_JWT__SECRET to at least {MIN_SECRET_BYTES} random bytes (e.g. \
             `openssl rand -hex 32`); jwt.allow_weak_secret = true accepts it on a development \
             machine only",
            secret.len()
        );
        Ok(())
    }
}

/// Verifies bearer tokens against one [`JwtConfig`].
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    /// Fails on settings [`JwtConfig::check`] refuses, so a service never starts with them.
    pub fn new(cfg: &JwtConfig) -> anyhow::Result<Self> {
        cfg.check()?;
        let key = match cfg.algorithm {
            JwtAlgorithm::HS256 => DecodingKey::from_secret(cfg.secret.expose_secret().as_bytes()),
            JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(
                cfg.public_key_pem
                    .as_deref()
                    .ok_or_else(|| anyhow::anyhow!("jwt.public_key_pem must be set for RS256"))?
                    .as_bytes(),
            )?,
            JwtAlgorithm::EdDSA => DecodingKey::from_ed_pem(
                cfg.public_key_pem
                    .as_deref()
                    .ok_or_else(|| anyhow::anyhow!("jwt.public_key_pem must be set for EdDSA"))?
                    .as_bytes(),
            )?,
        };
        let mut validation = Validation::new(cfg.algorithm.into());
        validation.algorithms = vec![cfg.algorithm.into()];
        validation.set_issuer(&[&cfg.issuer]);
        validation.set_audience(&[&cfg.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = cfg.leeway_secs;
        Ok(Self { key, validation })
    }

    /// Checks signature, algorithm, expiry, not-before, issuer and audience.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                let why = match e.kind() {
                    K::ExpiredSignature => "the token has expired",
                    K::ImmatureSignature => "the token is not valid yet",
                    K::InvalidSignature => "the token signature is invalid",
                    K::InvalidAlgorithm => {
                        "the token uses an algorithm this deployment does not accept"
                    }
                    K::InvalidIssuer => "the token issuer is not accepted",
                    K::InvalidAudience => "the token audience is not accepted",
                    K::MissingRequiredClaim(_) => "the token lacks a required claim",
                    _ => "the token is malformed",
                };
                ApiError::unauthorized(why)
            })
    }
}

/// Mints HS256 tokens. Dev tooling and tests only: production tokens come from the identity
/// provider.
pub fn mint_hs256(cfg: &JwtConfig, sub: &str, role: Role, ttl_secs: i64) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: sub.to_owned(),
        role,
        exp: now + ttl_secs,
        iat: now,
        nbf: None,
        iss: cfg.issuer.clone(),
        aud: cfg.audience.clone(),
    };
    mint_claims(cfg, &claims)
}

/// Signs arbitrary claims with the HS256 secret (tests use it for expired tokens).
pub fn mint_claims(cfg: &JwtConfig, claims: &Claims) -> anyhow::Result<String> {
    anyhow::ensure!(
        cfg.algorithm == JwtAlgorithm::HS256,
        "minting is only supported for HS256"
    );
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(cfg.secret.expose_secret().as_bytes()),
    )?)
}

/// An authenticated caller: the verified claims and the raw token (forwarded to the services
/// behind the bff).
#[derive(Debug, Clone)]
pub struct Principal {
    pub claims: Claims,
    pub token: String,
}

impl Principal {
    pub fn role(&self) -> Role {
        self.claims.role
    }

    pub fn subject(&self) -> &str {
        &self.claims.sub
    }

    /// 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.claims.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the {} role may not call this endpoint",
                self.claims.role.as_str()
            )))
        }
    }
}

impl<S> FromRequestParts<S> for Principal
where
    Arc<JwtVerifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Arc::<JwtVerifier>::from_ref(state);
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("an `Authorization: Bearer <token>` header is required")
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        let claims = verifier.verify(token)?;
        Ok(Principal {
            claims,
            token: token.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    fn cfg() -> JwtConfig {
        JwtConfig {
            secret: SecretString::from("test-secret-test-secret-test-secret!"),
            ..JwtConfig::default()
        }
    }

    #[test]
    fn refuses_a_missing_short_or_published_secret_unless_told_it_is_development() {
        let err = |c: &JwtConfig| JwtVerifier::new(c).err().map(|e| e.to_string());
        let missing = err(&JwtConfig::default()).expect("no secret: refused");
        assert!(missing.contains("NOTIFY_JWT__SECRET"), "{missing}");
        let published = JwtConfig {
            secret: SecretString::from("dev-only-secret-change-me-dev-only-secret"),
            ..JwtConfig::default()
        };
        let e = err(&published).expect("the old example secret: refused");
        assert!(e.contains("published"), "{e}");
        let short = JwtConfig {
            secret: SecretString::from("a-31-byte-secret-is-one-too-few"),
            ..JwtConfig::default()
        };
        let e = err(&short).expect("31 bytes: refused");
        assert!(e.contains("31 bytes"), "{e}");
        assert!(err(&cfg()).is_none(), "36 random-looking bytes start");
        assert!(err(&JwtConfig::with_random_secret()).is_none());
        for weak in [published, short] {
            let dev = JwtConfig {
                allow_weak_secret: true,
                ..weak
            };
            assert!(err(&dev).is_none(), "the development flag accepts it");
        }
        // Even the development flag does not make an empty secret a key.
        let empty_dev = JwtConfig {
            allow_weak_secret: true,
            ..JwtConfig::default()
        };
        assert!(err(&empty_dev).is_some());
    }

    #[test]
    fn accepts_a_good_token_and_rejects_tampering() {
        let v = JwtVerifier::new(&cfg()).unwrap();
        let t = mint_hs256(&cfg(), "billing", Role::Service, 60).unwrap();
        let claims = v.verify(&t).unwrap();
        assert_eq!(claims.sub, "billing");
        assert_eq!(claims.role, Role::Service);

        let other = JwtConfig {
            secret: SecretString::from("another-secret-another-secret-xx"),
            ..cfg()
        };
        let forged = mint_hs256(&other, "billing", Role::Admin, 60).unwrap();
        assert_eq!(v.verify(&forged).unwrap_err().status.as_u16(), 401);
    }

    const RSA_PRIVATE: &str = include_str!("../../tools/devkit/fixtures/rsa_private.pem");
    const RSA_PUBLIC: &str = include_str!("../../tools/devkit/fixtures/rsa_public.pem");
    const ED_PRIVATE: &str = include_str!("../../tools/devkit/fixtures/ed25519_private.pem");
    const ED_PUBLIC: &str = include_str!("../../tools/devkit/fixtures/ed25519_public.pem");

    fn claims(offset_exp: i64, nbf: Option<i64>) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: "u".into(),
            role: Role::User,
            exp: now + offset_exp,
            iat: now,
            nbf: nbf.map(|n| now + n),
            iss: "notify-dev".into(),
            aud: "notify".into(),
        }
    }

    fn sign(alg: Algorithm, key: &EncodingKey, c: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(alg), c, key).unwrap()
    }

    #[test]
    fn rs256_accepts_its_key_and_refuses_algorithm_confusion() {
        let cfg = JwtConfig {
            algorithm: JwtAlgorithm::RS256,
            public_key_pem: Some(RSA_PUBLIC.into()),
            ..cfg()
        };
        let v = JwtVerifier::new(&cfg).unwrap();
        let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        assert!(
            v.verify(&sign(Algorithm::RS256, &rsa, &claims(60, None)))
                .is_ok()
        );
        // HS256 "signed" with the public key as the shared secret: the classic confusion attack.
        let confused = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
            &claims(60, None),
        );
        assert_eq!(v.verify(&confused).unwrap_err().status.as_u16(), 401);
        // A valid HS256 token of an HS256 deployment's secret is no good either.
        assert!(
            v.verify(&mint_hs256(&super::tests::cfg(), "u", Role::User, 60).unwrap())
                .is_err()
        );
    }

    #[test]
    fn eddsa_accepts_its_key_only() {
        let cfg = JwtConfig {
            algorithm: JwtAlgorithm::EdDSA,
            public_key_pem: Some(ED_PUBLIC.into()),
            ..cfg()
        };
        let v = JwtVerifier::new(&cfg).unwrap();
        let ed = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap();
        assert!(
            v.verify(&sign(Algorithm::EdDSA, &ed, &claims(60, None)))
                .is_ok()
        );
        let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        assert!(
            v.verify(&sign(Algorithm::RS256, &rsa, &claims(60, None)))
                .is_err()
        );
    }

    #[test]
    fn not_yet_valid_and_wrong_issuer_are_refused() {
        let v = JwtVerifier::new(&cfg()).unwrap();
        let key = EncodingKey::from_secret(cfg().secret.expose_secret().as_bytes());
        let early = sign(Algorithm::HS256, &key, &claims(600, Some(120)));
        assert_eq!(
            v.verify(&early).unwrap_err().detail,
            "the token is not valid yet"
        );
        assert!(
            v.verify(&sign(Algorithm::HS256, &key, &claims(600, Some(10))))
                .is_ok(),
            "within the leeway"
        );
        let wrong_iss = Claims {
            iss: "elsewhere".into(),
            ..claims(60, None)
        };
        assert!(v.verify(&sign(Algorithm::HS256, &key, &wrong_iss)).is_err());
    }

    #[test]
    fn rejects_expired_wrong_audience_and_alg_none() {
        let v = JwtVerifier::new(&cfg()).unwrap();
        let expired = mint_hs256(&cfg(), "u", Role::User, -120).unwrap();
        assert_eq!(
            v.verify(&expired).unwrap_err().detail,
            "the token has expired"
        );
        // Within the 30 s leeway it is still accepted.
        let just = mint_hs256(&cfg(), "u", Role::User, -10).unwrap();
        assert!(v.verify(&just).is_ok());

        let wrong_aud = JwtConfig {
            audience: "elsewhere".into(),
            ..cfg()
        };
        let t = mint_hs256(&wrong_aud, "u", Role::User, 60).unwrap();
        assert!(v.verify(&t).is_err());

        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = chrono::Utc::now().timestamp();
        let payload = serde_json::json!({"sub":"u","role":"admin","exp":now+60,"iat":now,"iss":"notify-dev","aud":"notify"});
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(payload.to_string())
        );
        assert_eq!(v.verify(&none).unwrap_err().status.as_u16(), 401);
    }
}
