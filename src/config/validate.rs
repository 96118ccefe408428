//! Raw file → [`Config`]: every error collected with its `file:line:col` and key, and the
//! warnings (a shadowed route) that are allowed but probably wrong.
//!
//! The document is parsed once into a spanned tree, `${VAR}` references are expanded in
//! place, and then each section (and each element of an array of tables) is deserialized on
//! its own, so one bad route does not hide a bad issuer further down.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};
use url::Url;

use super::expand::{self, Lookup};
use super::schema::{
    RawAdmin, RawEgress, RawIdentity, RawIssuer, RawLog, RawLogin, RawResource, RawRoute,
    RawServer, Text,
};
use super::{Admin, Config, Loaded, Log, LogFormat, Position, Route};

mod context;
mod credentials;
mod inbound;
mod login;
mod resources;
mod routes;

use context::Context;

pub use inbound::DEFAULT_MAX_CONNECTIONS;

/// A problem in the configuration file, at a place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as it was named.
    pub file: PathBuf,
    /// Line and column, 1-based.
    pub position: Position,
    /// The key the problem is about, such as `routes[2].methods`; empty for the document.
    pub key: String,
    /// What is wrong, lowercase, without a trailing period.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Position { line, col } = self.position;
        write!(f, "{}:{line}:{col}: ", self.file.display())?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Something allowed but probably a mistake; printed by `tollgate check` and logged on load.
pub type Warning = Diagnostic;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration: every problem found.
    #[error("{}", DisplayList(.0))]
    Invalid(Vec<Diagnostic>),
}

struct DisplayList<'a>(&'a [Diagnostic]);

impl fmt::Display for DisplayList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Sections a file may have, for the "unknown section" message.
const SECTIONS: &str =
    "server, admin, log, issuers, identity, routes, resources, egress, credentials, login";

/// Parses, expands and validates a configuration file's text.
pub fn validate(text: &str, path: &Path, env: Lookup<'_>) -> Result<Loaded, ConfigError> {
    let mut cx = Context::new(text, path);
    let (mut doc, syntax) = DeTable::parse_recoverable(text);
    for e in syntax {
        cx.error_at(e.span().unwrap_or(0..0), "", e.message().to_owned());
    }
    if !cx.errors.is_empty() {
        return Err(ConfigError::Invalid(cx.errors));
    }
    expand_table(&mut cx, doc.get_mut(), "", env);

    let mut sections = Sections::default();
    for (key, value) in doc.get_ref().iter() {
        let name = key.get_ref().as_ref();
        sections.present.insert(name.to_owned());
        match name {
            "server" => {
                sections.server = cx
                    .section::<RawServer>(value, "server")
                    .map(|r| (r, value.span()))
            }
            "admin" => sections.admin = cx.section::<RawAdmin>(value, "admin"),
            "log" => sections.log = cx.section::<RawLog>(value, "log"),
            "identity" => sections.identity = cx.section::<RawIdentity>(value, "identity"),
            "issuers" => sections.issuers = cx.array_of::<RawIssuer>(value, "issuers"),
            "routes" => sections.routes = cx.array_of::<RawRoute>(value, "routes"),
            "resources" => sections.resources = cx.array_of::<RawResource>(value, "resources"),
            "egress" => sections.egress = egress_section(&mut cx, value),
            "credentials" => sections.credentials = Some(credentials::section(&mut cx, value)),
            "login" => sections.login = cx.section::<RawLogin>(value, "login"),
            other => cx.error_at(
                key.span(),
                other,
                format!("unknown section, expected one of {SECTIONS}"),
            ),
        }
    }
    let config = build(&mut cx, sections);
    if cx.errors.is_empty() {
        Ok(Loaded {
            config,
            warnings: cx.warnings,
        })
    } else {
        cx.errors.sort_by_key(|d| (d.position.line, d.position.col));
        Err(ConfigError::Invalid(cx.errors))
    }
}

#[derive(Default)]
struct Sections {
    /// Sections written in the file, valid or not: a broken section is not also "missing".
    present: HashSet<String>,
    server: Option<(RawServer, Range<usize>)>,
    admin: Option<RawAdmin>,
    log: Option<RawLog>,
    identity: Option<RawIdentity>,
    issuers: Vec<(RawIssuer, Range<usize>)>,
    routes: Vec<(RawRoute, Range<usize>)>,
    resources: Vec<(RawResource, Range<usize>)>,
    egress: Option<EgressSection>,
    credentials: Option<BTreeMap<String, super::Credential>>,
    login: Option<RawLogin>,
}

