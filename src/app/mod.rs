//! The running application: listeners bound, background tasks started, and an orderly
//! shutdown. [`App::start`] is what `tollgate run`, `tollgate demo` and the tests all call.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::Response;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub mod admin;
pub mod reload;
pub mod state;

use crate::config::SharedEnv;
use crate::config::{Config, Loaded};
use crate::egress::{self, token_cache::TokenCache};
use crate::filewatch::FileWatch;
use crate::inbound;
use crate::proxy::listener::{self, Lifecycle, Limits};
use crate::proxy::tls::{CertResolver, TlsError};
use crate::proxy::{Body, ConnInfo};
use crate::telemetry::metrics::Metrics;
use admin::{Admin, Health};
use reload::{ReloadError, Reloaded, Reloader};
use state::{BuildContext, BuildError, Live, Snapshot};

/// Connections the admin listener accepts at once: probes and a scraper.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// How the application is started.
pub struct StartOptions {
    /// The configuration file, for reloads.
    pub config_path: PathBuf,
    /// The environment `${VAR}` references expand from.
    pub env: SharedEnv,
    /// Reload when the file changes and on SIGHUP.
    pub watch_config: bool,
}

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be bound.
    #[error("binding the {listener} listener to {addr}")]
    Bind {
        /// Which listener.
        listener: &'static str,
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error("loading the TLS certificate")]
    Tls(#[source] TlsError),
    /// The configuration could not be put into effect.
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// A started application. Dropping it does not stop it; call [`App::shutdown`].
pub struct App {
    /// The inbound listener's address, when there is a `[server]`.
    pub inbound_addr: Option<SocketAddr>,
    /// The admin listener's address.
    pub admin_addr: SocketAddr,
    /// The egress listener's address, when there is an `[egress]`.
    pub egress_addr: Option<SocketAddr>,
    live: Live,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    reloader: Arc<Reloader>,
    life: Lifecycle,
    /// Stops background tasks (reload, certificate watch) at once on shutdown.
    background: CancellationToken,
    grace: Duration,
}

impl App {
    /// Binds every listener and starts serving `loaded`.
    pub async fn start(loaded: Loaded, options: StartOptions) -> Result<App, StartError> {
        for warning in &loaded.warnings {
            tracing::warn!(%warning, "configuration warning");
        }
        let metrics = Arc::new(Metrics::new());
        let config = loaded.config.clone();
        let life = Lifecycle::new();
        let background = CancellationToken::new();
        // The egress listener is bound at start only, so the token cache exists only then.
        let tokens = config.egress.is_some().then(|| {
            TokenCache::new(
                options.env.clone(),
                metrics.clone(),
                life.tracker.clone(),
                background.clone(),
            )
        });
        let cx = BuildContext {
            metrics: &metrics,
            tasks: Some((&life.tracker, &background)),
            env: &*options.env,
            tokens: tokens.clone(),
        };
        let Prepared { snapshot, tls } = prepare(loaded.config, &cx)?;
        let live = Live::new(snapshot);
        let health = Arc::new(Health::default());
        let reloader = Arc::new(Reloader::new(
            options.config_path.clone(),
            options.env.clone(),
            live.clone(),
            metrics.clone(),
            (life.tracker.clone(), background.clone()),
        ));

        let admin_listener = bind("admin", config.admin.listen).await?;
        let admin_addr = local_addr(&admin_listener, config.admin.listen);
        let inbound_addr = match &config.server {
            Some(server) => {
                let listener = bind("inbound", server.listen).await?;
                let addr = local_addr(&listener, server.listen);
                start_inbound(listener, &config, tls, &live, &metrics, &life, &background);
                Some(addr)
            }
            None => None,
        };
        let egress_addr = match (&config.egress, tokens) {
            (Some(e), Some(tokens)) => {
                let listener = bind("egress", e.listen).await?;
                let addr = local_addr(&listener, e.listen);
                start_egress(listener, &live, &metrics, &life);
                life.tracker.spawn(tokens.run());
                Some(addr)
            }
            _ => None,
        };
        start_admin(admin_listener, &live, &metrics, &health, &life);
        if options.watch_config {
            life.tracker
                .spawn(reload::on_changes(reloader.clone(), background.clone()));
        }
        health.bound.store(true, Ordering::Release);
        log_started(&config, inbound_addr, egress_addr, admin_addr);
        Ok(App {
            inbound_addr,
            admin_addr,
            egress_addr,
            live,
            metrics,
            health,
            reloader,
            life,
            background,
            grace: config
                .server
                .as_ref()
                .map_or(Duration::from_secs(10), |s| s.shutdown_grace),
        })
    }

    /// The metric families of this application.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The current snapshot holder.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// Reloads the configuration file now, as SIGHUP does.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        self.reloader.reload(true)
    }

    /// Stops accepting, lets in-flight requests finish within the configured grace period
    /// (`[server] shutdown_grace`), then drops what is left. Returns true if everything
    /// finished in time.
    pub async fn shutdown(self) -> bool {
        let grace = self.grace;
        self.shutdown_within(grace).await
    }

    /// [`App::shutdown`] with an explicit grace period.
    pub async fn shutdown_within(self, grace: Duration) -> bool {
        tracing::info!(grace = ?grace, "shutting down: draining in-flight requests");
        self.health.draining.store(true, Ordering::Release);
        self.background.cancel();
        self.life.begin_shutdown();
        self.life.tracker.close();
        let drained = tokio::time::timeout(grace, self.life.tracker.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(grace = ?grace, "grace period over: closing the connections still open");
            self.life.abort.cancel();
            self.life.tracker.wait().await;
        }
        drained
    }
}

