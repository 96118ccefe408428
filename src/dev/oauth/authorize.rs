//! `…/authorize`: checks the request as Entra does, shows the page that picks the user
//! (`GET`), and takes the page's answer (`POST`, checked all over again: the hidden fields are
//! only ever echoed): a single-use code for the redirect URI, or `access_denied`.
//!
//! Refusals that must not go back to the client are a page, never a redirect: an unknown
//! client (AADSTS700016), a missing or unregistered redirect URI (AADSTS50011). The others
//! go to the redirect URI with `error`, `error_description` and `state`, in the response mode
//! asked for (`query`, the default, or `form_post`).

use std::time::SystemTime;

use http::{Method, StatusCode};
use url::Url;

use super::error::{ErrorKind, OAuthError};
use super::page::{self, SignIn};
use super::{
    CODE_LIFETIME, Code, Content, DevUser, Grant, OAuthProvider, OAuthRequest, Params, Reply, html,
};
use crate::inbound::issuer::is_guid;

/// The authorize parameters the sign-in page echoes, in this order.
const ECHOED: [&str; 11] = [
    "client_id",
    "response_type",
    "redirect_uri",
    "response_mode",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "login_hint",
];
/// Longest value kept from a user field; longest list of roles or groups.
const MAX_FIELD: usize = 256;
const MAX_LIST: usize = 200;

/// Where answers go once the client and its redirect URI are known to be good.
struct Target<'p> {
    client_id: &'p str,
    redirect_uri: &'p str,
    form_post: bool,
    state: Option<&'p str>,
}

/// The rest of a good request.
struct Checked<'p> {
    scopes: Vec<String>,
    nonce: Option<&'p str>,
    challenge: Option<&'p str>,
}

/// The form that completes a sign-in over HTTP: the query parameters of `authorize_url` (the
/// URL the browser was sent to), the fields of `user`, and `action=sign_in`. `POST` it, as a
/// form, to `authorize_url`.
pub fn sign_in_form(authorize_url: &str, user: &DevUser) -> Vec<(String, String)> {
    let query = Url::parse(authorize_url).ok();
    let mut form: Vec<(String, String)> = query
        .iter()
        .flat_map(|u| u.query_pairs().into_owned())
        .collect();
    form.extend([
        ("name".to_owned(), user.name.clone()),
        (
            "preferred_username".to_owned(),
            user.preferred_username.clone(),
        ),
        ("oid".to_owned(), user.oid.clone()),
        ("roles".to_owned(), user.roles.join(",")),
        ("groups".to_owned(), user.groups.join(",")),
        ("action".to_owned(), "sign_in".to_owned()),
    ]);
    form
}

impl OAuthProvider {
    /// The authorize endpoint.
    pub(super) fn authorize(&self, req: &OAuthRequest<'_>, now: SystemTime) -> Reply {
        let query = req.uri.query().unwrap_or_default().as_bytes();
        let params = match *req.method {
            Method::GET => Params::parse(query),
            // The form wins; the query may still carry what the form left out.
            Method::POST => {
                let mut params = Params::parse(req.body);
                params.0.extend(Params::parse(query).0);
                params
            }
            _ => return error_page(StatusCode::METHOD_NOT_ALLOWED, 900561, "Use GET or POST."),
        };
        let target = match self.target(&params) {
            Ok(target) => target,
            Err(page) => return page,
        };
        let checked = match check(&params) {
            Ok(checked) => checked,
            Err(error) => return refuse(&target, &error),
        };
        if *req.method == Method::GET {
            let mut user = self.user.clone();
            if let Some(hint) = params.get("login_hint") {
                user.preferred_username = hint.to_owned();
            }
            let page = sign_in_page(req.uri.path(), &params, &target, &user, None);
            return html(StatusCode::OK, page, "sign-in page".to_owned());
        }
        if params.get("action") == Some("cancel") {
            let error = OAuthError::new(
                ErrorKind::AccessDenied,
                65004,
                "User declined to consent to access the app.",
            );
            return refuse(&target, &error);
        }
        let user = match read_user(&params, &self.user) {
            Ok(user) => user,
            Err(message) => {
                let page =
                    sign_in_page(req.uri.path(), &params, &target, &self.user, Some(&message));
                return html(
                    StatusCode::BAD_REQUEST,
                    page,
                    format!("sign-in refused: {message}"),
                );
            }
        };
        let oid = user.oid.clone();
        let code = Code {
            grant: Grant {
                client_id: target.client_id.to_owned(),
                user,
                scopes: checked.scopes,
            },
            redirect_uri: target.redirect_uri.to_owned(),
            challenge: checked.challenge.map(str::to_owned),
            nonce: checked.nonce.map(str::to_owned),
            expires: now + CODE_LIFETIME,
            redeemed: false,
        };
        match self.issue_code(code, now) {
            Ok(code) => {
                let mut reply = answer(&target, &[("code", &code)]);
                reply.summary =
                    format!("code issued to client {} for user {oid}", target.client_id);
                reply
            }
            Err(error) => refuse(&target, &error),
        }
    }

