//! The Entra ID v2 token endpoint: checks the client-credentials form, then the
//! client's proof: a secret, a federated assertion (workload identity, managed identity), or a
//! `private_key_jwt` whose signature, thumbprint header and claims (aud, iss, sub, jti, exp)
//! are verified as Entra does. Errors carry `error_codes` and `AADSTS…` descriptions.
//!
//! The on-behalf-of grant (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`,
//! `requested_token_use=on_behalf_of`) is checked as Entra does before the client's proof:
//! the assertion's `aud` must be this app (50013), an id_token is refused (240002), an expired
//! one too (500133). The token issued carries the assertion's user (`oid`, `tid`, `sub`) and
//! the scope's `scp`. Entra's refusals that reach the user are scripted with
//! [`mfa_required`], [`interaction_required`], [`consent_required`] and [`revoked`], in
//! Entra's own bodies (`suberror`, a top-level `claims` string).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::render::Answer;
use super::{Builder, Flavor, Logged, Mock, State};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The on-behalf-of grant type.
pub const OBO_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The app registration the endpoint knows.
#[derive(Clone, Debug)]
pub struct EntraConfig {
    pub tenant: String,
    pub client_id: String,
    pub auth: EntraAuth,
    jtis: Arc<Mutex<HashSet<String>>>,
}

/// Decides whether a federated assertion is the expected one.
pub type AssertionCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// How the app must prove itself.
#[derive(Clone)]
pub enum EntraAuth {
    /// `client_secret` equal to this.
    Secret(String),
    /// A `private_key_jwt` signed by this certificate's key: `algorithm` is "PS256" (with
    /// `x5t#S256`) or "RS256" (with `x5t`).
    Certificate {
        cert_der: Vec<u8>,
        public_key_der: Vec<u8>,
        algorithm: &'static str,
    },
    /// A federated assertion (a Kubernetes token, a managed-identity token) the check accepts.
    Assertion(AssertionCheck),
}

impl std::fmt::Debug for EntraAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntraAuth::Secret(_) => f.write_str("Secret"),
            EntraAuth::Certificate { algorithm, .. } => write!(f, "Certificate({algorithm})"),
            EntraAuth::Assertion(_) => f.write_str("Assertion"),
        }
    }
}

impl EntraAuth {
    /// Accepts exactly the current value of `expected` (change it as a rotated file changes).
    pub fn exact(expected: Arc<Mutex<String>>) -> EntraAuth {
        EntraAuth::Assertion(Arc::new(move |a| a == expected.lock().as_str()))
    }
}

impl EntraConfig {
    pub fn new(tenant: &str, client_id: &str, auth: EntraAuth) -> EntraConfig {
        EntraConfig {
            tenant: tenant.into(),
            client_id: client_id.into(),
            auth,
            jtis: Arc::default(),
        }
    }
}

impl Mock {
    pub fn entra(config: EntraConfig) -> Builder {
        Builder::new(Flavor::Entra(config))
    }

    /// `{base}/{tenant}/oauth2/v2.0/token`: what an assertion's `aud` must be.
    pub fn token_endpoint(&self) -> String {
        let Flavor::Entra(c) = &self.state().flavor else {
            panic!("not an Entra mock")
        };
        format!("{}{}/oauth2/v2.0/token", self.state().base_url, c.tenant)
    }

    /// The client assertions received, decoded (header, claims), for checks.
    pub fn assertions(&self) -> Vec<(Value, Value)> {
        self.log()
            .iter()
            .filter_map(|l| l.field("client_assertion").and_then(decode))
            .collect()
    }
}

/// An Entra error: `AADSTS<code>: <text>` plus the Trace/Correlation lines, and `error_codes`.
pub fn error(status: u16, error: &str, code: u32, text: &str) -> Answer {
    let description = format!(
        "AADSTS{code}: {text}\r\nTrace ID: 0000aaaa-11bb-cc22-dd33-444444eeeeee\r\nCorrelation ID: aaaa0000-bb11-2222-33cc-444444dddddd\r\nTimestamp: 2024-01-01 00:00:00Z"
    );
    (
        status,
        vec![],
        json!({
            "error": error, "error_description": description, "error_codes": [code],
            "timestamp": "2024-01-01 00:00:00Z", "trace_id": "0000aaaa-11bb-cc22-dd33-444444eeeeee",
            "correlation_id": "aaaa0000-bb11-2222-33cc-444444dddddd",
        }),
    )
}

/// An Entra error body with the extra top-level fields of a user-facing refusal.
fn user_error(error: &str, code: u32, text: &str, extra: Value) -> super::Reply {
    let (status, _, mut body) = self::error(400, error, code, text);
    body["error_uri"] = json!(format!(
        "https://login.microsoftonline.com/error?code={code}"
    ));
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    super::Reply::Json { status, body }
}

