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

use http::HeaderValue;

use crate::config::{self, Config, Mode, PathMatch};
use crate::inbound::claims::Claims;
use crate::inbound::decide::Groups;
use crate::inbound::jwt::{self, Step};
use crate::inbound::{
    self, Decision, InboundState, Refusal, Reject, Routed, Token, Trace, Verdict, identity,
};
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
    /// The request path, as a client would send it (it is normalised first); or a whole URL
    /// (`https://host/path`), whose scheme and host are then the origin that a challenge's
    /// `resource_metadata` names (else the resource's own).
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

/// What `explain` concluded for one request: the printed report, the verdict, and for a
/// refusal what the client gets.
pub struct Explanation {
    /// The report, as printed.
    pub text: String,
    /// What the proxy would do.
    pub verdict: Verdict,
    /// The status, error code and description of a refusal.
    pub refusal: Option<Refusal>,
}

/// The explanation for one request, and whether it would be forwarded.
pub async fn report(
    config: &Config,
    token: Option<&str>,
    keys: Keys,
    method: &Method,
    raw_path: &str,
) -> (String, bool) {
    let e = explanation(config, token, keys, method, raw_path).await;
    let allowed = matches!(
        e.verdict,
        Verdict::Forward(_) | Verdict::Me | Verdict::Metadata
    );
    (e.text, allowed)
}

/// The explanation for one request: the proxy's own decision ([`inbound::decide_with`], and
/// [`inbound::decide::refetch_for`] for an unknown `kid` and [`inbound::decide::groups_for`]
/// for an overage token's groups from Graph, unless the keys come from a document)
/// on an offline inbound state, printed step by step. `raw_path` may be a whole URL, whose
/// origin is then the request's (for a challenge's `resource_metadata`).
pub async fn explanation(
    config: &Config,
    token: Option<&str>,
    keys: Keys,
    method: &Method,
    raw_path: &str,
) -> Explanation {
    let mut out = String::new();
    let _ = writeln!(out, "request: {method} {raw_path}");
    let metrics = Arc::new(Metrics::new());
    let state = match InboundState::build(config, None, &metrics, None, &crate::config::process_env)
    {
        Ok(state) => state,
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            let refusal = None;
            return Explanation {
                text: out,
                verdict: Verdict::Reject(inbound::Reject::InboundDisabled),
                refusal,
            };
        }
    };
    let offline = matches!(keys, Keys::Document(_));
    if let Some(state) = &state {
        load_keys(state, keys, &mut out).await;
    }
    let token = token.map(|t| t.strip_prefix("Bearer ").unwrap_or(t));
    let mut headers = http::HeaderMap::new();
    if let Some(value) = token.and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok()) {
        headers.insert(http::header::AUTHORIZATION, value);
    }
    let (origin, target) = split_origin(raw_path);
    let path = target.split('?').next().unwrap_or_default();
    let browser = || inbound::Browser {
        origin: origin.as_deref(),
        ..inbound::Browser::default()
    };
    let decide = || {
        let now = SystemTime::now();
        inbound::decide_with(state.as_ref(), method, path, &headers, browser(), now)
    };
    let mut trace = decide();
    // With keys from a document, nothing is fetched: not even for an unknown kid.
    if !offline
        && let Some(refetch) = inbound::decide::refetch_for(state.as_ref(), &trace)
        && refetch.await
    {
        trace = decide();
    }
    // An overage token on a route with groups_any: its groups from Graph, as the listener
    // gets them, then the same decision again (offline: shown as what would be resolved).
    if !offline && let Some(lookup) = inbound::decide::groups_for(state.as_ref(), &trace) {
        let resolution = lookup.await;
        let browser = inbound::Browser {
            groups: Some(resolution),
            ..browser()
        };
        let now = SystemTime::now();
        trace = inbound::decide_with(state.as_ref(), method, path, &headers, browser, now);
    }
    print_trace(&mut out, &trace, config, method, token);
    Explanation {
        text: out,
        verdict: trace.verdict,
        refusal: trace.refusal(),
    }
}

/// `https://Host:8443/mcp?x` → (`Some("https://host:8443")`, `/mcp?x`); a path stays as it is.
fn split_origin(target: &str) -> (Option<String>, &str) {
    let Some((scheme, rest)) = target.split_once("://") else {
        return (None, target);
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return (None, target);
    }
    let at = rest.find(['/', '?']).unwrap_or(rest.len());
    let (host, path) = rest.split_at(at);
    let path = if path.is_empty() { "/" } else { path };
    let origin = format!("{scheme}://{host}").to_ascii_lowercase();
    (Some(origin), path)
}

