//! `kind = "workload_identity"`: AKS workload identity. The projected Kubernetes
//! service-account token is the client assertion; Kubernetes rotates it, so the file is read
//! again for every fetch.

use std::path::{Path, PathBuf};

use super::entra::TokenEndpoint;
use super::{
    AccessToken, BoxFuture, ClientAuthentication, Credential, CredentialError, env_var,
    read_secret_file,
};
use crate::config::{Lookup, WorkloadIdentitySettings};

/// A federated Kubernetes token exchanged at Entra ID.
pub struct WorkloadIdentity {
    client_id: String,
    token_file: PathBuf,
    endpoint: TokenEndpoint,
}

impl WorkloadIdentity {
    /// Settings left out of the file come from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
    /// `AZURE_FEDERATED_TOKEN_FILE` and `AZURE_AUTHORITY_HOST`, as the webhook sets them.
    pub fn new(
        settings: &WorkloadIdentitySettings,
        ca_file: Option<&Path>,
        env: Lookup<'_>,
    ) -> Result<WorkloadIdentity, CredentialError> {
        let WorkloadIdentitySettings {
            tenant_id,
            client_id,
            token_file,
            authority_host,
        } = settings;
        let or_env = |value: &Option<String>, key: &str, var: &str| {
            value.clone().or_else(|| env_var(env, var)).ok_or_else(|| {
                CredentialError::Setup(format!("{key} is not set and {var} is empty"))
            })
        };
        let tenant_id = or_env(tenant_id, "tenant_id", "AZURE_TENANT_ID")?;
        let client_id = or_env(client_id, "client_id", "AZURE_CLIENT_ID")?;
        let token_file = match token_file {
            Some(f) => f.clone(),
            None => PathBuf::from(or_env(&None, "token_file", "AZURE_FEDERATED_TOKEN_FILE")?),
        };
        Ok(WorkloadIdentity {
            client_id,
            token_file,
            endpoint: TokenEndpoint::new(authority_host.as_ref(), &tenant_id, ca_file, env)?,
        })
    }
}

impl Credential for WorkloadIdentity {
    fn registration(&self) -> Option<super::Registration<'_>> {
        Some(super::Registration {
            client_id: &self.client_id,
            endpoint: &self.endpoint,
        })
    }

    fn client_auth<'a>(
        &'a self,
        _token_url: &'a url::Url,
    ) -> BoxFuture<'a, Result<ClientAuthentication, CredentialError>> {
        Box::pin(async move {
            read_secret_file(&self.token_file, "federated token file")
                .await
                .map(ClientAuthentication::Assertion)
        })
    }

    fn fetch<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
        Box::pin(async move {
            // Read every time (in client_auth): a stale projected token gets AADSTS700024.
            // The same proof as for a user grant, at this credential's own token endpoint.
            let auth = self.client_auth(self.endpoint.url()).await?;
            self.endpoint
                .client_credentials(&self.client_id, scope, (&auth).into())
                .await
        })
    }

    fn describe(&self) -> String {
        format!(
            "workload identity (client {}, token file {}) at {}",
            self.client_id,
            self.token_file.display(),
            self.endpoint.url()
        )
    }
}
