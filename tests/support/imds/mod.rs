//! In-process mocks of the identity endpoints, faithful to `shared/azure-protocols.md` (A, B
//! and the E checklist): IMDS, App Service 2019 and 2017, Azure Arc with its challenge,
//! Service Fabric over pinned TLS, Cloud Shell, and the Entra token endpoint ([`entra`]).
//!
//! Each mock binds 127.0.0.1 port 0, checks requests the way the real service does (a missing
//! `Metadata: true` is IMDS's 400 `bad_request_102`, an unassigned identity is 400 "Identity
//! not found", a wrong secret header is refused), then answers from a scripted queue
//! ("429 with Retry-After 1, then a token"), and keeps a log of every request.

pub mod entra;
mod render;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use render::{DateStyle, mint_jwt};

/// Which service a mock plays, with its secrets.
#[derive(Clone, Debug)]
pub enum Flavor {
    /// IMDS: `Metadata: true`, api-version ≥ 2018-02-01, every value a string.
    Imds,
    /// App Service 2019-08-01: `X-IDENTITY-HEADER`, string-epoch `expires_on`, no `expires_in`.
    AppService { header: String },
    /// App Service 2017-09-01: `secret` header, date-string (or integer) `expires_on`.
    AppService2017 { secret: String, style: DateStyle },
    /// Azure Arc: 401 challenge naming a key file in `key_dir`, then `Basic <contents>`.
    Arc { key_dir: PathBuf, key: String },
    /// Service Fabric: `Secret` header, numeric `expires_on`, nested error envelope.
    ServiceFabric { secret: String },
    /// Cloud Shell: POST with a form body.
    CloudShell,
    /// The Entra v2 token endpoint.
    Entra(entra::EntraConfig),
}

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A token living `lifetime` seconds, in the flavor's format.
    Token { lifetime: u64 },
    /// An error status in the flavor's error format, optionally with `Retry-After`.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// IMDS's 400 `invalid_request` "Identity not found".
    IdentityNotFound,
    /// Exactly this JSON.
    Json {
        status: u16,
        body: serde_json::Value,
    },
}

/// A user-assigned identity the mock knows, by what it is (not by a parameter name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Id {
    Client(String),
    Object(String),
    Resource(String),
}

/// Builds a mock.
pub struct Builder {
    flavor: Flavor,
    script: VecDeque<Reply>,
    lifetime: u64,
    identities: Vec<Id>,
    system_identity: bool,
    tls: Option<(String, String)>,
    hold: bool,
}

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub form: Vec<(String, String)>,
}

impl Logged {
    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        find(&self.query, name, false)
    }
    /// A header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name, true)
    }
    /// A form field.
    pub fn field(&self, name: &str) -> Option<&str> {
        find(&self.form, name, false)
    }
}

fn find<'a>(pairs: &'a [(String, String)], name: &str, fold: bool) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| {
            if fold {
                k.eq_ignore_ascii_case(name)
            } else {
                k == name
            }
        })
        .map(|(_, v)| v.as_str())
}

pub(crate) struct State {
    pub(crate) flavor: Flavor,
    script: Mutex<VecDeque<Reply>>,
    lifetime: u64,
    identities: Vec<Id>,
    system_identity: bool,
    log: Mutex<Vec<Logged>>,
    issued: Arc<Mutex<Vec<String>>>,
    gate: Option<tokio::sync::Semaphore>,
    served: AtomicUsize,
    arrived: Notify,
    pub(crate) base_url: String,
}

/// A running mock. Stops when dropped.
pub struct Mock {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

impl Mock {
    pub fn imds() -> Builder {
        Builder::new(Flavor::Imds)
    }
    pub fn app_service(header: &str) -> Builder {
        Builder::new(Flavor::AppService {
            header: header.into(),
        })
    }
    pub fn app_service_2017(secret: &str, style: DateStyle) -> Builder {
        Builder::new(Flavor::AppService2017 {
            secret: secret.into(),
            style,
        })
    }
    /// Arc, writing its challenge key file into `key_dir`.
    pub fn arc(key_dir: &std::path::Path) -> Builder {
        let key = format!("arc-key-{}", std::process::id());
        std::fs::write(key_dir.join("mock.key"), &key).expect("write the Arc key file");
        Builder::new(Flavor::Arc {
            key_dir: key_dir.to_path_buf(),
            key,
        })
    }
    /// Service Fabric over TLS with `cert`/`key` (PEM).
    pub fn service_fabric(secret: &str, cert: &str, key: &str) -> Builder {
        let mut b = Builder::new(Flavor::ServiceFabric {
            secret: secret.into(),
        });
        b.tls = Some((cert.into(), key.into()));
        b
    }
    pub fn cloud_shell() -> Builder {
        Builder::new(Flavor::CloudShell)
    }

