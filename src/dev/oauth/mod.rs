//! The OAuth 2.0 authorization-code flow of `tollgate dev`, shaped like Entra ID v2: discovery,
//! an authorize page that picks the user, the token endpoint (authorization code with PKCE,
//! refresh tokens, client credentials; client secrets, federated and certificate client
//! assertions), and end session, so that browser sign-in runs offline.
//!
//! [`OAuthProvider::respond`] is a pure function of the request and `now` over the provider's
//! state (issued codes and refresh tokens, counters, test knobs); [`super::server`] moves the
//! bytes. `route` tells the endpoints apart, `authorize` and `token` answer them,
//! `client` holds the one registered web client and checks how it proves itself (through
//! `assertion` for client assertions), `mint` writes the claims, `page` the HTML and
//! `error` Entra's error bodies.
//!
//! Every endpoint answers both at the root (`/oauth2/v2.0/token`) and under any tenant
//! (`/{tenant}/oauth2/v2.0/token`), as SDKs build URLs from an authority host and a tenant.
//! Any user may sign in; any subject of a token the dev issuer signed for
//! [`TOKEN_EXCHANGE_AUDIENCE`] is a trusted federated credential of the web client.
//!
//! # Completing the authorize step without a browser
//!
//! `POST` the authorize URL's query parameters as a form to the same URL, plus the user's
//! `name`, `preferred_username`, `oid`, `roles` and `groups` (comma separated) and
//! `action=sign_in` (or `action=cancel`); [`sign_in_form`] builds exactly that. The answer
//! is the 302 to the `redirect_uri` (or, with `response_mode=form_post`, the page that posts
//! `code` and `state` to it). The browser page has the same field names, as `id`s too, and the
//! buttons `id="sign-in"` and `id="cancel"`.
//!
//! ```no_run
//! # async fn example(authorize_url: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tollgate::dev::oauth::{DevUser, sign_in_form};
//! use tollgate::dev::server::DevServer;
//!
//! let dev = DevServer::builder().start().await?;
//! let oauth = dev.oauth();
//! oauth.set_access_token_lifetime(Duration::from_secs(5)); // force refreshes soon
//! // ... point tollgate's [login] at dev.url() with oauth.client_id() and
//! // oauth.client_secret(); its /.auth/login/aad answers 302 to `authorize_url` ...
//! let user = DevUser { roles: vec!["Orders.Read".into()], ..DevUser::default() };
//! let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
//! let reply = client.post(authorize_url).form(&sign_in_form(authorize_url, &user)).send().await?;
//! let callback = reply.headers()["location"].to_str()?; // redirect_uri?code=...&state=...
//! # let _ = callback;
//! assert_eq!(oauth.codes_redeemed(), 0); // until tollgate redeems the code
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Method, StatusCode, Uri};
use parking_lot::Mutex;
use serde_json::Value;

use super::issuer::LocalIssuer;
use crate::telemetry::redact::Secret;
use client::WebClient;

mod assertion;
mod authorize;
mod client;
mod error;
mod logout;
mod mint;
mod page;
mod route;
mod settings;
#[cfg(test)]
mod tests;
mod token;

pub use authorize::sign_in_form;
pub use route::Endpoint;
pub use settings::{DevUser, OAuthSettings};

/// Client id of the web app registration `tollgate dev` knows.
pub const DEV_WEB_CLIENT_ID: &str = "d3e7d3e7-0000-4000-8000-0000000000a1";
/// Its client secret unless `--client-secret` says otherwise.
pub const DEV_CLIENT_SECRET: &str = "tollgate-dev-secret";
/// `oid` the authorize page suggests.
pub const DEV_USER_OBJECT_ID: &str = "d3e7d3e7-0000-4000-8000-0000000000d1";
/// The audience of a managed-identity (or workload-identity) token used as a client assertion.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// Path of tollgate's sign-in callback: loopback redirect URIs ending in it are registered.
pub const CALLBACK_PATH: &str = "/.auth/login/aad/callback";
/// How long an authorization code can be redeemed: Entra's "about 10 minutes".
pub const CODE_LIFETIME: Duration = Duration::from_secs(600);
/// Access-token lifetime unless set otherwise.
pub const DEFAULT_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Refresh tokens kept; past it the oldest are forgotten (a long-running `tollgate dev`
/// would otherwise grow by one per refresh, since old ones stay valid).
const MAX_REFRESH_TOKENS: usize = 10_000;

/// A request to one of the provider's endpoints, as the listener received it.
pub struct OAuthRequest<'a> {
    /// The method.
    pub method: &'a Method,
    /// The request target (path and query).
    pub uri: &'a Uri,
    /// The headers (`Authorization: Basic` is read).
    pub headers: &'a HeaderMap,
    /// The body (a form for `POST`).
    pub body: &'a [u8],
    /// Scheme, host and port of the listener, such as `https://127.0.0.1:8443`: endpoints in
    /// discovery are written under it, and client assertions must be addressed to it.
    pub base: &'a str,
}