/// Each issuer's keys, from the `--jwks` document or fetched once.
async fn load_keys(state: &InboundState, keys: Keys, out: &mut String) {
    for issuer in state.issuers.iter() {
        let loaded = match &keys {
            Keys::Document(doc) => issuer.keys.load_document(doc).map_err(|e| e.to_string()),
            Keys::Fetch => issuer.keys.refresh().await.map_err(|e| e.to_string()),
        };
        let keys = issuer.keys.keys();
        match loaded {
            Ok(()) => {
                let _ = writeln!(
                    out,
                    "keys for {}: {} ({})",
                    issuer.name,
                    keys.len(),
                    keys.kids().join(", ")
                );
            }
            Err(e) => {
                let _ = writeln!(out, "keys for {}: {e}", issuer.name);
            }
        }
    }
}

/// The trace, one step a line, then the decision and the headers the upstream would get.
fn print_trace(
    out: &mut String,
    trace: &Trace<'_, '_>,
    config: &Config,
    method: &Method,
    token: Option<&str>,
) {
    match trace.verdict {
        Verdict::Reject(Reject::MiscasedMethod) => {
            let _ = writeln!(
                out,
                "method: REFUSED: methods are case-sensitive: send {}",
                method.as_str().to_ascii_uppercase()
            );
        }
        Verdict::Reject(Reject::BadPath(e)) => {
            let _ = writeln!(out, "path: REFUSED: {e}");
        }
        Verdict::Reject(Reject::InboundDisabled) => {
            let _ = writeln!(out, "inbound: the configuration has no [server]");
        }
        _ => {}
    }
    if let Some(path) = &trace.path {
        let _ = writeln!(out, "path: {path}");
    }
    print_route(out, &trace.route, config);
    if let Some(resource) = trace.resource {
        let r = &resource.settings;
        let _ = writeln!(
            out,
            "resource: {} (prefix {}, {}:{}): a token must have aud in [{}]; metadata at {}",
            r.resource,
            r.prefix,
            config.source.display(),
            r.position.line,
            resource.audiences.join(", "),
            resource.metadata_url(trace.origin),
        );
    }
    print_token(out, &trace.token, token);
    print_groups(out, &trace.groups);
    if let Some(evaluation) = &trace.requirements {
        if evaluation.checks.is_empty() {
            let _ = writeln!(out, "requirements: none (any valid token)");
        }
        for check in &evaluation.checks {
            let mark = if check.passed { "pass" } else { "FAIL" };
            let _ = writeln!(
                out,
                "  [{mark}] {} in [{}]",
                check.requirement.key(),
                check.wanted.join(", ")
            );
        }
    }
    print_decision(out, trace);
    if let (Verdict::Forward(_), Some(verified)) = (trace.verdict, trace.verified()) {
        match &trace.groups {
            Groups::Resolved(set) => {
                let claims = verified.claims.with_groups(set.iter());
                print_headers(out, &claims, config);
            }
            _ => print_headers(out, &verified.claims, config),
        }
    }
}

/// Where `groups_any` found the caller's groups: the token, or Microsoft Graph for an
/// overage token (resolved, or what would be).
fn print_groups(out: &mut String, groups: &Groups) {
    let line = match groups {
        Groups::NotNeeded => return,
        Groups::Claim => "groups: from the token's groups claim".to_owned(),
        Groups::OverageDenied => {
            "groups: overage token (too many groups for the token); groups_overage = \"deny\": groups_unavailable".to_owned()
        }
        Groups::OverageSkipped => {
            "groups: overage token; would be resolved from Microsoft Graph, but another requirement already fails".to_owned()
        }
        Groups::Pending { oid } => format!(
            "groups: overage token; would be resolved from Microsoft Graph for oid {oid} (not fetched: offline, --jwks)"
        ),
        Groups::Resolved(set) => {
            let shown: Vec<&str> = set.iter().take(5).collect();
            let more = set.len().saturating_sub(shown.len());
            let more = if more > 0 { format!(", … {more} more") } else { String::new() };
            format!(
                "groups: overage token; resolved from Microsoft Graph: {} groups [{}{more}]",
                set.len(),
                shown.join(", ")
            )
        }
        Groups::Unavailable(e) => format!(
            "groups: overage token; Microsoft Graph could not resolve them ({}): groups_unavailable",
            e.reason()
        ),
    };
    let _ = writeln!(out, "{line}");
}

