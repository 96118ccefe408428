//! TLS: the server side (certificate from PEM files, swapped when the files change) and the
//! client side (webpki roots plus an optional extra CA file), both on rustls with aws-lc-rs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("reading {}: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The file held no certificate.
    #[error("{}: no certificate found", .0.display())]
    NoCertificate(PathBuf),
    /// The key or configuration was refused by rustls.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider used everywhere: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Client trust: the webpki (Mozilla) roots, plus the certificates in `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs = read_certs(path)?;
        for cert in certs {
            roots.add(cert)?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| TlsError::Pem {
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// Reads a certificate chain and its key from PEM files.
pub fn load_certified_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Pem {
        path: files.key.clone(),
        source,
    })?;
    let key = provider().key_provider.load_private_key(key)?;
    let certified = CertifiedKey::new(certs, key);
    certified.keys_match()?;
    Ok(certified)
}

/// The server certificate in use, swappable while connections are being accepted.
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
    files: TlsFiles,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("files", &self.files)
            .finish()
    }
}

impl CertResolver {
    /// Loads the files once; fails if they are unusable.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let key = load_certified_key(&files)?;
        Ok(Arc::new(CertResolver {
            current: ArcSwap::from_pointee(key),
            files,
        }))
    }

    /// The files the certificate comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the files again and swaps the certificate in; on error the old one stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load_certified_key(&self.files)?;
        self.current.store(Arc::new(key));
        Ok(())
    }

    /// A server configuration using this resolver, offering h2 and http/1.1 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
