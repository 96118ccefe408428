//! `tollgate demo`: the embedded default configuration in front of a built-in echo backend,
//! all on loopback, with curl lines that work as printed.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::app::{App, StartOptions};
use crate::config::{self, LogFormat};
use crate::dev::echo::Echo;

/// The demo configuration, also checked by CI as `config/demo.toml`.
const DEMO_TOML: &str = include_str!("../../config/demo.toml");

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Inbound port; when taken, any free port is used.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Admin port; when taken, any free port is used.
    #[arg(long, default_value_t = 9090)]
    admin_port: u16,
}

pub fn demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let _log = crate::telemetry::init(LogFormat::Text);
    let runtime = super::run::runtime(None)?;
    runtime.block_on(async {
        let echo = Echo::start(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("starting the echo backend")?;
        let listen = free_or_any(args.port);
        let admin = free_or_any(args.admin_port);
        let values = [
            ("DEMO_LISTEN", listen.to_string()),
            ("DEMO_UPSTREAM", format!("http://{}", echo.addr)),
            ("DEMO_ADMIN", admin.to_string()),
        ];
        let env = Arc::new(move |name: &str| {
            values
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        });
        let loaded = config::parse(DEMO_TOML, Path::new("config/demo.toml"), &*env)
            .context("the embedded demo configuration")?;
        let options = StartOptions {
            config_path: "config/demo.toml".into(),
            env,
            watch_config: false,
        };
        let app = App::start(loaded, options)
            .await
            .context("starting the demo")?;
        let inbound = app
            .inbound_addr
            .context("the demo has an inbound listener")?;
        println!("{}", banner(inbound, app.admin_addr, echo.addr));
        super::run::wait_for_stop_signal().await?;
        app.shutdown().await;
        echo.stop().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// `127.0.0.1:port` if that port is free now, else `127.0.0.1:0` (any free port).
fn free_or_any(port: u16) -> SocketAddr {
    let wanted = SocketAddr::from(([127, 0, 0, 1], port));
    match TcpListener::bind(wanted) {
        Ok(_) => wanted,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

fn banner(inbound: SocketAddr, admin: SocketAddr, echo: SocketAddr) -> String {
    [
        String::new(),
        format!("tollgate demo: proxy http://{inbound} -> echo backend http://{echo}"),
        String::new(),
        "  # 200: an anonymous route; the echo backend shows what it received".into(),
        format!("  curl -i http://{inbound}/public/hello"),
        String::new(),
        "  # 403: no route covers this path".into(),
        format!("  curl -i http://{inbound}/private"),
        String::new(),
        "  # health, readiness and metrics".into(),
        format!("  curl http://{admin}/readyz"),
        format!("  curl http://{admin}/metrics"),
        String::new(),
        "Press Ctrl-C to stop.".into(),
    ]
    .join("\n")
}
