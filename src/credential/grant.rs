//! The user grants of an app registration at an OpenID provider's token endpoint: redeeming
//! an authorization code (with its PKCE verifier) and using a refresh token, authenticated by
//! the same credential kinds as the client-credentials grant ([`Credential::client_auth`]).
//!
//! Used by browser sign-in; the answer carries the id_token and refresh token besides the
//! access token, and none of them ever reaches a log line.
//!
//! [`on_behalf_of`] is the third user grant: a caller's access token traded at Entra ID for a
//! token to a downstream API in the same user's name (RFC 7523 `jwt-bearer` with
//! `requested_token_use=on_behalf_of`), used by egress targets with `on_behalf_of`.

use std::time::SystemTime;

use serde::Deserialize;
use url::Url;

use super::entra::JWT_BEARER;
use super::transport::request_token;
use super::transport::retry_after;
use super::{
    AccessToken, ClientAuthentication, Credential, CredentialError, Endpoint, response, unreachable,
};
use crate::telemetry::redact::Secret;

/// What the token endpoint answers a user grant.
#[derive(Clone, Debug)]
pub struct UserTokens {
    /// The access token and its expiry.
    pub access: AccessToken,
    /// The id_token (`openid` scope), unverified: the caller checks it.
    pub id_token: Option<Secret<String>>,
    /// The refresh token (`offline_access` scope); Entra sends a new one on every use.
    pub refresh_token: Option<Secret<String>>,
}

/// A user grant.
pub enum Grant<'a> {
    /// `authorization_code` with the `redirect_uri` sent to `/authorize` and the PKCE verifier.
    AuthorizationCode {
        /// The code from the callback.
        code: &'a str,
        /// Exactly the value sent at `/authorize`.
        redirect_uri: &'a str,
        /// The PKCE verifier whose S256 was the challenge.
        verifier: &'a str,
    },
    /// `refresh_token`.
    RefreshToken(&'a Secret<String>),
}

impl Grant<'_> {
    /// The `grant_type`, for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Grant::AuthorizationCode { .. } => "authorization_code",
            Grant::RefreshToken(_) => "refresh_token",
        }
    }
}

/// RFC 7523 §2.1: the grant whose `assertion` is a JWT, here the caller's access token.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Trades `assertion` (a caller's access token for this app, verbatim) at `token_url` for a
/// token for `scope` in the same user's name, as `client_id` authenticated by `credential`.
/// One attempt: the caller is waiting, and Entra's refusals (`interaction_required`, a claims
/// challenge, `invalid_grant`) are answers to pass on, not to retry.
pub async fn on_behalf_of(
    client: &reqwest::Client,
    token_url: &Url,
    client_id: &str,
    credential: &dyn Credential,
    assertion: &Secret<String>,
    scope: &str,
) -> Result<AccessToken, CredentialError> {
    let auth = credential.client_auth(token_url).await?;
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", JWT_BEARER_GRANT),
        ("client_id", client_id),
        ("assertion", assertion.expose()),
        ("scope", scope),
        ("requested_token_use", "on_behalf_of"),
    ];
    match &auth {
        ClientAuthentication::Secret(secret) => form.push(("client_secret", secret.expose())),
        ClientAuthentication::Assertion(assertion) => {
            form.push(("client_assertion_type", JWT_BEARER));
            form.push(("client_assertion", assertion.expose()));
        }
    }
    request_token(Endpoint::Entra, client.post(token_url.clone()).form(&form)).await
}

