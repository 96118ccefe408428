//! Credentials: how an access token for a scope is obtained, one kind per file behind one
//! [`Credential`] trait.
//!
//! [`build`] turns a `[credentials.NAME]` section (plus the environment, passed in as a
//! lookup) into a credential. [`managed_identity`] speaks the six managed-identity protocols
//! (App Service 2019 and 2017, Arc, Service Fabric, Cloud Shell, IMDS); [`entra`] is the Entra
//! ID token endpoint shared by [`workload_identity`], [`client_secret`],
//! [`client_certificate`] and [`federation`]. [`response`] parses what the endpoints answer,
//! and [`retry`] decides when to ask again. A credential makes one attempt per
//! [`Credential::fetch`]; retrying and caching belong to the token cache.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{self, CredentialKind, Lookup};
use crate::proxy::tls::{self, TlsError};
use crate::telemetry::redact::Secret;

pub mod client_certificate;
pub mod client_secret;
pub mod entra;
pub mod federation;
pub mod managed_identity;
pub mod response;
pub mod retry;
pub mod workload_identity;

use retry::Retry;

/// A boxed future, so that [`Credential`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Longest time one token request may take, connection included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest time to connect to a local identity endpoint (IMDS blackholes off Azure).
const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest time to connect to the Entra token endpoint.
const REMOTE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A source of access tokens.
pub trait Credential: Send + Sync {
    /// Makes one attempt to obtain a token for `scope` (`api://x/.default`); no retries.
    fn fetch<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, CredentialError>>;

    /// What this credential is and where it gets tokens, for logs and `tollgate token`.
    fn describe(&self) -> String;
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

/// Who answered (or failed to): the label in errors and the 503 body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Azure Instance Metadata Service (VM, VMSS, AKS node).
    Imds,
    /// App Service / Functions / Container Apps, 2019-08-01 protocol.
    AppService,
    /// App Service 2017-09-01 protocol (`MSI_ENDPOINT` + `MSI_SECRET`).
    AppService2017,
    /// Azure Arc's HIMDS agent.
    Arc,
    /// Service Fabric's managed identity token service.
    ServiceFabric,
    /// Azure Cloud Shell.
    CloudShell,
    /// The Entra ID token endpoint.
    Entra,
}

impl Endpoint {
    /// A short name for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Imds => "IMDS",
            Endpoint::AppService => "App Service identity endpoint",
            Endpoint::AppService2017 => "App Service (2017) identity endpoint",
            Endpoint::Arc => "Azure Arc identity endpoint",
            Endpoint::ServiceFabric => "Service Fabric identity endpoint",
            Endpoint::CloudShell => "Cloud Shell identity endpoint",
            Endpoint::Entra => "Entra ID",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an error response said, reduced to what is safe to log and show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorDetail {
    /// `error` (OAuth), or `error.code` (Service Fabric, Cloud Shell).
    pub code: Option<String>,
    /// The first line of `error_description` / `message`.
    pub description: Option<String>,
    /// The AADSTS number, from `error_codes` or the description.
    pub aadsts: Option<u32>,
}

impl fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, &self.description) {
            (Some(c), Some(d)) => write!(f, "{c}: {d}"),
            (Some(c), None) => f.write_str(c),
            (None, Some(d)) => f.write_str(d),
            (None, None) => f.write_str("no error details"),
        }
    }
}

/// Why a token could not be obtained. Never holds a token, secret or assertion.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The endpoint answered with an error status.
    #[error("{endpoint} answered HTTP {status}: {detail}")]
    Rejected {
        /// Who answered.
        endpoint: Endpoint,
        /// The HTTP status.
        status: u16,
        /// What the body said.
        detail: ErrorDetail,
        /// The `Retry-After` header, in seconds.
        retry_after: Option<Duration>,
    },
    /// The endpoint could not be reached or did not answer in time.
    #[error("{endpoint} unreachable: {message}")]
    Unreachable {
        /// Who did not answer.
        endpoint: Endpoint,
        /// The transport error.
        message: String,
    },
    /// The endpoint answered 2xx with something that is not a usable token.
    #[error("{endpoint} answered with an unusable token response: {reason}")]
    InvalidResponse {
        /// Who answered.
        endpoint: Endpoint,
        /// What was wrong.
        reason: String,
    },
    /// The credential is not usable as configured: a missing setting or environment
    /// variable, an unreadable file, an unsupported combination.
    #[error("{0}")]
    Setup(String),
}

