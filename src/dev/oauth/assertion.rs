//! Client assertions (RFC 7523) the token endpoint accepts, signatures checked for real:
//!
//! - **federated**: a token the dev issuer signed for [`TOKEN_EXCHANGE_AUDIENCE`], which is
//!   what the dev identity endpoint mints for a managed identity (managed identity as a
//!   federated credential) and what `tollgate dev token --aud api://AzureADTokenExchange`
//!   writes for workload identity. Every subject is trusted, as if each dev identity were a
//!   federated credential of the web client; a user token (`scp`) is not (AADSTS700229).
//! - **certificate** (`private_key_jwt`): the header's `x5t#S256` or `x5t` names a
//!   certificate registered with the client, whose key signed it; `iss` = `sub` = the client
//!   id; `aud` is this provider's token endpoint (at the root or under a tenant).
//!
//! Both need `exp` in the future and `nbf` not in it, with Entra's five minutes of skew.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use rustls_pki_types::SignatureVerificationAlgorithm;
use serde_json::Value;
use url::{Host, Url};

use super::TOKEN_EXCHANGE_AUDIENCE;
use super::client::WebClient;
use super::error::{ErrorKind, OAuthError};
use super::route::{Endpoint, route};
use crate::config::Algorithm;
use crate::dev::issuer::LocalIssuer;

/// Clock skew allowed for `exp` and `nbf`: 5 minutes, as Entra allows.
const CLOCK_SKEW_SECS: f64 = 300.0;

/// A compact JWS taken apart, its signature not yet checked.
struct Jws<'t> {
    alg: Algorithm,
    header: Value,
    claims: Value,
    signing_input: &'t str,
    signature: Vec<u8>,
}

/// Checks `token` as a client assertion for `client` presented at the token endpoint under
/// `base` at `now`.
pub(super) fn verify(
    token: &str,
    client: &WebClient,
    issuer: &LocalIssuer,
    base: &str,
    now: SystemTime,
) -> Result<(), OAuthError> {
    // A token file written by `tollgate dev token > FILE` ends in a newline, and
    // azure-identity sends the file's content as it is.
    let token = token.trim_ascii();
    let not_a_jwt = || invalid(700027, "The client assertion is not a signed JWT.");
    let jws = parse(token).ok_or_else(not_a_jwt)?;
    let thumbprint = ["x5t#S256", "x5t"]
        .iter()
        .find_map(|name| jws.header[*name].as_str());
    if let Some(thumbprint) = thumbprint {
        return verify_certificate(&jws, thumbprint, client, base, now);
    }
    let iss = jws.claims["iss"].as_str().unwrap_or_default();
    if iss == issuer.issuer {
        return verify_federated(&jws, issuer, now);
    }
    Err(OAuthError::new(
        ErrorKind::InvalidRequest,
        70021,
        format!(
            "No matching federated identity record found for presented assertion issuer '{iss}'."
        ),
    ))
}

/// The user token of an on-behalf-of request (`assertion`): signed by the dev issuer, alive, a
/// user's (not app-only), and for the web app itself (`aud` its client id or an audience the
/// dev issuer mints for APIs, never the token-exchange audience). Answers its claims.
pub(super) fn verify_user_assertion(
    token: &str,
    issuer: &LocalIssuer,
    now: SystemTime,
) -> Result<serde_json::Value, OAuthError> {
    let bad = |code: u32, message: &str| {
        OAuthError::new(ErrorKind::InvalidGrant, code, message.to_owned())
    };
    let jws = parse(token.trim_ascii()).ok_or_else(|| {
        bad(
            50013,
            "Assertion failed signature validation: not a signed JWT.",
        )
    })?;
    let kid = jws.header["kid"].as_str().unwrap_or_default();
    let key = issuer.key(kid).filter(|k| k.alg == jws.alg);
    if jws.claims["iss"].as_str() != Some(issuer.issuer.as_str())
        || !key.is_some_and(|k| k.verify(jws.signing_input.as_bytes(), &jws.signature))
    {
        return Err(bad(50013, "Assertion failed signature validation."));
    }
    if audiences(&jws.claims).any(|a| a == TOKEN_EXCHANGE_AUDIENCE) {
        return Err(bad(
            50013,
            "Assertion audience does not match the client app.",
        ));
    }
    if jws.claims["idtyp"] == "app" || jws.claims.get("scp").is_none() {
        return Err(bad(
            50013,
            "Assertion is an app-only token; on-behalf-of exchanges a user's token.",
        ));
    }
    check_times(&jws.claims, now)
        .map_err(|_| bad(500133, "Assertion is not within its valid time range."))?;
    Ok(jws.claims.clone())
}

fn verify_federated(
    jws: &Jws<'_>,
    issuer: &LocalIssuer,
    now: SystemTime,
) -> Result<(), OAuthError> {
    let kid = jws.header["kid"].as_str().unwrap_or_default();
    let key = issuer.key(kid).filter(|k| k.alg == jws.alg);
    if !key.is_some_and(|k| k.verify(jws.signing_input.as_bytes(), &jws.signature)) {
        return Err(bad_signature());
    }
    if !audiences(&jws.claims).any(|a| a == TOKEN_EXCHANGE_AUDIENCE) {
        return Err(invalid(
            700212,
            &format!(
                "No matching federated identity record found for presented assertion audience; it must be '{TOKEN_EXCHANGE_AUDIENCE}'."
            ),
        ));
    }
    if jws.claims.get("scp").is_some() || jws.claims["idtyp"] == "user" {
        return Err(invalid(
            700229,
            "The federated assertion is a user token; an app-only token is expected.",
        ));
    }
    check_times(&jws.claims, now)
}

