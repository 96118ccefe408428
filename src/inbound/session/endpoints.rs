//! The sign-in endpoints on the inbound listener, answered by tollgate and never forwarded:
//! `GET /.auth/login/aad`, `GET|POST /.auth/login/aad/callback`, `GET /.auth/refresh`,
//! `GET /.auth/logout` and the signed-out page `/.auth/logout/complete` (also `/done`).
//!
//! Each failure is answered with its reason (HTML for browsers, JSON otherwise), counted in
//! `tollgate_logins_total`, logged without any token, code, cookie or assertion.

use std::time::SystemTime;

use http::header::{CONTENT_TYPE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use url::Url;

use super::login::{self, LOGIN_COOKIE, LoginError};
use super::pages::{self, failure, wants_html};
use super::record::Tokens;
use super::{Sessions, cookies, header_values, new_sid, unix};
use crate::credential::grant::{self, Grant};
use crate::inbound::issuer::Issuers;
use crate::inbound::jwt::{self, AuthError, Expect};
use crate::proxy::Body;

/// The login path; its callback is below it.
pub const LOGIN: &str = "/.auth/login/aad";
/// Where the provider sends the browser back.
pub const CALLBACK: &str = "/.auth/login/aad/callback";
/// Renews the session's tokens.
pub const REFRESH: &str = "/.auth/refresh";
/// Ends the session.
pub const LOGOUT: &str = "/.auth/logout";
/// The largest `form_post` callback body read.
const MAX_FORM: usize = 64 * 1024;

/// A sign-in endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /.auth/login/aad`.
    Login,
    /// `GET|POST /.auth/login/aad/callback`.
    Callback,
    /// `GET /.auth/refresh`.
    Refresh,
    /// `GET /.auth/logout`.
    Logout,
    /// `GET /.auth/logout/complete` or `/done`: the signed-out page.
    SignedOut,
}

impl Endpoint {
    /// The endpoint at a normalised `path` for `method`, if any.
    pub fn at(method: &Method, path: &str) -> Option<Endpoint> {
        let get = method == Method::GET || method == Method::HEAD;
        match path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path)
        {
            LOGIN if get => Some(Endpoint::Login),
            CALLBACK if get || method == Method::POST => Some(Endpoint::Callback),
            REFRESH if get => Some(Endpoint::Refresh),
            LOGOUT if get => Some(Endpoint::Logout),
            "/.auth/logout/complete" | "/.auth/logout/done" if get => Some(Endpoint::SignedOut),
            _ => None,
        }
    }

    /// The route label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Login => LOGIN,
            Endpoint::Callback => CALLBACK,
            Endpoint::Refresh => REFRESH,
            Endpoint::Logout => LOGOUT,
            Endpoint::SignedOut => "/.auth/logout/complete",
        }
    }
}

/// How the browser reaches this listener.
#[derive(Clone, Debug)]
pub struct Origin {
    /// `https://app.example.com` (or `http://127.0.0.1:8080`), lower case.
    pub origin: String,
    /// The browser keeps `Secure` cookies for it: anything but plain http.
    pub https: bool,
    /// Plain http to a loopback host: cookies without `Secure` still work there.
    pub loopback: bool,
}

impl Origin {
    /// Cookies carry `Secure` unless the request came over plain http to loopback.
    pub fn secure_cookies(&self) -> bool {
        !self.loopback || self.https
    }
}

/// Answers a sign-in endpoint. `issuers` verifies id_tokens.
pub async fn serve(
    sessions: &Sessions,
    issuers: &Issuers,
    endpoint: Endpoint,
    req: Box<http::Request<Incoming>>,
    origin: &Origin,
) -> Response<Body> {
    let html = wants_html(req.headers());
    let now = SystemTime::now();
    match endpoint {
        Endpoint::Login => start(sessions, &req, origin, html, now).await,
        Endpoint::Callback => callback(sessions, issuers, req, origin, html, now).await,
        Endpoint::Refresh => {
            let secure = origin.secure_cookies();
            match sessions.renew(req.headers(), secure, now, issuers).await {
                Ok(set) => with_cookies(json_ok(serde_json::json!({"refreshed": true})), set),
                Err(e) => {
                    tracing::info!(error = %e, "session refresh at /.auth/refresh refused");
                    let received = cookies::received(req.headers());
                    let clear = header_values(cookies::clear(
                        &sessions.config.cookie_name,
                        secure,
                        &received,
                    ));
                    with_cookies(
                        failure(
                            StatusCode::UNAUTHORIZED,
                            "session_not_renewed",
                            "the session could not be renewed: sign in again",
                            false,
                        ),
                        clear,
                    )
                }
            }
        }
        Endpoint::Logout => logout(sessions, req.headers(), req.uri().query(), origin).await,
        Endpoint::SignedOut => pages::notice("Signed out", "You have signed out."),
    }
}

