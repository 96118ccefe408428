//! `tollgate token`: acquire one egress target's token, once, and show when it expires and
//! what it claims: the first thing to run when a downstream API answers 401.

use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, bail};

use crate::config::{self, Config, Lookup};
use crate::credential::{self, response::format_utc};

/// `tollgate token` arguments.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(flatten)]
    config: super::ConfigArg,
    /// The egress target whose token to acquire.
    #[arg(long, value_name = "NAME")]
    target: String,
    /// Also print the token itself (it is a credential: mind where the output goes).
    #[arg(long)]
    raw: bool,
}

/// Runs `tollgate token`: prints the report, exit 0; or the error, exit 1.
pub fn token(args: &TokenArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(acquire(
        &args.config.config,
        &args.target,
        &config::process_env,
        args.raw,
    ))?;
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}

/// Loads `path`, acquires `target`'s token with one request, and returns the report.
pub async fn acquire(
    path: &Path,
    target: &str,
    env: Lookup<'_>,
    raw: bool,
) -> anyhow::Result<String> {
    let loaded = config::load(path, env)?;
    report(&loaded.config, target, env, raw).await
}

/// The report for `target` in a loaded configuration.
pub async fn report(
    config: &Config,
    target: &str,
    env: Lookup<'_>,
    raw: bool,
) -> anyhow::Result<String> {
    let targets = config
        .egress
        .as_ref()
        .map(|e| e.targets.as_slice())
        .unwrap_or_default();
    let Some(t) = targets.iter().find(|t| t.name == target) else {
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        bail!(
            "no egress target {target:?} (targets: {})",
            names.join(", ")
        );
    };
    let cred_config = config
        .credentials
        .get(&t.credential)
        .with_context(|| format!("no credential {:?}", t.credential))?;
    let cred = credential::build(cred_config, env)?;
    let mut out = String::new();
    let _ = writeln!(out, "target      {} -> {}", t.name, t.url);
    let _ = writeln!(out, "credential  {}: {}", t.credential, cred.describe());
    let _ = writeln!(out, "scope       {}", t.scope);
    let token = cred.fetch(&t.scope).await.with_context(|| {
        format!(
            "credential {:?} could not get a token for {}",
            t.credential, t.scope
        )
    })?;
    let left = token
        .expires_on
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .as_secs();
    let _ = writeln!(
        out,
        "expires     {} (in {}h {:02}m {:02}s)",
        format_utc(token.expires_on),
        left / 3600,
        left % 3600 / 60,
        left % 60
    );
    claims(&mut out, token.token.expose());
    if raw {
        let _ = writeln!(out, "token       {}", token.token.expose());
    }
    Ok(out)
}

/// The claims an operator checks first, one a line.
fn claims(out: &mut String, token: &str) {
    let Some(claims) = dangerous::claims_unverified(token) else {
        let _ = writeln!(
            out,
            "claims      none: the token is not a JWT (an opaque token)"
        );
        return;
    };
    let _ = writeln!(
        out,
        "claims      (decoded for display only; the signature is NOT verified)"
    );
    for name in [
        "aud", "iss", "appid", "azp", "oid", "sub", "tid", "roles", "scp", "idtyp",
    ] {
        let value = match claims.get(name) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(", "),
            Some(other) => other.to_string(),
            None => continue,
        };
        let _ = writeln!(out, "  {name:<6}    {value}");
    }
}

/// Reading a JWT without verifying it. Only for showing an operator what a token says; never
/// reachable from a request path, and nothing is decided on what it returns.
mod dangerous {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    /// The payload of a three-part JWT as a JSON object, signature unchecked.
    pub fn claims_unverified(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
        let mut parts = token.split('.');
        let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
        match serde_json::from_slice(&bytes).ok()? {
            serde_json::Value::Object(map) => Some(map),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_shown_and_opaque_tokens_said_so() {
        let payload = URL_SAFE_NO_PAD_TEST.encode(
            serde_json::json!({"aud":"api://x","roles":["a","b"],"oid":"o","exp":1}).to_string(),
        );
        let mut out = String::new();
        claims(&mut out, &format!("e30.{payload}.sig"));
        assert!(out.contains("NOT verified"), "{out}");
        assert!(out.contains("aud       api://x"), "{out}");
        assert!(out.contains("roles     a, b"), "{out}");
        assert!(!out.contains("exp"), "{out}");
        let mut out = String::new();
        claims(&mut out, "opaque-token");
        assert!(out.contains("not a JWT"), "{out}");
        assert!(dangerous::claims_unverified("a.!!.c").is_none());
    }

    use base64::Engine;
    const URL_SAFE_NO_PAD_TEST: base64::engine::GeneralPurpose =
        base64::engine::general_purpose::URL_SAFE_NO_PAD;
}
