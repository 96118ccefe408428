//! `kind = "client_secret"`: an app registration's client secret (sent as `client_secret` in
//! the client-credentials form), kept in a file (read for every fetch, so a rotated secret is
//! picked up) or an environment variable; never written in the configuration itself.

use std::path::Path;

use super::entra::{ClientAuth, TokenEndpoint};
use super::{
    AccessToken, BoxFuture, ClientAuthentication, Credential, CredentialError, env_var,
    read_secret_file,
};
use crate::config::{ClientSecretSettings, Lookup, SecretSource};
use crate::telemetry::redact::Secret;

/// A client id and its secret.
pub struct ClientSecret {
    client_id: String,
    secret: Held,
    endpoint: TokenEndpoint,
}

enum Held {
    File(std::path::PathBuf),
    Value(Secret<String>, String),
}

impl ClientSecret {
    /// Checks the secret is there now: a missing variable is a start-up error.
    pub fn new(
        settings: &ClientSecretSettings,
        ca_file: Option<&Path>,
        env: Lookup<'_>,
    ) -> Result<ClientSecret, CredentialError> {
        let ClientSecretSettings {
            tenant_id,
            client_id,
            secret,
            authority_host,
        } = settings;
        let secret = match secret {
            SecretSource::File(path) => Held::File(path.clone()),
            SecretSource::Env(name) => match env_var(env, name) {
                Some(value) => Held::Value(Secret::new(value.trim().to_owned()), name.clone()),
                None => {
                    return Err(CredentialError::Setup(format!(
                        "secret_env names {name}, which is not set"
                    )));
                }
            },
        };
        Ok(ClientSecret {
            client_id: client_id.clone(),
            secret,
            endpoint: TokenEndpoint::new(authority_host.as_ref(), tenant_id, ca_file, env)?,
        })
    }
}

impl ClientSecret {
    async fn secret(&self) -> Result<Secret<String>, CredentialError> {
        match &self.secret {
            Held::File(path) => read_secret_file(path, "client secret file").await,
            Held::Value(secret, _) => Ok(secret.clone()),
        }
    }
}

impl Credential for ClientSecret {
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
        Box::pin(async move { self.secret().await.map(ClientAuthentication::Secret) })
    }

    fn fetch<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
        Box::pin(async move {
            let secret = self.secret().await?;
            self.endpoint
                .client_credentials(&self.client_id, scope, ClientAuth::Secret(&secret))
                .await
        })
    }

    fn describe(&self) -> String {
        let from = match &self.secret {
            Held::File(path) => format!("file {}", path.display()),
            Held::Value(_, name) => format!("${name}"),
        };
        format!(
            "client secret (client {}, secret from {from}) at {}",
            self.client_id,
            self.endpoint.url()
        )
    }
}
