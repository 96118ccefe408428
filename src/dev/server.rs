//! The `tollgate dev` listeners: loopback http, and https when given a CA, each serving the
//! same surfaces (the local issuer's discovery and JWKS, the identity endpoint's IMDS and App
//! Service paths, the OAuth provider's authorize, token and end-session endpoints) until
//! stopped.
//!
//! The decisions live in [`super::identity`], [`super::issuer`] and [`super::oauth`]; this
//! file accepts connections, reads bodies (up to [`MAX_BODY_BYTES`]), hands each request to
//! them, and logs one line per identity or OAuth request (never a token, code, secret,
//! assertion or the `X-IDENTITY-HEADER` value).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::graph::GraphMock;
use super::http::LoopbackServer;
use super::identity::{Identity, IdentityEndpoint};
use super::issuer::{DEV_ISSUER, KeyError, LocalIssuer, SigningKey};
use super::oauth::{Content, OAuthProvider, OAuthRequest, OAuthSettings, Reply};
use super::tls::{CaError, DevCa};
use crate::config::Algorithm;

/// Largest request body read (token requests and the sign-in form are far smaller).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A running development server. Stops when dropped.
pub struct DevServer {
    /// Where it listens for http.
    pub addr: SocketAddr,
    /// Where it listens for https, if it does.
    pub https_addr: Option<SocketAddr>,
    http: LoopbackServer,
    https: Option<LoopbackServer>,
    surfaces: Arc<Surfaces>,
    ca: Option<Arc<DevCa>>,
}

/// How to start a [`DevServer`]; every part has a default (see each method).
#[derive(Clone)]
pub struct DevServerBuilder {
    addr: SocketAddr,
    https: Option<(Arc<DevCa>, SocketAddr)>,
    issuer: Option<Arc<LocalIssuer>>,
    identity: Option<Arc<IdentityEndpoint>>,
    oauth: OAuthSettings,
    graph: Option<Arc<GraphMock>>,
}

