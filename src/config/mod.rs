//! Configuration: the TOML file parsed, expanded, validated and turned into types that cannot
//! be invalid.
//!
//! [`schema`] mirrors the file one-to-one (serde, unknown keys refused). [`expand`] resolves
//! `${VAR}` references in string values, [`duration`] reads `"30s"`-style durations, and
//! [`validate`] turns the raw tree into a [`Config`], collecting every error with its
//! `file:line:col`. The application ([`crate::app::reload`]) watches the file and swaps in a new snapshot when it changes.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

pub mod duration;
mod egress;
pub mod expand;
mod login;
mod resource;
pub mod schema;
pub mod validate;

pub use egress::{
    ClientCertificateSettings, ClientSecretSettings, Credential, CredentialKind,
    DEFAULT_OBO_CACHE_ENTRIES, Egress, FederationSettings, ManagedIdentitySettings, SecretSource,
    Target, UserAssigned, WorkloadIdentitySettings,
};
pub use expand::{Lookup, SharedEnv};
pub use login::{Login, SessionKey, SessionStore, Unauthenticated};
pub use resource::{METADATA_PATH, Resource, is_scope_token, metadata_path};
pub use validate::{ConfigError, Diagnostic, Warning, is_loopback};

/// Methods a route may name: RFC 9110, PATCH, and WebDAV's, in their only accepted spelling
/// (a request spelling one of them in another case is refused: `inbound::policy`).
pub const KNOWN_METHODS: [&str; 20] = [
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "REPORT",
    "SEARCH",
    "MKCALENDAR",
    "QUERY",
];

/// Tenant placeholder in a multi-tenant `issuer`, matched case-insensitively.
pub const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// A validated configuration. Every default is already applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file this configuration was read from, for messages and relative paths.
    pub source: PathBuf,
    /// The inbound listener and the protected upstream; `None` runs egress only.
    pub server: Option<Server>,
    /// The admin listener (health, readiness, metrics).
    pub admin: Admin,
    /// Log output.
    pub log: Log,
    /// Token issuers trusted by the inbound listener, in file order.
    pub issuers: Vec<Issuer>,
    /// What the upstream learns about the caller.
    pub identity: Identity,
    /// Inbound routes, in file order: the first match wins.
    pub routes: Vec<Route>,
    /// The egress listener and its targets; `None` when the file has no `[egress]`.
    pub egress: Option<Egress>,
    /// Credentials used by egress targets and sign-in, by name.
    pub credentials: BTreeMap<String, Credential>,
    /// Browser sign-in; `None` when the file has no `[login]`.
    pub login: Option<Login>,
    /// Protected resources whose metadata the inbound listener publishes, in file order.
    pub resources: Vec<Resource>,
}

/// `[server]`: the inbound listener and the upstream it protects.
#[derive(Clone, Debug, PartialEq)]
pub struct Server {
    /// Inbound listen address. Defaults to `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// The protected backend: `http` or `https`, host and port, no path.
    pub upstream: http::Uri,
    /// TLS termination from PEM files, reloaded when they change. Defaults to none (plain HTTP).
    pub tls: Option<TlsFiles>,
    /// Forward the client's `Host` header (true) or the upstream's authority (false).
    /// Defaults to true.
    pub preserve_host: bool,
    /// Longest wait for the upstream's response head; past it the client gets 504.
    /// Defaults to 30 s.
    pub request_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; larger gets 431.
    /// Defaults to 65536.
    pub max_header_bytes: usize,
    /// Entries in the verified-signature cache; 0 turns it off. Defaults to 10000.
    pub token_cache_entries: usize,
    /// Longest time a client may take to send a request head, against slow-header attacks;
    /// also how long an idle keep-alive connection is kept. Defaults to 30 s.
    pub header_read_timeout: Duration,
    /// Concurrent client connections; further connections wait in the listen backlog.
    /// Defaults to 10000.
    pub max_connections: usize,
    /// Time in-flight requests get to finish after SIGTERM. Defaults to 10 s.
    pub shutdown_grace: Duration,
    /// Extra trust anchors (PEM) for an `https` upstream, added to the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// Runtime worker threads; defaults to the number of CPUs.
    pub worker_threads: Option<usize>,
    /// Peers (an ingress, a load balancer) whose `X-Forwarded-For` is appended to and whose
    /// `X-Forwarded-Proto`, `-Host` and `-Port` are kept. Defaults to none: every client's
    /// are replaced.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// A certificate chain and its private key, both PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[admin]`: health, readiness and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    /// Admin listen address. Defaults to `127.0.0.1:9090`.
    pub listen: SocketAddr,
}

