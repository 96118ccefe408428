//! The provider through [`OAuthProvider::respond`], with the clock in the test's hands:
//! authorize, token grants, client assertions; `http.rs` runs the flow over the wire.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use rustls_pki_types::CertificateDer;
use serde_json::Value;
use url::Url;

use super::*;
use crate::config::Algorithm;
use crate::dev::identity::DEV_TENANT_ID;
use crate::dev::issuer::{DEV_ISSUER, SigningKey};

mod assertion;
mod authorize;
mod token;
mod wire;

const BASE: &str = "http://127.0.0.1:8079";
const CALLBACK: &str = "http://127.0.0.1:3000/.auth/login/aad/callback";
/// RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const SCOPE: &str = "openid profile offline_access api://orders/Orders.Read";

struct Fixture {
    oauth: Arc<OAuthProvider>,
    issuer: Arc<LocalIssuer>,
}

fn fixture() -> Fixture {
    fixture_with(OAuthSettings {
        app_roles: vec!["App.Write".into()],
        ..OAuthSettings::default()
    })
}

fn fixture_with(settings: OAuthSettings) -> Fixture {
    let key = SigningKey::generate(Algorithm::RS256, "k1").unwrap();
    let issuer = LocalIssuer::new(DEV_ISSUER, key);
    Fixture {
        oauth: OAuthProvider::new(issuer.clone(), settings),
        issuer,
    }
}

/// The authorize parameters of a typical sign-in, with `changes` applied (an empty value
/// removes the parameter).
fn authorize_params(changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = [
        ("client_id", DEV_WEB_CLIENT_ID),
        ("response_type", "code"),
        ("redirect_uri", CALLBACK),
        ("scope", SCOPE),
        ("state", "st&=1"),
        ("nonce", "n-1"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (name, value) in changes {
        params.retain(|(k, _)| k != name);
        if !value.is_empty() {
            params.push((name.to_string(), value.to_string()));
        }
    }
    params
}

fn encode(pairs: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Fixture {
    fn request(
        &self,
        method: Method,
        target: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Reply {
        let uri: Uri = target.parse().unwrap();
        let req = OAuthRequest {
            method: &method,
            uri: &uri,
            headers,
            body,
            base: BASE,
        };
        self.oauth.respond(&req, now).expect("an OAuth path").1
    }

    fn get(&self, target: &str) -> Reply {
        self.request(
            Method::GET,
            target,
            &HeaderMap::new(),
            b"",
            SystemTime::now(),
        )
    }

    fn post(&self, path: &str, form: &[(String, String)]) -> Reply {
        self.post_at(path, form, &HeaderMap::new(), SystemTime::now())
    }

    fn post_at(
        &self,
        path: &str,
        form: &[(String, String)],
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Reply {
        self.request(Method::POST, path, headers, encode(form).as_bytes(), now)
    }

    fn authorize(&self, changes: &[(&str, &str)]) -> Reply {
        self.get(&format!(
            "/oauth2/v2.0/authorize?{}",
            encode(&authorize_params(changes))
        ))
    }

    /// Submits the sign-in page for `changes` with `user` fields; the reply.
    fn submit(&self, changes: &[(&str, &str)], user: &[(&str, &str)]) -> Reply {
        let mut form = authorize_params(changes);
        form.extend(owned(user));
        self.post("/oauth2/v2.0/authorize", &form)
    }

    /// A code from a sign-in with `changes`, issued at `now`.
    fn code(&self, changes: &[(&str, &str)]) -> String {
        let reply = self.submit(
            changes,
            &[
                ("roles", "Orders.Read, Orders.Admin"),
                ("groups", "g1,g2"),
                ("action", "sign_in"),
            ],
        );
        let url = location(&reply);
        query(&url, "code").expect("a code")
    }

    /// Redeems `code` with the secret; `changes` as for [`authorize_params`].
    fn redeem(&self, code: &str, changes: &[(&str, &str)]) -> Reply {
        self.redeem_at(code, changes, SystemTime::now())
    }

    fn redeem_at(&self, code: &str, changes: &[(&str, &str)], now: SystemTime) -> Reply {
        let mut form = owned(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", VERIFIER),
            ("client_id", DEV_WEB_CLIENT_ID),
            ("client_secret", DEV_CLIENT_SECRET),
        ]);
        for (name, value) in changes {
            form.retain(|(k, _)| k != name);
            if !value.is_empty() {
                form.push((name.to_string(), value.to_string()));
            }
        }
        self.post_at("/oauth2/v2.0/token", &form, &HeaderMap::new(), now)
    }

    /// A token request with the secret and `form`.
    fn token(&self, form: &[(&str, &str)]) -> Reply {
        let mut form = owned(form);
        form.extend(owned(&[
            ("client_id", DEV_WEB_CLIENT_ID),
            ("client_secret", DEV_CLIENT_SECRET),
        ]));
        self.post("/oauth2/v2.0/token", &form)
    }
}

fn location(reply: &Reply) -> Url {
    assert_eq!(reply.status, StatusCode::FOUND, "{reply:?}");
    match &reply.content {
        Content::Redirect(to) => Url::parse(to).unwrap(),
        _ => panic!("not a redirect: {reply:?}"),
    }
}

fn query(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn body(reply: &Reply) -> &Value {
    match &reply.content {
        Content::Json(v) => v,
        _ => panic!("not JSON: {reply:?}"),
    }
}

fn page(reply: &Reply) -> &str {
    match &reply.content {
        Content::Html(p) => p,
        _ => panic!("not a page: {reply:?}"),
    }
}

/// `error` and the first of `error_codes`, after checking the rest of Entra's body.
fn error_of(reply: &Reply) -> (String, u64) {
    let b = body(reply);
    let code = b["error_codes"][0].as_u64().unwrap();
    let description = b["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    assert!(description.contains("\r\nTrace ID: "), "{description}");
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(b[field].is_string(), "{field} in {b}");
    }
    (b["error"].as_str().unwrap().to_owned(), code)
}

fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn basic(id: &str, secret: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&value).unwrap(),
    );
    headers
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const LATER: Duration = Duration::from_secs(601);