/// What `run` builds from a valid configuration before it binds anything.
struct Prepared {
    /// The first snapshot: credentials have read the variables and files they name, and every
    /// CA file is parsed.
    snapshot: Snapshot,
    /// The inbound certificate, loaded and accepted by rustls.
    tls: Option<(Arc<CertResolver>, TlsAcceptor)>,
}

/// Every step of start-up that can fail before a listener is bound. [`preflight`] runs the
/// same function, so `tollgate check` fails exactly when `tollgate run` would fail here.
fn prepare(config: Config, cx: &BuildContext<'_>) -> Result<Prepared, StartError> {
    let tls = match config.server.as_ref().and_then(|s| s.tls.as_ref()) {
        None => None,
        Some(files) => {
            let resolver = CertResolver::load(files.clone()).map_err(StartError::Tls)?;
            let acceptor =
                TlsAcceptor::from(Arc::new(resolver.server_config().map_err(StartError::Tls)?));
            Some((resolver, acceptor))
        }
    };
    let snapshot = Snapshot::build(config, None, cx)?;
    Ok(Prepared { snapshot, tls })
}

/// What `tollgate check` runs after validation: every start-up step of [`App::start`] that
/// does not bind a listener, start a task or call the network. `env` is what `run` would
/// expand and read credentials from.
pub fn preflight(config: Config, env: SharedEnv) -> Result<(), StartError> {
    let metrics = Arc::new(Metrics::new());
    // Never run: it only carries `env` to the credentials, as at start.
    let tokens = config.egress.is_some().then(|| {
        TokenCache::new(
            env.clone(),
            metrics.clone(),
            tokio_util::task::TaskTracker::new(),
            CancellationToken::new(),
        )
    });
    let cx = BuildContext {
        metrics: &metrics,
        tasks: None,
        env: &*env,
        tokens,
    };
    prepare(config, &cx).map(drop)
}

async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            listener,
            addr,
            source,
        })
}

fn local_addr(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}

