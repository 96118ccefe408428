//! The sign-in issuer's endpoints, read from its OpenID Connect discovery document (never
//! built by hand: other clouds use other hosts) and kept for an hour.

use std::time::Duration;

use tokio::time::Instant;

use parking_lot::Mutex;
use serde::Deserialize;
use url::Url;

use crate::fetch::{self, FetchError};

/// How long a discovery document is used before it is read again.
const KEEP: Duration = Duration::from_secs(3600);

/// Where the browser and tollgate go for each step.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// `authorization_endpoint`.
    pub authorization: Url,
    /// `token_endpoint`.
    pub token: Url,
    /// `end_session_endpoint`, when the provider has one.
    pub end_session: Option<Url>,
}

/// Why the endpoints are not known.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The document could not be fetched.
    #[error("fetching the discovery document: {0}")]
    Fetch(#[from] FetchError),
    /// It lacks an endpoint, or names one that is not https (loopback http aside).
    #[error("the discovery document is unusable: {0}")]
    Document(String),
}

/// The discovery document of the sign-in issuer, fetched on first use.
pub struct Provider {
    discovery: Url,
    /// The HTTP client for discovery and the token endpoint (the issuer's `ca_file`).
    pub client: reqwest::Client,
    cached: Mutex<Option<(Endpoints, Instant)>>,
}

#[derive(Deserialize)]
struct Document {
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    end_session_endpoint: Option<String>,
}

impl Provider {
    /// The provider whose discovery document is at `discovery`.
    pub fn new(discovery: Url, client: reqwest::Client) -> Provider {
        Provider {
            discovery,
            client,
            cached: Mutex::new(None),
        }
    }

    /// The endpoints: kept ones when fresh, else read now. Concurrent first reads may both
    /// fetch; the lock is never held across the fetch.
    pub async fn endpoints(&self) -> Result<Endpoints, ProviderError> {
        if let Some((endpoints, at)) = &*self.cached.lock()
            && at.elapsed() < KEEP
        {
            return Ok(endpoints.clone());
        }
        let body = fetch::get(&self.client, &self.discovery).await?;
        let doc: Document = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Document(format!("not JSON: {e}")))?;
        let url = |name: &str, value: Option<String>| -> Result<Url, ProviderError> {
            let text = value.ok_or_else(|| ProviderError::Document(format!("no {name}")))?;
            let url = Url::parse(&text)
                .map_err(|e| ProviderError::Document(format!("{name} is not a URL: {e}")))?;
            if fetch::is_secure(&url) {
                Ok(url)
            } else {
                Err(ProviderError::Document(format!(
                    "{name} must be https (plain http only on loopback)"
                )))
            }
        };
        let endpoints = Endpoints {
            authorization: url("authorization_endpoint", doc.authorization_endpoint)?,
            token: url("token_endpoint", doc.token_endpoint)?,
            end_session: match doc.end_session_endpoint {
                Some(e) => Some(url("end_session_endpoint", Some(e))?),
                None => None,
            },
        };
        *self.cached.lock() = Some((endpoints.clone(), Instant::now()));
        Ok(endpoints)
    }
}
