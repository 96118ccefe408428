//! Why a token could not be obtained, who said so, and whether to ask again. Built so that
//! it can be logged and put in a 503 body: it never holds a token, secret or assertion.

use std::fmt;
use std::time::Duration;

use super::retry::Retry;
use crate::proxy::tls::TlsError;

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
    /// The sign-in issuer's token endpoint (code redemption, refresh).
    Provider,
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
            Endpoint::Provider => "the sign-in issuer's token endpoint",
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
    /// What the user must do, when Entra said (boxed: it is rare, and every credential error
    /// carries this struct).
    pub user_action: Option<Box<UserAction>>,
}

/// Entra's fields of a refusal the user can resolve by signing in again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserAction {
    /// `suberror` (`basic_action`, `consent_required`, ...).
    pub suberror: Option<String>,
    /// `claims`: the claims challenge (JSON text) a new sign-in must satisfy.
    pub claims: Option<String>,
}

impl ErrorDetail {
    /// Entra's `suberror`.
    pub fn suberror(&self) -> Option<&str> {
        self.user_action.as_ref()?.suberror.as_deref()
    }

    /// Entra's claims challenge (JSON text).
    pub fn claims(&self) -> Option<&str> {
        self.user_action.as_ref()?.claims.as_deref()
    }
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
    /// Whether and when to try again, following the Azure SDKs' retry policies: 408, 429 and
    /// 5xx always; 404 and 410 only from IMDS and Arc; "identity not found" (400) and other
    /// 4xx never.
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

#[cfg(test)]
mod tests {
    use super::*;

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
                ..ErrorDetail::default()
            },
            retry_after: None,
        };
        assert_eq!(
            e.to_string(),
            "IMDS answered HTTP 400: invalid_request: Identity not found"
        );
    }
}
