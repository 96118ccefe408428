//! The Entra ID v2 token endpoint, client-credentials grant
//! (`POST {authority}/{tenant}/oauth2/v2.0/token`, form-encoded): one POST, authenticated by
//! a client secret or a client assertion (a signed JWT, a Kubernetes token, a managed-identity
//! token).

use std::path::Path;

use url::Url;

use super::{AccessToken, CredentialError, Endpoint, env_var, http_client, request_token};
use crate::config::Lookup;
use crate::telemetry::redact::Secret;

/// Used when neither the credential nor `AZURE_AUTHORITY_HOST` names an authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com/";
/// RFC 7523 §2.2: the assertion is a JWT.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How the client proves who it is.
pub enum ClientAuth<'a> {
    /// `client_secret`.
    Secret(&'a Secret<String>),
    /// `client_assertion` with type [`JWT_BEARER`].
    Assertion(&'a Secret<String>),
}

impl<'a> From<&'a super::ClientAuthentication> for ClientAuth<'a> {
    fn from(auth: &'a super::ClientAuthentication) -> Self {
        match auth {
            super::ClientAuthentication::Secret(s) => ClientAuth::Secret(s),
            super::ClientAuthentication::Assertion(a) => ClientAuth::Assertion(a),
        }
    }
}

/// One tenant's token endpoint.
pub struct TokenEndpoint {
    authority: Url,
    url: Url,
    client: reqwest::Client,
}

impl TokenEndpoint {
    /// The endpoint for `tenant` under `authority` (else `AZURE_AUTHORITY_HOST`, else
    /// [`DEFAULT_AUTHORITY`]), trusting `ca_file` in addition to the webpki roots.
    pub fn new(
        authority: Option<&Url>,
        tenant: &str,
        ca_file: Option<&Path>,
        env: Lookup<'_>,
    ) -> Result<TokenEndpoint, CredentialError> {
        let authority = match authority {
            Some(a) => a.clone(),
            None => authority_from_env(env)?,
        };
        Ok(TokenEndpoint {
            url: token_url(&authority, tenant)?,
            authority,
            // Entra may be reached through HTTPS_PROXY: it is a public endpoint.
            client: http_client(ca_file, false)?,
        })
    }

    /// `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`: also the `aud` of a
    /// client assertion.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The same authority's token endpoint for another tenant (a multi-tenant caller's).
    pub fn for_tenant(&self, tenant: &str) -> Result<Url, CredentialError> {
        token_url(&self.authority, tenant)
    }

    /// The HTTP client for this endpoint (with the credential's extra trust anchors).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Requests a token for `scope` as `client_id`.
    pub async fn client_credentials(
        &self,
        client_id: &str,
        scope: &str,
        auth: ClientAuth<'_>,
    ) -> Result<AccessToken, CredentialError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("scope", scope),
        ];
        match &auth {
            ClientAuth::Secret(secret) => form.push(("client_secret", secret.expose())),
            ClientAuth::Assertion(assertion) => {
                form.push(("client_assertion_type", JWT_BEARER));
                form.push(("client_assertion", assertion.expose()));
            }
        }
        request_token(
            Endpoint::Entra,
            self.client.post(self.url.clone()).form(&form),
        )
        .await
    }
}

/// `AZURE_AUTHORITY_HOST` or the public cloud; https unless loopback, as the file's own
/// `authority_host` must be.
fn authority_from_env(env: Lookup<'_>) -> Result<Url, CredentialError> {
    let text = env_var(env, "AZURE_AUTHORITY_HOST").unwrap_or_else(|| DEFAULT_AUTHORITY.to_owned());
    let url = Url::parse(&text)
        .map_err(|e| CredentialError::Setup(format!("AZURE_AUTHORITY_HOST is not a URL ({e})")))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if url.scheme() == "https" || (url.scheme() == "http" && loopback) {
        Ok(url)
    } else {
        Err(CredentialError::Setup(
            "AZURE_AUTHORITY_HOST must be https (plain http only for loopback hosts)".into(),
        ))
    }
}

/// `{authority}/{tenant}/oauth2/v2.0/token`, whether or not the authority ends with `/`
/// (the workload-identity webhook sets `AZURE_AUTHORITY_HOST` with one).
pub fn token_url(authority: &Url, tenant: &str) -> Result<Url, CredentialError> {
    // A tenant is a GUID or a domain name: anything else could rewrite the path.
    if tenant.is_empty()
        || !tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
    {
        return Err(CredentialError::Setup(format!(
            "tenant id {tenant:?} must be a GUID or a domain name"
        )));
    }
    let mut base = authority.clone();
    let path = format!("{}/", base.path().trim_end_matches('/'));
    base.set_path(&path);
    base.set_query(None);
    base.join(&format!("{tenant}/oauth2/v2.0/token"))
        .map_err(|e| CredentialError::Setup(format!("token endpoint URL: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_urls() {
        let cases = [
            (
                "https://login.microsoftonline.com/",
                "t",
                "https://login.microsoftonline.com/t/oauth2/v2.0/token",
            ),
            (
                "https://login.microsoftonline.com",
                "t",
                "https://login.microsoftonline.com/t/oauth2/v2.0/token",
            ),
            (
                "https://login.microsoftonline.us//",
                "t",
                "https://login.microsoftonline.us/t/oauth2/v2.0/token",
            ),
            (
                "http://127.0.0.1:8080/prefix",
                "contoso.onmicrosoft.com",
                "http://127.0.0.1:8080/prefix/contoso.onmicrosoft.com/oauth2/v2.0/token",
            ),
            (
                "http://127.0.0.1:8080/prefix/",
                "t",
                "http://127.0.0.1:8080/prefix/t/oauth2/v2.0/token",
            ),
        ];
        for (authority, tenant, want) in cases {
            let url = token_url(&Url::parse(authority).unwrap(), tenant).unwrap();
            assert_eq!(url.as_str(), want, "{authority}");
        }
        let a = Url::parse(DEFAULT_AUTHORITY).unwrap();
        for bad in ["", "../common", "a/b", "t?x=1"] {
            assert!(token_url(&a, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn authority_defaults_and_checks() {
        let none = |_: &str| None;
        assert_eq!(
            authority_from_env(&none).unwrap().as_str(),
            DEFAULT_AUTHORITY
        );
        let set = |_: &str| Some("https://login.chinacloudapi.cn/".to_owned());
        assert_eq!(
            authority_from_env(&set).unwrap().as_str(),
            "https://login.chinacloudapi.cn/"
        );
        let plain = |_: &str| Some("http://login.example.com/".to_owned());
        assert!(authority_from_env(&plain).is_err());
        let local = |_: &str| Some("http://localhost:9000/".to_owned());
        assert!(authority_from_env(&local).is_ok());
    }
}
