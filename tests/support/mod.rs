//! Test support: tollgate started in-process from a TOML string, real backends on port 0,
//! and a client that sends request targets exactly as written.
//!
//! Every test reads top to bottom: start the mocks, start the proxy, send, check.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod echo;
pub mod graph;
pub mod imds;
pub mod issuer;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tollgate::app::{App, StartOptions};
use tollgate::telemetry::metrics::Metrics;

pub use client::{Reply, get, raw, send};
pub use echo::{Backend, WsEcho};

/// Logs to the test's output when `RUST_LOG` is set.
pub fn trace_init() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    }
}

/// Polls `check` until it is true, for at most ten seconds, then fails naming `what`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `[server]` and `[admin]` on loopback port 0, in front of `upstream`, plus `extra` lines for
/// `[server]`.
pub fn server(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{upstream}\"\n{extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    )
}

/// A running tollgate, its configuration file in a temporary directory.
pub struct TestProxy {
    /// The application.
    pub app: App,
    /// The inbound listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The configuration file.
    pub config_path: PathBuf,
    dir: TempDir,
}

impl TestProxy {
    /// Writes `toml` to a file and starts tollgate on it, watching it for changes.
    pub async fn start(toml: &str) -> TestProxy {
        TestProxy::start_with_env(toml, HashMap::new()).await
    }

    /// As [`TestProxy::start`], with an environment for `${VAR}` expansion.
    pub async fn start_with_env(toml: &str, env: HashMap<String, String>) -> TestProxy {
        trace_init();
        let dir = tempfile::tempdir().expect("temporary directory");
        let config_path = dir.path().join("tollgate.toml");
        std::fs::write(&config_path, toml).expect("write configuration");
        TestProxy::start_at(dir, config_path, env).await
    }

    /// Starts tollgate on a configuration file already in `dir`.
    pub async fn start_at(
        dir: TempDir,
        config_path: PathBuf,
        env: HashMap<String, String>,
    ) -> TestProxy {
        let env = Arc::new(move |name: &str| env.get(name).cloned());
        let loaded = tollgate::config::load(&config_path, &*env)
            .unwrap_or_else(|e| panic!("test configuration: {e}"));
        let options = StartOptions {
            config_path: config_path.clone(),
            env,
            watch_config: true,
        };
        let app = App::start(loaded, options).await.expect("tollgate starts");
        let addr = app.inbound_addr.expect("an inbound listener");
        let admin = app.admin_addr;
        TestProxy {
            app,
            addr,
            admin,
            config_path,
            dir,
        }
    }

    /// The temporary directory holding the configuration.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET `path` on the inbound listener.
    pub async fn get(&self, path: &str) -> Reply {
        get(self.addr, path, &[]).await
    }

    /// GET `path` on the admin listener.
    pub async fn admin_get(&self, path: &str) -> Reply {
        get(self.admin, path, &[]).await
    }

    /// Replaces the configuration file atomically (write, then rename), as an editor would.
    pub fn write_config(&self, toml: &str) {
        let tmp = self.dir.path().join(".tollgate.toml.tmp");
        std::fs::write(&tmp, toml).expect("write configuration");
        std::fs::rename(&tmp, &self.config_path).expect("replace configuration");
    }

    /// Rewrites the configuration file in place (truncate and write, as `echo >` and most
    /// editors' "write in place" do), keeping its inode.
    pub fn write_config_in_place(&self, toml: &str) {
        std::fs::write(&self.config_path, toml).expect("write configuration in place");
    }

    /// Sets the configuration file's modification time to now without changing its bytes.
    pub fn touch_config(&self) {
        std::fs::File::options()
            .append(true)
            .open(&self.config_path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()))
            .expect("touch configuration");
    }

    /// The metric families.
    pub fn metrics(&self) -> &Metrics {
        self.app.metrics()
    }

    /// `tollgate_requests_total` for one label set.
    pub fn requests(&self, route: &str, decision: &str, status: &str) -> u64 {
        self.metrics()
            .requests
            .with_label_values(&[route, decision, status])
            .get()
    }

    /// `tollgate_open_connections{listener}` (`inbound`, `egress`, `admin`).
    pub fn open_connections(&self, listener: &str) -> i64 {
        self.metrics()
            .open_connections
            .with_label_values(&[listener])
            .get()
    }

    /// `tollgate_config_reloads_total{result}`.
    pub fn reloads(&self, result: &str) -> u64 {
        self.metrics()
            .config_reloads
            .with_label_values(&[result])
            .get()
    }
}
