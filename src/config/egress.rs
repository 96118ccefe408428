//! `[egress]`, its targets, and `[credentials.NAME]`: the validated egress settings, each
//! credential kind with exactly its own settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::Algorithm;

/// `[egress]`: the listener the app calls and the targets behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Egress {
    /// Egress listen address. Defaults to `127.0.0.1:15001`.
    pub listen: SocketAddr,
    /// Targets, in file order.
    pub targets: Vec<Target>,
    /// Most on-behalf-of tokens kept (one per caller token and scope). Defaults to
    /// [`DEFAULT_OBO_CACHE_ENTRIES`].
    pub obo_cache_entries: usize,
}

/// `obo_cache_entries` when the file leaves it out.
pub const DEFAULT_OBO_CACHE_ENTRIES: usize = 10_000;

/// `[[egress.targets]]`: a downstream API and the credential whose token it gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Path prefix `/<name>` on the egress listener, stripped before forwarding.
    pub name: String,
    /// Where requests go: `https`, or `http` on a loopback host.
    pub url: http::Uri,
    /// The scope asked for (`api://x/.default`).
    pub scope: String,
    /// Credential name.
    pub credential: String,
    /// Also match requests whose Host (or absolute-form URI) names this host.
    pub host: Option<String>,
    /// Extra trust anchors (PEM) for the target.
    pub ca_file: Option<PathBuf>,
    /// Longest wait for the target's response head; 504 past it. Defaults to 30 s.
    pub request_timeout: Duration,
    /// `on_behalf_of = "ISSUER"`: the app's request carries a caller's token from this
    /// `[[issuers]]` entry, exchanged for the target's token in the caller's name.
    pub on_behalf_of: Option<String>,
}

/// `[credentials.NAME]`: how an access token is obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// Name referenced by egress targets.
    pub name: String,
    /// The kind and its settings.
    pub kind: CredentialKind,
    /// Extra trust anchors (PEM) for the token endpoint.
    pub ca_file: Option<PathBuf>,
}

/// The kinds of credential, each with its own settings. Settings left out fall back to the
/// Azure environment variables when the credential is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// A managed identity: App Service, Arc, Service Fabric, Cloud Shell or IMDS, detected
    /// from the environment.
    ManagedIdentity(ManagedIdentitySettings),
    /// AKS workload identity: a federated Kubernetes token exchanged at Entra ID.
    WorkloadIdentity(WorkloadIdentitySettings),
    /// An app registration's client secret, read from a file or an environment variable.
    ClientSecret(ClientSecretSettings),
    /// An app registration's certificate, used for a `private_key_jwt` client assertion.
    ClientCertificate(ClientCertificateSettings),
    /// A managed identity used as the federated credential of an app registration.
    ManagedIdentityFederation(FederationSettings),
}

/// `kind = "managed_identity"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedIdentitySettings {
    /// User-assigned identity; `None` is the system-assigned one.
    pub user_assigned: Option<UserAssigned>,
    /// IMDS base URL override; `None` detects the source from the environment.
    pub endpoint: Option<Url>,
}

/// `kind = "workload_identity"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadIdentitySettings {
    /// Defaults to `AZURE_TENANT_ID`.
    pub tenant_id: Option<String>,
    /// Defaults to `AZURE_CLIENT_ID`.
    pub client_id: Option<String>,
    /// Defaults to `AZURE_FEDERATED_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
    /// Defaults to `AZURE_AUTHORITY_HOST`, then `https://login.microsoftonline.com/`.
    pub authority_host: Option<Url>,
}

/// `kind = "client_secret"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSecretSettings {
    /// Directory (tenant) id.
    pub tenant_id: String,
    /// Application (client) id.
    pub client_id: String,
    /// Where the secret is kept; never inline in the file.
    pub secret: SecretSource,
    /// Defaults to `AZURE_AUTHORITY_HOST`, then `https://login.microsoftonline.com/`.
    pub authority_host: Option<Url>,
}

/// `kind = "client_certificate"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificateSettings {
    /// Directory (tenant) id.
    pub tenant_id: String,
    /// Application (client) id.
    pub client_id: String,
    /// PEM file holding the certificate and its private key.
    pub certificate: PathBuf,
    /// Assertion signature: PS256 with `x5t#S256` (default) or RS256 with `x5t`.
    pub assertion_algorithm: Algorithm,
    /// Defaults to `AZURE_AUTHORITY_HOST`, then `https://login.microsoftonline.com/`.
    pub authority_host: Option<Url>,
}

/// `kind = "managed_identity_federation"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederationSettings {
    /// The app registration's tenant.
    pub tenant_id: String,
    /// The app registration's client id.
    pub client_id: String,
    /// The managed identity (user-assigned client id); `None` for system-assigned.
    pub identity_client_id: Option<String>,
    /// IMDS base URL override.
    pub endpoint: Option<Url>,
    /// Audience of the managed-identity token. Defaults to `api://AzureADTokenExchange`.
    pub audience: String,
    /// Defaults to `AZURE_AUTHORITY_HOST`, then `https://login.microsoftonline.com/`.
    pub authority_host: Option<Url>,
}

impl CredentialKind {
    /// The `kind` value as written in the file.
    pub fn as_str(&self) -> &'static str {
        match self {
            CredentialKind::ManagedIdentity(_) => "managed_identity",
            CredentialKind::WorkloadIdentity(_) => "workload_identity",
            CredentialKind::ClientSecret(_) => "client_secret",
            CredentialKind::ClientCertificate(_) => "client_certificate",
            CredentialKind::ManagedIdentityFederation(_) => "managed_identity_federation",
        }
    }
}

/// Which user-assigned managed identity to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserAssigned {
    /// By client (application) id.
    ClientId(String),
    /// By object (principal) id.
    ObjectId(String),
    /// By ARM resource id.
    ResourceId(String),
}

/// Where a client secret is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file holding the secret (surrounding white space ignored), read at each fetch.
    File(PathBuf),
    /// The name of an environment variable holding the secret.
    Env(String),
}
