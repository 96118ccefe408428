//! A real `redis-server` on a loopback port for the store's tests: started with nothing
//! persisted, ready once it answers `PING`, killed when dropped; optionally with a password, or
//! with a TLS port besides (certificates from a throwaway CA). The binary is `$REDIS_SERVER`,
//! else `redis-server` on the PATH (`ci/redis.sh` installs it).

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a server may take to answer its first `PING`.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A running `redis-server`, killed on drop.
pub struct RedisServer {
    port: u16,
    password: Option<String>,
    tls: Option<Tls>,
    child: Option<Child>,
}

/// The TLS port and the directory of the server's certificate, key and CA files.
struct Tls {
    port: u16,
    files: TempDir,
}

/// Certificates for a TLS test server: a CA, and a certificate for `localhost` it signed.
pub struct TestCertificates {
    /// The CA certificate, PEM: what a client must trust.
    pub ca: String,
    /// The server's certificate, PEM.
    pub cert: String,
    /// The server's private key, PEM.
    pub key: String,
}

impl RedisServer {
    /// A server on a free loopback port.
    pub async fn start() -> RedisServer {
        RedisServer::start_on(free_port(), None).await
    }

    /// A server that requires `password` (`--requirepass`).
    pub async fn start_with_password(password: &str) -> RedisServer {
        RedisServer::start_on(free_port(), Some(password.to_owned())).await
    }

    /// A server with a TLS port besides its plain one, presenting `certificates`.
    pub async fn start_tls(certificates: &TestCertificates) -> RedisServer {
        let files = tempfile::tempdir().expect("a directory for the TLS files");
        for (name, pem) in [
            ("ca.pem", &certificates.ca),
            ("cert.pem", &certificates.cert),
            ("key.pem", &certificates.key),
        ] {
            std::fs::write(files.path().join(name), pem).expect("write a TLS file");
        }
        let tls = Tls {
            port: free_port(),
            files,
        };
        RedisServer::launch(free_port(), None, Some(tls)).await
    }

    /// A server on `port` (which nothing else may hold).
    pub async fn start_on(port: u16, password: Option<String>) -> RedisServer {
        RedisServer::launch(port, password, None).await
    }

    async fn launch(port: u16, password: Option<String>, tls: Option<Tls>) -> RedisServer {
        let mut server = RedisServer {
            port,
            password,
            tls,
            child: None,
        };
        server.restart().await;
        server
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its TLS port.
    pub fn tls_port(&self) -> u16 {
        self.tls.as_ref().expect("a server started with TLS").port
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis://:PASSWORD@127.0.0.1:PORT/0`.
    pub fn url_with_password(&self, password: &str) -> String {
        format!("redis://:{password}@127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (killing it first if it runs), empty.
    pub async fn restart(&mut self) {
        self.kill();
        let mut command = Command::new(binary());
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        if let Some(tls) = &self.tls {
            let file = |name: &str| tls.files.path().join(name);
            command
                .args([
                    "--tls-port",
                    &tls.port.to_string(),
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(file("cert.pem"))
                .arg("--tls-key-file")
                .arg(file("key.pem"))
                .arg("--tls-ca-cert-file")
                .arg(file("ca.pem"));
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}); install it with ci/redis.sh",
                binary()
            )
        });
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Sends one command as the server's admin (authenticated when it has a password) and
    /// returns the first line of the reply.
    pub async fn command(&self, args: &[&str]) -> String {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))
            .await
            .expect("connect to redis-server");
        if let Some(password) = &self.password {
            let reply = send(&mut stream, &["AUTH", password]).await;
            assert_eq!(reply, "+OK", "AUTH to the test server");
        }
        send(&mut stream, args).await
    }

    /// Waits, bounded, until the server answers `PING` (`+PONG`, or `-NOAUTH` with a password).
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("redis-server exited at start: {status}");
            }
            if let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).await {
                let reply = send(&mut stream, &["PING"]).await;
                if reply.starts_with('+') || reply.starts_with('-') {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server not ready after {READY_WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl TestCertificates {
    /// A fresh CA and a `localhost` certificate from it.
    pub fn new() -> TestCertificates {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("server parameters")
            .signed_by(&key, &ca)
            .expect("server certificate");
        TestCertificates {
            ca: ca.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A port nothing listens on now: bound, then let go. redis-server cannot pick its own
/// (`--port 0` turns TCP off), so there is a window in which another process could take it.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// Writes `args` as a RESP array and reads the reply's first line ("" if the connection ends).
async fn send(stream: &mut TcpStream, args: &[&str]) -> String {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => reply.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&reply).trim_end().to_owned()
}
