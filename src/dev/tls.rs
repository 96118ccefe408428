//! `tollgate dev`'s certificate authority: made once and kept next to the signing key
//! (`dev-ca.pem`, and `dev-ca-key.pem` with mode 0600), so that an SDK told to trust it once
//! keeps trusting it. Each start issues a fresh server certificate from it for `127.0.0.1`,
//! `localhost` and `::1`, held in memory only.
//!
//! For local development only: anyone who can read the key file can impersonate any host to
//! a client that trusts this CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::issuer::write_private;

/// The CA certificate's file name, beside the signing key.
pub const CA_CERT_FILE: &str = "dev-ca.pem";
/// The CA key's file name (mode 0600).
pub const CA_KEY_FILE: &str = "dev-ca-key.pem";
/// The names the server certificate is for.
pub const SERVER_NAMES: [&str; 3] = ["127.0.0.1", "localhost", "::1"];
/// How long a CA made today is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a server certificate is valid (a new one is made at every start).
const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Tolerance for clocks a little behind.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Why the CA or a server certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Certificate generation failed.
    #[error("making a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The files are not a certificate and the key it was made for.
    #[error("{} does not hold the certificate of the key in {}; delete both to make a new CA", cert.display(), key.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the server certificate.
    #[error("the https server configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The development CA.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_path: Option<PathBuf>,
}

impl DevCa {
    /// A CA with a fresh key, kept in memory only (tests).
    pub fn generate() -> Result<DevCa, CaError> {
        let key = KeyPair::generate()?;
        let cert_pem = ca_params(SystemTime::now()).self_signed(&key)?.pem();
        Ok(DevCa {
            issuer: Issuer::new(ca_params(SystemTime::now()), key),
            cert_pem,
            cert_path: None,
        })
    }

    /// The CA kept in `dir` ([`CA_CERT_FILE`], [`CA_KEY_FILE`]), made there on first use. A
    /// certificate file that does not belong to the key is an error rather than replaced, so
    /// that a trusted CA never changes behind the user's back.
    pub fn load_or_create(dir: &Path) -> Result<DevCa, CaError> {
        let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CaError::Io { path, source }
        };
        let key = match std::fs::read_to_string(&key_path) {
            Ok(pem) => KeyPair::from_pem(&pem)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                let key = KeyPair::generate()?;
                write_private(&key_path, key.serialize_pem().as_bytes()).map_err(io(&key_path))?;
                // A certificate left from an older key is replaced with the key.
                let _ = std::fs::remove_file(&cert_path);
                key
            }
            Err(e) => return Err(io(&key_path)(e)),
        };
        let cert_pem = match std::fs::read_to_string(&cert_path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pem = ca_params(SystemTime::now()).self_signed(&key)?.pem();
                std::fs::write(&cert_path, &pem).map_err(io(&cert_path))?;
                pem
            }
            Err(e) => return Err(io(&cert_path)(e)),
        };
        if !certifies(&cert_pem, &key) {
            return Err(CaError::Mismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        Ok(DevCa {
            issuer: Issuer::new(ca_params(SystemTime::now()), key),
            cert_pem,
            cert_path: Some(cert_path),
        })
    }

    /// The CA certificate, PEM: what clients must trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The file holding [`DevCa::cert_pem`], when the CA is kept in one.
    pub fn cert_path(&self) -> Option<&Path> {
        self.cert_path.as_deref()
    }

    /// A server configuration with a new certificate for [`SERVER_NAMES`] issued by this CA,
    /// speaking HTTP/1.1.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let (cert, key) = self.issue_server_certificate()?;
        let mut config = rustls::ServerConfig::builder_with_provider(crate::proxy::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A new server certificate for [`SERVER_NAMES`] and its key.
    fn issue_server_certificate(
        &self,
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), CaError> {
        let key = KeyPair::generate()?;
        let names: Vec<String> = SERVER_NAMES.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "tollgate dev server");
        let now = SystemTime::now();
        params.not_before = at(now - BACKDATE);
        params.not_after = at(now + SERVER_VALIDITY);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // OpenSSL's strict verification (Python 3.13) wants the authority key identifier.
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((cert.der().clone(), key))
    }
}

/// The CA's parameters. The subject is fixed, so a CA read back from its files issues
/// certificates whose issuer name is its subject.
fn ca_params(now: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(
        DnType::CommonName,
        "tollgate dev CA (local development only)",
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = at(now - BACKDATE);
    params.not_after = at(now + CA_VALIDITY);
    params
}

/// Whether the first certificate in `pem` carries `key`'s public key.
fn certifies(pem: &str, key: &KeyPair) -> bool {
    let Some(Ok(der)) = CertificateDer::pem_slice_iter(pem.as_bytes()).next() else {
        return false;
    };
    webpki::EndEntityCert::try_from(&der).is_ok_and(|cert| {
        cert.subject_public_key_info().as_ref() == key.subject_public_key_info().as_slice()
    })
}

fn at(time: SystemTime) -> time::OffsetDateTime {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = DevCa::load_or_create(dir.path()).unwrap();
        let again = DevCa::load_or_create(dir.path()).unwrap();
        assert_eq!(first.cert_pem(), again.cert_pem());
        assert_eq!(
            again.cert_path(),
            Some(dir.path().join(CA_CERT_FILE).as_path())
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Another CA's certificate beside this key is refused, not replaced.
        std::fs::write(
            dir.path().join(CA_CERT_FILE),
            DevCa::generate().unwrap().cert_pem(),
        )
        .unwrap();
        let refused = DevCa::load_or_create(dir.path()).err().unwrap();
        assert!(matches!(refused, CaError::Mismatch { .. }), "{refused}");
    }

    /// A server certificate from a CA read back from its files verifies against the CA
    /// certificate written when it was made, for every server name.
    #[test]
    fn server_certificates_chain_to_the_kept_ca() {
        let dir = tempfile::tempdir().unwrap();
        let written = DevCa::load_or_create(dir.path())
            .unwrap()
            .cert_pem()
            .to_owned();
        let ca = DevCa::load_or_create(dir.path()).unwrap();
        ca.server_config().unwrap();
        let (leaf, _) = ca.issue_server_certificate().unwrap();
        let anchor_der = CertificateDer::pem_slice_iter(written.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let anchor = webpki::anchor_from_trusted_cert(&anchor_der).unwrap();
        let cert = webpki::EndEntityCert::try_from(&leaf).unwrap();
        cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            rustls_pki_types::UnixTime::now(),
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .unwrap();
        for name in SERVER_NAMES {
            let name = rustls_pki_types::ServerName::try_from(name).unwrap();
            cert.verify_is_valid_for_subject_name(&name).unwrap();
        }
    }
}
