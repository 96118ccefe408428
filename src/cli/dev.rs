//! `tollgate dev`: local development without Azure. Without a subcommand it serves the local
//! issuer, a managed-identity endpoint (IMDS and App Service protocols) and an Entra-like
//! sign-in provider (authorization code, refresh, client credentials, end session) on
//! loopback http and https, and prints the environment an app needs (`banner`); `dev token`
//! mints a token from the same issuer and `dev jwks` prints its public keys. The key and the
//! https CA are kept in files so tokens and trust outlive the command.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::config::{Algorithm, LogFormat, duration};
use crate::dev::identity::{
    DEV_CLIENT_ID, DEV_OBJECT_ID, DEV_TENANT_ID, Identity, IdentityEndpoint,
};
use crate::dev::issuer::{DEV_AUDIENCE, DEV_ISSUER, LocalIssuer, SigningKey, TokenSpec};
use crate::dev::oauth::{DEV_CLIENT_SECRET, DEV_WEB_CLIENT_ID, DevUser, OAuthSettings};
use crate::dev::server::{DevServer, DevServerBuilder, StartError};
use crate::dev::tls::DevCa;
use crate::telemetry::redact::Secret;
use banner::{Banner, SECRET_ENV};

mod banner;

/// The https port unless `--https-port` says otherwise (with `--port 0`, a free one).
pub const DEFAULT_HTTPS_PORT: u16 = 8443;

/// `tollgate dev`: serve (no subcommand), or one of the subcommands.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DevArgs {
    #[command(subcommand)]
    command: Option<DevCommand>,
    #[command(flatten)]
    serve: ServeArgs,
}

/// `tollgate dev` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DevCommand {
    /// Mint a token from the local development issuer.
    Token(Box<TokenArgs>),
    /// Print the local development issuer's JWKS (for `tollgate explain --jwks`).
    Jwks(KeyArgs),
    /// Print a new random session key (base64 of 32 bytes) for `[login] session_keys`.
    SessionKey,
}

/// What `tollgate dev` serves and what its tokens say.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// Port on 127.0.0.1 for plain http; 0 picks a free one.
    #[arg(long, default_value_t = 8079)]
    port: u16,
    /// Port on 127.0.0.1 for https (the same endpoints, with a certificate from the dev CA
    /// kept beside the key): 8443 by default (a free one if 8443 is taken or --port is 0);
    /// 0 picks a free one.
    #[arg(long, value_name = "PORT")]
    https_port: Option<u16>,
    /// Serve plain http only: no dev CA, no https.
    #[arg(long, conflicts_with = "https_port")]
    no_https: bool,
    /// An app role (`roles`) in every token the identity endpoint and the client credentials
    /// grant mint, and the roles the sign-in page suggests; repeat for more.
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Lifetime of minted tokens (managed identity and sign-in access tokens), such as 1h or
    /// 90s.
    #[arg(long, default_value = "1h")]
    lifetime: String,
    /// The secret of the sign-in web app (client id d3e7d3e7-0000-4000-8000-0000000000a1).
    #[arg(long, env = SECRET_ENV, default_value = DEV_CLIENT_SECRET, hide_env_values = true)]
    client_secret: String,
    /// A redirect URI of the web app besides loopback ones ending in
    /// /.auth/login/aad/callback (matched exactly); repeat for more.
    #[arg(long = "redirect-uri", value_name = "URI")]
    redirect_uris: Vec<String>,
    /// A PEM certificate whose key may sign the web app's client assertions
    /// (private_key_jwt); repeat for more.
    #[arg(long = "client-certificate", value_name = "FILE")]
    client_certificates: Vec<PathBuf>,
    /// `tid` of minted tokens.
    #[arg(long, default_value = DEV_TENANT_ID)]
    tenant_id: String,
    /// Client id (`appid`, `azp`) of the system-assigned identity.
    #[arg(long, default_value = DEV_CLIENT_ID)]
    client_id: String,
    /// Object id (`oid`) of the system-assigned identity.
    #[arg(long, default_value = DEV_OBJECT_ID)]
    object_id: String,
    /// `iss`; keep the default so that `tollgate dev token` tokens verify here too.
    #[arg(long, default_value = DEV_ISSUER)]
    iss: String,
}

