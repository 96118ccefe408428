//! The login transaction: what travels from `/.auth/login/aad` to the callback in a short-lived
//! sealed cookie (`state`, `nonce`, the PKCE verifier, where to go afterwards), the
//! authorization request built from it, the callback's checks, and the rule for where a
//! browser may be sent after login or logout.
//!
//! Pure functions of their inputs (the time included); the listener will call them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use url::Url;

use super::seal::{KeyRing, SealError};

/// The login cookie's name; its value is sealed for this name alone.
pub const LOGIN_COOKIE: &str = "TollgateLogin";
/// How long a login may take, from the redirect to the provider to the callback.
pub const LOGIN_LIFETIME: Duration = Duration::from_secs(600);

/// A login started: the sealed cookie value, and what the authorization request carries.
#[derive(Debug)]
pub struct Begun {
    /// The value of [`LOGIN_COOKIE`].
    pub cookie: String,
    /// `state`: ties the callback to this browser.
    pub state: String,
    /// `nonce`: ties the id_token to this login.
    pub nonce: String,
    /// `code_challenge` (S256 of the verifier, which stays in the cookie).
    pub code_challenge: String,
}

/// What the callback learns from a valid login cookie.
#[derive(Debug, PartialEq, Eq)]
pub struct Pending {
    /// The `nonce` the id_token must carry.
    pub nonce: String,
    /// The PKCE verifier for the code redemption.
    pub verifier: String,
    /// Where the browser goes after login (already checked by [`safe_redirect`]).
    pub redirect: String,
}

/// Why a callback is refused: each a 400 with its reason, nothing redeemed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// No login cookie: the login did not start in this browser, or cookies are blocked.
    #[error("no login in progress in this browser (missing login cookie)")]
    NoLoginCookie,
    /// The login cookie does not open (tampered, another deployment's, an old key).
    #[error("the login cookie is not valid")]
    InvalidLoginCookie,
    /// The login took longer than [`LOGIN_LIFETIME`].
    #[error("the login took too long; start again")]
    Expired,
    /// The callback has no `state`, or not this browser's.
    #[error("the state does not match this browser's login")]
    StateMismatch,
}

/// What the login cookie holds.
#[derive(Serialize, Deserialize)]
struct Record {
    /// `state`.
    s: String,
    /// `nonce`.
    n: String,
    /// PKCE verifier.
    v: String,
    /// Where to go afterwards.
    r: String,
    /// Expiry, Unix seconds.
    e: u64,
}

/// Starts a login that returns to `redirect` (checked by the caller with [`safe_redirect`]).
pub fn begin(ring: &KeyRing, redirect: &str, now: SystemTime) -> Result<Begun, SealError> {
    let random = SystemRandom::new();
    let token = || -> Result<String, SealError> {
        let mut bytes = [0u8; 32];
        random.fill(&mut bytes).map_err(|_| SealError)?;
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    };
    // 32 random bytes in base64url: 43 characters, RFC 7636's minimum verifier length.
    let (state, nonce, verifier) = (token()?, token()?, token()?);
    let code_challenge = URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()));
    let expires = unix(now) + LOGIN_LIFETIME.as_secs();
    let record = Record {
        s: state.clone(),
        n: nonce.clone(),
        v: verifier,
        r: redirect.to_owned(),
        e: expires,
    };
    let json = serde_json::to_vec(&record).map_err(|_| SealError)?;
    Ok(Begun {
        cookie: ring.seal(LOGIN_COOKIE, &json)?,
        state,
        nonce,
        code_challenge,
    })
}

/// Checks a callback: the login cookie opens, has not expired, and its `state` is the one the
/// provider sent back (compared in constant time).
pub fn finish(
    ring: &KeyRing,
    cookie: Option<&str>,
    state: Option<&str>,
    now: SystemTime,
) -> Result<Pending, LoginError> {
    let cookie = cookie.ok_or(LoginError::NoLoginCookie)?;
    let json = ring
        .open(LOGIN_COOKIE, cookie)
        .map_err(|_| LoginError::InvalidLoginCookie)?;
    let record: Record =
        serde_json::from_slice(&json).map_err(|_| LoginError::InvalidLoginCookie)?;
    if unix(now) >= record.e {
        return Err(LoginError::Expired);
    }
    let state = state.ok_or(LoginError::StateMismatch)?;
    verify_slices_are_equal(state.as_bytes(), record.s.as_bytes())
        .map_err(|_| LoginError::StateMismatch)?;
    Ok(Pending {
        nonce: record.n,
        verifier: record.v,
        redirect: record.r,
    })
}

/// The authorization request: `response_type=code`, `response_mode=query`, PKCE S256.
pub fn authorize_url(
    endpoint: &Url,
    client_id: &str,
    redirect_uri: &str,
    scopes: &[String],
    begun: &Begun,
) -> Url {
    let mut url = endpoint.clone();
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("response_type", "code")
        .append_pair("response_mode", "query")
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", &scopes.join(" "))
        .append_pair("state", &begun.state)
        .append_pair("nonce", &begun.nonce)
        .append_pair("code_challenge", &begun.code_challenge)
        .append_pair("code_challenge_method", "S256");
    url
}

/// Where a browser may be sent after login or logout: `target` if it stays on this origin
/// (returned as its path, query and fragment) or is under one of `allowed` (same scheme,
/// host and port, and a path under the allowed one's), else `None` (the caller sends `/`).
///
/// "Stays on this origin" is decided the way a browser reads a `Location`: the WHATWG URL
/// parser (the `url` crate) resolves `target` against a base, so `//evil.example`,
/// `/\evil.example`, `/\t/evil.example` and `https:evil.example` are seen for what a browser
/// makes of them. Controls and whitespace are refused outright.
pub fn safe_redirect(target: &str, allowed: &[Url]) -> Option<String> {
    if target.is_empty() || target.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    // A base no request can name: whatever resolves onto it stayed on this origin.
    let base = Url::parse("https://tollgate.invalid/").ok()?;
    let resolved = base.join(target).ok()?;
    if resolved.origin() == base.origin() {
        // Relative forms (`a/b`, `../x`) resolve against `/`: send the resolved path, the
        // form a browser would go to. A path that begins with `//` (from `/.//x` or `./\x`)
        // would itself be read as another host: refused.
        if resolved.path().starts_with("//") {
            return None;
        }
        let mut path = resolved.path().to_owned();
        if let Some(q) = resolved.query() {
            path.push('?');
            path.push_str(q);
        }
        if let Some(f) = resolved.fragment() {
            path.push('#');
            path.push_str(f);
        }
        // What is sent must read back as itself, on this origin.
        let again = base.join(&path).ok()?;
        return (again.origin() == base.origin() && again.path() == resolved.path())
            .then_some(path);
    }
    let absolute = Url::parse(target).ok()?;
    allowed
        .iter()
        .any(|a| {
            a.origin() == absolute.origin()
                && (absolute.path() == a.path()
                    || absolute
                        .path()
                        .starts_with(&format!("{}/", a.path().trim_end_matches('/'))))
        })
        .then(|| absolute.to_string())
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