fn start_inbound(
    listener: TcpListener,
    config: &Config,
    tls: Option<(Arc<CertResolver>, TlsAcceptor)>,
    live: &Live,
    metrics: &Arc<Metrics>,
    life: &Lifecycle,
    background: &CancellationToken,
) {
    let server = config
        .server
        .as_ref()
        .expect("start_inbound is called with a [server]");
    let tls = tls.map(|(resolver, acceptor)| {
        let files = resolver.files().clone();
        // Watch before returning, so no change made after start is missed.
        let watch = FileWatch::new(&[&files.cert, &files.key])
            .inspect_err(|error| tracing::warn!(%error, "cannot watch the TLS files; the certificate will not be reloaded"))
            .ok();
        life.tracker
            .spawn(watch_certificate(resolver, watch, background.clone()));
        acceptor
    });
    let limits = Limits {
        max_connections: server.max_connections,
        header_read_timeout: server.header_read_timeout,
        max_header_bytes: server.max_header_bytes,
    };
    let shared = Arc::new(inbound::Shared {
        metrics: metrics.clone(),
        life: life.clone(),
    });
    let live = live.clone();
    let gauge = metrics.open_connections.with_label_values(&["inbound"]);
    let make = move |conn: ConnInfo| {
        // One allocation per connection; each request then clones a single Arc.
        let per_conn = Arc::new((conn, shared.clone(), live.clone()));
        service_fn(move |req| {
            let per_conn = per_conn.clone();
            let req = Box::new(req);
            // Boxed: hyper keeps a slot the size of the service's future for the life of an
            // HTTP/1.1 connection, and this one is ~1.2 KiB; boxed, the slot holds a pointer
            // and an idle keep-alive connection holds nothing (bench/idle-memory.sh). One
            // allocation per request, from mimalloc's thread-local free list.
            Box::pin(async move {
                // The snapshot of the moment, kept for the whole request.
                let snapshot = per_conn.2.load();
                inbound::serve(req, &per_conn.0, snapshot.inbound.as_ref(), &per_conn.1).await
            })
                as Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>
        })
    };
    life.tracker.spawn(listener::serve(
        listener,
        tls,
        limits,
        gauge,
        make,
        life.clone(),
    ));
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `listener` until shutdown.
fn start_admin(
    listener: TcpListener,
    live: &Live,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    life: &Lifecycle,
) {
    let admin = Arc::new(Admin {
        live: live.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
    });
    let limits = Limits {
        max_connections: ADMIN_MAX_CONNECTIONS,
        header_read_timeout: Duration::from_secs(10),
        max_header_bytes: 16 * 1024,
    };
    let gauge = metrics.open_connections.with_label_values(&["admin"]);
    let make = move |_conn: ConnInfo| {
        let admin = admin.clone();
        service_fn(move |req| {
            let admin = admin.clone();
            async move { admin::serve(req, &admin).await }
        })
    };
    life.tracker.spawn(listener::serve(
        listener,
        None,
        limits,
        gauge,
        make,
        life.clone(),
    ));
}

/// The one line that says tollgate is up, and where.
fn log_started(
    config: &Config,
    inbound: Option<SocketAddr>,
    egress: Option<SocketAddr>,
    admin: SocketAddr,
) {
    tracing::info!(
        inbound = inbound.map(|a| a.to_string()).as_deref(),
        egress = egress.map(|a| a.to_string()).as_deref(),
        admin = %admin,
        upstream = config.server.as_ref().map(|s| s.upstream.to_string()).as_deref(),
        routes = config.routes.len(),
        issuers = config.issuers.len(),
        egress_targets = config.egress.as_ref().map_or(0, |e| e.targets.len()),
        "tollgate started"
    );
}

/// Accepts egress connections on `listener` until shutdown.
fn start_egress(listener: TcpListener, live: &Live, metrics: &Arc<Metrics>, life: &Lifecycle) {
    let gauge = metrics.open_connections.with_label_values(&["egress"]);
    let shared = Arc::new((metrics.clone(), live.clone()));
    let make = move |_conn: ConnInfo| {
        let shared = shared.clone();
        service_fn(move |req| {
            let shared = shared.clone();
            async move {
                let snapshot = shared.1.load();
                egress::serve(req, snapshot.egress.as_ref(), &shared.0).await
            }
        })
    };
    life.tracker.spawn(listener::serve(
        listener,
        None,
        egress::LIMITS,
        gauge,
        make,
        life.clone(),
    ));
}

/// Reloads the TLS certificate when its files change; a bad new pair keeps the old one.
async fn watch_certificate(
    resolver: Arc<CertResolver>,
    watch: Option<FileWatch>,
    stop: CancellationToken,
) {
    let files = resolver.files().clone();
    let Some(mut watch) = watch else { return };
    let digests = |f: &crate::config::TlsFiles| {
        (
            crate::filewatch::file_digest(&f.cert),
            crate::filewatch::file_digest(&f.key),
        )
    };
    // The pair last tried, loaded or refused: a bad pair is reported once, not on every event.
    let mut seen = digests(&files);
    loop {
        tokio::select! {
            changed = watch.changed() => if !changed { return },
            () = stop.cancelled() => return,
        }
        let now = digests(&files);
        if now == seen {
            continue;
        }
        seen = now;
        match resolver.reload() {
            Ok(()) => {
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
            }
            Err(error) => {
                tracing::error!(%error, "TLS certificate reload failed; the old certificate stays")
            }
        }
    }
}
