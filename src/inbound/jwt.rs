//! Token verification, as strict as Microsoft.IdentityModel: the algorithm is pinned per
//! issuer (the token's `alg` never picks the method; `none` and HS* never pass), the key comes
//! only from the issuer's JWKS by `kid` (`jku`, `x5u`, `jwk`, `x5c` in the token are ignored),
//! unknown `crit` is refused, then signature, `iss`, `aud`, `exp` (required), `nbf`, `iat`.
//!
//! [`verify`] is a pure function of the token, the issuers and `now`; the request path and
//! `tollgate explain` both call it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::claims::Claims;
use super::issuer::{Issuer, IssuerMatch, Issuers, template_matches};
use super::signature_cache::SignatureCache;
use crate::config::Algorithm;

/// Why a token was not accepted. Each variant is one `tollgate_auth_failures_total` reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// More than one `Authorization` header.
    #[error("more than one Authorization header")]
    MultipleAuthorization,
    /// The token is over 16 KiB.
    #[error("the token is larger than 16 KiB")]
    TokenTooLarge,
    /// Not three base64url segments of JSON, or a claim of the wrong type.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is `none`, HMAC, unknown, or not among the issuer's algorithms.
    #[error("algorithm {0:?} is not accepted")]
    DisallowedAlgorithm(String),
    /// `typ` is neither `JWT` nor `at+jwt`.
    #[error("token type {0:?} is not accepted")]
    BadType(String),
    /// The header has `crit`: no extension is understood, so none may be critical.
    #[error("the token requires extensions tollgate does not implement (crit)")]
    UnsupportedCritical,
    /// `iss` names no configured issuer, or a tenant that is not allowed.
    #[error("issuer {0:?} is not trusted")]
    BadIssuer(String),
    /// No key in the issuer's JWKS has this `kid` (after the throttled refetch).
    #[error("no signing key {kid:?} for issuer {issuer}")]
    UnknownKey {
        /// The issuer's name.
        issuer: String,
        /// The `kid` the token named.
        kid: String,
        /// The key set generation searched.
        generation: u64,
    },
    /// The key's own `alg` or type does not fit the token's `alg`.
    #[error("the signing key does not fit algorithm {0}")]
    KeyMismatch(Algorithm),
    /// The issuer's keys have not been fetched yet.
    #[error("the keys of issuer {0} are not available yet")]
    KeysUnavailable(String),
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
    /// No `aud` value is accepted by the issuer.
    #[error("audience is not accepted")]
    BadAudience,
    /// No `exp` claim.
    #[error("the token has no exp claim")]
    MissingExpiry,
    /// `exp` (plus skew) is past.
    #[error("the token expired")]
    Expired,
    /// `nbf` or `iat` (minus skew) is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
}

impl AuthError {
    /// The `reason` label of `tollgate_auth_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::MultipleAuthorization => "multiple_tokens",
            AuthError::TokenTooLarge => "token_too_large",
            AuthError::Malformed(_) => "malformed",
            AuthError::DisallowedAlgorithm(_) => "disallowed_algorithm",
            AuthError::BadType(_) => "bad_type",
            AuthError::UnsupportedCritical => "unsupported_crit",
            AuthError::BadIssuer(_) => "bad_issuer",
            AuthError::UnknownKey { .. } => "unknown_key",
            AuthError::KeyMismatch(_) => "key_mismatch",
            AuthError::KeysUnavailable(_) => "keys_unavailable",
            AuthError::BadSignature => "bad_signature",
            AuthError::BadAudience => "bad_audience",
            AuthError::MissingExpiry => "missing_exp",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
        }
    }

    /// The generic `error_description` for the client: what is wrong, never the details.
    pub fn description(&self) -> &'static str {
        match self {
            AuthError::MultipleAuthorization => "more than one Authorization header",
            AuthError::TokenTooLarge => "token too large",
            AuthError::Malformed(_) => "token malformed",
            AuthError::DisallowedAlgorithm(_) => "token algorithm not accepted",
            AuthError::BadType(_) => "token type not accepted",
            AuthError::UnsupportedCritical => "token has unsupported critical extensions",
            AuthError::BadIssuer(_) => "token issuer not accepted",
            AuthError::UnknownKey { .. } => "token signing key unknown",
            AuthError::KeyMismatch(_) => "token signing key does not fit the algorithm",
            AuthError::KeysUnavailable(_) => "signing keys are not available yet",
            AuthError::BadSignature => "token signature invalid",
            AuthError::BadAudience => "token audience not accepted",
            AuthError::MissingExpiry => "token has no expiry",
            AuthError::Expired => "token expired",
            AuthError::NotYetValid => "token not yet valid",
        }
    }

    /// The verification step that failed, for `tollgate explain`.
    pub fn step(&self) -> Step {
        match self {
            AuthError::MultipleAuthorization
            | AuthError::TokenTooLarge
            | AuthError::Malformed(_) => Step::Format,
            AuthError::DisallowedAlgorithm(_)
            | AuthError::BadType(_)
            | AuthError::UnsupportedCritical => Step::Header,
            AuthError::BadIssuer(_) => Step::Issuer,
            AuthError::UnknownKey { .. }
            | AuthError::KeyMismatch(_)
            | AuthError::KeysUnavailable(_) => Step::Key,
            AuthError::BadSignature => Step::Signature,
            AuthError::BadAudience => Step::Audience,
            AuthError::MissingExpiry | AuthError::Expired | AuthError::NotYetValid => {
                Step::Lifetime
            }
        }
    }
}

