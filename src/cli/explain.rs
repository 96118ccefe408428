//! `tollgate explain`: offline, what tollgate would do with one request: the route it matches,
//! every token check and route requirement with pass/fail, the decision, and the identity
//! headers the upstream would get. It calls the same functions the proxy does.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use http::Method;

use crate::config::{self, Config, Mode, PathMatch};
use crate::inbound::issuer::{Issuer, Issuers};
use crate::inbound::jwks::KeySet;
use crate::inbound::jwt::{self, Step};
use crate::inbound::{bearer, identity, policy, reject};
use crate::path;
use crate::telemetry::metrics::Metrics;

/// Exit code when the request would be refused (400, 401, 403, 503).
pub const DENIED: u8 = 3;

/// Arguments of `tollgate explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    config: super::ConfigArg,
    /// The bearer token, or @FILE to read it from a file.
    #[arg(long)]
    token: Option<String>,
    /// A JWKS document to verify with, instead of fetching each issuer's keys.
    #[arg(long, value_name = "FILE")]
    jwks: Option<PathBuf>,
    /// The request method, such as GET.
    method: String,
    /// The request path, as a client would send it (it is normalised first).
    path: String,
}

/// Where the signing keys come from.
pub enum Keys {
    /// Fetch each issuer's keys once.
    Fetch,
    /// Use this JWKS document for every issuer.
    Document(Vec<u8>),
}

/// Runs `tollgate explain`, printing the report.
pub fn explain(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let loaded = match config::load(&args.config.config, &config::process_env) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let token = match &args.token {
        Some(t) => Some(read_token(t)?),
        None => None,
    };
    let keys = match &args.jwks {
        Some(file) => Keys::Document(
            std::fs::read(file).with_context(|| format!("reading {}", file.display()))?,
        ),
        None => Keys::Fetch,
    };
    let method = Method::from_bytes(args.method.as_bytes()).context("invalid method")?;
    let runtime = super::run::runtime(Some(1))?;
    let (text, allowed) = runtime.block_on(report(
        &loaded.config,
        token.as_deref(),
        keys,
        &method,
        &args.path,
    ));
    print!("{text}");
    Ok(if allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(DENIED)
    })
}

fn read_token(arg: &str) -> anyhow::Result<String> {
    match arg.strip_prefix('@') {
        Some(file) => Ok(std::fs::read_to_string(Path::new(file))
            .with_context(|| format!("reading the token from {file}"))?
            .trim()
            .to_owned()),
        None => Ok(arg.trim().to_owned()),
    }
}

/// The explanation for one request, and whether it would be forwarded.
pub async fn report(
    config: &Config,
    token: Option<&str>,
    keys: Keys,
    method: &Method,
    raw_path: &str,
) -> (String, bool) {
    let mut out = String::new();
    let _ = writeln!(out, "request: {method} {raw_path}");
    if policy::is_miscased_method(method) {
        let _ = writeln!(
            out,
            "method: REFUSED: methods are case-sensitive: send {}\ndecision: 400 invalid_request",
            method.as_str().to_ascii_uppercase()
        );
        return (out, false);
    }
    let normalised = match path::normalise(raw_path.split('?').next().unwrap_or_default()) {
        Ok(n) => n,
        Err(e) => {
            let _ = writeln!(out, "path: REFUSED: {e}\ndecision: 400 invalid_request");
            return (out, false);
        }
    };
    let _ = writeln!(out, "path: {normalised}");
    let routes = crate::inbound::policy::Routes::new(config.routes.clone());
    let Some(route) = routes.find(method, &normalised) else {
        let _ = writeln!(
            out,
            "route: none matches\ndecision: 403 forbidden (no route allows this request)"
        );
        return (out, false);
    };
    let (kind, pattern) = match &route.path {
        PathMatch::Prefix(p) => ("prefix", p),
        PathMatch::Exact(p) => ("exact", p),
    };
    let _ = writeln!(
        out,
        "route: {:?} ({kind} {pattern}, {}:{}){}",
        route.name,
        config.source.display(),
        route.position.line,
        if route.mode == Mode::Audit {
            " [audit mode]"
        } else {
            ""
        }
    );
    let issuers = issuers(config, keys, &mut out).await;
    let token = token.map(|t| t.strip_prefix("Bearer ").unwrap_or(t));
    if route.allow_anonymous {
        let _ = writeln!(out, "anonymous route: no token needed");
        if let Some(token) = token {
            token_checks(&mut out, token, &issuers, config, None);
        }
        let _ = writeln!(out, "decision: allow (anonymous)");
        return (out, true);
    }
    let Some(token) = token else {
        let _ = writeln!(
            out,
            "token: none\ndecision: 401 (no error code: a bearer token is required)"
        );
        return (out, false);
    };
    let allowed = token_checks(&mut out, token, &issuers, config, Some(route));
    (out, allowed)
}

