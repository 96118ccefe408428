//! `tollgate check`: load and validate, print a summary and the warnings, exit 1 on errors.

use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::config::{
    self, Config, ConfigError, CredentialKind, KeySource, Loaded, Mode, PathMatch, Route, SharedEnv,
};
use crate::credential::managed_identity::source::imds_url;

/// Runs `tollgate check` on `path`, printing the report.
pub fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let (text, code) = report(path, super::process_env());
    print!("{text}");
    Ok(code)
}

/// What `tollgate check` prints for `path`, and its exit code: 0 exactly when `tollgate run`
/// with the same environment would get as far as binding its listeners.
pub fn report(path: &Path, env: SharedEnv) -> (String, ExitCode) {
    match config::load(path, &*env) {
        Ok(loaded) => match crate::app::preflight(loaded.config.clone(), env) {
            Ok(()) => (summary(&loaded), ExitCode::SUCCESS),
            Err(error) => (
                format!(
                    "error: {}\n{}: valid, but tollgate run would not start\n",
                    crate::cli::describe(&error),
                    path.display()
                ),
                ExitCode::FAILURE,
            ),
        },
        Err(ConfigError::Invalid(list)) => {
            let mut out = String::new();
            for d in &list {
                let _ = writeln!(out, "error: {d}");
            }
            let _ = writeln!(out, "{}: {} error(s)", path.display(), list.len());
            (out, ExitCode::FAILURE)
        }
        Err(e) => (
            format!("error: {}\n", crate::cli::describe(&e)),
            ExitCode::FAILURE,
        ),
    }
}

/// A human summary of a valid configuration: listeners, routes in order, issuers, protected
/// resources, egress targets, then the warnings.
pub fn summary(loaded: &Loaded) -> String {
    let c = &loaded.config;
    let mut out = String::new();
    let _ = writeln!(out, "{}: ok", c.source.display());
    listeners(&mut out, c);
    if !c.routes.is_empty() {
        let _ = writeln!(out, "routes (first match wins):");
        for (i, r) in c.routes.iter().enumerate() {
            let _ = writeln!(out, "  {:>2}. {}", i + 1, route(r));
        }
    }
    if !c.issuers.is_empty() {
        let _ = writeln!(out, "issuers:");
        for i in &c.issuers {
            let keys = match &i.keys {
                KeySource::Discovery(u) => format!("discovery {u}"),
                KeySource::JwksUri(u) => format!("jwks_uri {u}"),
            };
            let algs: Vec<&str> = i.algorithms.iter().map(|a| a.as_str()).collect();
            let _ = writeln!(out, "  {}: iss {}", i.name, i.issuer);
            let _ = writeln!(out, "      {keys}");
            let _ = writeln!(
                out,
                "      audiences {}; algorithms {}",
                i.audiences.join(", "),
                algs.join(", ")
            );
            if !i.tenants.is_empty() {
                let _ = writeln!(out, "      tenants {}", i.tenants.join(", "));
            }
        }
    }
    if !c.resources.is_empty() {
        let _ = writeln!(out, "protected resources (RFC 9728 metadata):");
        for r in &c.resources {
            let _ = writeln!(
                out,
                "  {} (prefix {}, issuer {})",
                r.resource, r.prefix, r.issuer
            );
            let _ = writeln!(out, "      metadata at {}", r.metadata_path);
        }
    }
    if let Some(egress) = &c.egress {
        let _ = writeln!(out, "egress targets:");
        for t in &egress.targets {
            let kind = c
                .credentials
                .get(&t.credential)
                .map_or("?", |cr| cr.kind.as_str());
            let host = t
                .host
                .as_deref()
                .map(|h| format!(" (also Host {h})"))
                .unwrap_or_default();
            let _ = writeln!(out, "  /{} -> {}{host}", t.name, t.url);
            let _ = writeln!(
                out,
                "      scope {}; credential {} ({kind})",
                t.scope, t.credential
            );
        }
    }
    let unused: Vec<&str> = c
        .credentials
        .values()
        .filter(|cr| {
            !c.egress
                .iter()
                .flat_map(|e| &e.targets)
                .any(|t| t.credential == cr.name)
        })
        .map(|cr| cr.name.as_str())
        .collect();
    if !unused.is_empty() {
        let _ = writeln!(
            out,
            "credentials not used by any target: {}",
            unused.join(", ")
        );
    }
    managed_identity_notes(&mut out, c);
    not_checked(&mut out, c);
    if !loaded.warnings.is_empty() {
        let _ = writeln!(out, "warnings:");
        for w in &loaded.warnings {
            let _ = writeln!(out, "  warning: {w}");
        }
    }
    out
}