/// The checks of [`verify`], in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Three base64url JSON segments.
    Format,
    /// `alg` allowed, `typ`, no `crit`.
    Header,
    /// `iss` names a trusted issuer (and tenant).
    Issuer,
    /// A key with the token's `kid` that fits `alg`.
    Key,
    /// The signature verifies.
    Signature,
    /// `aud` is accepted.
    Audience,
    /// `exp` present and not past, `nbf` and `iat` not in the future.
    Lifetime,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 7] = [
        Step::Format,
        Step::Header,
        Step::Issuer,
        Step::Key,
        Step::Signature,
        Step::Audience,
        Step::Lifetime,
    ];

    /// A short description.
    pub fn describe(self) -> &'static str {
        match self {
            Step::Format => "format: three base64url segments of JSON",
            Step::Header => "header: alg allowed for the issuer, typ JWT or at+jwt, no crit",
            Step::Issuer => "iss: a configured issuer (and an allowed tenant)",
            Step::Key => "key: kid in the issuer's JWKS, fitting alg",
            Step::Signature => "signature",
            Step::Audience => "aud: one of the issuer's audiences",
            Step::Lifetime => {
                "lifetime: exp present and not past, nbf/iat not in the future (with clock skew)"
            }
        }
    }
}

/// A token that passed every check.
pub struct Verified<'i> {
    /// Its claims.
    pub claims: Claims,
    /// The issuer that vouched for it.
    pub issuer: &'i Issuer,
    /// The algorithm it was signed with.
    pub alg: Algorithm,
    /// Whether the signature check came from the cache.
    pub cached: bool,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
    crit: Option<serde_json::Value>,
}

/// What kind of token is expected.
#[derive(Clone, Copy, Debug)]
pub enum Expect<'a> {
    /// An access token for this service: from any configured issuer, `aud` one of the
    /// issuer's audiences.
    AccessToken,
    /// An access token for a protected resource (RFC 8707 audience binding): from any
    /// configured issuer, `aud` one of these (the resource, then its issuer's audiences).
    Resource {
        /// The accepted `aud` values.
        audiences: &'a [String],
    },
    /// A sign-in's id_token: from the issuer named `issuer` only, `aud` the `client_id`.
    IdToken {
        /// The `[login] issuer`.
        issuer: &'a str,
        /// The `[login] client_id`.
        client_id: &'a str,
    },
}

/// Verifies an access token against `issuers` at time `now`.
pub fn verify<'i>(
    token: &str,
    issuers: &'i Issuers,
    cache: Option<&SignatureCache>,
    now: SystemTime,
) -> Result<Verified<'i>, AuthError> {
    verify_as(token, issuers, cache, now, Expect::AccessToken)
}

