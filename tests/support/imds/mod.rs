//! In-process mocks of the identity endpoints, with the wire formats and quirks of the real
//! services (as Microsoft documents them and the Azure SDKs read them): IMDS, App Service 2019
//! and 2017, Azure Arc with its challenge, Service Fabric over pinned TLS, Cloud Shell, and
//! the Entra token endpoint ([`entra`]).
//!
//! Each mock binds 127.0.0.1 port 0, checks requests the way the real service does (a missing
//! `Metadata: true` is IMDS's 400 `bad_request_102`, an unassigned identity is 400 "Identity
//! not found", a wrong secret header is refused), then answers from a scripted queue
//! ("429 with Retry-After 1, then a token"), and keeps a log of every request.

pub mod entra;
mod render;
mod server;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use render::{DateStyle, mint_jwt};
pub use server::acceptor;

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
        tokio::spawn(server::accept(
            listener,
            acceptor,
            state.clone(),
            stop.clone(),
        ));
        Mock { addr, state, stop }
    }
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