/// `[log]`: log output; the level comes from `RUST_LOG` (default `info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Log {
    /// Output format. Defaults to JSON.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line.
    Json,
    /// Human-readable text.
    Text,
}

/// `[[issuers]]`: a token issuer and how to reach its keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issuer {
    /// Name used in routes, metrics and logs.
    pub name: String,
    /// Expected `iss`; may contain `{tenantid}` (case-insensitive) for multi-tenant issuers.
    pub issuer: String,
    /// Where the signing keys come from.
    pub keys: KeySource,
    /// Accepted `aud` values; at least one.
    pub audiences: Vec<String>,
    /// Accepted signature algorithms. Defaults to `[RS256]`.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed for `exp`, `nbf` and `iat`. Defaults to 60 s.
    pub clock_skew: Duration,
    /// Background key refresh period. Defaults to 1 h.
    pub jwks_refresh: Duration,
    /// Extra trust anchors (PEM) for discovery and JWKS over https.
    pub ca_file: Option<PathBuf>,
    /// Allowed tenant ids when `issuer` contains `{tenantid}`; required then, empty otherwise.
    pub tenants: Vec<String>,
    /// What a route with `groups_any` does with this issuer's overage tokens (more groups
    /// than fit in a token). Defaults to [`GroupsOverage::Deny`].
    pub groups_overage: GroupsOverage,
}

/// `groups_overage` (with `graph_credential` and `graph_endpoint`) on an issuer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GroupsOverage {
    /// `"deny"`: an overage token on a route with `groups_any` gets 403 `groups_unavailable`.
    #[default]
    Deny,
    /// `"graph"`: the caller's transitive groups are resolved with Microsoft Graph.
    Graph(GraphSettings),
}

/// Where and as whom overage groups are resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphSettings {
    /// `graph_credential`: the `[credentials.NAME]` that obtains the app-only Graph token.
    pub credential: String,
    /// `graph_endpoint`: the Graph base URL (https, or http on loopback), without a trailing
    /// slash. Defaults to [`DEFAULT_GRAPH_ENDPOINT`].
    pub endpoint: Url,
}

/// Microsoft Graph in the global cloud.
pub const DEFAULT_GRAPH_ENDPOINT: &str = "https://graph.microsoft.com";

/// How an issuer's keys are found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// An OpenID Connect discovery document naming the `jwks_uri`.
    Discovery(Url),
    /// The JWKS document itself.
    JwksUri(Url),
}

/// A JWS signature algorithm tollgate can verify. `none` and the HMAC family are not
/// representable: a shared-secret algorithm has no place in a public-key trust model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    /// Every supported algorithm, in the order they are documented.
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// The JOSE name (`"RS256"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// Looks an algorithm up by its JOSE name, exactly.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[identity]`: the headers that tell the upstream who called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Send `X-MS-CLIENT-PRINCIPAL`, `-ID`, `-NAME` and `-IDP`. Defaults to true.
    pub easy_auth_headers: bool,
    /// Keep the client's `Authorization` header for the upstream. Defaults to true.
    pub forward_token: bool,
    /// Header name → claim name, in the order written; array claims are joined with `,`.
    pub claims: Vec<(http::HeaderName, String)>,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            easy_auth_headers: true,
            forward_token: true,
            claims: Vec::new(),
        }
    }
}

/// `[[routes]]`: which requests a rule covers and what it requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Label for metrics and logs: `name` if given, else the prefix or exact path.
    pub name: String,
    /// Where the route was written, for messages and `explain`.
    pub position: Position,
    /// The paths the route covers.
    pub path: PathMatch,
    /// Methods covered; `None` covers all.
    pub methods: Option<Vec<http::Method>>,
    /// Compare paths ignoring ASCII case, for backends that do. Defaults to false.
    pub case_insensitive: bool,
    /// Forward without a token. Defaults to false.
    pub allow_anonymous: bool,
    /// What a token must carry.
    pub require: Requirements,
    /// Enforce the requirements or only log and count failures. Defaults to enforce.
    pub mode: Mode,
    /// What a request with no credential at all gets. Defaults to 401.
    pub unauthenticated: Unauthenticated,
}

