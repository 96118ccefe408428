//! `tollgate demo`: the embedded default configuration in front of a built-in echo backend,
//! trusting a built-in local issuer, all on loopback, with curl lines that work as printed.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::app::{App, StartOptions};
use crate::config::{self, Algorithm, LogFormat};
use crate::dev::echo::Echo;
use crate::dev::issuer::{LocalIssuer, SigningKey, TokenSpec};
use crate::dev::server::DevServer;

/// The demo configuration, also checked by CI as `config/demo.toml`.
const DEMO_TOML: &str = include_str!("../../config/demo.toml");
/// The audience the demo's issuer is configured to accept.
const DEMO_AUDIENCE: &str = "api://tollgate-demo";
/// The port of the local issuer when it is free (`tollgate dev`'s): its URL is the `iss` of
/// the demo's tokens and the authorization server the MCP route's metadata names, so an OAuth
/// client that follows the metadata reaches it.
const ISSUER_PORT: u16 = 8079;

/// Arguments of `tollgate demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Inbound port; when taken, any free port is used.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Admin port; when taken, any free port is used.
    #[arg(long, default_value_t = 9090)]
    admin_port: u16,
}

/// Runs the demo until Ctrl-C.
pub fn demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let _log = crate::telemetry::init(LogFormat::Text);
    let runtime = super::run::runtime(None)?;
    runtime.block_on(async {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let echo = Echo::start(any)
            .await
            .context("starting the echo backend")?;
        let key = SigningKey::generate(Algorithm::RS256, "demo-key")
            .context("generating the demo signing key")?;
        let issuer_addr = free_or_any(ISSUER_PORT);
        let issuer_url = format!("http://{issuer_addr}/");
        let issuer = LocalIssuer::new(&issuer_url, key);
        // The issuer's keys, its sign-in provider and the managed identity, on one port.
        let dev = DevServer::builder()
            .addr(issuer_addr)
            .issuer(issuer.clone())
            .start()
            .await
            .context("starting the local issuer")?;
        let session_key = crate::inbound::session::seal::new_key()
            .map_err(|_| anyhow::anyhow!("no randomness for the session key"))?;

        let listen = free_or_any(args.port);
        let admin = free_or_any(args.admin_port);
        let values = [
            ("DEMO_LISTEN", listen.to_string()),
            ("DEMO_UPSTREAM", format!("http://{}", echo.addr)),
            ("DEMO_ADMIN", admin.to_string()),
            ("DEMO_ISSUER", issuer_url.clone()),
            ("DEMO_MCP_RESOURCE", format!("http://{listen}/mcp")),
            (
                "DEMO_DISCOVERY",
                format!("{}/.well-known/openid-configuration", dev.url()),
            ),
            ("DEMO_IDENTITY", dev.url()),
            ("DEMO_SESSION_KEY", session_key),
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
        wait_for_keys(&app).await?;
        let token = |role: &str| {
            let spec = TokenSpec {
                audience: DEMO_AUDIENCE.into(),
                roles: vec![role.into()],
                object_id: Some("00000000-0000-0000-0000-00000000de70".into()),
                lifetime: Duration::from_secs(24 * 3600),
                ..TokenSpec::default()
            };
            issuer.mint(&spec)
        };
        let inbound = app
            .inbound_addr
            .context("the demo has an inbound listener")?;
        let tokens = (token("reader")?, token("guest")?);
        // The MCP route's token names the resource itself (RFC 8707) and carries its scope.
        let mcp_token = issuer.mint(&TokenSpec {
            audience: format!("http://{inbound}/mcp"),
            scopes: vec!["mcp.tools".into()],
            object_id: Some("00000000-0000-0000-0000-00000000de70".into()),
            lifetime: Duration::from_secs(24 * 3600),
            ..TokenSpec::default()
        })?;
        println!(
            "{}",
            banner(inbound, app.admin_addr, echo.addr, &tokens, &mcp_token)
        );
        super::run::wait_for_stop_signal().await?;
        app.shutdown().await;
        dev.stop().await;
        echo.stop().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Waits (briefly) until the local issuer's keys are loaded, so the printed lines work at once.
async fn wait_for_keys(app: &App) -> anyhow::Result<()> {
    for _ in 0..200 {
        if app
            .live()
            .load()
            .inbound
            .as_ref()
            .is_some_and(|i| i.issuers.all_ready())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("the demo issuer's keys did not load")
}

/// `127.0.0.1:port` if that port is free now, else another port free now: a port, not 0,
/// because the MCP resource and the issuer name their URLs before anything is bound. Port 0
/// asks for any.
fn free_or_any(port: u16) -> SocketAddr {
    let wanted = SocketAddr::from(([127, 0, 0, 1], port));
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let listener = match TcpListener::bind(wanted) {
        Ok(l) if port != 0 => l,
        _ => match TcpListener::bind(any) {
            Ok(l) => l,
            Err(_) => return any,
        },
    };
    listener.local_addr().unwrap_or(any)
}

/// Headers a client might forge to claim another identity or origin, sent on the demo's first
/// curl line: tollgate removes all three, then sets the identity headers the token supports
/// (`X-User-Roles: reader`; the token has no name, so no `X-MS-CLIENT-PRINCIPAL-NAME`).
const FORGED: &str = "-H 'X-MS-CLIENT-PRINCIPAL-NAME: admin@contoso.com' -H 'X-User-Roles: Admin' -H 'X-Original-URL: /admin'";

fn banner(
    inbound: SocketAddr,
    admin: SocketAddr,
    echo: SocketAddr,
    (reader, guest): &(String, String),
    mcp: &str,
) -> String {
    [
        String::new(),
        format!("tollgate demo: proxy http://{inbound} -> echo backend http://{echo}"),
        String::new(),
        // One comment line: ci/promtool.sh reads the line after "# 200: a token" as the curl line.
        "  # 200: a token with the role \"reader\" plus forged headers: the echo backend shows the identity headers tollgate set, none of the forged values".into(),
        format!(
            "  curl -i {FORGED} -H 'Authorization: Bearer {reader}' http://{inbound}/api/orders"
        ),
        String::new(),
        "  # 401: no token".into(),
        format!("  curl -i http://{inbound}/api/orders"),
        String::new(),
        "  # 403: a valid token without the role".into(),
        format!("  curl -i -H 'Authorization: Bearer {guest}' http://{inbound}/api/orders"),
        String::new(),
        "  # 200 without a token: an anonymous route".into(),
        format!("  curl -i http://{inbound}/public/hello"),
        String::new(),
        "  # in a browser: sign in (pick a user, roles and groups) and see what the backend receives".into(),
        format!("  open http://{inbound}/web/"),
        String::new(),
        "  # health, readiness and metrics".into(),
        format!("  curl http://{admin}/readyz"),
        format!("  curl http://{admin}/metrics"),
        String::new(),
        // After the lines above: ci/promtool.sh and the tests read the first ones in order.
        "  # 401: an MCP client's first call; WWW-Authenticate names the resource metadata (resource_metadata=...)".into(),
        format!("  curl -i http://{inbound}/mcp"),
        String::new(),
        "  # 200: that metadata: the local issuer is the authorization server (its discovery is at <issuer>/.well-known/openid-configuration)".into(),
        format!("  curl -i http://{inbound}/.well-known/oauth-protected-resource/mcp"),
        String::new(),
        "  # 200: a token for the MCP resource (aud is the resource's URL, scp mcp.tools)".into(),
        format!("  curl -i -H 'Authorization: Bearer {mcp}' http://{inbound}/mcp"),
        String::new(),
        "Press Ctrl-C to stop.".into(),
    ]
    .join("\n")
}