/// Conditional Access wants MFA, as Entra answers an OBO exchange: `invalid_grant`, AADSTS50076,
/// `suberror: basic_action`, and the claims challenge as a top-level string.
pub fn mfa_required(claims: &str) -> super::Reply {
    user_error(
        "invalid_grant",
        50076,
        "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access 'api://orders'.",
        json!({"suberror": "basic_action", "claims": claims}),
    )
}

/// `interaction_required` (AADSTS50079, MFA enrolment) with a claims challenge.
pub fn interaction_required(claims: &str) -> super::Reply {
    user_error(
        "interaction_required",
        50079,
        "Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multi-factor authentication to access 'api://orders'.",
        json!({"suberror": "basic_action", "claims": claims}),
    )
}

/// The downstream API has no consent: AADSTS65001, `suberror: consent_required`.
pub fn consent_required() -> super::Reply {
    user_error(
        "invalid_grant",
        65001,
        "The user or administrator has not consented to use the application with ID 'a0a0a0a0-1111-2222-3333-444444444444' named 'web'. Send an interactive authorization request for this user and resource.",
        json!({"suberror": "consent_required"}),
    )
}

/// The caller's token was revoked (AADSTS50173, the grant expired after a password change).
pub fn revoked() -> super::Reply {
    user_error(
        "invalid_grant",
        50173,
        "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.",
        json!({}),
    )
}

/// `invalid_client`: the app's own secret expired (AADSTS7000222).
pub fn secret_expired() -> super::Reply {
    let (status, _, body) = self::error(
        401,
        "invalid_client",
        7000222,
        "The provided client secret keys for app 'a0a0a0a0-1111-2222-3333-444444444444' are expired.",
    );
    super::Reply::Json { status, body }
}

pub(crate) fn check(state: &State, c: &EntraConfig, l: &Logged) -> Option<Answer> {
    check_form(c, l).or_else(|| check_client(state, c, l))
}

/// Whether a request is the on-behalf-of grant.
pub(crate) fn is_obo(l: &Logged) -> bool {
    l.field("grant_type") == Some(OBO_GRANT)
}

/// The on-behalf-of form and its assertion, as Entra checks them before the client.
fn check_obo(c: &EntraConfig, l: &Logged) -> Option<(&'static str, u32, &'static str)> {
    if l.field("requested_token_use") != Some("on_behalf_of") {
        return Some((
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'requested_token_use'.",
        ));
    }
    if l.field("scope").is_none_or(|s| s.trim().is_empty()) {
        return Some((
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        ));
    }
    let Some((_, claims)) = l.field("assertion").and_then(decode) else {
        return Some((
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        ));
    };
    let app_uri = format!("api://{}", c.client_id);
    let aud_ok = claims["aud"] == c.client_id.as_str() || claims["aud"] == app_uri.as_str();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    if claims.get("nonce").is_some()
        || (claims.get("scp").is_none() && claims.get("roles").is_none())
    {
        Some((
            "invalid_grant",
            240002,
            "The id_token can't be used as 'urn:ietf:params:oauth:grant-type:jwt-bearer' grant.",
        ))
    } else if !aud_ok {
        Some((
            "invalid_grant",
            50013,
            "Assertion audience claim does not match the required value.",
        ))
    } else if claims["exp"].as_u64().is_none_or(|exp| exp <= now) {
        Some((
            "invalid_grant",
            500133,
            "Assertion is not within its valid time range.",
        ))
    } else {
        None
    }
}

/// The client-credentials form itself: `grant_type=client_credentials`, `client_id`, `scope`.
fn check_form(c: &EntraConfig, l: &Logged) -> Option<Answer> {
    let form = l
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let refusal = if l.method != "POST" || l.path != format!("/{}/oauth2/v2.0/token", c.tenant) {
        ("invalid_request", 90002, "Tenant not found.")
    } else if !form {
        (
            "invalid_request",
            900144,
            "The request body must be a form.",
        )
    } else if is_obo(l) {
        return check_obo(c, l)
            .map(|r| error(400, r.0, r.1, r.2))
            .or_else(|| {
                (l.field("client_id") != Some(&c.client_id)).then(|| {
                    error(
                        400,
                        "unauthorized_client",
                        700016,
                        "Application was not found in the directory.",
                    )
                })
            });
    } else if l.field("grant_type") != Some("client_credentials") {
        (
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        )
    } else if l.field("client_id") != Some(&c.client_id) {
        (
            "unauthorized_client",
            700016,
            "Application was not found in the directory.",
        )
    } else if !l.field("scope").is_some_and(|s| s.ends_with("/.default")) {
        (
            "invalid_scope",
            70011,
            "The provided value for the input parameter 'scope' is not valid.",
        )
    } else {
        return None;
    };
    Some(error(400, refusal.0, refusal.1, refusal.2))
}

