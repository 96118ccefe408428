//! A real `redis-server` on a loopback port for the store's tests: started with nothing
//! persisted, ready once it answers `PING`, killed when dropped. The binary is `$REDIS_SERVER`,
//! else `redis-server` on the PATH (`ci/redis.sh` installs it).

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a server may take to answer its first `PING`.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A running `redis-server`, killed on drop.
pub struct RedisServer {
    port: u16,
    password: Option<String>,
    child: Option<Child>,
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

    /// A server on `port` (which nothing else may hold).
    pub async fn start_on(port: u16, password: Option<String>) -> RedisServer {
        let mut server = RedisServer {
            port,
            password,
            child: None,
        };
        server.restart().await;
        server
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
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