/// Which development key to use.
#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    /// The issuer's private key, created on first use. Defaults to
    /// `$XDG_CONFIG_HOME/tollgate/dev-issuer.pem` (`~/.config/tollgate/dev-issuer.pem`).
    #[arg(long, env = "TOLLGATE_DEV_KEY", value_name = "FILE")]
    key: Option<PathBuf>,
}

/// What the token says.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// `aud` (api://AzureADTokenExchange for a workload-identity token file).
    #[arg(long, visible_alias = "audience", default_value = DEV_AUDIENCE)]
    aud: String,
    /// An app role (`roles`); repeat for more.
    #[arg(long = "role")]
    roles: Vec<String>,
    /// A delegated scope (`scp`); repeat for more.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// `tid`.
    #[arg(long)]
    tid: Option<String>,
    /// `oid` (also `sub`).
    #[arg(long, default_value = "00000000-0000-0000-0000-00000000d3e7")]
    oid: String,
    /// `azp`, the calling application.
    #[arg(long)]
    azp: Option<String>,
    /// Lifetime, such as 1h or 90s.
    #[arg(long, default_value = "1h")]
    exp: String,
    /// `iss`.
    #[arg(long, default_value = DEV_ISSUER)]
    iss: String,
    /// Any other claim as NAME=VALUE (VALUE parsed as JSON when it is JSON); repeatable.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    claims: Vec<String>,
    /// An overage token for a user in N groups: no `groups` claim, `_claim_names` and
    /// `_claim_sources` as Entra writes them, and the `oid` of the `tollgate dev` Graph
    /// stand-in's user in N groups (6e0a9e00-0000-4000-8000-<N as 12 digits>).
    #[arg(long, value_name = "N", conflicts_with = "oid")]
    groups_overage: Option<u32>,
    /// Mint N distinct tokens, one a line (the `uti` of each ends in its number), e.g. for
    /// load tests.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,
}

/// The development key file: the flag, else `$XDG_CONFIG_HOME`, else `~/.config`.
fn key_path(args: &KeyArgs) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.key {
        return Ok(p.clone());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .context("no --key given and neither XDG_CONFIG_HOME nor HOME is set")?;
    Ok(base.join("tollgate").join("dev-issuer.pem"))
}

/// The development issuer's key, created on first use.
pub fn dev_key(args: &KeyArgs) -> anyhow::Result<SigningKey> {
    let path = key_path(args)?;
    SigningKey::load_or_create(&path, Algorithm::RS256)
        .with_context(|| format!("the development key {}", path.display()))
}

/// Runs `tollgate dev` or one of its subcommands.
pub fn dev(args: &DevArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        None => serve(&args.serve),
        Some(command) => subcommand(command),
    }
}