/// `/.auth/login/aad`: a login cookie and a redirect to the provider.
async fn start(
    sessions: &Sessions,
    req: &http::Request<Incoming>,
    origin: &Origin,
    html: bool,
    now: SystemTime,
) -> Response<Body> {
    if !origin.https && !origin.loopback {
        // The session cookie would be Secure, and dropped over plain http: a redirect loop.
        count(sessions, "insecure_transport");
        return failure(
            StatusCode::BAD_REQUEST,
            "insecure_transport",
            "sign-in needs https: terminate TLS in tollgate ([server] tls) or list the TLS-terminating proxy in [server] trusted_proxies",
            html,
        );
    }
    let target = query_param(req.uri().query(), "post_login_redirect_uri");
    let redirect = target
        .as_deref()
        .and_then(|t| login::safe_redirect(t, &sessions.config.allowed_redirects))
        .unwrap_or_else(|| "/".to_owned());
    let endpoints = match sessions.provider.endpoints().await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "sign-in: the issuer's endpoints are unknown");
            count(sessions, "provider_unavailable");
            return failure(
                StatusCode::BAD_GATEWAY,
                "provider_unavailable",
                "the sign-in provider cannot be reached; try again shortly",
                html,
            );
        }
    };
    let Ok(begun) = login::begin(&sessions.ring, &redirect, now) else {
        return failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "sign-in failed",
            html,
        );
    };
    let url = login::authorize_url(
        &endpoints.authorization,
        &sessions.config.client_id,
        &callback_uri(origin),
        &sessions.config.scopes,
        &begun,
    );
    // SameSite=None over https, so a provider's form_post (a cross-site POST) brings it back.
    let cookie = cookie::Cookie::build((LOGIN_COOKIE, begun.cookie))
        .path(LOGIN)
        .http_only(true)
        .secure(origin.secure_cookies())
        .same_site(if origin.https {
            cookie::SameSite::None
        } else {
            cookie::SameSite::Lax
        })
        .max_age(cookie::time::Duration::seconds(
            login::LOGIN_LIFETIME.as_secs() as i64,
        ))
        .build()
        .to_string();
    tracing::debug!("sign-in started");
    with_cookies(pages::redirect(url.as_str()), header_values(vec![cookie]))
}

