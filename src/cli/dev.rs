//! `tollgate dev`: local development without Azure. Without a subcommand it serves the local
//! issuer and a managed-identity endpoint (IMDS and App Service protocols) on loopback and
//! prints the environment an app needs; `dev token` mints a token from the same issuer and
//! `dev jwks` prints its public keys. The key is kept in a file so tokens outlive the command.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use crate::config::{Algorithm, LogFormat, duration};
use crate::dev::identity::{
    APP_SERVICE_TOKEN_PATH, DEV_CLIENT_ID, DEV_OBJECT_ID, DEV_TENANT_ID, Identity, IdentityEndpoint,
};
use crate::dev::issuer::{DEV_AUDIENCE, DEV_ISSUER, LocalIssuer, SigningKey, TokenSpec};
use crate::dev::server::DevServer;

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
    /// Port on 127.0.0.1 for the issuer and the identity endpoint; 0 picks a free one.
    #[arg(long, default_value_t = 8079)]
    port: u16,
    /// An app role (`roles`) in every token the identity endpoint mints; repeat for more.
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Lifetime of minted tokens, such as 1h or 90s.
    #[arg(long, default_value = "1h")]
    lifetime: String,
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
    /// `aud`.
    #[arg(long, default_value = DEV_AUDIENCE)]
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
    Ok(TokenSpec {
        audience: args.aud.clone(),
        roles: args.roles.clone(),
        scopes: args.scopes.clone(),
        tenant: args.tid.clone(),
        object_id: Some(args.oid.clone()),
        client_app: args.azp.clone(),
        lifetime,
        extra,
    })
}

/// Serves the issuer and the identity endpoint until SIGINT or SIGTERM.
fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let lifetime =
        duration::parse(&args.lifetime).map_err(|e| anyhow::anyhow!("--lifetime: {e}"))?;
    let key_file = key_path(&args.key)?;
    let key = dev_key(&args.key)?;
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
        let server = DevServer::start(addr, issuer.clone(), endpoint.clone())
            .await
            .with_context(|| format!("listening on {addr} (--port 0 picks a free port)"))?;
        let printed = Banner {
            base: &server.url(),
            iss: &issuer.issuer,
            kid: &issuer.signing_key().kid,
            key_file: &key_file,
            identity: endpoint.identity(),
            header: endpoint.header().expose(),
        };
        println!("{}", printed.render());
        tracing::info!(addr = %server.addr, "tollgate dev is serving");
        super::run::wait_for_stop_signal().await?;
        server.stop().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// What `tollgate dev` prints at start: the environment for an app and tollgate config blocks.
struct Banner<'a> {
    base: &'a str,
    iss: &'a str,
    kid: &'a str,
    key_file: &'a Path,
    identity: &'a Identity,
    header: &'a str,
}

impl Banner<'_> {
    fn render(&self) -> String {
        let Banner { base, iss, .. } = self;
        let id = self.identity;
        let roles = if id.roles.is_empty() {
            "none (add --role R)".to_owned()
        } else {
            id.roles.join(", ")
        };
        let token_iss = if *iss == DEV_ISSUER {
            String::new()
        } else {
            format!(" --iss {iss}")
        };
        let lines = [
            format!("tollgate dev: local issuer and managed-identity endpoint on {base} (Ctrl-C stops)"),
            String::new(),
            format!("  issuer     {iss}  (discovery {base}/.well-known/openid-configuration)"),
            format!("  key        {}  (kid {})", self.key_file.display(), self.kid),
            format!("  identity   tid {}, client_id {}, oid {}", id.tenant_id, id.client_id, id.object_id),
            format!("  roles      {roles}; tokens live {}s; any user-assigned id asked for is granted", id.lifetime.as_secs()),
            String::new(),
            "# App Service style: every Azure SDK and tollgate's egress detect these.".into(),
            format!("export IDENTITY_ENDPOINT={base}{APP_SERVICE_TOKEN_PATH}"),
            format!("export IDENTITY_HEADER={}", self.header),
            String::new(),
            "# Or IMDS style, with IDENTITY_ENDPOINT and IDENTITY_HEADER unset: read by azure-identity".into(),
            "# and MSAL for Python, Azure.Identity (.NET), @azure/identity (JavaScript) and tollgate.".into(),
            "# Not IMDS_ENDPOINT: the SDKs take that for Azure Arc. Go and Rust: use App Service style.".into(),
            format!("export AZURE_POD_IDENTITY_AUTHORITY_HOST={base}"),
            String::new(),
            "# tollgate.toml, inbound: trust this issuer; audiences are the resources callers ask for".into(),
            "[[issuers]]".into(),
            "name = \"dev\"".into(),
            format!("issuer = \"{iss}\""),
            format!("discovery = \"{base}/.well-known/openid-configuration\""),
            format!("audiences = [\"{DEV_AUDIENCE}\"]"),
            String::new(),
            "# tollgate.toml, egress: tokens from this endpoint over the IMDS protocol".into(),
            "[credentials.mi]".into(),
            "kind = \"managed_identity\"".into(),
            format!("endpoint = \"{base}\""),
            String::new(),
            "# A token by hand, from the same key and issuer:".into(),
            format!("#   tollgate dev token{token_iss} --aud {DEV_AUDIENCE} --role {}", id.roles.first().map_or("R", String::as_str)),
        ];
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn banner(roles: &[&str], iss: &str) -> String {
        let identity = Identity {
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Identity::default()
        };
        Banner {
            base: "http://127.0.0.1:41000",
            iss,
            kid: "kid-1",
            key_file: Path::new("/k/dev-issuer.pem"),
            identity: &identity,
            header: "s3cret",
        }
        .render()
    }

    /// The lines from `first` up to the next blank line.
    fn block(text: &str, first: &str) -> String {
        let lines: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != first)
            .take_while(|l| !l.is_empty())
            .collect();
        assert!(!lines.is_empty(), "{first} not in\n{text}");
        lines.join("\n") + "\n"
    }

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

    #[test]
    fn the_printed_environment_names_both_protocols() {
        let text = banner(&["Orders.Read"], DEV_ISSUER);
        for line in [
            "export IDENTITY_ENDPOINT=http://127.0.0.1:41000/msi/token",
            "export IDENTITY_HEADER=s3cret",
            "export AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:41000",
            "#   tollgate dev token --aud api://tollgate-dev --role Orders.Read",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
        assert!(!text.contains("export IMDS_ENDPOINT"), "{text}");
        let other = banner(&[], "http://example.test/");
        assert!(
            other.contains("tollgate dev token --iss http://example.test/ "),
            "{other}"
        );
        assert!(other.contains("none (add --role R)"), "{other}");
    }

    #[test]
    fn the_printed_config_blocks_are_valid_tollgate_config() {
        let text = banner(&["Orders.Read"], DEV_ISSUER);
        let toml = format!(
            "[server]\nupstream = \"http://127.0.0.1:3000\"\n{}[[routes]]\nprefix = \"/\"\nroles_any = [\"Orders.Read\"]\n[egress]\nlisten = \"127.0.0.1:0\"\n[[egress.targets]]\nname = \"api\"\nurl = \"http://127.0.0.1:3001\"\nscope = \"api://tollgate-dev/.default\"\ncredential = \"mi\"\n{}",
            block(&text, "[[issuers]]"),
            block(&text, "[credentials.mi]"),
        );
        let loaded = crate::config::parse(&toml, Path::new("dev.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let issuer = &loaded.config.issuers[0];
        assert_eq!(issuer.issuer, DEV_ISSUER);
        assert!(loaded.config.credentials.contains_key("mi"));
    }
}
