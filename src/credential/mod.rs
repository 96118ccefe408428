//! Credentials: how an access token for a scope is obtained, one kind per file behind one
//! [`Credential`] trait.
//!
//! [`build`] turns a `[credentials.NAME]` section (plus the environment, passed in as a
//! lookup) into a credential. [`managed_identity`] speaks the six managed-identity protocols
//! (App Service 2019 and 2017, Arc, Service Fabric, Cloud Shell, IMDS); [`entra`] is the Entra
//! ID token endpoint shared by [`workload_identity`], [`client_secret`],
//! [`client_certificate`] and [`federation`]. `transport` sends the requests (never through a
//! proxy for local endpoints), [`response`] parses what the endpoints answer, `error`
//! classifies failures ([`CredentialError`]) and [`retry`] decides when to ask again. A
//! credential makes one attempt per [`Credential::fetch`]; retrying and caching belong to the
//! token cache.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{self, CredentialKind, Lookup};
use crate::telemetry::redact::Secret;

/// The log target of token events, from the credentials (a retry) up to the cache (acquired,
/// refresh failed, none left): one target, so `RUST_LOG=tollgate::egress::token=debug` shows
/// a token's whole story.
pub const LOG_TARGET: &str = "tollgate::egress::token";

pub mod client_certificate;
pub mod client_secret;
pub mod entra;
mod error;
pub mod federation;
pub mod grant;
pub mod managed_identity;
pub mod response;
pub mod retry;
mod transport;
pub mod workload_identity;

pub use error::{CredentialError, Endpoint, ErrorDetail, UserAction};
pub use transport::{ATTEMPT_TIMEOUT, client_with_tls, http_client, request_token, unreachable};

/// A boxed future, so that [`Credential`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of access tokens.
pub trait Credential: Send + Sync {
    /// Makes one attempt to obtain a token for `scope` (`api://x/.default`); no retries.
    fn fetch<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, CredentialError>>;

    /// What this credential is and where it gets tokens, for logs and `tollgate token`.
    fn describe(&self) -> String;

    /// How this app registration proves itself at `token_url` (any OpenID provider's token
    /// endpoint: a client assertion's `aud`), for the user grants of [`grant`]. A managed
    /// identity is no app registration and has none.
    fn client_auth<'a>(
        &'a self,
        token_url: &'a url::Url,
    ) -> BoxFuture<'a, Result<ClientAuthentication, CredentialError>> {
        let _ = token_url;
        Box::pin(async {
            Err(CredentialError::Setup(
                "this credential is not an app registration's: it cannot redeem codes".into(),
            ))
        })
    }

    /// The app registration at Entra ID this credential proves (its client id and token
    /// endpoint), for the on-behalf-of grant; `None` for a managed identity.
    fn registration(&self) -> Option<Registration<'_>> {
        None
    }
}

/// An app registration at Entra ID: who it is and where its tenant's token endpoint is.
pub struct Registration<'a> {
    /// The application (client) id.
    pub client_id: &'a str,
    /// Its tenant's token endpoint (and the authority for other tenants').
    pub endpoint: &'a entra::TokenEndpoint,
}

/// An app registration's proof at a token endpoint; `Debug` shows neither value.
#[derive(Clone, Debug)]
pub enum ClientAuthentication {
    /// `client_secret`.
    Secret(Secret<String>),
    /// `client_assertion` (a signed JWT, a Kubernetes token, a managed-identity token).
    Assertion(Secret<String>),
}

/// An access token and when it expires.
#[derive(Clone, Debug)]
pub struct AccessToken {
    /// The token itself; its `Debug` is redacted.
    pub token: Secret<String>,
    /// When the token stops being accepted.
    pub expires_on: SystemTime,
    /// The issuer's hint of when to refresh (`refresh_in`), counted from receipt.
    pub refresh_in: Option<Duration>,
}
/// Builds the credential a `[credentials.NAME]` section describes. Settings left out are
/// taken from `env` (the Azure variables); a missing one is an error here, not at the first
/// request.
pub fn build(
    config: &config::Credential,
    env: Lookup<'_>,
) -> Result<Arc<dyn Credential>, CredentialError> {
    let ca = config.ca_file.as_deref();
    let setup = |e: CredentialError| match e {
        CredentialError::Setup(m) => CredentialError::Setup(format!(
            "credential {:?} ({}): {m}",
            config.name,
            config.kind.as_str()
        )),
        other => other,
    };
    let built: Arc<dyn Credential> = match &config.kind {
        CredentialKind::ManagedIdentity(s) => Arc::new(
            managed_identity::ManagedIdentity::new(
                s.user_assigned.clone(),
                s.endpoint.clone(),
                ca,
                env,
                &managed_identity::source::Platform::detect(),
            )
            .map_err(setup)?,
        ),
        CredentialKind::WorkloadIdentity(s) => {
            Arc::new(workload_identity::WorkloadIdentity::new(s, ca, env).map_err(setup)?)
        }
        CredentialKind::ClientSecret(s) => {
            Arc::new(client_secret::ClientSecret::new(s, ca, env).map_err(setup)?)
        }
        CredentialKind::ClientCertificate(s) => {
            Arc::new(client_certificate::ClientCertificate::new(s, ca, env).map_err(setup)?)
        }
        CredentialKind::ManagedIdentityFederation(s) => {
            Arc::new(federation::Federation::new(s, ca, env).map_err(setup)?)
        }
    };
    Ok(built)
}