/// Why a [`DevServer`] did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An address could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A default signing key or identity header could not be made.
    #[error("making a development key: {0}")]
    Key(#[from] KeyError),
    /// The https certificate could not be made.
    #[error("the https certificate: {0}")]
    Ca(#[from] CaError),
}

/// What the listeners answer from.
struct Surfaces {
    graph: Arc<GraphMock>,
    issuer: Arc<LocalIssuer>,
    identity: Arc<IdentityEndpoint>,
    oauth: Arc<OAuthProvider>,
}

impl DevServer {
    /// Binds `addr` (port 0 for any free port) and serves `issuer`, `identity` and an OAuth
    /// provider with [`OAuthSettings::default`] there, over http only.
    pub async fn start(
        addr: SocketAddr,
        issuer: Arc<LocalIssuer>,
        identity: Arc<IdentityEndpoint>,
    ) -> std::io::Result<DevServer> {
        let builder = DevServer::builder()
            .addr(addr)
            .issuer(issuer)
            .identity(identity);
        builder.start().await.map_err(|e| match e {
            StartError::Bind { source, .. } => source,
            other => std::io::Error::other(other),
        })
    }

    /// A builder: http on `127.0.0.1:0`, no https, a fresh RS256 key with `iss`
    /// [`DEV_ISSUER`], [`Identity::default`], [`OAuthSettings::default`].
    pub fn builder() -> DevServerBuilder {
        DevServerBuilder {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            https: None,
            issuer: None,
            identity: None,
            oauth: OAuthSettings::default(),
            graph: None,
        }
    }

    /// `http://127.0.0.1:port`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://127.0.0.1:port`, no trailing slash, when serving https.
    pub fn https_url(&self) -> Option<String> {
        self.https_addr.map(|a| format!("https://{a}"))
    }

    /// The OAuth provider: client id and secret, counters, test knobs.
    pub fn oauth(&self) -> &Arc<OAuthProvider> {
        &self.surfaces.oauth
    }

    /// The Microsoft Graph stand-in (`/v1.0/users/...`): its directory, faults and counters.
    pub fn graph(&self) -> &Arc<GraphMock> {
        &self.surfaces.graph
    }

    /// The issuer that signs every token.
    pub fn issuer(&self) -> &Arc<LocalIssuer> {
        &self.surfaces.issuer
    }

    /// The managed-identity endpoint (its `IDENTITY_HEADER` and identity).
    pub fn identity(&self) -> &Arc<IdentityEndpoint> {
        &self.surfaces.identity
    }

    /// The CA of the https certificate, when serving https: what a client must trust.
    pub fn ca(&self) -> Option<&Arc<DevCa>> {
        self.ca.as_ref()
    }

    /// Stops accepting, closes open connections and waits for their tasks.
    pub async fn stop(self) {
        self.http.stop().await;
        if let Some(https) = self.https {
            https.stop().await;
        }
    }
}

impl DevServerBuilder {
    /// Where to listen for http. Default `127.0.0.1:0` (any free port).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Also serve https on `addr` (port 0 for any free port) with a certificate from `ca`.
    /// Default: no https.
    pub fn https(mut self, ca: Arc<DevCa>, addr: SocketAddr) -> Self {
        self.https = Some((ca, addr));
        self
    }

    /// The issuer. Default: a fresh RS256 key, `iss` [`DEV_ISSUER`].
    pub fn issuer(mut self, issuer: Arc<LocalIssuer>) -> Self {
        self.issuer = Some(issuer);
        self
    }

    /// The identity endpoint; it should mint with the same issuer. Default: [`Identity`]'s
    /// defaults and a random `IDENTITY_HEADER`.
    pub fn identity(mut self, identity: Arc<IdentityEndpoint>) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The OAuth provider's settings. Default [`OAuthSettings::default`].
    pub fn oauth(mut self, settings: OAuthSettings) -> Self {
        self.oauth = settings;
        self
    }

    /// The Microsoft Graph stand-in. Default: [`GraphMock::new`].
    pub fn graph(mut self, graph: Arc<GraphMock>) -> Self {
        self.graph = Some(graph);
        self
    }

    /// Binds https (if asked for) and then http, and serves.
    pub async fn start(self) -> Result<DevServer, StartError> {
        let issuer = match self.issuer {
            Some(issuer) => issuer,
            None => LocalIssuer::new(
                DEV_ISSUER,
                SigningKey::generate(Algorithm::RS256, "tollgate-dev")?,
            ),
        };
        let identity = match self.identity {
            Some(identity) => identity,
            None => {
                let header = IdentityEndpoint::generate_header()?;
                Arc::new(IdentityEndpoint::new(
                    issuer.clone(),
                    Identity::default(),
                    header,
                ))
            }
        };
        let oauth = OAuthProvider::new(issuer.clone(), self.oauth);
        let surfaces = Arc::new(Surfaces {
            graph: self.graph.unwrap_or_default(),
            issuer,
            identity,
            oauth,
        });
        // https first: a busy https port then fails before anything else is bound.
        let (https, ca) = match self.https {
            Some((ca, addr)) => {
                let tls = ca.server_config()?;
                let base = Arc::new(OnceLock::new());
                let server = LoopbackServer::start_tls(addr, tls, handler(&surfaces, &base))
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?;
                let _ = base.set(format!("https://{}", server.addr));
                (Some(server), Some(ca))
            }
            None => (None, None),
        };
        let base = Arc::new(OnceLock::new());
        let http = LoopbackServer::start(self.addr, handler(&surfaces, &base))
            .await
            .map_err(|source| StartError::Bind {
                addr: self.addr,
                source,
            })?;
        let _ = base.set(format!("http://{}", http.addr));
        Ok(DevServer {
            addr: http.addr,
            https_addr: https.as_ref().map(|s| s.addr),
            http,
            https,
            surfaces,
            ca,
        })
    }
}

/// A response on its way.
type Answer = std::pin::Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

/// The handler of one listener; `base` (its scheme, host and port) is set once bound.
fn handler(
    surfaces: &Arc<Surfaces>,
    base: &Arc<OnceLock<String>>,
) -> impl Fn(Request<Incoming>) -> Answer + Clone + Send + Sync + 'static {
    let (surfaces, base) = (surfaces.clone(), base.clone());
    move |req: Request<Incoming>| -> Answer {
        let (surfaces, base) = (surfaces.clone(), base.clone());
        Box::pin(
            async move { respond(&surfaces, base.get().map_or("", String::as_str), req).await },
        )
    }
}