/// The answer to a request.
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// The body, or where to go.
    pub content: Content,
    /// One line for the log; never a code, token, secret or assertion.
    pub summary: String,
}

/// What a reply carries.
pub enum Content {
    /// A JSON document (discovery, token responses, token errors).
    Json(Value),
    /// An HTML page (the sign-in page, form_post, errors, signed out).
    Html(String),
    /// A redirect to this URL (the status is 302).
    Redirect(String),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// The provider: the registered client, what it issued, counters and test knobs. Shared by
/// the http and https listeners.
pub struct OAuthProvider {
    issuer: Arc<LocalIssuer>,
    client: WebClient,
    tenant_id: String,
    app_roles: Vec<String>,
    user: DevUser,
    knobs: Mutex<Knobs>,
    grants: Mutex<Grants>,
    counters: Counters,
}

/// What a test may change while the provider runs.
struct Knobs {
    access_token_lifetime: Duration,
    fail_token_endpoint: Option<StatusCode>,
    refuse_refresh_tokens: bool,
}

#[derive(Default)]
struct Counters {
    codes_issued: AtomicU64,
    codes_redeemed: AtomicU64,
    refreshes: AtomicU64,
    sign_outs: AtomicU64,
}

/// Issued codes and refresh tokens, by their value.
#[derive(Default)]
struct Grants {
    codes: HashMap<String, Code>,
    refresh_tokens: HashMap<String, Refresh>,
}

/// What a user consented to: the client, the user, the scopes asked at `/authorize`.
#[derive(Clone)]
struct Grant {
    client_id: String,
    user: DevUser,
    scopes: Vec<String>,
}

/// An authorization code and what it is bound to.
struct Code {
    grant: Grant,
    redirect_uri: String,
    challenge: Option<String>,
    nonce: Option<String>,
    expires: SystemTime,
    redeemed: bool,
}

/// A refresh token: valid until forgotten, also after it has been used.
struct Refresh {
    grant: Grant,
    issued: SystemTime,
}

impl OAuthProvider {
    /// A provider minting with `issuer`.
    pub fn new(issuer: Arc<LocalIssuer>, settings: OAuthSettings) -> Arc<OAuthProvider> {
        Arc::new(OAuthProvider {
            issuer,
            client: WebClient::new(
                settings.client_id,
                settings.client_secret,
                settings.redirect_uris,
                settings.certificates,
            ),
            tenant_id: settings.tenant_id,
            app_roles: settings.app_roles,
            user: settings.user,
            knobs: Mutex::new(Knobs {
                access_token_lifetime: settings.access_token_lifetime,
                fail_token_endpoint: None,
                refuse_refresh_tokens: false,
            }),
            grants: Mutex::new(Grants::default()),
            counters: Counters::default(),
        })
    }

    /// The endpoint `req` is for and the answer, or `None` when its path is none of the
    /// provider's.
    pub fn respond(&self, req: &OAuthRequest<'_>, now: SystemTime) -> Option<(Endpoint, Reply)> {
        let (tenant, endpoint) = route::route(req.uri.path())?;
        let reply = match endpoint {
            Endpoint::Discovery => {
                let document = route::discovery(&self.issuer, req.base, tenant);
                json(StatusCode::OK, document, "discovery document".to_owned())
            }
            Endpoint::InstanceDiscovery => {
                let document = route::instance_discovery(req.base, req.uri);
                json(StatusCode::OK, document, "instance discovery".to_owned())
            }
            Endpoint::Authorize => self.authorize(req, now),
            Endpoint::Token => self.token(req, now),
            Endpoint::Logout => self.logout(req),
        };
        Some((endpoint, reply))
    }

    /// The web client's id.
    pub fn client_id(&self) -> &str {
        &self.client.id
    }

    /// The web client's secret.
    pub fn client_secret(&self) -> &Secret<String> {
        self.client.secret()
    }

