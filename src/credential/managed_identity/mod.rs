//! `kind = "managed_identity"`: a token from whatever managed-identity source the environment
//! offers, each spoken in its own dialect.
//!
//! [`source`] detects the source; this file builds each source's request (its api-version,
//! its secret header, its own names for a user-assigned identity); [`arc`] runs Arc's
//! challenge and [`pinned`] trusts Service Fabric's self-signed certificate by thumbprint.
//! No request here ever goes through an HTTP proxy.

use std::path::Path;

use url::Url;

use super::{
    AccessToken, BoxFuture, Credential, CredentialError, Endpoint, client_with_tls, http_client,
    request_token, scope_to_resource,
};
use crate::config::{Lookup, UserAssigned};
use crate::telemetry::redact::Secret;

pub mod arc;
pub mod pinned;
pub mod source;

use source::{Platform, Source};

/// The IMDS protocol version the SDKs send; IMDS takes this one or any later one.
pub const IMDS_API_VERSION: &str = "2018-02-01";
/// App Service, Functions, Container Apps.
pub const APP_SERVICE_API_VERSION: &str = "2019-08-01";
/// The legacy `MSI_ENDPOINT` protocol.
pub const APP_SERVICE_2017_API_VERSION: &str = "2017-09-01";
/// Azure Arc's HIMDS agent.
pub const ARC_API_VERSION: &str = "2020-06-01";
/// Service Fabric's token service.
pub const SERVICE_FABRIC_API_VERSION: &str = "2019-07-01-preview";

/// A managed identity, system- or user-assigned.
pub struct ManagedIdentity {
    source: Source,
    /// The user-assigned identity's query parameter for this source, e.g. `("msi_res_id", id)`.
    selector: Option<(&'static str, String)>,
    client: reqwest::Client,
}

impl ManagedIdentity {
    /// Detects the source from `env` (or uses IMDS at `endpoint`) and checks that it can
    /// select `user_assigned`.
    pub fn new(
        user_assigned: Option<UserAssigned>,
        endpoint: Option<Url>,
        ca_file: Option<&Path>,
        env: Lookup<'_>,
        platform: &Platform,
    ) -> Result<ManagedIdentity, CredentialError> {
        let source = source::detect(env, platform, endpoint.as_ref())?;
        let selector = match &user_assigned {
            None => None,
            Some(id) => Some(selector(&source, id)?),
        };
        let client = match &source {
            Source::ServiceFabric {
                endpoint,
                thumbprint,
                ..
            } => {
                if endpoint.scheme() != "https" {
                    return Err(CredentialError::Setup(
                        "Service Fabric's IDENTITY_ENDPOINT must be https".into(),
                    ));
                }
                client_with_tls(pinned::client_config(thumbprint)?, true)?
            }
            _ => http_client(ca_file, true)?,
        };
        Ok(ManagedIdentity {
            source,
            selector,
            client,
        })
    }

