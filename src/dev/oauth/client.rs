//! The web app registration: its id, secret, redirect URIs and certificates, and how a token
//! request proves it is that client: a secret in the form or by HTTP Basic (RFC 6749 §2.3.1),
//! or a client assertion (RFC 7523, checked in [`super::assertion`]).

use std::time::SystemTime;

use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use rustls_pki_types::CertificateDer;
use url::{Host, Url};

use super::error::{ErrorKind, OAuthError};
use super::{CALLBACK_PATH, Params, assertion};
use crate::credential::entra::JWT_BEARER;
use crate::dev::issuer::LocalIssuer;
use crate::telemetry::redact::Secret;

/// The one registered client.
pub(super) struct WebClient {
    pub id: String,
    secret: Secret<String>,
    redirect_uris: Vec<String>,
    certificates: Vec<Registered>,
}

/// A registered certificate and its thumbprints (`x5t#S256`, `x5t`).
struct Registered {
    der: CertificateDer<'static>,
    sha256: Vec<u8>,
    sha1: Vec<u8>,
}

/// How the client proved itself: `azpacr` (and `appidacr`) of its tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Proof {
    /// A client secret: `1`.
    Secret,
    /// A signed assertion, certificate or federated: `2`.
    Assertion,
}

impl Proof {
    pub fn acr(self) -> &'static str {
        match self {
            Proof::Secret => "1",
            Proof::Assertion => "2",
        }
    }
}

impl WebClient {
    pub fn new(
        id: String,
        secret: Secret<String>,
        redirect_uris: Vec<String>,
        certificates: Vec<CertificateDer<'static>>,
    ) -> WebClient {
        let certificates = certificates
            .into_iter()
            .map(|der| Registered {
                sha256: digest(&SHA256, der.as_ref()).as_ref().to_vec(),
                sha1: digest(&SHA1_FOR_LEGACY_USE_ONLY, der.as_ref())
                    .as_ref()
                    .to_vec(),
                der,
            })
            .collect();
        WebClient {
            id,
            secret,
            redirect_uris,
            certificates,
        }
    }

    pub fn secret(&self) -> &Secret<String> {
        &self.secret
    }

    /// Whether `uri` is a registered redirect URI: listed (exactly, as Entra matches), or a
    /// loopback `http(s)` URI ending in [`CALLBACK_PATH`].
    pub fn accepts_redirect(&self, uri: &str) -> bool {
        if self.redirect_uris.iter().any(|r| r == uri) {
            return true;
        }
        Url::parse(uri).is_ok_and(|url| {
            is_loopback_web(&url)
                && url.path().ends_with(CALLBACK_PATH)
                && url.query().is_none()
                && url.fragment().is_none()
        })
    }

    /// Whether sign-out may send the browser to `uri`: any loopback `http(s)` URL, or one at
    /// the origin of a listed redirect URI.
    pub fn accepts_logout_redirect(&self, uri: &str) -> bool {
        let Ok(url) = Url::parse(uri) else {
            return false;
        };
        if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        is_loopback_web(&url)
            || self
                .redirect_uris
                .iter()
                .filter_map(|r| Url::parse(r).ok())
                .any(|r| r.origin() == url.origin())
    }

    /// The registered certificate whose SHA-256 or SHA-1 thumbprint is `thumbprint`.
    pub fn certificate(&self, thumbprint: &[u8]) -> Option<&CertificateDer<'static>> {
        let mut all = self.certificates.iter();
        let found = all.find(|c| c.sha256 == thumbprint || c.sha1 == thumbprint);
        found.map(|c| &c.der)
    }

    /// Checks that a token request comes from this client, and how it proved it. The client
    /// id is the form's `client_id` or the Basic user name (they must agree when both are
    /// given); exactly one credential must be present.
    pub fn authenticate(
        &self,
        form: &Params,
        headers: &HeaderMap,
        issuer: &LocalIssuer,
        base: &str,
        now: SystemTime,
    ) -> Result<Proof, OAuthError> {
        let basic = basic_credentials(headers)?;
        let id = match (form.get("client_id"), &basic) {
            (Some(f), Some((b, _))) if f != b => {
                return Err(OAuthError::new(
                    ErrorKind::InvalidRequest,
                    900023,
                    "The client_id in the request body and in the Authorization header differ.",
                ));
            }
            (Some(f), _) => f,
            (None, Some((b, _))) => b.as_str(),
            (None, None) => return Err(OAuthError::missing("client_id")),
        };
        if id != self.id {
            return Err(OAuthError::new(
                ErrorKind::UnauthorizedClient,
                700016,
                format!(
                    "Application with identifier '{id}' was not found in the directory 'tollgate dev'."
                ),
            ));
        }
        let secrets = [
            form.get("client_secret"),
            basic.as_ref().map(|(_, s)| s.as_str()),
        ];
        let mut secrets = secrets.into_iter().flatten();
        let (secret, assertion) = (secrets.next(), form.get("client_assertion"));
        if secrets.next().is_some() || (secret.is_some() && assertion.is_some()) {
            return Err(OAuthError::new(
                ErrorKind::InvalidRequest,
                9002313,
                "Invalid request: more than one client credential was sent.",
            ));
        }
        match (secret, assertion) {
            (Some(secret), None) => self.check_secret(secret).map(|()| Proof::Secret),
            (None, Some(assertion)) => {
                if form.get("client_assertion_type") != Some(JWT_BEARER) {
                    let message = format!("client_assertion_type must be '{JWT_BEARER}'.");
                    return Err(OAuthError::new(ErrorKind::InvalidRequest, 50027, message));
                }
                assertion::verify(assertion, self, issuer, base, now).map(|()| Proof::Assertion)
            }
            _ => Err(OAuthError::new(
                ErrorKind::InvalidClient,
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )),
        }
    }

    fn check_secret(&self, given: &str) -> Result<(), OAuthError> {
        let expected = self.secret.expose().as_bytes();
        if aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), expected).is_ok() {
            return Ok(());
        }
        Err(OAuthError::new(
            ErrorKind::InvalidClient,
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                self.id
            ),
        ))
    }
}

/// `Authorization: Basic` as RFC 6749 §2.3.1 writes it: base64 of the form-encoded id, a colon,
/// the form-encoded secret. `None` without a Basic header.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        let message = "The Authorization header is not valid HTTP Basic client authentication.";
        OAuthError::new(ErrorKind::InvalidClient, 7000218, message)
    };
    let text = value.to_str().map_err(|_| malformed())?;
    let Some((scheme, encoded)) = text.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    Ok(Some((form_decode(id), form_decode(secret))))
}

fn form_decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// An `http` or `https` URL on a loopback host, without user information.
fn is_loopback_web(url: &Url) -> bool {
    let loopback = match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    loopback
        && matches!(url.scheme(), "http" | "https")
        && url.username().is_empty()
        && url.password().is_none()
}
