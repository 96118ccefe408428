//! The user grants of an app registration at an OpenID provider's token endpoint: redeeming
//! an authorization code (with its PKCE verifier) and using a refresh token, authenticated by
//! the same credential kinds as the client-credentials grant ([`Credential::client_auth`]).
//!
//! Used by browser sign-in; the answer carries the id_token and refresh token besides the
//! access token, and none of them ever reaches a log line.

use std::time::SystemTime;

use serde::Deserialize;
use url::Url;

use super::entra::JWT_BEARER;
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

#[derive(Deserialize)]
struct Extra {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// Sends `grant` for `client_id` to `token_url`, authenticated by `credential`, asking for
/// `scopes` (space separated; Entra takes the first resource's).
pub async fn request(
    client: &reqwest::Client,
    token_url: &Url,
    client_id: &str,
    credential: &dyn Credential,
    grant: Grant<'_>,
    scopes: &str,
) -> Result<UserTokens, CredentialError> {
    let auth = credential.client_auth(token_url).await?;
    let mut form: Vec<(&str, &str)> = vec![("client_id", client_id), ("scope", scopes)];
    match &grant {
        Grant::AuthorizationCode {
            code,
            redirect_uri,
            verifier,
        } => form.extend([
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
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
