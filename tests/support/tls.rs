//! Test certificates from a throwaway CA, and a TLS client that reports which certificate
//! the server presented.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use super::Reply;

/// A certificate authority for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA with a fresh key.
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "tollgate test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        TestCa { issuer }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses) and its key, both PEM.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).expect("leaf parameters");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// The DER bytes of the first certificate in a PEM text.
pub fn der(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("valid PEM")
        .to_vec()
}

/// A rustls client configuration trusting only `ca_pem`, offering `alpn`.
pub fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(der(ca_pem)))
        .expect("CA certificate");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// GET `path` over TLS (verifying the server as `server_name` against `ca_pem`) with h2 by
/// ALPN; returns the reply and the certificate the server presented.
pub async fn get_h2(
    addr: SocketAddr,
    ca_pem: &str,
    server_name: &str,
    path: &str,
) -> (Reply, Vec<u8>) {
    try_get_h2(addr, ca_pem, server_name, path)
        .await
        .expect("TLS handshake")
}

/// [`get_h2`], or `None` when the handshake fails (the certificate does not verify, say).
pub async fn try_get_h2(
    addr: SocketAddr,
    ca_pem: &str,
    server_name: &str,
    path: &str,
) -> Option<(Reply, Vec<u8>)> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca_pem, &[b"h2"])));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    let tls = connector.connect(name, tcp).await.ok()?;
    let served = tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get(format!("https://{server_name}{path}"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(req).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    let reply = Reply {
        status: parts.status,
        headers: parts.headers,
        body,
        version: parts.version,
    };
    Some((reply, served))
}

/// A TLS connection to `addr` after a completed handshake (h2 offered), on which nothing is
/// sent.
pub async fn connect(
    addr: SocketAddr,
    ca_pem: &str,
    server_name: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca_pem, &[b"h2"])));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    connector.connect(name, tcp).await.expect("TLS handshake")
}

/// Whether the server closes a TLS connection within `within` (end of stream or an error such
/// as a missing close_notify), reading whatever it sends.
pub async fn closed_within(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    within: std::time::Duration,
) -> bool {
    use tokio::io::AsyncReadExt;
    let mut rest = Vec::new();
    tokio::time::timeout(within, tls.read_to_end(&mut rest))
        .await
        .is_ok()
}

/// A TLS front for a plain backend (the echo backend, say), with a certificate from `ca` for
/// 127.0.0.1: what an https upstream or target looks like to tollgate.
pub async fn tls_front(ca: &TestCa, backend: SocketAddr) -> SocketAddr {
    let (cert, key) = ca.issue(&["127.0.0.1"]);
    let acceptor = super::imds::acceptor(&cert, &key);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}