    /// The client and redirect URI, or the error page.
    fn target<'p>(&self, params: &'p Params) -> Result<Target<'p>, Reply> {
        let Some(client_id) = params.get("client_id") else {
            return Err(error_page(
                StatusCode::BAD_REQUEST,
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            ));
        };
        if client_id != self.client.id {
            let message = format!(
                "Application with identifier '{client_id}' was not found in the directory 'tollgate dev'."
            );
            return Err(error_page(StatusCode::BAD_REQUEST, 700016, &message));
        }
        let Some(redirect_uri) = params.get("redirect_uri") else {
            return Err(error_page(
                StatusCode::BAD_REQUEST,
                900144,
                "The request body must contain the following parameter: 'redirect_uri'.",
            ));
        };
        // Never redirect to a URI the client did not register: that is an open redirector
        // handing codes to whoever wrote the link.
        if !self.client.accepts_redirect(redirect_uri) || Url::parse(redirect_uri).is_err() {
            let message = format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'."
            );
            return Err(error_page(StatusCode::BAD_REQUEST, 50011, &message));
        }
        Ok(Target {
            client_id,
            redirect_uri,
            form_post: params.get("response_mode") == Some("form_post"),
            state: params.get("state"),
        })
    }
}

/// Everything but the client and redirect URI: response type and mode, scopes, PKCE, prompt.
fn check(params: &Params) -> Result<Checked<'_>, OAuthError> {
    let response_type = params
        .get("response_type")
        .ok_or_else(|| OAuthError::missing("response_type"))?;
    if response_type != "code" {
        let message = format!(
            "response_type '{response_type}' is not enabled for the application; use code."
        );
        return Err(OAuthError::new(
            ErrorKind::UnsupportedResponseType,
            700054,
            message,
        ));
    }
    if let Some(mode) = params
        .get("response_mode")
        .filter(|m| !matches!(*m, "query" | "form_post"))
    {
        let message = format!("response_mode '{mode}' is not supported; use query or form_post.");
        return Err(OAuthError::new(ErrorKind::InvalidRequest, 9002313, message));
    }
    let scope = params
        .get("scope")
        .ok_or_else(|| OAuthError::missing("scope"))?;
    let mut scopes: Vec<String> = Vec::new();
    for s in scope.split_ascii_whitespace() {
        if !scopes.iter().any(|k| k == s) {
            scopes.push(s.to_owned());
        }
    }
    let challenge = params.get("code_challenge");
    if let Some(challenge) = challenge {
        // A challenge without a method is `plain` (RFC 7636 §4.3), which is not offered.
        if params.get("code_challenge_method") != Some("S256") {
            let message = "code_challenge_method must be S256; plain is not supported.";
            return Err(OAuthError::new(ErrorKind::InvalidRequest, 50149, message));
        }
        if challenge.len() != 43
            || !challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            let message = "Invalid size of Code_Challenge parameter: an S256 challenge is 43 base64url characters.";
            return Err(OAuthError::new(ErrorKind::InvalidRequest, 50147, message));
        }
    }
    if params.get("prompt") == Some("none") {
        let message = "A silent sign-in request was sent but no user is signed in.";
        return Err(OAuthError::new(ErrorKind::LoginRequired, 50058, message));
    }
    Ok(Checked {
        scopes,
        nonce: params.get("nonce"),
        challenge,
    })
}

