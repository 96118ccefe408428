//! `/.auth/logout` against a session kept in a store.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use http::header::{COOKIE, LOCATION};

use super::*;
use crate::credential::{AccessToken, BoxFuture, Credential, CredentialError};
use crate::inbound::session::provider::Provider;
use crate::inbound::session::store::{MemoryStore, SessionStore};
use crate::telemetry::metrics::Metrics;

/// Nothing listens on port 1: discovery and any refresh fail at once.
const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
upstream = "http://127.0.0.1:1"

[[issuers]]
name = "idp"
issuer = "http://127.0.0.1:1/"
discovery = "http://127.0.0.1:1/.well-known/openid-configuration"
audiences = ["api://app"]

[credentials.web]
kind = "client_secret"
tenant_id = "t"
client_id = "web"
secret_env = "WEB_SECRET"

[login]
issuer = "idp"
client_id = "web"
credential = "web"
session_keys = ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]
session_store = "redis://127.0.0.1:1/0"
"#;

/// A credential that is never asked: a refresh at logout would be counted as failed.
struct Unused;

impl Credential for Unused {
    fn fetch<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
        Box::pin(async { Err(CredentialError::Setup("not used".into())) })
    }

    fn describe(&self) -> String {
        "unused".into()
    }
}

fn sessions(store: Arc<MemoryStore>) -> Sessions {
    let env = |name: &str| (name == "WEB_SECRET").then(|| "s".to_owned());
    let config = crate::config::parse(CONFIG, Path::new("test.toml"), &env)
        .unwrap()
        .config;
    let login = config.login.unwrap();
    let discovery = "http://127.0.0.1:1/.well-known/openid-configuration";
    let provider = Provider::new(discovery.parse().unwrap(), reqwest::Client::new());
    Sessions::new(
        &login,
        Arc::new(Unused),
        provider,
        Some(store),
        Arc::new(Metrics::new()),
    )
}

#[tokio::test]
async fn logout_deletes_the_stored_record_without_refreshing() {
    let store = Arc::new(MemoryStore::new());
    let sessions = sessions(store.clone());
    let now = SystemTime::now();
    let part = |json: &str| URL_SAFE_NO_PAD.encode(json);
    let tokens = Tokens {
        id_token: format!(
            "{}.{}.sig",
            part(r#"{"alg":"RS256"}"#),
            part(r#"{"oid":"o-1","login_hint":"hint-1"}"#)
        ),
        access_token: "at".into(),
        // Inside the refresh margin: resolving the session would refresh it first.
        access_expires: unix(now) + 10,
        refresh_token: Some("rt".into()),
    };
    let body = sessions.new_body(now, new_sid().unwrap());
    let set = sessions
        .seal_cookies(&body, &tokens, false, &[])
        .await
        .unwrap();
    assert!(store.get(&body.sid).await.unwrap().is_some());
    let cookie = set
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("; ");
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, cookie.parse().unwrap());
    let origin = Origin {
        origin: "http://127.0.0.1:8080".into(),
        https: false,
        loopback: true,
    };

    let reply = logout(
        &sessions,
        &headers,
        Some("post_logout_redirect_uri=/bye"),
        &origin,
    )
    .await;

    assert_eq!(reply.status(), StatusCode::FOUND);
    // The provider is unreachable: no end-session endpoint, straight to the allowed target.
    assert_eq!(reply.headers()[LOCATION], "/bye");
    assert!(
        reply.headers().get_all(SET_COOKIE).iter().any(|c| {
            let c = c.to_str().unwrap();
            c.starts_with("AppServiceAuthSession=") && c.contains("Max-Age=0")
        }),
        "the session cookie is cleared"
    );
    assert!(
        store.get(&body.sid).await.unwrap().is_none(),
        "the record is gone"
    );
    for result in ["success", "failed", "no_refresh_token"] {
        let refreshes = sessions
            .metrics
            .session_refreshes
            .with_label_values(&[result]);
        assert_eq!(refreshes.get(), 0, "no refresh at logout ({result})");
    }
}