    /// `tid` of every token.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The issuer that signs.
    pub fn issuer(&self) -> &Arc<LocalIssuer> {
        &self.issuer
    }

    /// Codes handed out by a sign-in.
    pub fn codes_issued(&self) -> u64 {
        self.counters.codes_issued.load(Ordering::Relaxed)
    }

    /// Codes redeemed for tokens.
    pub fn codes_redeemed(&self) -> u64 {
        self.counters.codes_redeemed.load(Ordering::Relaxed)
    }

    /// Successful refresh-token grants.
    pub fn refreshes(&self) -> u64 {
        self.counters.refreshes.load(Ordering::Relaxed)
    }

    /// Requests to the end-session endpoint.
    pub fn sign_outs(&self) -> u64 {
        self.counters.sign_outs.load(Ordering::Relaxed)
    }

    /// Lifetime of the access tokens issued from now on (`exp` and `expires_in`).
    pub fn set_access_token_lifetime(&self, lifetime: Duration) {
        self.knobs.lock().access_token_lifetime = lifetime;
    }

    /// With `Some(status)`, every token request fails with that status and Entra's error body
    /// (`temporarily_unavailable` for 5xx, `invalid_request` otherwise); `None` restores it.
    pub fn fail_token_endpoint(&self, status: Option<StatusCode>) {
        self.knobs.lock().fail_token_endpoint = status;
    }

    /// With `true`, every refresh token is refused with `invalid_grant` (AADSTS700082, as
    /// for one expired by inactivity) while other grants work.
    pub fn refuse_refresh_tokens(&self, refuse: bool) {
        self.knobs.lock().refuse_refresh_tokens = refuse;
    }

    /// Forgets every refresh token issued so far (a "revoke sessions"): using one gives
    /// `invalid_grant`.
    pub fn revoke_refresh_tokens(&self) {
        self.grants.lock().refresh_tokens.clear();
    }

    /// Stores a new code and returns it; expired ones are forgotten.
    fn issue_code(&self, code: Code, now: SystemTime) -> Result<String, error::OAuthError> {
        let value = random_secret()?;
        let mut grants = self.grants.lock();
        grants.codes.retain(|_, c| c.expires > now);
        grants.codes.insert(value.clone(), code);
        self.counters.codes_issued.fetch_add(1, Ordering::Relaxed);
        Ok(value)
    }

    /// Stores a new refresh token for `grant` and returns it; past [`MAX_REFRESH_TOKENS`] the
    /// oldest is forgotten.
    fn issue_refresh_token(
        &self,
        grant: &Grant,
        now: SystemTime,
    ) -> Result<String, error::OAuthError> {
        let value = random_secret()?;
        let mut grants = self.grants.lock();
        if grants.refresh_tokens.len() >= MAX_REFRESH_TOKENS
            && let Some(oldest) = grants
                .refresh_tokens
                .iter()
                .min_by_key(|(_, r)| r.issued)
                .map(|(k, _)| k.clone())
        {
            grants.refresh_tokens.remove(&oldest);
        }
        let refresh = Refresh {
            grant: grant.clone(),
            issued: now,
        };
        grants.refresh_tokens.insert(value.clone(), refresh);
        Ok(value)
    }
}

/// The parameters of a query or form: the first value of each name, empty ones left out
/// (Entra treats an empty parameter as a missing one).
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(bytes: &[u8]) -> Params {
        Params(url::form_urlencoded::parse(bytes).into_owned().collect())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.raw(name).filter(|v| !v.is_empty())
    }

    /// The first value of `name`, empty or not.
    fn raw(&self, name: &str) -> Option<&str> {
        let mut pairs = self.0.iter();
        pairs.find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

fn html(status: StatusCode, page: String, summary: String) -> Reply {
    Reply {
        status,
        content: Content::Html(page),
        summary,
    }
}

fn json(status: StatusCode, body: Value, summary: String) -> Reply {
    Reply {
        status,
        content: Content::Json(body),
        summary,
    }
}

/// 48 random bytes, base64url: an authorization code or refresh token.
fn random_secret() -> Result<String, error::OAuthError> {
    let mut bytes = [0u8; 48];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| error::OAuthError::no_randomness())?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A random (version 4) GUID, for trace and correlation ids.
fn random_guid() -> String {
    let mut bytes = [0u8; 16];
    // Without randomness a trace id of zeros does no harm.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}
