//! `[login]`: browser sign-in, checked against the issuers and credentials it names.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use url::Url;

use super::Context;
use crate::config::schema::{RawLogin, Text};
use crate::config::{
    Credential, CredentialKind, Issuer, KeySource, Login, SessionKey, SessionStore,
};

/// Scopes asked for when `scopes` is left out: an id_token, the profile claims, a refresh token.
pub const DEFAULT_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];
const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
const DEFAULT_REFRESH_EXTENSION: Duration = Duration::from_secs(72 * 3600);
/// Easy Auth's name; front-end code in the wild tests for it.
pub const DEFAULT_COOKIE_NAME: &str = "AppServiceAuthSession";

pub(super) fn login(
    cx: &mut Context<'_>,
    raw: RawLogin,
    issuers: &[Issuer],
    credentials: &BTreeMap<String, Credential>,
) -> Option<Login> {
    let errors = cx.errors.len();
    let client_id = raw.client_id.get_ref().trim().to_owned();
    if client_id.is_empty() {
        cx.error(&raw.client_id, "login.client_id", "must not be empty");
    }
    match issuers.iter().find(|i| &i.name == raw.issuer.get_ref()) {
        None => cx.error(
            &raw.issuer,
            "login.issuer",
            format!("no [[issuers]] entry is named {:?}", raw.issuer.get_ref()),
        ),
        Some(i) if !matches!(i.keys, KeySource::Discovery(_)) => cx.error(
            &raw.issuer,
            "login.issuer",
            format!(
                "issuer {:?} needs `discovery`: sign-in reads the authorization, token and end-session endpoints from it",
                i.name
            ),
        ),
        Some(_) => {}
    }
    check_credential(cx, &raw.credential, &client_id, credentials);
    let scopes = match &raw.scopes {
        None => DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
        Some(list) => {
            let scopes: Vec<String> = list.get_ref().iter().map(|s| s.get_ref().clone()).collect();
            if !scopes.iter().any(|s| s == "openid") {
                cx.error(
                    list,
                    "login.scopes",
                    "must include \"openid\": sign-in identifies the user from the id_token",
                );
            }
            if let Some(bad) = scopes
                .iter()
                .find(|s| s.is_empty() || s.contains(char::is_whitespace))
            {
                cx.error(
                    list,
                    "login.scopes",
                    format!("{bad:?} is not a scope: one scope per string, no spaces"),
                );
            }
            scopes
        }
    };
    let session_keys = keys(cx, &raw.session_keys);
    let session_lifetime = positive(
        cx,
        raw.session_lifetime.as_ref(),
        "login.session_lifetime",
        DEFAULT_SESSION_LIFETIME,
    );
    let refresh_extension = positive(
        cx,
        raw.refresh_extension.as_ref(),
        "login.refresh_extension",
        DEFAULT_REFRESH_EXTENSION,
    );
    let cookie_name = match &raw.cookie_name {
        None => DEFAULT_COOKIE_NAME.to_owned(),
        Some(name) => {
            let n = name.get_ref();
            let valid = !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !n.as_bytes()[n.len() - 1].is_ascii_digit();
            if !valid {
                cx.error(name, "login.cookie_name", "letters, digits, - and _ only (at most 64), not ending with a digit (chunks are NAME1, NAME2, ...)");
            }
            n.clone()
        }
    };
    let allowed_redirects = raw
        .allowed_redirects
        .unwrap_or_default()
        .iter()
        .filter_map(|u| cx.url(u, "login.allowed_redirects"))
        .collect();
    let allowed_origins = raw
        .allowed_origins
        .unwrap_or_default()
        .iter()
        .filter_map(|o| origin(cx, o))
        .collect();
    let session_store = raw.session_store.as_ref().and_then(|s| store(cx, s));
    (cx.errors.len() == errors).then(|| Login {
        issuer: raw.issuer.into_inner(),
        client_id,
        credential: raw.credential.into_inner(),
        scopes,
        session_keys,
        session_lifetime,
        refresh_extension,
        cookie_name,
        token_headers: raw.token_headers.unwrap_or(true),
        refresh_token_header: raw.refresh_token_header.unwrap_or(false),
        me_tokens: raw.me_tokens.unwrap_or(false),
        allowed_redirects,
        allowed_origins,
        session_store,
    })
}

