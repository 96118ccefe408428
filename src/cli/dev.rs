//! `tollgate dev token` and `tollgate dev jwks`: mint tokens from the local development issuer,
//! and print its public keys. The key is kept in a file so tokens outlive the command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use crate::config::{Algorithm, duration};
use crate::dev::issuer::{DEV_AUDIENCE, DEV_ISSUER, LocalIssuer, SigningKey, TokenSpec};

/// `tollgate dev` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DevCommand {
    /// Mint a token from the local development issuer.
    Token(Box<TokenArgs>),
    /// Print the local development issuer's JWKS (for `tollgate explain --jwks`).
    Jwks(KeyArgs),
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

/// Runs a `tollgate dev` subcommand.
pub fn dev(command: &DevCommand) -> anyhow::Result<ExitCode> {
    match command {
        DevCommand::Token(args) => {
            let spec = spec(args)?;
            let issuer = LocalIssuer::new(&args.iss, dev_key(&args.key)?);
            println!("{}", issuer.mint(&spec).context("signing the token")?);
        }
        DevCommand::Jwks(args) => {
            let key = dev_key(args)?;
            println!("{}", json!({ "keys": [key.jwk()] }));
        }
    }
    Ok(ExitCode::SUCCESS)
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