/// The route the request matched, with where it is in the file.
fn print_route(out: &mut String, routed: &Routed<'_>, config: &Config) {
    match routed {
        Routed::NotReached => {}
        Routed::Me => {
            let _ = writeln!(
                out,
                "route: {} (tollgate answers it: the caller's identity)",
                inbound::me::PATH
            );
        }
        Routed::Auth(endpoint) => {
            let _ = writeln!(
                out,
                "route: {} (tollgate answers it: browser sign-in)",
                endpoint.label()
            );
        }
        Routed::Metadata(found) => {
            let of = found.map_or_else(
                || "no resource's: 404".to_owned(),
                |r| format!("of {}", r.settings.resource),
            );
            let _ = writeln!(
                out,
                "route: protected resource metadata {of} (tollgate answers it, no token needed)"
            );
        }
        Routed::None => {
            let _ = writeln!(out, "route: none matches");
        }
        Routed::Route(route, _) => {
            let (kind, pattern) = match &route.path {
                PathMatch::Prefix(p) => ("prefix", p),
                PathMatch::Exact(p) => ("exact", p),
            };
            let audit = if route.mode == Mode::Audit {
                " [audit mode]"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "route: {:?} ({kind} {pattern}, {}:{}){audit}",
                route.name,
                config.source.display(),
                route.position.line,
            );
            if route.allow_anonymous {
                let _ = writeln!(out, "anonymous route: no token needed");
            }
        }
    }
}

/// The decision line: what the proxy does, or the status, error and description it sends.
fn print_decision(out: &mut String, trace: &Trace<'_, '_>) {
    let line = match trace.verdict {
        Verdict::Forward(Decision::Allowed) => "allow".to_owned(),
        Verdict::Forward(Decision::Anonymous) => "allow (anonymous)".to_owned(),
        Verdict::Forward(Decision::Audit) => {
            "allow (audit mode: the failure is logged and counted)".to_owned()
        }
        Verdict::Me => "answer with the caller's identity (JSON)".to_owned(),
        Verdict::Metadata => "answer with the protected resource metadata (JSON)".to_owned(),
        Verdict::Auth(endpoint) => format!("answer as the sign-in endpoint {}", endpoint.label()),
        Verdict::Forward(Decision::Denied) | Verdict::Reject(_) => {
            let refusal = trace.refusal().unwrap_or_else(Refusal::fallback);
            let retry = refusal
                .retry_after
                .map(|s| format!(" (Retry-After: {s})"))
                .or_else(|| {
                    refusal
                        .location
                        .as_ref()
                        .map(|l| format!(" (Location: {l})"))
                })
                .or_else(|| {
                    refusal
                        .login_url
                        .as_ref()
                        .map(|l| format!(" (login_url: {l})"))
                })
                .unwrap_or_default();
            format!(
                "{} {}: {}{retry}",
                refusal.status.as_u16(),
                refusal.error,
                refusal.description
            )
        }
    };
    let _ = writeln!(out, "decision: {line}");
    if let Some(challenge) = trace.refusal().and_then(|r| r.challenge_value()) {
        let _ = writeln!(out, "challenge: WWW-Authenticate: {challenge}");
    }
}

/// The token: its unverified header and claims, then every check with pass or FAIL.
fn print_token(out: &mut String, checked: &Token<'_>, raw: Option<&str>) {
    let failed = match checked {
        Token::NotRead => return,
        Token::Absent => {
            let _ = writeln!(out, "token: none");
            return;
        }
        Token::Valid(_) => None,
        Token::Invalid(e) => Some(e),
        Token::Session(v) => {
            let _ = writeln!(
                out,
                "token: none; browser session of issuer {}",
                v.issuer.name
            );
            return;
        }
    };
    if let Some((header, claims)) = raw.and_then(jwt::dangerous::decode_unverified) {
        let _ = writeln!(out, "token header (unverified): {header}");
        let _ = writeln!(out, "token claims (unverified): {claims}");
    }
    let failed_step = failed.map(|e| e.step());
    for step in Step::ALL {
        let mark = match failed_step {
            Some(f) if f == step => "FAIL",
            Some(f) if f < step => "----",
            _ => "pass",
        };
        let _ = writeln!(out, "  [{mark}] {}", step.describe());
    }
    match checked {
        Token::Invalid(e) => {
            let _ = writeln!(out, "  reason: {e} (metric reason {})", e.reason());
        }
        Token::Valid(v) => {
            let _ = writeln!(out, "issuer: {} ({})", v.issuer.name, v.alg);
        }
        Token::NotRead | Token::Absent | Token::Session(_) => {}
    }
}

fn print_headers(out: &mut String, claims: &Claims, config: &Config) {
    let computed = identity::identity_headers(claims, &config.identity);
    let _ = writeln!(out, "headers for the upstream:");
    for (name, value) in &computed.set {
        let text = value.to_str().unwrap_or("<binary>");
        if name == identity::PRINCIPAL {
            // Shown decoded: the base64 is unreadable and the JSON is what the app parses.
            let _ = writeln!(out, "  {name}: base64 of {}", identity::principal(claims));
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
