//! A mock OIDC issuer: `tollgate::dev::issuer` for keys and minting, served over HTTP with
//! fault injection (down, hanging), key rotation and removal, and a fetch counter.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use tollgate::config::Algorithm;
use tollgate::dev::http::LoopbackServer;
use tollgate::dev::issuer::{LocalIssuer, SigningKey};

/// The audience tokens carry by default.
pub const AUDIENCE: &str = "api://test";

/// How the mock answers discovery and JWKS requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Normally.
    Up = 0,
    /// With 503.
    Down = 1,
    /// Never (the connection stays open).
    Hang = 2,
}

/// A running mock issuer.
pub struct MockIssuer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Keys and minting.
    pub local: Arc<LocalIssuer>,
    state: Arc<State>,
    next_kid: AtomicUsize,
    alg: Algorithm,
    _server: LoopbackServer,
}

/// What the HTTP side reads and counts.
struct State {
    local: Arc<LocalIssuer>,
    mode: AtomicU8,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
    base: OnceLock<String>,
}

impl MockIssuer {
    /// An RS256 issuer with `iss` `https://idp.tollgate.test/`.
    pub async fn start() -> MockIssuer {
        MockIssuer::start_with("https://idp.tollgate.test/", Algorithm::RS256, Mode::Up).await
    }

    /// An issuer with this `iss`, algorithm and initial mode.
    pub async fn start_with(iss: &str, alg: Algorithm, mode: Mode) -> MockIssuer {
        let local = LocalIssuer::new(iss, SigningKey::generate(alg, "key-1").expect("key"));
        let state = Arc::new(State {
            local: local.clone(),
            mode: AtomicU8::new(mode as u8),
            jwks_fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
            base: OnceLock::new(),
        });
        let handler = {
            let state = state.clone();
            move |req: http::Request<hyper::body::Incoming>| respond(state.clone(), req)
        };
        let server = LoopbackServer::start("127.0.0.1:0".parse().expect("addr"), handler)
            .await
            .expect("bind");
        let _ = state.base.set(format!("http://{}", server.addr));
        MockIssuer {
            addr: server.addr,
            local,
            state,
            next_kid: AtomicUsize::new(2),
            alg,
            _server: server,
        }
    }

    /// The `iss` of its tokens.
    pub fn iss(&self) -> &str {
        &self.local.issuer
    }

    /// `http://addr/keys`.
    pub fn jwks_uri(&self) -> String {
        format!("http://{}/keys", self.addr)
    }

    /// `http://addr/.well-known/openid-configuration`.
    pub fn discovery_uri(&self) -> String {
        format!("http://{}/.well-known/openid-configuration", self.addr)
    }

    /// An `[[issuers]]` block named `name`, keys by `jwks_uri`, audience [`AUDIENCE`],
    /// followed by `extra` lines.
    pub fn toml(&self, name: &str, extra: &str) -> String {
        format!(
            "[[issuers]]\nname = \"{name}\"\nissuer = \"{}\"\njwks_uri = \"{}\"\naudiences = [\"{AUDIENCE}\"]\nalgorithms = [\"{}\"]\n{extra}\n",
            self.iss(),
            self.jwks_uri(),
            self.alg.as_str()
        )
    }

    /// Default claims: this issuer, [`AUDIENCE`], valid for ten minutes, plus an `oid`.
    pub fn claims(&self) -> Value {
        json!({
            "iss": self.iss(), "aud": AUDIENCE, "exp": now() + 600, "iat": now(), "nbf": now(),
            "oid": "00000000-0000-0000-0000-0000000000aa", "sub": "subject-1", "ver": "2.0",
        })
    }

    /// The default claims with `changes` merged in (a `null` removes a claim).
    pub fn claims_with(&self, changes: Value) -> Value {
        let mut claims = self.claims();
        for (k, v) in changes.as_object().expect("an object of changes") {
            if v.is_null() {
                claims.as_object_mut().expect("object").remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    }

    /// A token with the default claims and `changes`, signed by the current key.
    pub fn token(&self, changes: Value) -> String {
        self.sign(&self.claims_with(changes), &json!({}))
    }

    /// `claims` signed by the current key, with extra header members.
    pub fn sign(&self, claims: &Value, header: &Value) -> String {
        self.local.signing_key().mint(claims, header).expect("mint")
    }

    /// A new signing key becomes current; the old ones stay published. Returns its `kid`.
    pub fn rotate(&self) -> String {
        let kid = format!("key-{}", self.next_kid.fetch_add(1, Ordering::SeqCst));
        self.local
            .rotate(SigningKey::generate(self.alg, &kid).expect("key"));
        kid
    }

    /// Stops publishing every key but the current one.
    pub fn remove_old_keys(&self) {
        self.local.retire_old_keys();
    }

    /// Answer normally, with 503, or not at all.
    pub fn set_mode(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// JWKS documents served (or refused) so far.
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Discovery documents served (or refused) so far.
    pub fn discovery_fetches(&self) -> usize {
        self.state.discovery_fetches.load(Ordering::SeqCst)
    }
}

/// Counts the fetch, then answers as the mode says: normally, 503, or never.
async fn respond(
    state: Arc<State>,
    req: http::Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/keys" => state.jwks_fetches.fetch_add(1, Ordering::SeqCst),
        _ => state.discovery_fetches.fetch_add(1, Ordering::SeqCst),
    };
    match state.mode.load(Ordering::SeqCst) {
        1 => return reply(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "down"})),
        // Never answers; the connection is dropped with the mock.
        2 => std::future::pending().await,
        _ => {}
    }
    let base = state.base.get().map_or("", String::as_str);
    match state.local.respond(req.uri().path(), base) {
        Some(body) => reply(StatusCode::OK, body),
        None => reply(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}
