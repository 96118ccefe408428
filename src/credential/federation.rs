//! `kind = "managed_identity_federation"`: a managed identity as the federated credential of
//! an app registration (Microsoft's "Configure an application to trust a managed identity").
//! The managed-identity token for `api://AzureADTokenExchange` is the client assertion; it is
//! kept while it has more than [`ASSERTION_MARGIN`] left, since managed-identity tokens live
//! for hours.

use std::path::Path;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::time::Instant;

use super::entra::{ClientAuth, TokenEndpoint};
use super::managed_identity::ManagedIdentity;
use super::managed_identity::source::Platform;
use super::{AccessToken, BoxFuture, ClientAuthentication, Credential, CredentialError};
use crate::config::{FederationSettings, Lookup, UserAssigned};
use crate::telemetry::redact::Secret;

/// A cached assertion is replaced when it has less than this left: Entra refuses an expired
/// one with AADSTS700024.
pub const ASSERTION_MARGIN: Duration = Duration::from_secs(600);

/// An app registration whose federated credential is a managed identity.
pub struct Federation {
    client_id: String,
    audience: String,
    identity: ManagedIdentity,
    endpoint: TokenEndpoint,
    /// The managed-identity token and when it stops being used as an assertion.
    assertion: Mutex<Option<(Secret<String>, Instant)>>,
}

impl Federation {
    /// `identity_client_id` selects a user-assigned identity (Entra supports only those as
    /// federated credentials); `endpoint` overrides IMDS as for `managed_identity`.
    pub fn new(
        settings: &FederationSettings,
        ca_file: Option<&Path>,
        env: Lookup<'_>,
    ) -> Result<Federation, CredentialError> {
        let FederationSettings {
            tenant_id,
            client_id,
            identity_client_id,
            endpoint,
            audience,
            authority_host,
        } = settings;
        let identity = ManagedIdentity::new(
            identity_client_id.clone().map(UserAssigned::ClientId),
            endpoint.clone(),
            ca_file,
            env,
            &Platform::detect(),
        )?;
        Ok(Federation {
            client_id: client_id.clone(),
            audience: audience.clone(),
            identity,
            endpoint: TokenEndpoint::new(authority_host.as_ref(), tenant_id, ca_file, env)?,
            assertion: Mutex::new(None),
        })
    }

    /// The managed-identity token to present, fetched when the cached one is near expiry.
    async fn assertion(&self) -> Result<Secret<String>, CredentialError> {
        if let Some((token, until)) = &*self.assertion.lock()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let token = self.identity.fetch(&self.audience).await?;
        let left = token
            .expires_on
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let until = Instant::now() + left.saturating_sub(ASSERTION_MARGIN);
        *self.assertion.lock() = Some((token.token.clone(), until));
        Ok(token.token)
    }
}

impl Credential for Federation {
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
        Box::pin(async move { self.assertion().await.map(ClientAuthentication::Assertion) })
    }

    fn fetch<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
        Box::pin(async move {
            let assertion = self.assertion().await?;
            let result = self
                .endpoint
                .client_credentials(&self.client_id, scope, ClientAuth::Assertion(&assertion))
                .await;
            if let Err(CredentialError::Rejected {
                status: 400 | 401, ..
            }) = &result
            {
                // A refused assertion may be the cause: fetch a fresh one next time.
                *self.assertion.lock() = None;
            }
            result
        })
    }

    fn describe(&self) -> String {
        format!(
            "app registration {} with {} as federated credential (audience {}) at {}",
            self.client_id,
            self.identity.describe(),
            self.audience,
            self.endpoint.url()
        )
    }
}