/// Identity paths first, then the OAuth provider (discovery included), then JWKS, else 404.
async fn respond(surfaces: &Surfaces, base: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let message = "the body is larger than 64 KiB or was cut short";
            let body = json!({"error": "invalid_request", "error_description": message});
            return json_response(StatusCode::PAYLOAD_TOO_LARGE, &body);
        }
    };
    if let Some(reply) = surfaces
        .graph
        .respond(&parts.method, &parts.uri, &parts.headers, base)
    {
        let status = reply.status.as_u16();
        if reply.status.is_success() {
            tracing::info!(endpoint = "graph", status, path = %parts.uri.path().escape_debug(), "Microsoft Graph request");
        } else {
            tracing::warn!(endpoint = "graph", status, path = %parts.uri.path().escape_debug(), "Microsoft Graph request refused");
        }
        let mut response = json_response(reply.status, &reply.body);
        if let Some(seconds) = reply.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        return response;
    }
    let now = SystemTime::now();
    let identity = surfaces
        .identity
        .respond(&parts.method, &parts.uri, &parts.headers, now);
    if let Some((protocol, answer)) = identity {
        let (protocol, status) = (protocol.as_str(), answer.status.as_u16());
        if answer.status.is_success() {
            tracing::info!(protocol, status, "{}", answer.summary);
        } else {
            tracing::warn!(protocol, status, "{}", answer.summary);
        }
        return json_response(answer.status, &answer.body);
    }
    let request = OAuthRequest {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        body: &body,
        base,
    };
    if let Some((endpoint, reply)) = surfaces.oauth.respond(&request, now) {
        let (endpoint, status) = (endpoint.as_str(), reply.status.as_u16());
        // Summaries quote request values (a client id, a redirect URI): escaped, so a request
        // cannot write lines of its own into the log.
        let summary = reply.summary.escape_debug();
        if reply.status.is_client_error() || reply.status.is_server_error() {
            tracing::warn!(endpoint, status, "{summary}");
        } else {
            tracing::info!(endpoint, status, "{summary}");
        }
        return oauth_response(reply);
    }
    match surfaces.issuer.respond(parts.uri.path(), base) {
        Some(document) => json_response(StatusCode::OK, &document),
        None => json_response(StatusCode::NOT_FOUND, &not_found()),
    }
}

fn not_found() -> Value {
    json!({"error": "not_found", "error_description": "tollgate dev serves /.well-known/openid-configuration, /keys, /oauth2/v2.0/{authorize,token,logout} (also under /{tenant}/), /metadata/identity/oauth2/token, /msi/token and Microsoft Graph's /v1.0/users/{oid}/transitiveMemberOf/microsoft.graph.group"})
}

/// An OAuth reply: never cached (it may hold tokens or codes), pages never framed.
fn oauth_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = match reply.content {
        Content::Json(body) => json_response(reply.status, &body),
        Content::Html(page) => {
            let mut response = Response::new(Full::new(Bytes::from(page)));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            response
        }
        Content::Redirect(location) => {
            let mut response = Response::new(Full::new(Bytes::new()));
            // A URL serialised by the url crate is ASCII, so this never fails in practice.
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            response
        }
    };
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}