/// The callback: state first, then the provider's error, then the code.
async fn callback(
    sessions: &Sessions,
    issuers: &Issuers,
    req: Box<http::Request<Incoming>>,
    origin: &Origin,
    html: bool,
    now: SystemTime,
) -> Response<Body> {
    let headers = req.headers().clone();
    let received = cookies::received(&headers);
    let params = match params(req).await {
        Some(p) => p,
        None => {
            count(sessions, "invalid_request");
            return failure(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the callback is malformed",
                html,
            );
        }
    };
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let login_cookie = received
        .iter()
        .find(|(n, _)| n == LOGIN_COOKIE)
        .map(|(_, v)| v.as_str());
    let secure = origin.secure_cookies();
    // The login cookie goes whatever happens: a login is tried once.
    let clear_login = header_values(vec![
        cookie::Cookie::build((LOGIN_COOKIE, ""))
            .path(LOGIN)
            .http_only(true)
            .secure(secure)
            .max_age(cookie::time::Duration::ZERO)
            .build()
            .to_string(),
    ]);
    let fail = |status, result: &'static str, message: &str| {
        count(sessions, result);
        tracing::info!(result, "sign-in failed: {message}");
        with_cookies(failure(status, result, message, html), clear_login.clone())
    };
    let pending = match login::finish(&sessions.ring, login_cookie, get("state"), now) {
        Ok(p) => p,
        Err(LoginError::Expired) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "login_expired",
                "the sign-in took too long; start again",
            );
        }
        Err(e) => return fail(StatusCode::BAD_REQUEST, "state_mismatch", &e.to_string()),
    };
    if let Some(error) = get("error") {
        // The code only, bounded and printable: the description may quote anything.
        let code: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return fail(
            StatusCode::FORBIDDEN,
            "provider_error",
            &format!("the sign-in provider refused: {code}"),
        );
    }
    let Some(code) = get("code").filter(|c| !c.is_empty()) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "state_mismatch",
            "the callback carries no code",
        );
    };
    let endpoints = match sessions.provider.endpoints().await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "sign-in: the issuer's endpoints are unknown");
            return fail(
                StatusCode::BAD_GATEWAY,
                "provider_unavailable",
                "the sign-in provider cannot be reached",
            );
        }
    };
    let redirect_uri = callback_uri(origin);
    let answer = grant::request(
        &sessions.provider.client,
        &endpoints.token,
        &sessions.config.client_id,
        &*sessions.credential,
        Grant::AuthorizationCode {
            code,
            redirect_uri: &redirect_uri,
            verifier: &pending.verifier,
        },
        &sessions.config.scopes.join(" "),
    )
    .await;
    let tokens = match answer {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "sign-in: code redemption failed");
            return fail(
                StatusCode::BAD_GATEWAY,
                "code_redemption_failed",
                "the sign-in provider did not redeem the code; start again",
            );
        }
    };
    let Some(id_token) = tokens.id_token.as_ref() else {
        return fail(
            StatusCode::BAD_REQUEST,
            "id_token_invalid",
            "the provider sent no id_token (is \"openid\" in scopes?)",
        );
    };
    let expect = Expect::IdToken {
        issuer: &sessions.config.issuer,
        client_id: &sessions.config.client_id,
    };
    let mut verified = jwt::verify_as(id_token.expose(), issuers, None, now, expect);
    if let Err(AuthError::UnknownKey {
        issuer, generation, ..
    }) = &verified
        && let Some(i) = issuers.by_name(issuer)
        && i.keys.refetch_for_unknown_kid(*generation).await
    {
        verified = jwt::verify_as(id_token.expose(), issuers, None, SystemTime::now(), expect);
    }
    let claims = match verified {
        Ok(v) => v.claims,
        Err(e) => {
            tracing::info!(reason = e.reason(), error = %e, "sign-in: id_token refused");
            return fail(
                StatusCode::BAD_REQUEST,
                "id_token_invalid",
                "the id_token is not valid",
            );
        }
    };
    let nonce_ok = claims.str("nonce").is_some_and(|n| {
        aws_lc_rs::constant_time::verify_slices_are_equal(n.as_bytes(), pending.nonce.as_bytes())
            .is_ok()
    });
    if !nonce_ok {
        return fail(
            StatusCode::BAD_REQUEST,
            "nonce_mismatch",
            "the id_token was not issued for this sign-in",
        );
    }
    let Some(sid) = new_sid() else {
        return fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "sign-in failed",
        );
    };
    let record = Tokens {
        id_token: id_token.expose().clone(),
        access_token: tokens.access.token.expose().clone(),
        access_expires: unix(tokens.access.expires_on),
        refresh_token: tokens.refresh_token.map(|t| t.expose().clone()),
    };
    let body = sessions.new_body(now, sid);
    let mut set = match sessions
        .seal_cookies(&body, &record, secure, &received)
        .await
    {
        Ok(set) => set,
        Err(e) => {
            tracing::warn!(error = %e, "sign-in: the session store cannot be reached");
            return fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "session_store_unavailable",
                "sessions cannot be stored right now; try again shortly",
            );
        }
    };
    set.extend(clear_login);
    count(sessions, "success");
    tracing::info!(
        oid = claims.str("oid").unwrap_or(""),
        tid = claims.str("tid").unwrap_or(""),
        "sign-in succeeded"
    );
    with_cookies(pages::redirect(&pending.redirect), set)
}