/// The v1 `resource` a managed-identity endpoint takes for a v2 `scope`: the scope without a
/// trailing `/.default`, and nothing else changed (as every Azure SDK converts it).
pub fn scope_to_resource(scope: &str) -> &str {
    scope.strip_suffix("/.default").unwrap_or(scope)
}
/// Reads a small secret file (token, key, secret), trimmed of surrounding white space.
pub async fn read_secret_file(path: &Path, what: &str) -> Result<Secret<String>, CredentialError> {
    let text = tokio::fs::read_to_string(path).await.map_err(|e| {
        CredentialError::Setup(format!("reading the {what} {}: {e}", path.display()))
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(CredentialError::Setup(format!(
            "the {what} {} is empty",
            path.display()
        )));
    }
    Ok(Secret::new(trimmed.to_owned()))
}

/// A non-empty environment variable.
pub fn env_var(env: Lookup<'_>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.trim().is_empty())
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        Algorithm, ClientCertificateSettings, ClientSecretSettings, FederationSettings,
        ManagedIdentitySettings, SecretSource, WorkloadIdentitySettings,
    };

    #[test]
    fn build_hands_each_kind_its_own_settings() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("client.pem");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["c".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(&pem, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        let imds: url::Url = "http://127.0.0.1:1".parse().unwrap();
        let kinds = [
            (
                CredentialKind::ManagedIdentity(ManagedIdentitySettings {
                    user_assigned: None,
                    endpoint: Some(imds.clone()),
                }),
                "managed identity",
            ),
            (
                CredentialKind::WorkloadIdentity(WorkloadIdentitySettings {
                    tenant_id: Some("t".into()),
                    client_id: Some("c".into()),
                    token_file: Some(dir.path().join("token")),
                    authority_host: None,
                }),
                "workload identity (client c",
            ),
            (
                CredentialKind::ClientSecret(ClientSecretSettings {
                    tenant_id: "t".into(),
                    client_id: "c".into(),
                    secret: SecretSource::Env("SECRET".into()),
                    authority_host: None,
                }),
                "client secret (client c, secret from $SECRET)",
            ),
            (
                CredentialKind::ClientCertificate(ClientCertificateSettings {
                    tenant_id: "t".into(),
                    client_id: "c".into(),
                    certificate: pem,
                    assertion_algorithm: Algorithm::RS256,
                    authority_host: None,
                }),
                "client certificate (client c, RS256",
            ),
            (
                CredentialKind::ManagedIdentityFederation(FederationSettings {
                    tenant_id: "t".into(),
                    client_id: "c".into(),
                    identity_client_id: Some("mi".into()),
                    endpoint: Some(imds),
                    audience: "api://AzureADTokenExchange".into(),
                    authority_host: None,
                }),
                "app registration c with managed identity",
            ),
        ];
        let env = |name: &str| (name == "SECRET").then(|| "s".to_owned());
        for (kind, described) in kinds {
            let name = kind.as_str();
            let config = config::Credential {
                name: name.into(),
                kind,
                ca_file: None,
            };
            let built = build(&config, &env).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                built.describe().starts_with(described),
                "{name}: {}",
                built.describe()
            );
        }
    }

    #[test]
    fn scope_to_resource_strips_only_default() {
        let cases = [
            ("api://x/.default", "api://x"),
            (
                "https://vault.azure.net/.default",
                "https://vault.azure.net",
            ),
            (
                "https://management.azure.com//.default",
                "https://management.azure.com/",
            ),
            ("api://AzureADTokenExchange", "api://AzureADTokenExchange"),
            ("api://x/.default/.default", "api://x/.default"),
            ("api://x/read", "api://x/read"),
        ];
        for (scope, resource) in cases {
            assert_eq!(scope_to_resource(scope), resource, "{scope}");
        }
    }
}