/// A path pattern, already normalised the way request paths are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// Matches the path and everything below it, on whole segments.
    Prefix(String),
    /// Matches exactly this path.
    Exact(String),
}

impl PathMatch {
    /// The pattern as written (normalised).
    pub fn as_str(&self) -> &str {
        match self {
            PathMatch::Prefix(p) | PathMatch::Exact(p) => p,
        }
    }

    /// Whether a normalised request path falls under this pattern. A prefix matches on whole
    /// segments: `/admin` matches `/admin` and `/admin/x`, never `/administrator`. A trailing
    /// slash is not significant, on the pattern or the path (`/admin/` is `/admin`, exact
    /// `/x` matches `/x/`): Express and ASP.NET Core serve both spellings from one handler, so
    /// a rule that covered one but not the other could be walked around.
    #[inline]
    pub fn matches(&self, path: &str, case_insensitive: bool) -> bool {
        let eq = |a: &[u8], b: &[u8]| {
            if case_insensitive {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        match self {
            PathMatch::Exact(p) => eq(
                without_trailing_slash(path).as_bytes(),
                without_trailing_slash(p).as_bytes(),
            ),
            PathMatch::Prefix(p) => {
                let p = without_trailing_slash(p).as_bytes();
                let path = path.as_bytes();
                path.len() >= p.len()
                    && eq(&path[..p.len()], p)
                    && (path.len() == p.len() || p == b"/" || path[p.len()] == b'/')
            }
        }
    }
}

/// `/a/` → `/a`; `/` stays.
#[inline]
fn without_trailing_slash(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(rest) if !rest.is_empty() => rest,
        _ => path,
    }
}

/// The token requirements of a route; an empty list requires nothing of that kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requirements {
    /// At least one of these in `roles`.
    pub roles_any: Vec<String>,
    /// Every one of these in `roles`.
    pub roles_all: Vec<String>,
    /// At least one of these in `scp` (space separated).
    pub scopes_any: Vec<String>,
    /// The calling application (`azp`, or `appid` in v1 tokens) is one of these.
    pub client_apps: Vec<String>,
    /// `tid` is one of these.
    pub tenants: Vec<String>,
    /// `oid` is one of these.
    pub principals: Vec<String>,
    /// At least one of these group object ids in `groups`, or, for an overage token, in the
    /// caller's groups resolved with Microsoft Graph. Compared ignoring ASCII case.
    pub groups_any: Vec<String>,
    /// The token came from one of these issuers (by name); empty allows every issuer.
    pub issuers: Vec<String>,
    /// Claim name → allowed values; the claim (or, for an array claim, one element) must
    /// equal one of them.
    pub claims: Vec<(String, Vec<String>)>,
}

/// Whether a failing requirement denies the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Deny with 403.
    Enforce,
    /// Let the request through, but log and count the denial.
    Audit,
}

/// A place in the configuration file, 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub col: usize,
}

/// A configuration read and validated, with the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Things that are allowed but probably wrong (a shadowed route, say).
    pub warnings: Vec<Warning>,
}

/// Reads, expands and validates the file at `path`.
pub fn load(path: &Path, env: Lookup<'_>) -> Result<Loaded, ConfigError> {
    load_bytes(std::fs::read(path), path, env)
}

/// [`load`] on bytes already read from `path` (or the error reading them).
pub fn load_bytes(
    bytes: std::io::Result<Vec<u8>>,
    path: &Path,
    env: Lookup<'_>,
) -> Result<Loaded, ConfigError> {
    let read_error = |source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    };
    let text = String::from_utf8(bytes.map_err(read_error)?)
        .map_err(|e| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    parse(&text, path, env)
}

/// Parses, expands and validates `text` as if read from `path` (relative paths in the file
/// are resolved against `path`'s directory).
pub fn parse(text: &str, path: &Path, env: Lookup<'_>) -> Result<Loaded, ConfigError> {
    validate::validate(text, path, env)
}

/// The process environment as a [`Lookup`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