impl CredentialError {
    /// Whether and when to try again (A.9): 408, 429 and 5xx always; 404 and 410 only from
    /// IMDS and Arc; "identity not found" (400) and other 4xx never.
    pub fn retry(&self) -> Retry {
        match self {
            CredentialError::Rejected {
                endpoint,
                status,
                retry_after,
                ..
            } => {
                let imds_like = matches!(endpoint, Endpoint::Imds | Endpoint::Arc);
                match status {
                    410 if imds_like => Retry::Gone(*retry_after),
                    404 if imds_like => Retry::After(*retry_after),
                    408 | 429 | 500..=599 => Retry::After(*retry_after),
                    _ => Retry::Never,
                }
            }
            CredentialError::Unreachable { .. } => Retry::After(None),
            CredentialError::InvalidResponse { .. } | CredentialError::Setup(_) => Retry::Never,
        }
    }

    /// The server's `Retry-After`, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CredentialError::Rejected { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The `result` label of `tollgate_egress_token_requests_total`.
    pub fn result_label(&self) -> &'static str {
        match self {
            CredentialError::Rejected { status: 429, .. } => "throttled",
            CredentialError::Rejected { .. } if self.retry() != Retry::Never => "unavailable",
            CredentialError::Rejected { .. } => "rejected",
            CredentialError::Unreachable { .. } => "unreachable",
            CredentialError::InvalidResponse { .. } => "invalid_response",
            CredentialError::Setup(_) => "setup_error",
        }
    }

    /// The AADSTS number, when Entra gave one.
    pub fn aadsts(&self) -> Option<u32> {
        match self {
            CredentialError::Rejected { detail, .. } => detail.aadsts,
            _ => None,
        }
    }
}

impl From<TlsError> for CredentialError {
    fn from(e: TlsError) -> Self {
        CredentialError::Setup(format!("TLS trust: {e}"))
    }
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
        CredentialKind::ManagedIdentity {
            user_assigned,
            endpoint,
        } => Arc::new(
            managed_identity::ManagedIdentity::new(
                user_assigned.clone(),
                endpoint.clone(),
                ca,
                env,
                &managed_identity::source::Platform::detect(),
            )
            .map_err(setup)?,
        ),
        CredentialKind::WorkloadIdentity { .. } => Arc::new(
            workload_identity::WorkloadIdentity::new(&config.kind, ca, env).map_err(setup)?,
        ),
        CredentialKind::ClientSecret { .. } => {
            Arc::new(client_secret::ClientSecret::new(&config.kind, ca, env).map_err(setup)?)
        }
        CredentialKind::ClientCertificate { .. } => Arc::new(
            client_certificate::ClientCertificate::new(&config.kind, ca, env).map_err(setup)?,
        ),
        CredentialKind::ManagedIdentityFederation { .. } => {
            Arc::new(federation::Federation::new(&config.kind, ca, env).map_err(setup)?)
        }
    };
    Ok(built)
}

/// The v1 `resource` a managed-identity endpoint takes for a v2 `scope`: the scope without a
/// trailing `/.default`, and nothing else changed (A.8).
pub fn scope_to_resource(scope: &str) -> &str {
    scope.strip_suffix("/.default").unwrap_or(scope)
}

/// An HTTP client for token requests: rustls with the webpki roots plus `ca_file`, no
/// redirects (a redirect would carry a secret somewhere unplanned), a per-attempt deadline.
/// `direct` bypasses `HTTP(S)_PROXY`: IMDS and local identity endpoints must never be
/// reached through a proxy (A.1).
pub fn http_client(
    ca_file: Option<&Path>,
    direct: bool,
) -> Result<reqwest::Client, CredentialError> {
    let tls = tls::client_config(ca_file)?;
    client_with_tls(tls, direct)
}

