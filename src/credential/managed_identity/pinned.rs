//! Service Fabric's token service presents a self-signed certificate: it is trusted by its
//! SHA-1 thumbprint (`IDENTITY_SERVER_THUMBPRINT`) instead of a chain. This is the
//! only place tollgate skips chain validation, and only for that one certificate.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::credential::CredentialError;
use crate::proxy::tls;

/// Strips `:` and white space and checks for 40 hex digits; returns them lower-case.
pub fn normalise_thumbprint(text: &str) -> Result<String, CredentialError> {
    let hex: String = text
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(CredentialError::Setup(
            "IDENTITY_SERVER_THUMBPRINT must be a SHA-1 thumbprint (40 hex digits)".into(),
        ))
    }
}

/// The SHA-1 thumbprint of a DER certificate, lower-case hex.
pub fn thumbprint(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        der,
    ))
}

/// A TLS client configuration that accepts exactly the certificate with `thumbprint`.
pub fn client_config(thumbprint: &str) -> Result<rustls::ClientConfig, CredentialError> {
    let provider = tls::provider();
    let verifier = Arc::new(Pinned {
        thumbprint: thumbprint.to_owned(),
        provider: provider.clone(),
    });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CredentialError::Setup(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

#[derive(Debug)]
struct Pinned {
    thumbprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = thumbprint(end_entity);
        // Constant time, as MSAL Go does: the thumbprint is not secret, but this costs nothing.
        aws_lc_rs::constant_time::verify_slices_are_equal(
            seen.as_bytes(),
            self.thumbprint.as_bytes(),
        )
        .map(|()| ServerCertVerified::assertion())
        .map_err(|_| {
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints() {
        let ok =
            normalise_thumbprint("01:23:45:67:89:AB:CD:EF:01:23:45:67:89:ab:cd:ef:01:23:45:67")
                .unwrap();
        assert_eq!(ok, "0123456789abcdef0123456789abcdef01234567");
        for bad in ["", "0123", "zz23456789abcdef0123456789abcdef01234567"] {
            assert!(normalise_thumbprint(bad).is_err(), "{bad}");
        }
        assert_eq!(
            thumbprint(b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
