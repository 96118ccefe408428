//! Browser sessions: the sign-in half of Easy Auth.
//!
//! A session is sealed under a ring of session keys ([`seal`]) into chunked cookies
//! ([`cookies`]): any replica that shares the keys opens it, no store needed. With a session
//! store, the cookie holds only the session's id and the key that opens its stored record.
//! [`login`] is the login transaction (state, nonce, PKCE, the redirect rule), [`endpoints`]
//! serves `/.auth/login/aad`, its callback, `/.auth/refresh` and `/.auth/logout`, and
//! [`Sessions::resolve`] turns a request's cookies into the signed-in user, refreshing the
//! access token first when it is about to expire (once per session at a time).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue};
use parking_lot::Mutex;

use crate::config::{self, Algorithm, Login};
use crate::credential::grant::{self, Grant, UserTokens};
use crate::credential::{Credential, CredentialError};
use crate::inbound::claims::Claims;
use crate::inbound::issuer::Issuers;
use crate::inbound::jwt::{self, Expect};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::redact::Secret;

pub mod cookies;
pub mod endpoints;
pub mod headers;
pub mod login;
pub mod pages;
pub mod provider;
pub mod record;
pub mod seal;
pub mod store;

use provider::Provider;
use record::{CookieBody, Tokens};
use seal::KeyRing;
use store::{SessionStore, StoreError};

/// An access token this close to expiry is refreshed before the request goes on.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The sign-in state of one configuration: keys, the provider, the credential, and the
/// refreshes in flight.
pub struct Sessions {
    /// `[login]`.
    pub config: Login,
    /// The session keys.
    pub ring: KeyRing,
    /// The app registration's credential.
    pub credential: Arc<dyn Credential>,
    /// The issuer's endpoints.
    pub provider: Provider,
    /// Where records live when not in the cookie (`session_store`).
    pub store: Option<Arc<dyn SessionStore>>,
    /// Refreshes in flight, by session id.
    refreshing: Mutex<HashMap<String, Arc<Inflight>>>,
    /// Metric families (`tollgate_logins_total`, `tollgate_session_refresh_total`).
    pub metrics: Arc<Metrics>,
}

/// One session's refresh: the first request does it, the others wait on the lock and take
/// its outcome.
#[derive(Default)]
struct Inflight {
    outcome: tokio::sync::Mutex<Option<(Result<Tokens, RefreshError>, tokio::time::Instant)>>,
}

/// How long a finished refresh's outcome serves requests that still carry the old cookie.
pub const REFRESH_REUSE: Duration = Duration::from_secs(10);

impl Inflight {
    /// Finished longer ago than [`REFRESH_REUSE`] (a refresh in progress holds the lock and is
    /// never stale).
    fn stale(&self) -> bool {
        self.outcome.try_lock().is_ok_and(|o| {
            o.as_ref()
                .is_some_and(|(_, at)| at.elapsed() > REFRESH_REUSE)
        })
    }
}

/// Why a refresh did not renew the tokens.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RefreshError {
    /// The session holds no refresh token (`offline_access` not granted).
    #[error("the session has no refresh token")]
    NoRefreshToken,
    /// The provider or the credential failed.
    #[error("{0}")]
    Failed(String),
}

impl RefreshError {
    /// The `result` label of `tollgate_session_refresh_total`.
    pub fn label(&self) -> &'static str {
        match self {
            RefreshError::NoRefreshToken => "no_refresh_token",
            RefreshError::Failed(_) => "failed",
        }
    }
}

/// What a request's session cookie amounts to.
pub enum Resolved {
    /// No session cookie.
    None,
    /// A cookie that is no session (tampered, truncated, another key's, past its life):
    /// `clear` removes every chunk the browser sent.
    Invalid {
        /// `Set-Cookie` values clearing the chunks.
        clear: Vec<HeaderValue>,
    },
    /// A session past `session_lifetime`: it no longer authenticates requests, but
    /// `/.auth/refresh` may still renew it.
    Expired,
    /// The store could not be reached: 503 for requests that need the session.
    Unavailable,
    /// A signed-in user.
    Active(Box<Active>),
}

/// A signed-in user's session, opened (and refreshed when due).
pub struct Active {
    /// The id_token's claims: what routes check and the backend learns.
    pub claims: Claims,
    /// The id_token's signature algorithm.
    pub alg: Algorithm,
    /// The tokens.
    pub tokens: Tokens,
    /// `Set-Cookie` values to send with the response: the session after a refresh.
    pub set_cookies: Vec<HeaderValue>,
}