    /// The detected source.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The GET (or Cloud Shell's POST) for `resource`, with the source's headers.
    fn request(&self, resource: &str) -> reqwest::RequestBuilder {
        let mut query: Vec<(&str, &str)> = Vec::with_capacity(3);
        let header = |name: &'static str, value: &Secret<String>| (name, value.expose().clone());
        let (version, secret) = match &self.source {
            Source::CloudShell { endpoint } => {
                return self
                    .client
                    .post(endpoint.clone())
                    .header("Metadata", "true")
                    .form(&[("resource", resource)]);
            }
            Source::Imds { .. } => (IMDS_API_VERSION, None),
            Source::Arc { .. } => (ARC_API_VERSION, None),
            Source::AppService { header: h, .. } => (
                APP_SERVICE_API_VERSION,
                Some(header("X-IDENTITY-HEADER", h)),
            ),
            Source::AppService2017 { secret, .. } => {
                (APP_SERVICE_2017_API_VERSION, Some(header("secret", secret)))
            }
            Source::ServiceFabric { header: h, .. } => {
                (SERVICE_FABRIC_API_VERSION, Some(header("Secret", h)))
            }
        };
        query.push(("api-version", version));
        query.push(("resource", resource));
        if let Some((name, id)) = &self.selector {
            query.push((name, id));
        }
        // Metadata: true everywhere but Service Fabric: IMDS and Arc require it, Azure
        // Automation (an App Service flavour) too; App Service does not need it.
        // Appended to the endpoint's own query: IDENTITY_ENDPOINT is used verbatim.
        let mut url = self.source.endpoint().clone();
        url.query_pairs_mut().extend_pairs(&query);
        let mut request = self.client.get(url);
        if !matches!(self.source, Source::ServiceFabric { .. }) {
            request = request.header("Metadata", "true");
        }
        if let Some((name, value)) = secret {
            request = request.header(name, value);
        }
        request
    }
}

/// The query parameter that selects `id` on `source`: each protocol names it differently
/// (IMDS `msi_res_id` is App Service's `mi_res_id`, App Service 2017 knows only `clientid`),
/// and some cannot select one at all.
pub fn selector(
    source: &Source,
    id: &UserAssigned,
) -> Result<(&'static str, String), CredentialError> {
    let unsupported = |what: &str| {
        Err(CredentialError::Setup(format!(
            "{} cannot select a user-assigned identity by {what}",
            source.name()
        )))
    };
    match (source, id) {
        (Source::Imds { .. }, UserAssigned::ClientId(v)) => Ok(("client_id", v.clone())),
        (Source::Imds { .. }, UserAssigned::ObjectId(v)) => Ok(("object_id", v.clone())),
        (Source::Imds { .. }, UserAssigned::ResourceId(v)) => Ok(("msi_res_id", v.clone())),
        (Source::AppService { .. }, UserAssigned::ClientId(v)) => Ok(("client_id", v.clone())),
        (Source::AppService { .. }, UserAssigned::ObjectId(v)) => Ok(("principal_id", v.clone())),
        (Source::AppService { .. }, UserAssigned::ResourceId(v)) => Ok(("mi_res_id", v.clone())),
        (Source::AppService2017 { .. }, UserAssigned::ClientId(v)) => Ok(("clientid", v.clone())),
        (Source::AppService2017 { .. }, UserAssigned::ObjectId(_)) => unsupported("object_id"),
        (Source::AppService2017 { .. }, UserAssigned::ResourceId(_)) => unsupported("resource_id"),
        // Arc, Service Fabric and Cloud Shell serve one fixed identity.
        (Source::Arc { .. } | Source::ServiceFabric { .. } | Source::CloudShell { .. }, _) => {
            Err(CredentialError::Setup(format!(
                "{} offers only its system-assigned identity; remove client_id, object_id and resource_id",
                source.name()
            )))
        }
    }
}

fn endpoint_of(source: &Source) -> Endpoint {
    match source {
        Source::AppService { .. } => Endpoint::AppService,
        Source::AppService2017 { .. } => Endpoint::AppService2017,
        Source::ServiceFabric { .. } => Endpoint::ServiceFabric,
        Source::CloudShell { .. } => Endpoint::CloudShell,
        Source::Arc { .. } => Endpoint::Arc,
        Source::Imds { .. } => Endpoint::Imds,
    }
}

impl Credential for ManagedIdentity {
    fn fetch<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
        Box::pin(async move {
            let resource = scope_to_resource(scope);
            match &self.source {
                Source::Arc { key_dir, .. } => arc::fetch(|| self.request(resource), key_dir).await,
                source => request_token(endpoint_of(source), self.request(resource)).await,
            }
        })
    }

    fn describe(&self) -> String {
        let identity = match &self.selector {
            None => "system-assigned".to_owned(),
            Some((name, id)) => format!("user-assigned {name}={id}"),
        };
        format!(
            "managed identity ({identity}) from {} at {}",
            self.source.name(),
            self.source.endpoint()
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn selector_names_per_source() {
        let url = Url::parse("http://127.0.0.1/t").unwrap();
        let secret = Secret::new("s".to_owned());
        let imds = Source::Imds {
            endpoint: url.clone(),
        };
        let app = Source::AppService {
            endpoint: url.clone(),
            header: secret.clone(),
        };
        let old = Source::AppService2017 {
            endpoint: url.clone(),
            secret,
        };
        let arc = Source::Arc {
            endpoint: url.clone(),
            key_dir: PathBuf::from("/k"),
        };
        let (c, o, r) = (
            UserAssigned::ClientId("c".into()),
            UserAssigned::ObjectId("o".into()),
            UserAssigned::ResourceId("r".into()),
        );
        let name = |s: &Source, id: &UserAssigned| selector(s, id).map(|(n, _)| n).ok();
        let cases = [
            (&imds, &c, Some("client_id")),
            (&imds, &o, Some("object_id")),
            (&imds, &r, Some("msi_res_id")),
            (&app, &c, Some("client_id")),
            (&app, &o, Some("principal_id")),
            (&app, &r, Some("mi_res_id")),
            (&old, &c, Some("clientid")),
            (&old, &o, None),
            (&old, &r, None),
            (&arc, &c, None),
        ];
        for (source, id, want) in cases {
            assert_eq!(name(source, id), want, "{} {id:?}", source.name());
        }
    }
}