fn subcommand(command: &DevCommand) -> anyhow::Result<ExitCode> {
    match command {
        DevCommand::Token(args) => {
            let spec = spec(args)?;
            let issuer = LocalIssuer::new(&args.iss, dev_key(&args.key)?);
            if args.count == 1 {
                println!("{}", issuer.mint(&spec).context("signing the token")?);
            } else {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                mint_distinct(&issuer, &spec, args.count, |token| {
                    writeln!(out, "{token}").context("writing the tokens")
                })?;
                out.flush().context("writing the tokens")?;
            }
        }
        DevCommand::Jwks(args) => {
            let key = dev_key(args)?;
            println!("{}", json!({ "keys": [key.jwk()] }));
        }
        DevCommand::SessionKey => {
            let key = crate::inbound::session::seal::new_key().context("making a session key")?;
            println!("{key}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Mints `count` tokens for `spec` that differ in their `uti` (`dev-<now>-<n>`, n from 1),
/// handing each to `emit` as it is signed.
fn mint_distinct(
    issuer: &LocalIssuer,
    spec: &TokenSpec,
    count: u32,
    mut emit: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut spec = spec.clone();
    for n in 1..=count {
        spec.extra
            .insert("uti".to_owned(), Value::String(format!("dev-{now}-{n}")));
        emit(&issuer.mint(&spec).context("signing the token")?)?;
    }
    Ok(())
}

/// The token described by the flags.
pub fn spec(args: &TokenArgs) -> anyhow::Result<TokenSpec> {
    let lifetime: Duration =
        duration::parse(&args.exp).map_err(|e| anyhow::anyhow!("--exp: {e}"))?;
    let mut extra = serde_json::Map::new();
    for claim in &args.claims {
        let (name, value) = claim
            .split_once('=')
            .with_context(|| format!("--claim {claim:?}: expected NAME=VALUE"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        extra.insert(name.to_owned(), value);
    }
    let oid = match args.groups_overage {
        None => args.oid.clone(),
        Some(groups) => {
            let oid = crate::dev::graph::overage_user(groups);
            let tid = args.tid.as_deref().unwrap_or(DEV_TENANT_ID);
            extra.extend(crate::dev::graph::overage_claims(tid, &oid));
            oid
        }
    };
    Ok(TokenSpec {
        audience: args.aud.clone(),
        roles: args.roles.clone(),
        scopes: args.scopes.clone(),
        tenant: args.tid.clone(),
        object_id: Some(oid),
        client_app: args.azp.clone(),
        lifetime,
        extra,
    })
}

/// Serves the issuer, the identity endpoint and the sign-in provider until SIGINT or SIGTERM.
fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let lifetime =
        duration::parse(&args.lifetime).map_err(|e| anyhow::anyhow!("--lifetime: {e}"))?;
    let key_file = key_path(&args.key)?;
    let key = dev_key(&args.key)?;
    let ca = if args.no_https {
        None
    } else {
        let dir = key_file.parent().unwrap_or(Path::new("."));
        let ca = DevCa::load_or_create(dir).context("the dev CA for https")?;
        Some(Arc::new(ca))
    };
    let settings = oauth_settings(args, lifetime)?;
    let identity = Identity {
        tenant_id: args.tenant_id.clone(),
        client_id: args.client_id.clone(),
        object_id: args.object_id.clone(),
        roles: args.roles.clone(),
        lifetime,
    };
    let _log = crate::telemetry::init(LogFormat::Text);
    let runtime = super::run::runtime(Some(1))?;
    runtime.block_on(async {
        let issuer = LocalIssuer::new(&args.iss, key);
        let header = IdentityEndpoint::generate_header().context("generating IDENTITY_HEADER")?;
        let endpoint = Arc::new(IdentityEndpoint::new(issuer.clone(), identity, header));
        let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
        let builder = DevServer::builder()
            .addr(addr)
            .issuer(issuer.clone())
            .identity(endpoint.clone())
            .oauth(settings.clone());
        let server = start(builder, ca.clone(), args).await?;
        let https = server.https_url();
        let ca_file = ca.as_ref().and_then(|ca| ca.cert_path());
        let printed = Banner {
            base: &server.url(),
            https: https.as_deref().zip(ca_file),
            iss: &issuer.issuer,
            kid: &issuer.signing_key().kid,
            key_file: &key_file,
            identity: endpoint.identity(),
            header: endpoint.header().expose(),
            web_client_id: &settings.client_id,
            web_client_secret: settings.client_secret.expose(),
            redirect_uris: &settings.redirect_uris,
        };
        println!("{}", printed.render());
        tracing::info!(addr = %server.addr, https = ?server.https_addr, "tollgate dev is serving");
        super::run::wait_for_stop_signal().await?;
        server.stop().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// The sign-in provider the flags describe.
fn oauth_settings(args: &ServeArgs, lifetime: Duration) -> anyhow::Result<OAuthSettings> {
    for uri in &args.redirect_uris {
        url::Url::parse(uri).with_context(|| format!("--redirect-uri {uri}"))?;
    }
    let mut certificates = Vec::new();
    for path in &args.client_certificates {
        let cert = CertificateDer::pem_file_iter(path)
            .ok()
            .and_then(|mut certs| certs.next())
            .and_then(Result::ok)
            .with_context(|| {
                format!(
                    "--client-certificate {}: no PEM certificate",
                    path.display()
                )
            })?;
        certificates.push(cert);
    }
    Ok(OAuthSettings {
        client_id: DEV_WEB_CLIENT_ID.to_owned(),
        client_secret: Secret::new(args.client_secret.clone()),
        redirect_uris: args.redirect_uris.clone(),
        certificates,
        tenant_id: args.tenant_id.clone(),
        app_roles: args.roles.clone(),
        user: DevUser {
            roles: args.roles.clone(),
            ..DevUser::default()
        },
        access_token_lifetime: lifetime,
    })
}

/// Starts the listeners; when the default https port is taken, https moves to a free port
/// (and says so) rather than failing.
async fn start(
    builder: DevServerBuilder,
    ca: Option<Arc<DevCa>>,
    args: &ServeArgs,
) -> anyhow::Result<DevServer> {
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let Some(ca) = ca else {
        return builder
            .start()
            .await
            .with_context(|| format!("listening on {addr} (--port 0 picks a free port)"));
    };
    let port = match (args.https_port, args.port) {
        (Some(port), _) => port,
        (None, 0) => 0,
        (None, _) => DEFAULT_HTTPS_PORT,
    };
    let https = SocketAddr::from(([127, 0, 0, 1], port));
    let first = builder.clone().https(ca.clone(), https).start().await;
    let taken = matches!(&first, Err(StartError::Bind { addr, source })
        if *addr == https && source.kind() == std::io::ErrorKind::AddrInUse);
    if taken && args.https_port.is_none() {
        tracing::warn!(
            port,
            "the https port is taken; https moves to a free port (--https-port sets one)"
        );
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        return builder
            .https(ca, any)
            .start()
            .await
            .context("starting tollgate dev");
    }
    first.context("starting tollgate dev (--port 0 and --https-port 0 pick free ports)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_mints_distinct_tokens_that_differ_only_in_uti() {
        let key = crate::dev::issuer::SigningKey::generate(Algorithm::RS256, "k").unwrap();
        let issuer = LocalIssuer::new(DEV_ISSUER, key);
        let spec = TokenSpec {
            audience: "api://orders".into(),
            roles: vec!["reader".into()],
            lifetime: Duration::from_secs(60),
            ..TokenSpec::default()
        };
        let mut tokens = Vec::new();
        mint_distinct(&issuer, &spec, 3, |t| {
            tokens.push(t.to_owned());
            Ok(())
        })
        .unwrap();
        let payload = |t: &str| -> Value {
            use base64::Engine;
            let part = t.split('.').nth(1).unwrap();
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        };
        let utis: Vec<Value> = tokens.iter().map(|t| payload(t)["uti"].clone()).collect();
        let now = utis[0]
            .as_str()
            .unwrap()
            .split('-')
            .nth(1)
            .unwrap()
            .to_owned();
        let expected: Vec<Value> = (1..=3).map(|n| json!(format!("dev-{now}-{n}"))).collect();
        assert_eq!(utis, expected);
        // Apart from `uti` (and the times, should a second have passed) they are one token.
        let rest = |t: &str| {
            let mut claims = payload(t);
            for c in ["uti", "iat", "nbf", "exp"] {
                claims.as_object_mut().unwrap().remove(c);
            }
            claims
        };
        assert!(tokens.iter().all(|t| rest(t) == rest(&tokens[0])));
        assert_eq!(rest(&tokens[0])["roles"], json!(["reader"]));
    }
}