/// [`http_client`] with a ready TLS configuration (Service Fabric's pinned one, say).
pub fn client_with_tls(
    tls: rustls::ClientConfig,
    direct: bool,
) -> Result<reqwest::Client, CredentialError> {
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(ATTEMPT_TIMEOUT)
        .connect_timeout(if direct {
            LOCAL_CONNECT_TIMEOUT
        } else {
            REMOTE_CONNECT_TIMEOUT
        });
    if direct {
        builder = builder.no_proxy();
    }
    builder
        .build()
        .map_err(|e| CredentialError::Setup(format!("building the HTTP client: {e}")))
}

/// Sends a token request and parses the answer: a token on 2xx, else a
/// [`CredentialError::Rejected`] with what the body said.
pub async fn request_token(
    endpoint: Endpoint,
    request: reqwest::RequestBuilder,
) -> Result<AccessToken, CredentialError> {
    let requested = SystemTime::now();
    let response = request
        .send()
        .await
        .map_err(|e| unreachable(endpoint, &e))?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let body = response
        .bytes()
        .await
        .map_err(|e| unreachable(endpoint, &e))?;
    if status.is_success() {
        response::parse_token(endpoint, &body, requested)
    } else {
        Err(CredentialError::Rejected {
            endpoint,
            status: status.as_u16(),
            detail: response::parse_error(&body),
            retry_after,
        })
    }
}

/// A transport error, without the URL's query (it names the identity asked for, which is
/// fine, but keeps the message short).
pub fn unreachable(endpoint: Endpoint, error: &reqwest::Error) -> CredentialError {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let cause = std::error::Error::source(error)
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    CredentialError::Unreachable {
        endpoint,
        message: format!("{kind}{cause}"),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by these endpoints).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
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

    #[test]
    fn retry_classification() {
        let rejected = |endpoint, status| CredentialError::Rejected {
            endpoint,
            status,
            detail: ErrorDetail::default(),
            retry_after: None,
        };
        let cases = [
            (rejected(Endpoint::Imds, 400), Retry::Never, "rejected"),
            (
                rejected(Endpoint::Imds, 404),
                Retry::After(None),
                "unavailable",
            ),
            (
                rejected(Endpoint::Imds, 410),
                Retry::Gone(None),
                "unavailable",
            ),
            (
                rejected(Endpoint::Arc, 410),
                Retry::Gone(None),
                "unavailable",
            ),
            (
                rejected(Endpoint::ServiceFabric, 404),
                Retry::Never,
                "rejected",
            ),
            (rejected(Endpoint::Entra, 404), Retry::Never, "rejected"),
            (rejected(Endpoint::Entra, 401), Retry::Never, "rejected"),
            (
                rejected(Endpoint::AppService, 408),
                Retry::After(None),
                "unavailable",
            ),
            (
                rejected(Endpoint::Entra, 429),
                Retry::After(None),
                "throttled",
            ),
            (
                rejected(Endpoint::AppService, 503),
                Retry::After(None),
                "unavailable",
            ),
            (
                CredentialError::Unreachable {
                    endpoint: Endpoint::Imds,
                    message: "x".into(),
                },
                Retry::After(None),
                "unreachable",
            ),
            (
                CredentialError::Setup("x".into()),
                Retry::Never,
                "setup_error",
            ),
        ];
        for (error, retry, label) in cases {
            assert_eq!(error.retry(), retry, "{error}");
            assert_eq!(error.result_label(), label, "{error}");
        }
    }

    #[test]
    fn errors_read_well() {
        let e = CredentialError::Rejected {
            endpoint: Endpoint::Imds,
            status: 400,
            detail: ErrorDetail {
                code: Some("invalid_request".into()),
                description: Some("Identity not found".into()),
                aadsts: None,
            },
            retry_after: None,
        };
        assert_eq!(
            e.to_string(),
            "IMDS answered HTTP 400: invalid_request: Identity not found"
        );
    }
}