/// The credential exists, can authenticate an app registration, and is that of `client_id`.
fn check_credential(
    cx: &mut Context<'_>,
    name: &Text,
    client_id: &str,
    credentials: &BTreeMap<String, Credential>,
) {
    let Some(credential) = credentials.get(name.get_ref()) else {
        cx.error(
            name,
            "login.credential",
            format!("no [credentials.{}] section", name.get_ref()),
        );
        return;
    };
    let own = match &credential.kind {
        CredentialKind::ManagedIdentity(_) => {
            cx.error(name, "login.credential", format!(
                "credential {:?} is a managed identity, which cannot sign in users: use managed_identity_federation (the managed identity as the app registration's federated credential), client_secret, client_certificate or workload_identity",
                credential.name
            ));
            return;
        }
        CredentialKind::WorkloadIdentity(s) => s.client_id.as_deref(),
        CredentialKind::ClientSecret(s) => Some(s.client_id.as_str()),
        CredentialKind::ClientCertificate(s) => Some(s.client_id.as_str()),
        CredentialKind::ManagedIdentityFederation(s) => Some(s.client_id.as_str()),
    };
    if let Some(own) = own.filter(|own| !client_id.is_empty() && *own != client_id) {
        cx.error(
            name,
            "login.credential",
            format!(
                "credential {:?} authenticates client {own:?}, not login.client_id {client_id:?}",
                credential.name
            ),
        );
    }
}

fn keys(cx: &mut Context<'_>, list: &toml::Spanned<Vec<Text>>) -> Vec<SessionKey> {
    if list.get_ref().is_empty() {
        cx.error(
            list,
            "login.session_keys",
            "give at least one key (`tollgate dev session-key` prints one)",
        );
    }
    let mut out: Vec<SessionKey> = Vec::new();
    for text in list.get_ref() {
        let t = text.get_ref().trim();
        let bytes = STANDARD
            .decode(t)
            .or_else(|_| URL_SAFE_NO_PAD.decode(t.trim_end_matches('=')));
        match bytes.ok().and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()) {
            Some(key) if out.iter().any(|k| k.0 == key) => {
                cx.error(text, "login.session_keys", "this key is listed twice");
            }
            Some(key) => out.push(SessionKey(key)),
            // Never the value: it is a secret.
            None => cx.error(text, "login.session_keys", "a session key is the base64 of 32 random bytes (`tollgate dev session-key` prints one)"),
        }
    }
    out
}

fn positive(cx: &mut Context<'_>, text: Option<&Text>, key: &str, default: Duration) -> Duration {
    let d = cx.duration(text, key, default);
    if d.is_zero() {
        if let Some(t) = text {
            cx.error(t, key, "must be longer than zero");
        }
        return default;
    }
    d
}

/// `https://host[:port]`, nothing after it.
fn origin(cx: &mut Context<'_>, text: &Text) -> Option<String> {
    let url = cx.url(text, "login.allowed_origins")?;
    let after_scheme = text
        .get_ref()
        .split_once("://")
        .map_or("", |(_, rest)| rest);
    if after_scheme.trim_end_matches('/').contains(['/', '?', '#']) {
        cx.error(
            text,
            "login.allowed_origins",
            "an origin is scheme://host[:port], with no path",
        );
        return None;
    }
    Some(url.origin().ascii_serialization())
}

fn store(cx: &mut Context<'_>, text: &Text) -> Option<SessionStore> {
    match Url::parse(text.get_ref()) {
        Ok(url) if matches!(url.scheme(), "redis" | "rediss") && url.host().is_some() => {
            Some(SessionStore(url))
        }
        _ => {
            // Never echo the value: it may hold a password.
            cx.error(
                text,
                "login.session_store",
                "expected a Redis URL: redis://host:port/db or rediss://host:port/db",
            );
            None
        }
    }
}