/// What `run` finds out only once it runs, and `check` therefore cannot promise: whether the
/// addresses are free on the host it runs on, and what the network answers.
fn not_checked(out: &mut String, c: &Config) {
    let _ = writeln!(out, "not checked here:");
    let mut addrs = vec![c.admin.listen.to_string()];
    addrs.extend(c.server.as_ref().map(|s| s.listen.to_string()));
    addrs.extend(c.egress.as_ref().map(|e| e.listen.to_string()));
    let _ = writeln!(
        out,
        "  listen addresses free on the host (run exits 1 if one is taken): {}",
        addrs.join(", ")
    );
    if !c.issuers.is_empty() {
        let names: Vec<&str> = c.issuers.iter().map(|i| i.name.as_str()).collect();
        let _ = writeln!(
            out,
            "  issuer keys, fetched once running (/readyz waits for them): {}",
            names.join(", ")
        );
    }
    if let Some(target) = c.egress.as_ref().and_then(|e| e.targets.first()) {
        let _ = writeln!(
            out,
            "  egress tokens, fetched once running (`tollgate token --target {}` asks once now)",
            target.name
        );
    }
    if let Some(login) = &c.login {
        let _ = writeln!(
            out,
            "  sign-in: issuer {:?}'s endpoints and whether it accepts credential {:?} for client {} (the first sign-in asks)",
            login.issuer, login.credential, login.client_id
        );
        if login.session_store.is_some() {
            let _ = writeln!(
                out,
                "  the session store (Redis), reached at the first session request"
            );
        }
    }
}

/// Where each credential backed by a managed identity gets its tokens: from the source the
/// environment offers at run time, or, with `endpoint` set, from IMDS at that address only.
fn managed_identity_notes(out: &mut String, c: &Config) {
    for cr in c.credentials.values() {
        let endpoint = match &cr.kind {
            CredentialKind::ManagedIdentity(s) => &s.endpoint,
            CredentialKind::ManagedIdentityFederation(s) => &s.endpoint,
            _ => continue,
        };
        let source = match endpoint.as_ref().map(|e| imds_url(e.as_str())) {
            None => {
                "detects its source (App Service, Arc, IMDS, ...) from the environment at run time"
                    .to_owned()
            }
            Some(Ok(url)) => {
                format!("uses IMDS at {url} (its endpoint), whatever the environment says")
            }
            Some(Err(e)) => format!("has an endpoint that cannot be used: {e}"),
        };
        let _ = writeln!(
            out,
            "note: credential {} ({}) {source}",
            cr.name,
            cr.kind.as_str()
        );
    }
}

fn listeners(out: &mut String, c: &Config) {
    let _ = writeln!(out, "listeners:");
    if let Some(s) = &c.server {
        let scheme = if s.tls.is_some() { "https" } else { "http" };
        let _ = writeln!(
            out,
            "  inbound  {} ({scheme}, HTTP/1.1 + HTTP/2) -> upstream {}",
            s.listen, s.upstream
        );
    }
    let _ = writeln!(
        out,
        "  admin    {} (/healthz /readyz /metrics)",
        c.admin.listen
    );
    if let Some(e) = &c.egress {
        let _ = writeln!(out, "  egress   {}", e.listen);
    }
}

fn route(r: &Route) -> String {
    let (kind, path) = match &r.path {
        PathMatch::Prefix(p) => ("prefix", p),
        PathMatch::Exact(p) => ("exact", p),
    };
    let methods = r.methods.as_ref().map_or("all methods".to_owned(), |m| {
        m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",")
    });
    let mut line = format!("{kind} {path}  [{methods}]");
    if r.name != *path {
        line.push_str(&format!("  name={}", r.name));
    }
    if r.case_insensitive {
        line.push_str("  case-insensitive");
    }
    if r.allow_anonymous {
        line.push_str("  anonymous");
        return line;
    }
    let q = &r.require;
    let lists = [
        ("roles_any", &q.roles_any),
        ("roles_all", &q.roles_all),
        ("scopes_any", &q.scopes_any),
        ("client_apps", &q.client_apps),
        ("tenants", &q.tenants),
        ("principals", &q.principals),
        ("issuers", &q.issuers),
    ];
    let mut any = false;
    for (name, list) in lists {
        if !list.is_empty() {
            line.push_str(&format!("  {name}=[{}]", list.join(", ")));
            any = true;
        }
    }
    for (claim, values) in &q.claims {
        line.push_str(&format!("  claim {claim} in [{}]", values.join(", ")));
        any = true;
    }
    if !any {
        line.push_str("  any valid token");
    }
    if r.mode == Mode::Audit {
        line.push_str("  (audit mode: failures are logged, not denied)");
    }
    line
}