/// The client's proof: a secret, a federated assertion or a certificate.
fn check_client(state: &State, c: &EntraConfig, l: &Logged) -> Option<Answer> {
    let assertion = l.field("client_assertion");
    let typed = l.field("client_assertion_type") == Some(JWT_BEARER);
    match &c.auth {
        EntraAuth::Secret(secret) => {
            (l.field("client_secret") != Some(secret) || assertion.is_some()).then(|| {
                error(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided.",
                )
            })
        }
        EntraAuth::Assertion(expected) => {
            let ok = typed && assertion.is_some_and(|a| expected(a));
            let text = "No matching federated identity record found for presented assertion.";
            (!ok).then(|| error(400, "invalid_request", 70021, text))
        }
        EntraAuth::Certificate { .. } => {
            let aud = format!("{}{}/oauth2/v2.0/token", state.base_url, c.tenant);
            let verdict = match assertion {
                Some(a) if typed => verify(a, c, &aud),
                _ => Err((
                    700027,
                    "client_assertion_type must be jwt-bearer".to_owned(),
                )),
            };
            let refusal = verdict.err()?;
            Some(error(401, "invalid_client", refusal.0, &refusal.1))
        }
    }
}

/// Checks a `private_key_jwt` as Entra does; `Err((AADSTS code, reason))`.
fn verify(assertion: &str, c: &EntraConfig, aud: &str) -> Result<(), (u32, String)> {
    let EntraAuth::Certificate {
        cert_der,
        public_key_der,
        algorithm,
    } = &c.auth
    else {
        unreachable!()
    };
    let bad = |code, text: &str| Err((code, text.to_owned()));
    let parts: Vec<&str> = assertion.split('.').collect();
    let [h, p, s] = parts.as_slice() else {
        return bad(700027, "not a JWS");
    };
    let (header, claims) = decode(assertion).ok_or((700027, "undecodable".to_owned()))?;
    if header["alg"] != *algorithm {
        return bad(700027, "unexpected alg");
    }
    let (name, digest) = match *algorithm {
        "PS256" => ("x5t#S256", &aws_lc_rs::digest::SHA256),
        _ => ("x5t", &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY),
    };
    let want = aws_lc_rs::digest::digest(digest, cert_der);
    // Entra accepts base64url with or without padding, and standard base64.
    let given = header[name].as_str().unwrap_or_default();
    let decoded = URL_SAFE_NO_PAD
        .decode(given.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(given));
    if decoded.ok().as_deref() != Some(want.as_ref()) {
        return bad(700027, "the certificate thumbprint header does not match");
    }
    let alg: &'static dyn signature::VerificationAlgorithm = match *algorithm {
        "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
        _ => &signature::RSA_PKCS1_2048_8192_SHA256,
    };
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| (700027, "signature encoding".to_owned()))?;
    UnparsedPublicKey::new(alg, public_key_der)
        .verify(format!("{h}.{p}").as_bytes(), &sig)
        .map_err(|_| {
            (
                700027,
                "Client assertion failed signature validation.".to_owned(),
            )
        })?;
    verify_claims(&claims, c, aud)
}

/// The claims of a verified assertion: aud, iss = sub, a fresh jti, a short window.
fn verify_claims(claims: &Value, c: &EntraConfig, aud: &str) -> Result<(), (u32, String)> {
    let bad = |code, text: &str| Err((code, text.to_owned()));
    if claims["aud"] != aud {
        return bad(50027, "Invalid JWT token: wrong audience");
    }
    if claims["iss"] != c.client_id.as_str() || claims["sub"] != c.client_id.as_str() {
        return bad(
            50027,
            "Invalid JWT token: iss and sub must be the client id",
        );
    }
    let jti = claims["jti"].as_str().unwrap_or_default();
    if jti.is_empty() || !c.jtis.lock().insert(jti.to_owned()) {
        return bad(50027, "Invalid JWT token: jti missing or replayed");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let (exp, nbf) = (
        claims["exp"].as_u64().unwrap_or(0),
        claims["nbf"].as_u64().unwrap_or(now),
    );
    if exp <= now || nbf > now + 60 || exp.saturating_sub(nbf) > 660 {
        return bad(
            700024,
            "Client assertion is not within its valid time range.",
        );
    }
    Ok(())
}

/// A JWT's header and claims, unverified.
pub(crate) fn decode(token: &str) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let mut json = || -> Option<Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next()?).ok()?).ok()
    };
    Some((json()?, json()?))
}