/// Prints the token checks, and for a protected route the requirements and the decision.
fn token_checks(
    out: &mut String,
    token: &str,
    issuers: &Issuers,
    config: &Config,
    route: Option<&config::Route>,
) -> bool {
    if let Some((header, claims)) = jwt::dangerous::decode_unverified(token) {
        let _ = writeln!(out, "token header (unverified): {header}");
        let _ = writeln!(out, "token claims (unverified): {claims}");
    }
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert(http::header::AUTHORIZATION, v);
    }
    let result = bearer::extract(&headers)
        .and_then(|t| jwt::verify(t.unwrap_or_default(), issuers, None, SystemTime::now()));
    let failed = result.as_ref().err().map(|e| e.step());
    for step in Step::ALL {
        let mark = match failed {
            Some(f) if f == step => "FAIL",
            Some(f) if f < step => "----",
            _ => "pass",
        };
        let _ = writeln!(out, "  [{mark}] {}", step.describe());
    }
    let verified = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(out, "  reason: {e} (metric reason {})", e.reason());
            if route.is_some() {
                let refusal = reject::TokenRefusal::of(&e);
                let _ = write!(
                    out,
                    "decision: {} {}: {}",
                    refusal.status.as_u16(),
                    refusal.error,
                    refusal.description
                );
                if let Some(seconds) = refusal.retry_after {
                    let _ = write!(out, " (Retry-After: {seconds})");
                }
                out.push('\n');
            }
            return false;
        }
    };
    let _ = writeln!(out, "issuer: {} ({})", verified.issuer.name, verified.alg);
    let Some(route) = route else {
        print_headers(out, &verified, config);
        return true;
    };
    let decision = policy::evaluate(route, &verified.claims, &verified.issuer.name);
    if decision.checks.is_empty() {
        let _ = writeln!(out, "requirements: none (any valid token)");
    }
    for check in &decision.checks {
        let mark = if check.passed { "pass" } else { "FAIL" };
        let _ = writeln!(
            out,
            "  [{mark}] {} in [{}]",
            check.requirement.key(),
            check.wanted.join(", ")
        );
    }
    match (decision.first_failure(), route.mode) {
        (None, _) => {
            let _ = writeln!(out, "decision: allow");
        }
        (Some(_), Mode::Audit) => {
            let _ = writeln!(
                out,
                "decision: allow (audit mode: the failure is logged and counted)"
            );
        }
        (Some(failed), Mode::Enforce) => {
            let _ = writeln!(
                out,
                "decision: 403 insufficient_scope: {}",
                failed.requirement.description()
            );
            return false;
        }
    }
    print_headers(out, &verified, config);
    true
}

fn print_headers(out: &mut String, verified: &jwt::Verified<'_>, config: &Config) {
    let computed = identity::identity_headers(&verified.claims, &config.identity);
    let _ = writeln!(out, "headers for the upstream:");
    for (name, value) in &computed.set {
        let text = value.to_str().unwrap_or("<binary>");
        if name == identity::PRINCIPAL {
            // Shown decoded: the base64 is unreadable and the JSON is what the app parses.
            let _ = writeln!(
                out,
                "  {name}: base64 of {}",
                identity::principal(&verified.claims)
            );
        } else {
            let _ = writeln!(out, "  {name}: {text}");
        }
    }
    for name in &computed.dropped {
        let _ = writeln!(out, "  {name}: (left out: over 8 KiB)");
    }
    if !config.identity.forward_token {
        let _ = writeln!(out, "  (Authorization removed: forward_token = false)");
    }
}

async fn issuers(config: &Config, keys: Keys, out: &mut String) -> Issuers {
    let metrics = Arc::new(Metrics::new());
    let mut list = Vec::new();
    for settings in &config.issuers {
        let set = match &keys {
            Keys::Document(doc) => match KeySet::from_document(settings, doc, metrics.clone()) {
                Ok(set) => Some(set),
                Err(e) => {
                    let _ = writeln!(out, "keys for {}: {e}", settings.name);
                    None
                }
            },
            Keys::Fetch => match KeySet::new(settings, metrics.clone()) {
                Ok(set) => {
                    if let Err(e) = set.refresh().await {
                        let _ = writeln!(out, "keys for {}: {e}", settings.name);
                    }
                    Some(set)
                }
                Err(e) => {
                    let _ = writeln!(out, "keys for {}: {e}", settings.name);
                    None
                }
            },
        };
        if let Some(set) = set {
            let _ = writeln!(
                out,
                "keys for {}: {} ({})",
                settings.name,
                set.keys().len(),
                set.keys().kids().join(", ")
            );
            list.push(Issuer::new(settings, set));
        }
    }
    Issuers::new(list)
}