fn build(cx: &mut Context<'_>, s: Sections) -> Config {
    let server = s
        .server
        .and_then(|(raw, span)| inbound::server(cx, raw, span));
    let admin = Admin {
        listen: s
            .admin
            .and_then(|a| a.listen)
            .and_then(|l| cx.listen(&l, "admin.listen"))
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9090))),
    };
    let log = Log {
        format: match s.log.and_then(|l| l.format) {
            None => LogFormat::Json,
            Some(f) => match f.get_ref().as_str() {
                "json" => LogFormat::Json,
                "text" => LogFormat::Text,
                _ => {
                    cx.error(&f, "log.format", "expected \"json\" or \"text\"");
                    LogFormat::Json
                }
            },
        },
    };
    let credentials = s.credentials.unwrap_or_default();
    let issuers = inbound::issuers(cx, s.issuers, &credentials);
    let identity = s
        .identity
        .map(|raw| inbound::identity(cx, raw))
        .unwrap_or_default();
    let issuer_names: HashSet<&str> = issuers.iter().map(|i| i.name.as_str()).collect();
    let routes: Vec<Route> = routes::routes(cx, s.routes, &issuer_names);
    let resources = resources::resources(cx, s.resources, &issuers, &routes);
    let present = |name: &str| s.present.contains(name);
    if !present("server") && !routes.is_empty() {
        cx.error_at(
            0..0,
            "routes",
            "routes are given but there is no [server] to apply them".into(),
        );
    }
    if !routes.iter().all(|r| r.allow_anonymous) && !present("issuers") {
        cx.error_at(
            0..0,
            "issuers",
            "a route requires a token but no [[issuers]] are configured".into(),
        );
    }
    let egress = s.egress.and_then(|(raw, targets, span)| {
        let known = credentials::Known {
            credentials: &credentials,
            issuers: &issuer_names,
            server: present("server"),
        };
        credentials::egress(cx, raw, targets, span, &known)
    });
    let login = s
        .login
        .and_then(|raw| login::login(cx, raw, &issuers, &credentials));
    if present("login") && !present("server") {
        cx.error_at(
            0..0,
            "login",
            "[login] signs users in on the inbound listener, but there is no [server]".into(),
        );
    }
    if let Some(route) = routes
        .iter()
        .find(|r| r.unauthenticated == super::Unauthenticated::Redirect)
        .filter(|_| !present("login"))
    {
        cx.error_at(
            0..0,
            "routes",
            format!(
                "route {:?} (line {}) has unauthenticated = \"redirect\", which needs a [login] section to send browsers to",
                route.name, route.position.line
            ),
        );
    }
    if !present("server") && !present("egress") {
        cx.error_at(
            0..0,
            "",
            "nothing to run: the file needs a [server] section, an [egress] section, or both"
                .into(),
        );
    }
    Config {
        source: cx.file.to_path_buf(),
        server,
        admin,
        log,
        issuers,
        identity,
        routes,
        egress,
        credentials,
        login,
        resources,
    }
}

type EgressSection = (
    RawEgress,
    Vec<(super::schema::RawTarget, Range<usize>)>,
    Range<usize>,
);

fn egress_section(cx: &mut Context<'_>, value: &Spanned<DeValue<'_>>) -> Option<EgressSection> {
    let DeValue::Table(table) = value.get_ref() else {
        cx.error_at(value.span(), "egress", "expected a table".into());
        return None;
    };
    let mut head = table.clone();
    let targets = match head.remove("targets") {
        Some(t) => cx.array_of(&t, "egress.targets"),
        None => Vec::new(),
    };
    let head = Spanned::new(value.span(), DeValue::Table(head));
    let raw = cx.section::<RawEgress>(&head, "egress")?;
    Some((raw, targets, value.span()))
}

/// Expands `${VAR}` in every string value of the tree.
fn expand_table(cx: &mut Context<'_>, table: &mut DeTable<'_>, path: &str, env: Lookup<'_>) {
    for (key, value) in table.iter_mut() {
        let path = join_key(path, key.get_ref());
        expand_value(cx, value, &path, env);
    }
}

fn expand_value(
    cx: &mut Context<'_>,
    value: &mut Spanned<DeValue<'_>>,
    path: &str,
    env: Lookup<'_>,
) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) => match expand::expand(s, env) {
            Ok(expanded) => {
                if expanded != *s {
                    *s = expanded.into();
                }
            }
            // +1 skips the opening quote; escapes before the reference would shift it a little.
            Err((offset, message)) => cx.error_at(span.start + 1 + offset..span.end, path, message),
        },
        DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(cx, item, &format!("{path}[{i}]"), env);
            }
        }
        DeValue::Table(t) => expand_table(cx, t, path, env),
        DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) | DeValue::Datetime(_) => {}
    }
}

fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// True for loopback hosts: 127.0.0.0/8, ::1 and `localhost`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Strings of a list, owned.
pub(super) fn strings(list: Option<Vec<Text>>) -> Vec<String> {
    list.unwrap_or_default()
        .into_iter()
        .map(Spanned::into_inner)
        .collect()
}

#[cfg(test)]
mod tests;