/// Verifies `token` as `expect` says against `issuers` at time `now`.
pub fn verify_as<'i>(
    token: &str,
    issuers: &'i Issuers,
    cache: Option<&SignatureCache>,
    now: SystemTime,
    expect: Expect<'_>,
) -> Result<Verified<'i>, AuthError> {
    let (signing_input, signature_b64) = token
        .rsplit_once('.')
        .ok_or(AuthError::Malformed("not three segments"))?;
    let (header_b64, payload_b64) = signing_input
        .split_once('.')
        .ok_or(AuthError::Malformed("not three segments"))?;
    if payload_b64.contains('.') {
        return Err(AuthError::Malformed("more than three segments"));
    }
    let header: Header = decode_json(header_b64)?;
    let alg = Algorithm::from_name(&header.alg)
        .ok_or_else(|| AuthError::DisallowedAlgorithm(header.alg.clone()))?;
    if let Some(typ) = &header.typ {
        // RFC 9068 access tokens say at+jwt, Entra says JWT; a "typ" of id-token or
        // logout+jwt is a different kind of token replayed as an access token.
        let t = typ.to_ascii_lowercase();
        if !matches!(t.as_str(), "jwt" | "at+jwt" | "application/at+jwt") {
            return Err(AuthError::BadType(typ.clone()));
        }
    }
    if header.crit.is_some() {
        return Err(AuthError::UnsupportedCritical);
    }
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| AuthError::Malformed("payload is not base64url"))?;
    let claims =
        Claims::parse(&payload).ok_or(AuthError::Malformed("payload is not a JSON object"))?;

    let iss = claims
        .issuer()
        .ok_or_else(|| AuthError::BadIssuer(String::new()))?;
    let tid = claims.tenant();
    let issuer = match issuers.find(iss, tid) {
        IssuerMatch::Trusted(issuer) => issuer,
        IssuerMatch::TenantNotAllowed | IssuerMatch::Unknown => {
            return Err(AuthError::BadIssuer(iss.to_owned()));
        }
    };
    if let Expect::IdToken { issuer: name, .. } = expect
        && issuer.name != name
    {
        return Err(AuthError::BadIssuer(iss.to_owned()));
    }
    if !issuer.algorithms.contains(&alg) {
        return Err(AuthError::DisallowedAlgorithm(header.alg));
    }

    let keys = issuer.keys.keys();
    if keys.generation == 0 {
        return Err(AuthError::KeysUnavailable(issuer.name.clone()));
    }
    let key = match &header.kid {
        Some(kid) => keys.get(kid),
        None => keys.single(),
    }
    .ok_or_else(|| AuthError::UnknownKey {
        issuer: issuer.name.clone(),
        kid: header.kid.clone().unwrap_or_default(),
        generation: keys.generation,
    })?;
    if key.alg.is_some_and(|own| own != alg) {
        return Err(AuthError::KeyMismatch(alg));
    }
    let verifier = key.verifier(alg).ok_or(AuthError::KeyMismatch(alg))?;
    // Entra's multi-tenant keys name the issuer they sign for; a key for one tenant must not
    // vouch for another.
    if let Some(key_issuer) = &key.issuer
        && !template_matches(key_issuer, tid, iss)
    {
        return Err(AuthError::BadIssuer(iss.to_owned()));
    }

    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    let digest = cache.map(|_| SignatureCache::digest(token));
    let cached =
        matches!((cache, &digest), (Some(c), Some(d)) if c.contains(d, keys.generation, now_secs));
    if !cached {
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| AuthError::Malformed("signature is not base64url"))?;
        verifier
            .verify_sig(signing_input.as_bytes(), &signature)
            .map_err(|_| AuthError::BadSignature)?;
    }

    match expect {
        Expect::AccessToken => check_audience(&claims, &issuer.audiences)?,
        Expect::Resource { audiences } => check_audience(&claims, audiences)?,
        Expect::IdToken { client_id, .. } => check_audience(&claims, &[client_id])?,
    }
    let exp = check_lifetime(&claims, issuer, now_secs)?;
    if let (Some(cache), Some(digest), false) = (cache, digest, cached) {
        cache.insert(digest, keys.generation, exp);
    }
    Ok(Verified {
        claims,
        issuer,
        alg,
        cached,
    })
}

fn decode_json<T: for<'de> Deserialize<'de>>(segment: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Malformed("header is not base64url"))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::Malformed("header is not a JSON object with alg"))
}

fn check_audience(claims: &Claims, audiences: &[impl AsRef<str>]) -> Result<(), AuthError> {
    match claims.get("aud") {
        Some(serde_json::Value::String(_) | serde_json::Value::Array(_)) => {}
        Some(_) => return Err(AuthError::Malformed("aud is not a string or an array")),
        None => return Err(AuthError::BadAudience),
    }
    if claims
        .strings("aud")
        .any(|aud| audiences.iter().any(|a| a.as_ref() == aud))
    {
        Ok(())
    } else {
        Err(AuthError::BadAudience)
    }
}

/// Checks `exp`, `nbf` and `iat`; returns `exp` (seconds).
fn check_lifetime(claims: &Claims, issuer: &Issuer, now: f64) -> Result<f64, AuthError> {
    let skew = issuer.clock_skew.as_secs_f64();
    let date = |name| {
        claims
            .numeric_date(name)
            .map_err(|_| AuthError::Malformed("a date claim is not a number"))
    };
    let exp = date("exp")?.ok_or(AuthError::MissingExpiry)?;
    if now >= exp + skew {
        return Err(AuthError::Expired);
    }
    if date("nbf")?.is_some_and(|nbf| now + skew < nbf) {
        return Err(AuthError::NotYetValid);
    }
    if date("iat")?.is_some_and(|iat| now + skew < iat) {
        return Err(AuthError::NotYetValid);
    }
    Ok(exp + skew)
}

/// Unverified decoding, for display in `tollgate explain` and `tollgate token` only. Nothing
/// here is reachable from the request path; nothing decoded here may be trusted.
pub mod dangerous {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::Value;

    /// The header and claims of a token, without checking anything.
    pub fn decode_unverified(token: &str) -> Option<(Value, Value)> {
        let mut parts = token.split('.');
        let mut segment = || -> Option<Value> {
            let bytes = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
            serde_json::from_slice(&bytes).ok()
        };
        let header = segment()?;
        let claims = segment()?;
        Some((header, claims))
    }
}

#[cfg(test)]
mod tests;