/// `/.auth/logout`: the stored record deleted, every chunk cleared, then the provider's
/// end-session endpoint (or the allowed `post_logout_redirect_uri`, or the signed-out page).
async fn logout(
    sessions: &Sessions,
    headers: &HeaderMap,
    query: Option<&str>,
    origin: &Origin,
) -> Response<Body> {
    let received = cookies::received(headers);
    let secure = origin.secure_cookies();
    // Ending, not resolving: with a session store the record goes (a copied cookie then opens
    // nothing), and tokens about to be dropped are not refreshed first.
    let login_hint = sessions.end(headers).await;
    let clear = header_values(cookies::clear(
        &sessions.config.cookie_name,
        secure,
        &received,
    ));
    let target = query_param(query, "post_logout_redirect_uri")
        .and_then(|t| login::safe_redirect(&t, &sessions.config.allowed_redirects));
    // Absolute: the provider sends the browser there.
    let absolute = target.as_deref().map(|t| {
        if t.starts_with('/') {
            format!("{}{t}", origin.origin)
        } else {
            t.to_owned()
        }
    });
    let end_session = sessions
        .provider
        .endpoints()
        .await
        .ok()
        .and_then(|e| e.end_session);
    let location = match end_session {
        Some(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("client_id", &sessions.config.client_id);
                if let Some(a) = &absolute {
                    q.append_pair("post_logout_redirect_uri", a);
                }
                if let Some(hint) = &login_hint {
                    q.append_pair("logout_hint", hint);
                }
            }
            url.to_string()
        }
        None => target.unwrap_or_else(|| "/.auth/logout/complete".to_owned()),
    };
    tracing::info!("signed out");
    with_cookies(pages::redirect(&location), clear)
}

/// `{origin}/.auth/login/aad/callback`.
fn callback_uri(origin: &Origin) -> String {
    format!("{}{CALLBACK}", origin.origin)
}

/// The callback's parameters: the query of a GET, the form of a POST (`form_post`).
async fn params(req: Box<http::Request<Incoming>>) -> Option<Vec<(String, String)>> {
    if req.method() != Method::POST {
        let q = req.uri().query().unwrap_or("");
        return Some(
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect(),
        );
    }
    let form = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return None;
    }
    let body = Limited::new(req.into_body(), MAX_FORM)
        .collect()
        .await
        .ok()?
        .to_bytes();
    Some(url::form_urlencoded::parse(&body).into_owned().collect())
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn count(sessions: &Sessions, result: &'static str) {
    sessions.metrics.logins.with_label_values(&[result]).inc();
}

fn json_ok(value: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(crate::proxy::full(value.to_string()));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

/// `response` with `Set-Cookie` values appended.
pub fn with_cookies(mut response: Response<Body>, cookies: Vec<HeaderValue>) -> Response<Body> {
    append_cookies(response.headers_mut(), cookies);
    response
}

/// Appends `Set-Cookie` values.
pub fn append_cookies(headers: &mut HeaderMap, cookies: Vec<HeaderValue>) {
    for c in cookies {
        headers.append(SET_COOKIE, c);
    }
}

/// The login URL a refusal offers: `/.auth/login/aad?post_login_redirect_uri=<path?query>`.
pub fn login_url(path: &str, query: Option<&str>) -> String {
    let mut target = path.to_owned();
    if let Some(q) = query {
        target.push('?');
        target.push_str(q);
    }
    let mut url = Url::parse("https://tollgate.invalid/.auth/login/aad").expect("static URL");
    url.query_pairs_mut()
        .append_pair("post_login_redirect_uri", &target);
    format!("{}?{}", url.path(), url.query().unwrap_or(""))
}

/// `302` to `location` (a sign-in redirect of a refusal).
pub fn redirect_to(location: &str) -> Response<Body> {
    pages::redirect(location)
}

/// The JSON error body with a `login_url` member.
pub fn json_with_login_url(
    status: StatusCode,
    error: &str,
    description: &str,
    login_url: &str,
) -> Response<Body> {
    let body = serde_json::json!({
        "error": error,
        "error_description": description,
        "login_url": login_url,
    });
    let mut r = json_ok(body);
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests;