/// The user the page submitted; empty name fields fall back to `defaults`, `roles` and
/// `groups` are taken as given (an empty field is no roles).
fn read_user(params: &Params, defaults: &DevUser) -> Result<DevUser, String> {
    let text = |name: &str, default: &str| -> Result<String, String> {
        let value = params.get(name).unwrap_or(default).trim();
        if value.chars().count() > MAX_FIELD {
            return Err(format!("{name} is longer than {MAX_FIELD} characters."));
        }
        Ok(value.to_owned())
    };
    let list = |name: &str, default: &[String]| -> Result<Vec<String>, String> {
        let Some(value) = params.raw(name) else {
            return Ok(default.to_vec());
        };
        let items: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if items.len() > MAX_LIST || items.iter().any(|i| i.chars().count() > MAX_FIELD) {
            return Err(format!(
                "{name}: at most {MAX_LIST} values of at most {MAX_FIELD} characters."
            ));
        }
        Ok(items)
    };
    let user = DevUser {
        name: text("name", &defaults.name)?,
        preferred_username: text("preferred_username", &defaults.preferred_username)?,
        oid: text("oid", &defaults.oid)?,
        roles: list("roles", &defaults.roles)?,
        groups: list("groups", &defaults.groups)?,
    };
    if !is_guid(&user.oid) {
        return Err("oid must be a GUID such as d3e7d3e7-0000-4000-8000-0000000000d1.".to_owned());
    }
    Ok(user)
}

fn sign_in_page(
    path: &str,
    params: &Params,
    target: &Target<'_>,
    user: &DevUser,
    message: Option<&str>,
) -> String {
    let hidden: Vec<(&str, &str)> = ECHOED
        .iter()
        .filter_map(|name| params.get(name).map(|value| (*name, value)))
        .collect();
    page::sign_in(&SignIn {
        action: path,
        hidden: &hidden,
        client_id: target.client_id,
        scope: params.get("scope").unwrap_or_default(),
        user,
        message,
    })
}

/// The error for the client, at its redirect URI.
fn refuse(target: &Target<'_>, error: &OAuthError) -> Reply {
    let description = error.aadsts();
    let mut reply = answer(
        target,
        &[
            ("error", error.kind.as_str()),
            ("error_description", &description),
        ],
    );
    reply.summary = format!("{} {description}", error.kind.as_str());
    reply
}

/// `fields` and `state` for the redirect URI: a 302 with them in the query, or (form_post) the
/// page that posts them.
fn answer(target: &Target<'_>, fields: &[(&str, &str)]) -> Reply {
    let mut fields = fields.to_vec();
    if let Some(state) = target.state {
        fields.push(("state", state));
    }
    let summary = String::new();
    if target.form_post {
        return html(
            StatusCode::OK,
            page::form_post(target.redirect_uri, &fields),
            summary,
        );
    }
    // Checked by `target`; the parsed form is what goes out, so the browser reads the URL the
    // way it was checked.
    let Ok(mut url) = Url::parse(target.redirect_uri) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            50011,
            "The redirect URI is not a URL.",
        );
    };
    url.query_pairs_mut().extend_pairs(fields);
    Reply {
        status: StatusCode::FOUND,
        content: Content::Redirect(url.into()),
        summary,
    }
}

fn error_page(status: StatusCode, code: u32, message: &str) -> Reply {
    html(
        status,
        page::error(code, message),
        format!("error page AADSTS{code}: {message}"),
    )
}
