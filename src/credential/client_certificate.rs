//! `kind = "client_certificate"`: an app registration's certificate, proven with a
//! `private_key_jwt` client assertion (RFC 7523). PS256 with `x5t#S256` by default, as
//! Entra now asks; RS256 with the SHA-1 `x5t` for older setups. The PEM file is read again at
//! every fetch, so a rotated certificate is picked up.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rsa::KeyPair;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::entra::TokenEndpoint;
use super::{AccessToken, BoxFuture, ClientAuthentication, Credential, CredentialError};
use crate::config::{Algorithm, ClientCertificateSettings, Lookup};
use crate::jose::{self, PrivateKey};
use crate::telemetry::redact::Secret;

/// Lifetime of an assertion: MSAL's 10 minutes; Entra allows no more.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

/// A certificate and its RSA key, ready to sign assertions.
pub struct Signer {
    key: PrivateKey,
    /// base64url of the certificate's SHA-256 (`x5t#S256`) or SHA-1 (`x5t`).
    thumbprint: String,
    algorithm: Algorithm,
}

impl Signer {
    /// Reads the first certificate and the RSA private key (PKCS#8 or PKCS#1) from `pem`.
    pub fn load(pem: &Path, algorithm: Algorithm) -> Result<Signer, CredentialError> {
        let setup =
            |what: &str| CredentialError::Setup(format!("certificate {}: {what}", pem.display()));
        let text = std::fs::read(pem).map_err(|e| setup(&e.to_string()))?;
        let cert = CertificateDer::pem_slice_iter(&text)
            .next()
            .ok_or_else(|| setup("no CERTIFICATE block"))?
            .map_err(|e| setup(&e.to_string()))?;
        let key = match PrivateKeyDer::from_pem_slice(&text)
            .map_err(|_| setup("no private key block"))?
        {
            PrivateKeyDer::Pkcs8(k) => KeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => KeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err(setup("the private key must be RSA")),
        }
        .map_err(|e| setup(&format!("unusable RSA key ({e})")))?;
        let digest = match algorithm {
            Algorithm::RS256 => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            _ => &aws_lc_rs::digest::SHA256,
        };
        let thumbprint = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(digest, cert.as_ref()));
        Ok(Signer {
            key: PrivateKey::Rsa(key),
            thumbprint,
            algorithm,
        })
    }

    /// A fresh assertion for `client_id` at `audience` (the token endpoint), valid from `now`
    /// for [`ASSERTION_LIFETIME`], with a new `jti`.
    pub fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<Secret<String>, CredentialError> {
        let (alg, thumb_name) = match self.algorithm {
            Algorithm::RS256 => (Algorithm::RS256, "x5t"),
            _ => (Algorithm::PS256, "x5t#S256"),
        };
        let mut header = serde_json::Map::new();
        header.insert(thumb_name.into(), self.thumbprint.clone().into());
        let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid_v4()?,
            "iat": iat,
            "nbf": iat,
            "exp": iat + ASSERTION_LIFETIME.as_secs(),
        });
        jose::encode(&self.key, alg, &header, &claims)
            .map(Secret::new)
            .map_err(|_| CredentialError::Setup("signing the client assertion failed".into()))
    }
}

/// A random (version 4) UUID, for `jti`; the randomness is aws-lc-rs's, as for the signature.
fn uuid_v4() -> Result<String, CredentialError> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b)
        .map_err(|_| CredentialError::Setup("no randomness for jti".into()))?;
    Ok(uuid::Builder::from_random_bytes(b).into_uuid().to_string())
}

/// An app registration authenticated by certificate.
pub struct ClientCertificate {
    client_id: String,
    certificate: PathBuf,
    algorithm: Algorithm,
    endpoint: TokenEndpoint,
}

impl ClientCertificate {
    /// Loads the certificate once now, so an unusable file fails at start.
    pub fn new(
        settings: &ClientCertificateSettings,
        ca_file: Option<&Path>,
        env: Lookup<'_>,
    ) -> Result<ClientCertificate, CredentialError> {
        let ClientCertificateSettings {
            tenant_id,
            client_id,
            certificate,
            assertion_algorithm,
            authority_host,
        } = settings;
        Signer::load(certificate, *assertion_algorithm)?;
        Ok(ClientCertificate {
            client_id: client_id.clone(),
            certificate: certificate.clone(),
            algorithm: *assertion_algorithm,
            endpoint: TokenEndpoint::new(authority_host.as_ref(), tenant_id, ca_file, env)?,
        })
    }
}

impl Credential for ClientCertificate {
    fn registration(&self) -> Option<super::Registration<'_>> {
        Some(super::Registration {
            client_id: &self.client_id,
            endpoint: &self.endpoint,
        })
    }

    fn client_auth<'a>(
        &'a self,
        token_url: &'a url::Url,
    ) -> BoxFuture<'a, Result<ClientAuthentication, CredentialError>> {
        Box::pin(async move {
            let signer = Signer::load(&self.certificate, self.algorithm)?;
            signer
                .assertion(&self.client_id, token_url.as_str(), SystemTime::now())
                .map(ClientAuthentication::Assertion)
        })
    }

    fn fetch<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
        Box::pin(async move {
            // The same proof as for a user grant, at this credential's own token endpoint.
            let auth = self.client_auth(self.endpoint.url()).await?;
            self.endpoint
                .client_credentials(&self.client_id, scope, (&auth).into())
                .await
        })
    }

    fn describe(&self) -> String {
        format!(
            "client certificate (client {}, {} {}) at {}",
            self.client_id,
            self.algorithm,
            self.certificate.display(),
            self.endpoint.url()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_fresh_and_well_formed() {
        let (a, b) = (uuid_v4().unwrap(), uuid_v4().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }

    proptest::proptest! {
        /// The uuid crate's version 4 text is what the hand-written one was: version and
        /// variant bits set (RFC 9562 §5.4), then lower-case 8-4-4-4-12 hex.
        #[test]
        fn v4_text_is_the_hand_written_one(mut b in proptest::array::uniform16(0u8..)) {
            let from_crate = uuid::Builder::from_random_bytes(b).into_uuid().to_string();
            b[6] = (b[6] & 0x0f) | 0x40;
            b[8] = (b[8] & 0x3f) | 0x80;
            let hex = hex::encode(b);
            let by_hand = format!(
                "{}-{}-{}-{}-{}",
                &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]
            );
            proptest::prop_assert_eq!(from_crate, by_hand);
        }
    }

    #[test]
    fn unusable_files_are_setup_errors() {
        let dir = std::env::temp_dir();
        let missing = dir.join("tollgate-no-such-cert.pem");
        assert!(matches!(
            Signer::load(&missing, Algorithm::PS256),
            Err(CredentialError::Setup(_))
        ));
    }
}