#[derive(Deserialize)]
struct Extra {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// Sends `grant` for `client_id` to `token_url`, authenticated by `credential`, asking for
/// `scopes` (space separated; Entra takes the first resource's).
///
/// A refresh the provider refuses with `invalid_scope` is sent once more without `scope`,
/// which RFC 6749 §6 reads as "the scope originally granted": a provider may grant less than
/// was asked for at sign-in (oidc-provider drops `offline_access` without `prompt=consent`, as
/// OpenID Connect Core §11 allows), and a refresh may not ask for more than was granted.
/// Entra gets `scope` first, as it picks the access token's resource from it.
pub async fn request(
    client: &reqwest::Client,
    token_url: &Url,
    client_id: &str,
    credential: &dyn Credential,
    grant: Grant<'_>,
    scopes: &str,
) -> Result<UserTokens, CredentialError> {
    let answer = send(
        client,
        token_url,
        client_id,
        credential,
        &grant,
        Some(scopes),
    )
    .await;
    match answer {
        Err(CredentialError::Rejected { detail, .. })
            if matches!(grant, Grant::RefreshToken(_))
                && detail.code.as_deref() == Some("invalid_scope") =>
        {
            send(client, token_url, client_id, credential, &grant, None).await
        }
        answer => answer,
    }
}

/// One token request; `scopes` `None` leaves `scope` out.
async fn send(
    client: &reqwest::Client,
    token_url: &Url,
    client_id: &str,
    credential: &dyn Credential,
    grant: &Grant<'_>,
    scopes: Option<&str>,
) -> Result<UserTokens, CredentialError> {
    let auth = credential.client_auth(token_url).await?;
    let mut form: Vec<(&str, &str)> = vec![("client_id", client_id)];
    if let Some(scopes) = scopes {
        form.push(("scope", scopes));
    }
    match grant {
        Grant::AuthorizationCode {
            code,
            redirect_uri,
            verifier,
        } => form.extend([
            ("grant_type", "authorization_code"),
            ("code", *code),
            ("redirect_uri", *redirect_uri),
            ("code_verifier", *verifier),
        ]),
        Grant::RefreshToken(token) => form.extend([
            ("grant_type", "refresh_token"),
            ("refresh_token", token.expose()),
        ]),
    }
    match &auth {
        ClientAuthentication::Secret(secret) => form.push(("client_secret", secret.expose())),
        ClientAuthentication::Assertion(assertion) => {
            form.push(("client_assertion_type", JWT_BEARER));
            form.push(("client_assertion", assertion.expose()));
        }
    }
    let endpoint = Endpoint::Provider;
    let requested = SystemTime::now();
    let answer = client
        .post(token_url.clone())
        .form(&form)
        .send()
        .await
        .map_err(|e| unreachable(endpoint, &e))?;
    let status = answer.status();
    let retry_after = retry_after(answer.headers());
    let body = answer
        .bytes()
        .await
        .map_err(|e| unreachable(endpoint, &e))?;
    if !status.is_success() {
        return Err(CredentialError::Rejected {
            endpoint,
            status: status.as_u16(),
            detail: response::parse_error(&body),
            retry_after,
        });
    }
    let access = response::parse_token(endpoint, &body, requested)?;
    let extra: Extra =
        serde_json::from_slice(&body).map_err(|_| CredentialError::InvalidResponse {
            endpoint,
            reason: "not a JSON token response".into(),
        })?;
    let visible = |t: String| {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic())).then(|| Secret::new(t))
    };
    Ok(UserTokens {
        access,
        id_token: extra.id_token.and_then(visible),
        refresh_token: extra.refresh_token.and_then(visible),
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use parking_lot::Mutex;

    use super::*;
    use crate::credential::{BoxFuture, ClientAuthentication};
    use crate::dev::http::LoopbackServer;

    type Forms = Arc<Mutex<Vec<Vec<(String, String)>>>>;

    /// An app registration with a client secret.
    struct Registration;

    impl Credential for Registration {
        fn fetch<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
            Box::pin(async { Err(CredentialError::Setup("not used".into())) })
        }

        fn describe(&self) -> String {
            "test registration".into()
        }

        fn client_auth<'a>(
            &'a self,
            _: &'a Url,
        ) -> BoxFuture<'a, Result<ClientAuthentication, CredentialError>> {
            Box::pin(async { Ok(ClientAuthentication::Secret(Secret::new("s".into()))) })
        }
    }

    /// A token endpoint that granted `openid profile` only, as oidc-provider does for a sign-in
    /// without `prompt=consent`: a `scope` with more is `invalid_scope`. Logs every form.
    async fn narrow_provider() -> (LoopbackServer, Url, Forms) {
        let forms = Forms::default();
        let log = forms.clone();
        let handler = move |req: Request<Incoming>| {
            let log = log.clone();
            async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let form: Vec<(String, String)> =
                    url::form_urlencoded::parse(&body).into_owned().collect();
                let wider = form
                    .iter()
                    .any(|(k, v)| k == "scope" && v.split(' ').any(|s| s == "offline_access"));
                log.lock().push(form);
                let (status, json) = if wider {
                    (
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": "invalid_scope",
                            "error_description": "refresh token missing requested scope"}),
                    )
                } else {
                    (
                        StatusCode::OK,
                        serde_json::json!({"access_token": "at-2", "token_type": "Bearer",
                            "expires_in": 60, "refresh_token": "rt-2", "scope": "openid profile"}),
                    )
                };
                let mut r = Response::new(Full::new(Bytes::from(json.to_string())));
                *r.status_mut() = status;
                r
            }
        };
        let server = LoopbackServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), handler)
            .await
            .unwrap();
        let url = format!("http://{}/token", server.addr).parse().unwrap();
        (server, url, forms)
    }

    fn scope_of(form: &[(String, String)]) -> Option<&str> {
        form.iter()
            .find(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str())
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    #[tokio::test]
    async fn a_refresh_refused_for_its_scope_is_sent_again_without_one() {
        let (_server, url, forms) = narrow_provider().await;
        let refresh = Secret::new("rt-1".to_owned());
        let scopes = "openid profile offline_access";
        let grant = Grant::RefreshToken(&refresh);
        let tokens = request(&client(), &url, "app", &Registration, grant, scopes)
            .await
            .unwrap();
        assert_eq!(tokens.access.token.expose(), "at-2");
        assert_eq!(tokens.refresh_token.unwrap().expose(), "rt-2");
        let forms = forms.lock();
        assert_eq!(forms.len(), 2);
        assert_eq!(scope_of(&forms[0]), Some(scopes));
        assert_eq!(scope_of(&forms[1]), None);
        for form in forms.iter() {
            assert!(form.contains(&("refresh_token".into(), "rt-1".into())));
            assert!(form.contains(&("client_secret".into(), "s".into())));
        }
    }

    #[tokio::test]
    async fn a_granted_scope_is_sent_once_and_a_code_is_never_retried() {
        let (_server, url, forms) = narrow_provider().await;
        let refresh = Secret::new("rt-1".to_owned());
        let grant = Grant::RefreshToken(&refresh);
        request(
            &client(),
            &url,
            "app",
            &Registration,
            grant,
            "openid profile",
        )
        .await
        .unwrap();
        assert_eq!(forms.lock().len(), 1);
        assert_eq!(scope_of(&forms.lock()[0]), Some("openid profile"));

        let code = Grant::AuthorizationCode {
            code: "c",
            redirect_uri: "http://127.0.0.1/cb",
            verifier: "v",
        };
        let scopes = "openid offline_access";
        let answer = request(&client(), &url, "app", &Registration, code, scopes).await;
        assert!(matches!(
            answer,
            Err(CredentialError::Rejected { status: 400, .. })
        ));
        assert_eq!(forms.lock().len(), 2, "a code is redeemed once");
    }
}