/// What opening the cookie found.
struct Opened {
    body: CookieBody,
    tokens: Tokens,
}

impl Sessions {
    /// The sign-in state for `login`, with the credential it names.
    pub fn new(
        login: &Login,
        credential: Arc<dyn Credential>,
        provider: Provider,
        store: Option<Arc<dyn SessionStore>>,
        metrics: Arc<Metrics>,
    ) -> Sessions {
        let keys: Vec<[u8; 32]> = login.session_keys.iter().map(|k| k.0).collect();
        Sessions {
            config: login.clone(),
            // Validation guarantees at least one key of the right length.
            ring: KeyRing::new(&keys).expect("validated session keys"),
            credential,
            provider,
            store,
            refreshing: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The cookie attributes for a response to a request over `secure` transport.
    pub fn attributes(&self, secure: bool) -> cookies::Attributes {
        cookies::Attributes {
            secure,
            max_age: (self.config.session_lifetime + self.config.refresh_extension).as_secs(),
        }
    }

    /// The session a request's cookies carry, refreshed first when its access token is
    /// within [`REFRESH_MARGIN`] of expiry. `secure`: the request came over https (or plain
    /// http to loopback): the cookies sent back carry `Secure` when it did over https.
    pub async fn resolve(
        &self,
        headers: &HeaderMap,
        secure: bool,
        now: SystemTime,
        issuers: &Issuers,
    ) -> Resolved {
        let received = cookies::received(headers);
        if !received
            .iter()
            .any(|(n, _)| cookies::is_chunk(&self.config.cookie_name, n))
        {
            return Resolved::None;
        }
        let invalid = || Resolved::Invalid {
            clear: header_values(cookies::clear(&self.config.cookie_name, secure, &received)),
        };
        let mut opened = match self.open(&received).await {
            Ok(Some(opened)) => opened,
            Ok(None) => return invalid(),
            Err(e) => {
                tracing::warn!(error = %e, "session store unreachable");
                return Resolved::Unavailable;
            }
        };
        let now_s = unix(now);
        if now_s >= opened.body.renew_until {
            return invalid();
        }
        if now_s >= opened.body.auth_until {
            return Resolved::Expired;
        }
        let mut set_cookies = Vec::new();
        let due = opened.tokens.access_expires <= now_s + REFRESH_MARGIN.as_secs();
        if due && opened.tokens.refresh_token.is_some() {
            match self
                .refresh_once(&opened.body.sid, &opened.tokens, issuers)
                .await
            {
                Ok(tokens) => {
                    opened.tokens = tokens;
                    match self
                        .seal_cookies(&opened.body, &opened.tokens, secure, &received)
                        .await
                    {
                        Ok(set) => set_cookies = set,
                        Err(e) => {
                            tracing::warn!(error = %e, "session store unreachable");
                            return Resolved::Unavailable;
                        }
                    }
                }
                // The old access token still works: go on with it, try again next time.
                Err(_) if opened.tokens.access_expires > now_s => {}
                // Expired and not renewable: the session is over.
                Err(_) => return invalid(),
            }
        }
        match Self::identity(&opened.tokens).filter(|(claims, _)| self.is_ours(claims, issuers)) {
            Some((claims, alg)) => Resolved::Active(Box::new(Active {
                claims,
                alg,
                tokens: opened.tokens,
                set_cookies,
            })),
            None => invalid(),
        }
    }

    /// Renews a session's tokens and lifetime (`/.auth/refresh`): allowed until `renew_until`.
    /// Answers the cookies to set, or why not.
    pub async fn renew(
        &self,
        headers: &HeaderMap,
        secure: bool,
        now: SystemTime,
        issuers: &Issuers,
    ) -> Result<Vec<HeaderValue>, RefreshError> {
        let received = cookies::received(headers);
        let opened = self
            .open(&received)
            .await
            .map_err(|e| RefreshError::Failed(e.to_string()))?
            .filter(|o| unix(now) < o.body.renew_until)
            .ok_or_else(|| RefreshError::Failed("no session".into()))?;
        let tokens = self
            .refresh_once(&opened.body.sid, &opened.tokens, issuers)
            .await?;
        let body = self.new_body(now, opened.body.sid.clone());
        self.seal_cookies(&body, &tokens, secure, &received)
            .await
            .map_err(|e| RefreshError::Failed(e.to_string()))
    }

    /// Ends the session the cookies carry: its stored record is deleted (a stolen cookie
    /// then opens nothing). Answers the id_token's `login_hint`, for the provider's sign-out.
    pub async fn end(&self, headers: &HeaderMap) -> Option<String> {
        let received = cookies::received(headers);
        let opened = self.open(&received).await.ok().flatten()?;
        if let Some(store) = &self.store
            && let Err(e) = store.delete(&opened.body.sid).await
        {
            tracing::warn!(error = %e, "session store: the record could not be deleted at logout");
        }
        Self::identity(&opened.tokens)
            .and_then(|(claims, _)| claims.str("login_hint").map(str::to_owned))
    }

    /// A new session's cookie body, authenticating from `now` for `session_lifetime`.
    pub fn new_body(&self, now: SystemTime, sid: String) -> CookieBody {
        let auth_until = unix(now) + self.config.session_lifetime.as_secs();
        CookieBody {
            v: record::VERSION,
            sid,
            auth_until,
            renew_until: auth_until + self.config.refresh_extension.as_secs(),
            tokens: None,
            record_key: None,
        }
    }

    /// The `Set-Cookie` values that carry a session (and clear chunks it no longer uses).
    /// With a store, the tokens go there, sealed under a new per-session key that only the
    /// cookie holds.
    pub async fn seal_cookies(
        &self,
        body: &CookieBody,
        tokens: &Tokens,
        secure: bool,
        received: &[(String, String)],
    ) -> Result<Vec<HeaderValue>, StoreError> {
        let mut body = body.clone();
        match &self.store {
            None => body.tokens = Some(tokens.clone()),
            Some(store) => {
                let mut key = [0u8; 32];
                aws_lc_rs::rand::fill(&mut key).map_err(|_| StoreError::InvalidId)?;
                let sealed = serde_json::to_vec(tokens)
                    .ok()
                    .and_then(|json| {
                        KeyRing::new(&[key])
                            .ok()?
                            .seal(record::RECORD_PURPOSE, &json)
                            .ok()
                    })
                    .ok_or(StoreError::InvalidId)?;
                let ttl = Duration::from_secs(
                    body.renew_until
                        .saturating_sub(unix(SystemTime::now()))
                        .max(1),
                );
                store.put(&body.sid, sealed.as_bytes(), ttl).await?;
                body.record_key = Some(URL_SAFE_NO_PAD.encode(key));
                body.tokens = None;
            }
        }
        let sealed = serde_json::to_vec(&body)
            .ok()
            .and_then(|json| self.ring.seal(&self.config.cookie_name, &json).ok());
        let set = sealed.and_then(|s| {
            cookies::set(
                &self.config.cookie_name,
                &s,
                self.attributes(secure),
                received,
            )
        });
        Ok(match set {
            Some(values) => header_values(values),
            None => {
                tracing::warn!(
                    "the session is too large for cookies (over 25 chunks): configure session_store"
                );
                header_values(cookies::clear(&self.config.cookie_name, secure, received))
            }
        })
    }

    /// The cookie's body and tokens, if the chunks join and open (and, with a store, the
    /// record is there and opens with the cookie's key).
    async fn open(&self, received: &[(String, String)]) -> Result<Option<Opened>, StoreError> {
        let Some(mut body) = self.open_cookie(received) else {
            return Ok(None);
        };
        if let Some(tokens) = body.tokens.take() {
            return Ok(Some(Opened { body, tokens }));
        }
        let (Some(store), Some(key)) = (&self.store, &body.record_key) else {
            return Ok(None);
        };
        let Some(stored) = store.get(&body.sid).await? else {
            return Ok(None);
        };
        let tokens = URL_SAFE_NO_PAD
            .decode(key)
            .ok()
            .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
            .and_then(|k| KeyRing::new(&[k]).ok())
            .and_then(|ring| {
                let text = std::str::from_utf8(&stored).ok()?;
                ring.open(record::RECORD_PURPOSE, text).ok()
            })
            .and_then(|json| serde_json::from_slice::<Tokens>(&json).ok());
        Ok(tokens.map(|tokens| Opened { body, tokens }))
    }

    /// The cookie's body, if the chunks join and open under the session keys.
    fn open_cookie(&self, received: &[(String, String)]) -> Option<CookieBody> {
        let sealed = cookies::join(&self.config.cookie_name, received).ok()?;
        let json = self.ring.open(&self.config.cookie_name, &sealed).ok()?;
        let body: CookieBody = serde_json::from_slice(&json).ok()?;
        (body.v == record::VERSION).then_some(body)
    }

    /// The claims and algorithm of a session's id_token (verified when it was received).
    pub fn identity(tokens: &Tokens) -> Option<(Claims, Algorithm)> {
        let mut parts = tokens.id_token.split('.');
        let header = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
        let payload = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
        #[derive(serde::Deserialize)]
        struct Header {
            alg: String,
        }
        let header: Header = serde_json::from_slice(&header).ok()?;
        Some((Claims::parse(&payload)?, Algorithm::from_name(&header.alg)?))
    }

    /// Refreshes a session's tokens, once at a time per session: concurrent callers wait for
    /// the one refresh and share its outcome, and so do requests that arrive with the old
    /// cookie within [`REFRESH_REUSE`] after it (their responses carry the new cookie).
    async fn refresh_once(
        &self,
        sid: &str,
        tokens: &Tokens,
        issuers: &Issuers,
    ) -> Result<Tokens, RefreshError> {
        let inflight = {
            let mut map = self.refreshing.lock();
            map.retain(|_, i| !i.stale());
            map.entry(sid.to_owned()).or_default().clone()
        };
        let mut slot = inflight.outcome.lock().await;
        if let Some((done, _)) = &*slot {
            return done.clone();
        }
        let result = self.refresh(tokens, issuers).await;
        let label = match &result {
            Ok(_) => "success",
            Err(e) => e.label(),
        };
        self.metrics
            .session_refreshes
            .with_label_values(&[label])
            .inc();
        *slot = Some((result.clone(), tokio::time::Instant::now()));
        result
    }

    /// One refresh grant.
    async fn refresh(&self, tokens: &Tokens, issuers: &Issuers) -> Result<Tokens, RefreshError> {
        let refresh = tokens
            .refresh_token
            .clone()
            .ok_or(RefreshError::NoRefreshToken)?;
        let endpoints = self
            .provider
            .endpoints()
            .await
            .map_err(|e| RefreshError::Failed(e.to_string()))?;
        let refresh = Secret::new(refresh);
        let answer = grant::request(
            &self.provider.client,
            &endpoints.token,
            &self.config.client_id,
            &*self.credential,
            Grant::RefreshToken(&refresh),
            &self.config.scopes.join(" "),
        )
        .await
        .map_err(|e: CredentialError| {
            tracing::info!(error = %e, "session refresh failed");
            RefreshError::Failed(e.to_string())
        })?;
        // A new id_token is verified as at sign-in (but for the nonce: it has none).
        if let Some(id_token) = &answer.id_token {
            let expect = Expect::IdToken {
                issuer: &self.config.issuer,
                client_id: &self.config.client_id,
            };
            if let Err(e) =
                jwt::verify_as(id_token.expose(), issuers, None, SystemTime::now(), expect)
            {
                tracing::info!(
                    reason = e.reason(),
                    "session refresh: the new id_token is not valid"
                );
                return Err(RefreshError::Failed(format!(
                    "the refreshed id_token is not valid: {e}"
                )));
            }
        }
        Ok(merge(tokens, answer))
    }

    /// Whether an opened session's id_token is this configuration's: its `aud` the client id
    /// and its `iss` the `[login] issuer`'s (a reload may have changed either; the keys alone
    /// would still open an old cookie).
    pub fn is_ours(&self, claims: &Claims, issuers: &Issuers) -> bool {
        let aud = claims.strings("aud").any(|a| a == self.config.client_id);
        let iss = claims.issuer().is_some_and(|iss| {
            matches!(issuers.find(iss, claims.tenant()), crate::inbound::issuer::IssuerMatch::Trusted(i) if i.name == self.config.issuer)
        });
        aud && iss
    }
}

/// The tokens after a refresh: the new ones, keeping the old id_token or refresh token when
/// the answer has none (a refreshed id_token is not re-verified against a nonce: it has none).
fn merge(old: &Tokens, new: UserTokens) -> Tokens {
    Tokens {
        id_token: new
            .id_token
            .map_or_else(|| old.id_token.clone(), |t| t.expose().clone()),
        access_token: new.access.token.expose().clone(),
        access_expires: unix(new.access.expires_on),
        refresh_token: new
            .refresh_token
            .map(|t| t.expose().clone())
            .or_else(|| old.refresh_token.clone()),
    }
}

/// Cookie strings as header values (the cookie crate writes only visible ASCII).
pub fn header_values(values: Vec<String>) -> Vec<HeaderValue> {
    values
        .into_iter()
        .filter_map(|v| HeaderValue::try_from(v).ok())
        .collect()
}

/// A random session id: 16 bytes, base64url.
pub fn new_sid() -> Option<String> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).ok()?;
    Some(URL_SAFE_NO_PAD.encode(b))
}

/// Unix seconds.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Whether a `[login]` change needs a new [`Sessions`] (anything but nothing).
pub fn same_login(a: &config::Login, b: &config::Login) -> bool {
    a == b
}