fn verify_certificate(
    jws: &Jws<'_>,
    thumbprint: &str,
    client: &WebClient,
    base: &str,
    now: SystemTime,
) -> Result<(), OAuthError> {
    let unregistered = || {
        invalid(
            700027,
            "The certificate with identifier used to sign the client assertion is not registered on application.",
        )
    };
    // MSAL Go writes standard base64 with padding, MSAL Python base64url with padding.
    let trimmed = thumbprint.trim_end_matches('=');
    let bytes = URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| STANDARD_NO_PAD.decode(trimmed))
        .map_err(|_| unregistered())?;
    let der = client.certificate(&bytes).ok_or_else(unregistered)?;
    let cert = webpki::EndEntityCert::try_from(der).map_err(|_| unregistered())?;
    cert.verify_signature(
        signature_algorithm(jws.alg),
        jws.signing_input.as_bytes(),
        &jws.signature,
    )
    .map_err(|_| bad_signature())?;
    for claim in ["iss", "sub"] {
        if jws.claims[claim].as_str() != Some(client.id.as_str()) {
            let message = format!(
                "Client assertion {claim} must be the client id '{}'.",
                client.id
            );
            return Err(invalid(700021, &message));
        }
    }
    if !audiences(&jws.claims).any(|a| is_token_endpoint(a, base)) {
        let message = format!(
            "Client assertion audience must be the token endpoint {base}/{{tenant}}/oauth2/v2.0/token."
        );
        return Err(invalid(700023, &message));
    }
    check_times(&jws.claims, now)
}

/// `exp` present and (with skew) in the future; `nbf`, if any, not in the future.
fn check_times(claims: &Value, now: SystemTime) -> Result<(), OAuthError> {
    let now = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let out_of_range = || {
        invalid(
            700024,
            "Client assertion is not within its valid time range.",
        )
    };
    let exp = claims["exp"].as_f64().ok_or_else(out_of_range)?;
    if now >= exp + CLOCK_SKEW_SECS {
        return Err(out_of_range());
    }
    if claims["nbf"]
        .as_f64()
        .is_some_and(|nbf| now + CLOCK_SKEW_SECS < nbf)
    {
        return Err(out_of_range());
    }
    Ok(())
}

/// Whether `aud` is this provider's token endpoint under `base` (`scheme://127.0.0.1:port`):
/// the same scheme and port, any loopback host name, at the root or under a tenant.
fn is_token_endpoint(aud: &str, base: &str) -> bool {
    let (Ok(aud), Ok(base)) = (Url::parse(aud), Url::parse(base)) else {
        return false;
    };
    let loopback = match aud.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    loopback
        && aud.scheme() == base.scheme()
        && aud.port_or_known_default() == base.port_or_known_default()
        && aud.query().is_none()
        && matches!(route(aud.path()), Some((_, Endpoint::Token)))
}

/// `aud` as a list, whether the token wrote a string or an array.
fn audiences(claims: &Value) -> impl Iterator<Item = &str> {
    let list: Vec<&str> = match &claims["aud"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    list.into_iter()
}

/// Header, claims and signature of a compact JWS; `None` unless each part decodes and `alg`
/// is a signature algorithm tollgate knows (never `none`, never HMAC).
fn parse(token: &str) -> Option<Jws<'_>> {
    let (signing_input, signature) = token.rsplit_once('.')?;
    let (header, claims) = signing_input.split_once('.')?;
    if claims.contains('.') {
        return None;
    }
    let decode = |part: &str| -> Option<Value> {
        let value: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()?;
        value.is_object().then_some(value)
    };
    let header = decode(header)?;
    let alg = Algorithm::from_name(header["alg"].as_str()?)?;
    Some(Jws {
        alg,
        claims: decode(claims)?,
        header,
        signing_input,
        signature: URL_SAFE_NO_PAD.decode(signature).ok()?,
    })
}

/// webpki's verifier for a JWS algorithm (RSA keys of 2048 bits or more).
fn signature_algorithm(alg: Algorithm) -> &'static dyn SignatureVerificationAlgorithm {
    use webpki::aws_lc_rs as algs;
    match alg {
        Algorithm::RS256 => algs::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => algs::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => algs::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        Algorithm::PS384 => algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        Algorithm::PS512 => algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        Algorithm::ES256 => algs::ECDSA_P256_SHA256,
        Algorithm::ES384 => algs::ECDSA_P384_SHA384,
        Algorithm::EdDSA => algs::ED25519,
    }
}

fn bad_signature() -> OAuthError {
    invalid(700027, "Client assertion contains an invalid signature.")
}

fn invalid(code: u32, description: &str) -> OAuthError {
    OAuthError::new(ErrorKind::InvalidClient, code, description)
}