    /// `http://127.0.0.1:port` (or https).
    pub fn url(&self) -> String {
        self.state.base_url.trim_end_matches('/').to_owned()
    }
    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        self.state.log.lock().clone()
    }
    /// How many requests arrived.
    pub fn calls(&self) -> usize {
        self.state.log.lock().len()
    }
    /// How many requests passed the checks and were answered from the script.
    pub fn served(&self) -> usize {
        self.state.served.load(Ordering::SeqCst)
    }
    /// The tokens issued, in order.
    pub fn issued(&self) -> Vec<String> {
        self.state.issued.lock().clone()
    }
    /// The issued tokens, shared (a federated assertion check reads it).
    pub fn issued_handle(&self) -> Arc<Mutex<Vec<String>>> {
        self.state.issued.clone()
    }
    /// Lets held answers go.
    pub fn release(&self) {
        if let Some(gate) = &self.state.gate {
            gate.add_permits(1 << 16);
        }
    }
    /// The last token issued.
    pub fn last_token(&self) -> String {
        self.issued()
            .last()
            .cloned()
            .expect("the mock issued a token")
    }
    /// Adds replies to the script.
    pub fn push(&self, reply: Reply) {
        self.state.script.lock().push_back(reply);
    }
    /// Resolves when the next request arrives.
    pub fn arrived(&self) -> tokio::sync::futures::Notified<'_> {
        self.state.arrived.notified()
    }
    pub(crate) fn state(&self) -> &State {
        &self.state
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Builder {
    fn new(flavor: Flavor) -> Builder {
        Builder {
            flavor,
            script: VecDeque::new(),
            lifetime: 3600,
            identities: Vec::new(),
            system_identity: true,
            tls: None,
            hold: false,
        }
    }
    /// Appends a reply; when the script is empty every request gets a fresh token.
    pub fn reply(mut self, reply: Reply) -> Self {
        self.script.push_back(reply);
        self
    }
    pub fn status(self, status: u16) -> Self {
        self.reply(Reply::Status {
            status,
            retry_after: None,
        })
    }
    pub fn retry_after(self, status: u16, seconds: u64) -> Self {
        self.reply(Reply::Status {
            status,
            retry_after: Some(seconds),
        })
    }
    pub fn token(self, lifetime: u64) -> Self {
        self.reply(Reply::Token { lifetime })
    }
    /// The lifetime of unscripted tokens, in seconds (default 3600).
    pub fn lifetime(mut self, seconds: u64) -> Self {
        self.lifetime = seconds;
        self
    }
    /// A user-assigned identity the resource has.
    pub fn identity(mut self, id: Id) -> Self {
        self.identities.push(id);
        self
    }
    /// No system-assigned identity: a request that selects none gets "Identity not found".
    pub fn user_assigned_only(mut self) -> Self {
        self.system_identity = false;
        self
    }
    /// Holds every scripted answer until [`Mock::release`].
    pub fn hold(mut self) -> Self {
        self.hold = true;
        self
    }
    /// Serves https with this certificate and key (PEM).
    pub fn tls(mut self, cert: &str, key: &str) -> Self {
        self.tls = Some((cert.into(), key.into()));
        self
    }

    pub async fn start(self) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let acceptor = self.tls.as_ref().map(|(c, k)| acceptor(c, k));
        let state = Arc::new(State {
            flavor: self.flavor,
            script: Mutex::new(self.script),
            lifetime: self.lifetime,
            identities: self.identities,
            system_identity: self.system_identity,
            log: Mutex::new(Vec::new()),
            issued: Arc::default(),
            gate: self.hold.then(|| tokio::sync::Semaphore::new(0)),
            served: AtomicUsize::new(0),
            arrived: Notify::new(),
            base_url: format!("{scheme}://{addr}/"),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, acceptor, state.clone(), stop.clone()));
        Mock { addr, state, stop }
    }
}

pub fn acceptor(cert: &str, key: &str) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate PEM");
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key PEM");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server certificate");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn accept(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => continue },
            () = stop.cancelled() => return,
        };
        let (state, tls) = (state.clone(), tls.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(state.clone(), req));
            let http = hyper::server::conn::http1::Builder::new();
            let _ = match tls {
                None => http.serve_connection(TokioIo::new(stream), service).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => http.serve_connection(TokioIo::new(s), service).await,
                    Err(_) => return,
                },
            };
        });
    }
}

async fn respond(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let pairs = |text: &[u8]| -> Vec<(String, String)> {
        url::form_urlencoded::parse(text).into_owned().collect()
    };
    let logged = Logged {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: pairs(parts.uri.query().unwrap_or_default().as_bytes()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        form: pairs(&body),
    };
    state.log.lock().push(logged.clone());
    state.arrived.notify_waiters();
    let (status, headers, json) = match render::check(&state, &logged) {
        Some(refusal) => refusal,
        None => {
            state.served.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = &state.gate {
                gate.acquire().await.expect("gate").forget();
            }
            let reply = state.script.lock().pop_front();
            let reply = reply.unwrap_or(Reply::Token {
                lifetime: state.lifetime,
            });
            render::reply(&state, &logged, reply)
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(json.to_string())));
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    for (k, v) in headers {
        response
            .headers_mut()
            .insert(k, v.parse().expect("header value"));
    }
    Ok(response)
}

impl State {
    pub(crate) fn issue(&self, token: String) -> String {
        self.issued.lock().push(token.clone());
        token
    }
    pub(crate) fn count_issued(&self) -> usize {
        self.issued.lock().len()
    }
    /// Whether the identity a request selects (if any) is assigned.
    pub(crate) fn assigned(&self, selected: Option<&Id>) -> bool {
        match selected {
            None => self.system_identity,
            Some(id) => self.identities.contains(id),
        }
    }
}
