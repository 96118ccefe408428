//! A mock OIDC issuer: `tollgate::dev::issuer` for keys and minting, served over HTTP with
//! fault injection (down, hanging), key rotation and removal, and a fetch counter.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tollgate::config::Algorithm;
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
    mode: Arc<AtomicU8>,
    jwks_fetches: Arc<AtomicUsize>,
    discovery_fetches: Arc<AtomicUsize>,
    next_kid: AtomicUsize,
    alg: Algorithm,
    stop: CancellationToken,
}

impl MockIssuer {
    /// An RS256 issuer with `iss` `https://idp.tollgate.test/`.
    pub async fn start() -> MockIssuer {
        MockIssuer::start_with("https://idp.tollgate.test/", Algorithm::RS256, Mode::Up).await
    }

    /// An issuer with this `iss`, algorithm and initial mode.
    pub async fn start_with(iss: &str, alg: Algorithm, mode: Mode) -> MockIssuer {
        let local = LocalIssuer::new(iss, SigningKey::generate(alg, "key-1").expect("key"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let issuer = MockIssuer {
            addr,
            local,
            mode: Arc::new(AtomicU8::new(mode as u8)),
            jwks_fetches: Arc::new(AtomicUsize::new(0)),
            discovery_fetches: Arc::new(AtomicUsize::new(0)),
            next_kid: AtomicUsize::new(2),
            alg,
            stop: CancellationToken::new(),
        };
        issuer.serve(listener);
        issuer
    }

    fn serve(&self, listener: TcpListener) {
        let (local, mode, jwks, discovery, stop) = (
            self.local.clone(),
            self.mode.clone(),
            self.jwks_fetches.clone(),
            self.discovery_fetches.clone(),
            self.stop.clone(),
        );
        let base = format!("http://{}", self.addr);
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => return },
                    () = stop.cancelled() => return,
                };
                let (local, mode, jwks, discovery, base, stop) = (
                    local.clone(),
                    mode.clone(),
                    jwks.clone(),
                    discovery.clone(),
                    base.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (local, mode, jwks, discovery, base, stop) = (
                            local.clone(),
                            mode.clone(),
                            jwks.clone(),
                            discovery.clone(),
                            base.clone(),
                            stop.clone(),
                        );
                        async move {
                            match req.uri().path() {
                                "/keys" => jwks.fetch_add(1, Ordering::SeqCst),
                                _ => discovery.fetch_add(1, Ordering::SeqCst),
                            };
                            match mode.load(Ordering::SeqCst) {
                                1 => {
                                    return Ok::<_, Infallible>(reply(
                                        StatusCode::SERVICE_UNAVAILABLE,
                                        json!({"error": "down"}),
                                    ));
                                }
                                2 => {
                                    stop.cancelled().await;
                                    return Ok(reply(StatusCode::SERVICE_UNAVAILABLE, json!({})));
                                }
                                _ => {}
                            }
                            Ok(match local.respond(req.uri().path(), &base) {
                                Some(body) => reply(StatusCode::OK, body),
                                None => reply(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
                            })
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
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
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// JWKS documents served (or refused) so far.
    pub fn jwks_fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Discovery documents served (or refused) so far.
    pub fn discovery_fetches(&self) -> usize {
        self.discovery_fetches.load(Ordering::SeqCst)
    }
}

impl Drop for MockIssuer {
    fn drop(&mut self) {
        self.stop.cancel();
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
