//! `[server]`, `[[issuers]]` and `[identity]`.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::{Context, strings};
use crate::config::schema::{RawIdentity, RawIssuer, RawServer};
use crate::config::{
    Algorithm, Credential, DEFAULT_GRAPH_ENDPOINT, GraphSettings, GroupsOverage, Identity, Issuer,
    KeySource, Server, TENANT_PLACEHOLDER, TlsFiles,
};
use crate::header_names::FORWARDING_HEADERS;

/// Defaults of `[server]`, in one place so the README and the code agree.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8080);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_HEADER_BYTES: usize = 65_536;
const DEFAULT_TOKEN_CACHE_ENTRIES: usize = 10_000;
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Sized by memory: 4,096 idle keep-alive connections hold ~50 MiB, or ~90 MiB with a small
/// request in flight on each, within the example manifests' 128 MiB limit (README.md,
/// "Memory per connection").
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_096;
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(3600);

pub(super) fn server(cx: &mut Context<'_>, raw: RawServer, span: Range<usize>) -> Option<Server> {
    let listen = raw
        .listen
        .as_ref()
        .and_then(|l| cx.listen(l, "server.listen"));
    let upstream = match &raw.upstream {
        None => {
            cx.error_at(
                span,
                "server.upstream",
                "missing: the URL of the protected backend, such as \"http://127.0.0.1:3000\""
                    .into(),
            );
            None
        }
        Some(text) => upstream(cx, text),
    };
    let tls = raw.tls.map(|t| {
        let t = t.into_inner();
        TlsFiles {
            cert: cx.path(&t.cert),
            key: cx.path(&t.key),
        }
    });
    let max_header_bytes = cx.count(
        raw.max_header_bytes.as_ref(),
        "server.max_header_bytes",
        1024,
        16 << 20,
        DEFAULT_MAX_HEADER_BYTES,
    );
    let token_cache_entries = cx.count(
        raw.token_cache_entries.as_ref(),
        "server.token_cache_entries",
        0,
        10_000_000,
        DEFAULT_TOKEN_CACHE_ENTRIES,
    );
    let max_connections = cx.count(
        raw.max_connections.as_ref(),
        "server.max_connections",
        1,
        1_000_000,
        DEFAULT_MAX_CONNECTIONS,
    );
    let worker_threads = raw
        .worker_threads
        .as_ref()
        .map(|w| cx.count(Some(w), "server.worker_threads", 1, 1024, 1));
    let request_timeout = cx.duration(
        raw.request_timeout.as_ref(),
        "server.request_timeout",
        DEFAULT_REQUEST_TIMEOUT,
    );
    let header_read_timeout = cx.duration(
        raw.header_read_timeout.as_ref(),
        "server.header_read_timeout",
        DEFAULT_HEADER_READ_TIMEOUT,
    );
    let shutdown_grace = cx.duration(
        raw.shutdown_grace.as_ref(),
        "server.shutdown_grace",
        DEFAULT_SHUTDOWN_GRACE,
    );
    for (value, key) in [
        (&raw.request_timeout, "server.request_timeout"),
        (&raw.header_read_timeout, "server.header_read_timeout"),
    ] {
        if let Some(v) = value
            && super::super::duration::parse(v.get_ref()).is_ok_and(|d| d.is_zero())
        {
            cx.error(v, key, "must be greater than zero");
        }
    }
    Some(Server {
        listen: listen.unwrap_or(DEFAULT_LISTEN),
        upstream: upstream?,
        tls,
        preserve_host: raw.preserve_host.unwrap_or(true),
        request_timeout,
        max_header_bytes,
        token_cache_entries,
        header_read_timeout,
        max_connections,
        shutdown_grace,
        ca_file: raw.ca_file.as_ref().map(|f| cx.path(f)),
        worker_threads,
        trusted_proxies: raw
            .trusted_proxies
            .map(|list| trusted_proxies(cx, list))
            .unwrap_or_default(),
    })
}

/// `trusted_proxies`: CIDR blocks or single addresses.
fn trusted_proxies(cx: &mut Context<'_>, list: Spanned<Vec<Spanned<String>>>) -> Vec<IpNet> {
    let key = "server.trusted_proxies";
    let mut out = Vec::new();
    for item in list.get_ref() {
        let text = item.get_ref().trim();
        let net = text
            .parse::<IpNet>()
            .ok()
            .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from));
        match net {
            Some(net) => {
                if net.prefix_len() == 0 {
                    cx.warn(
                        item,
                        key,
                        format!(
                            "{text} trusts every peer: any client can then set X-Forwarded-For, -Proto and -Host"
                        ),
                    );
                }
                out.push(net.trunc());
            }
            None => cx.error(
                item,
                key,
                format!("{text:?} is not an IP address or CIDR block (such as \"10.0.0.0/8\")"),
            ),
        }
    }
    out
}

/// The upstream: http or https, a host, maybe a port, nothing else.
fn upstream(cx: &mut Context<'_>, text: &Spanned<String>) -> Option<http::Uri> {
    let key = "server.upstream";
    let url = cx.url(text, key)?;
    if !matches!(url.path(), "" | "/")
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        cx.error(
            text,
            key,
            "must be scheme://host[:port] only: no path, query or credentials",
        );
        return None;
    }
    let host = match url.host()? {
        url::Host::Ipv6(ip) => format!("[{ip}]"),
        other => other.to_string(),
    };
    let port = url.port_or_known_default().unwrap_or(80);
    match format!("{}://{host}:{port}", url.scheme()).parse() {
        Ok(uri) => Some(uri),
        Err(e) => {
            cx.error(text, key, format!("invalid upstream: {e}"));
            None
        }
    }
}

pub(super) fn issuers(
    cx: &mut Context<'_>,
    raw: Vec<(RawIssuer, Range<usize>)>,
    credentials: &BTreeMap<String, Credential>,
) -> Vec<Issuer> {
    cx.unique(
        raw.iter()
            .enumerate()
            .map(|(i, (r, _))| (&r.name, format!("issuers[{i}].name"))),
        "issuer",
    );
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, (r, span))| issuer(cx, r, span, &format!("issuers[{i}]"), credentials))
        .collect()
}

fn issuer(
    cx: &mut Context<'_>,
    raw: RawIssuer,
    span: Range<usize>,
    key: &str,
    credentials: &BTreeMap<String, Credential>,
) -> Option<Issuer> {
    let groups_overage = groups_overage(cx, &raw, key, credentials);
    let keys = match (&raw.discovery, &raw.jwks_uri) {
        (Some(d), None) => cx
            .secure_url(d, &format!("{key}.discovery"))
            .map(KeySource::Discovery),
        (None, Some(j)) => cx
            .secure_url(j, &format!("{key}.jwks_uri"))
            .map(KeySource::JwksUri),
        (Some(d), Some(_)) => {
            cx.error(d, key, "give discovery or jwks_uri, not both");
            None
        }
        (None, None) => {
            cx.error_at(
                span.clone(),
                key,
                "missing discovery or jwks_uri: where the signing keys come from".into(),
            );
            None
        }
    };
    let audiences = match raw.audiences {
        Some(list) if !list.get_ref().is_empty() => {
            let list = list.into_inner();
            for a in &list {
                if a.get_ref().is_empty() {
                    cx.error(a, &format!("{key}.audiences"), "audience must not be empty");
                }
            }
            strings(Some(list))
        }
        Some(list) => {
            cx.error(
                &list,
                &format!("{key}.audiences"),
                "at least one audience is required",
            );
            Vec::new()
        }
        None => {
            cx.error_at(
                span.clone(),
                &format!("{key}.audiences"),
                "missing: the aud values this API accepts".into(),
            );
            Vec::new()
        }
    };
    let algorithms = algorithms(cx, raw.algorithms, &format!("{key}.algorithms"));
    let multi_tenant = raw
        .issuer
        .get_ref()
        .to_ascii_lowercase()
        .contains(TENANT_PLACEHOLDER);
    let tenants = raw
        .tenants
        .map(|t| (t.span(), strings(Some(t.into_inner()))));
    match (&tenants, multi_tenant) {
        (None, true) => cx.error(
            &raw.issuer,
            &format!("{key}.tenants"),
            "an issuer with {tenantid} needs a tenants allow-list",
        ),
        (Some((_, t)), true) if t.is_empty() => cx.error(
            &raw.issuer,
            &format!("{key}.tenants"),
            "an issuer with {tenantid} needs at least one tenant",
        ),
        (Some((span, _)), false) => cx.error_at(
            span.clone(),
            &format!("{key}.tenants"),
            "tenants applies only to an issuer containing {tenantid}".into(),
        ),
        _ => {}
    }
    if raw.issuer.get_ref().is_empty() {
        cx.error(&raw.issuer, &format!("{key}.issuer"), "must not be empty");
    }
    let clock_skew = cx.duration(
        raw.clock_skew.as_ref(),
        &format!("{key}.clock_skew"),
        DEFAULT_CLOCK_SKEW,
    );
    let jwks_refresh = cx.duration(
        raw.jwks_refresh.as_ref(),
        &format!("{key}.jwks_refresh"),
        DEFAULT_JWKS_REFRESH,
    );
    if jwks_refresh < Duration::from_secs(30)
        && let Some(t) = &raw.jwks_refresh
    {
        cx.error(t, &format!("{key}.jwks_refresh"), "must be at least 30s");
    }
    Some(Issuer {
        name: raw.name.into_inner(),
        issuer: raw.issuer.into_inner(),
        keys: keys?,
        audiences,
        algorithms,
        clock_skew,
        jwks_refresh,
        ca_file: raw.ca_file.as_ref().map(|f| cx.path(f)),
        tenants: tenants.map(|(_, t)| t).unwrap_or_default(),
        groups_overage,
    })
}

/// `groups_overage`, `graph_credential` and `graph_endpoint`: the credential is required with
/// `"graph"` and must exist; the endpoint is https (or loopback http) and only a base URL.
fn groups_overage(
    cx: &mut Context<'_>,
    raw: &RawIssuer,
    key: &str,
    credentials: &BTreeMap<String, Credential>,
) -> GroupsOverage {
    let graph = match raw.groups_overage.as_ref().map(|m| m.get_ref().as_str()) {
        None | Some("deny") => false,
        Some("graph") => true,
        Some(_) => {
            if let Some(m) = &raw.groups_overage {
                cx.error(
                    m,
                    &format!("{key}.groups_overage"),
                    "expected \"deny\" or \"graph\"",
                );
            }
            false
        }
    };
    if !graph {
        for (text, name) in [
            (&raw.graph_credential, "graph_credential"),
            (&raw.graph_endpoint, "graph_endpoint"),
        ] {
            if let Some(text) = text {
                cx.error(
                    text,
                    &format!("{key}.{name}"),
                    format!("{name} applies only with groups_overage = \"graph\""),
                );
            }
        }
        return GroupsOverage::Deny;
    }
    let credential = match &raw.graph_credential {
        None => {
            if let Some(m) = &raw.groups_overage {
                cx.error(
                    m,
                    &format!("{key}.graph_credential"),
                    "groups_overage = \"graph\" needs graph_credential: the [credentials.NAME] that calls Microsoft Graph (app-only, GroupMember.Read.All)",
                );
            }
            None
        }
        Some(name) if !credentials.contains_key(name.get_ref()) => {
            cx.error(
                name,
                &format!("{key}.graph_credential"),
                format!("no [credentials.{}] section", name.get_ref()),
            );
            None
        }
        Some(name) => Some(name.get_ref().clone()),
    };
    let endpoint = match &raw.graph_endpoint {
        None => Some(url::Url::parse(DEFAULT_GRAPH_ENDPOINT).expect("a valid constant URL")),
        Some(text) => cx
            .secure_url(text, &format!("{key}.graph_endpoint"))
            .filter(|url| {
                let bare = url.query().is_none()
                    && url.fragment().is_none()
                    && url.username().is_empty()
                    && url.password().is_none();
                if !bare {
                    cx.error(
                        text,
                        &format!("{key}.graph_endpoint"),
                        "give only the base URL (no query, fragment or user info)",
                    );
                }
                bare
            }),
    };
    match (credential, endpoint) {
        (Some(credential), Some(mut endpoint)) => {
            // Stored without a trailing slash: `{endpoint}/v1.0/...` and `{endpoint}/.default`.
            let path = endpoint.path().trim_end_matches('/').to_owned();
            endpoint.set_path(&path);
            GroupsOverage::Graph(GraphSettings {
                credential,
                endpoint,
            })
        }
        _ => GroupsOverage::Deny,
    }
}

fn algorithms(
    cx: &mut Context<'_>,
    raw: Option<Spanned<Vec<Spanned<String>>>>,
    key: &str,
) -> Vec<Algorithm> {
    let Some(raw) = raw else {
        return vec![Algorithm::RS256];
    };
    if raw.get_ref().is_empty() {
        cx.error(&raw, key, "at least one algorithm is required");
    }
    let mut out = Vec::new();
    for name in raw.into_inner() {
        match Algorithm::from_name(name.get_ref()) {
            Some(a) if !out.contains(&a) => out.push(a),
            Some(_) => {}
            None if name.get_ref().eq_ignore_ascii_case("none")
                || name.get_ref().to_ascii_uppercase().starts_with("HS") =>
            {
                cx.error(
                    &name,
                    key,
                    format!(
                        "{:?} is never accepted: tokens must be signed with a public-key algorithm",
                        name.get_ref()
                    ),
                );
            }
            None => {
                let all: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
                cx.error(
                    &name,
                    key,
                    format!(
                        "unknown algorithm {:?}, expected one of {}",
                        name.get_ref(),
                        all.join(", ")
                    ),
                );
            }
        }
    }
    out
}

/// Framing, routing and credential headers the claim mapping may not write. Every
/// `X-Forwarded-*` and `X-MS-*` name, and every forwarding header tollgate strips, are
/// refused too ([`is_reserved`]).
const RESERVED_HEADERS: [&str; 13] = [
    "authorization",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "host",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a claim header would collide with a header tollgate strips from clients or sets
/// itself: a backend reads `_` as `-` (ASP.NET Core, PHP, CGI), so both spellings are
/// refused. A collision would either forward a claim under a name the backend trusts for
/// something else, or see tollgate's own claim header removed on its way out.
fn is_reserved(lower: &str) -> bool {
    let name = lower.replace('_', "-");
    RESERVED_HEADERS.contains(&name.as_str())
        || FORWARDING_HEADERS.contains(&name.as_str())
        || name.starts_with("x-forwarded-")
        || name.starts_with("x-ms-")
}

pub(super) fn identity(cx: &mut Context<'_>, raw: RawIdentity) -> Identity {
    let mut claims = Vec::new();
    let mut seen = HashSet::new();
    if let Some(map) = raw.claims {
        let span = map.span();
        for (header, claim) in map.into_inner() {
            let key = format!("identity.claims.{header:?}");
            let Ok(name) = http::HeaderName::from_bytes(header.as_bytes()) else {
                cx.error_at(
                    span.clone(),
                    &key,
                    format!("{header:?} is not a valid header name"),
                );
                continue;
            };
            let lower = name.as_str();
            if is_reserved(lower) {
                cx.error(
                    &claim,
                    &key,
                    format!(
                        "header {header:?} is reserved and cannot carry a claim: tollgate owns \
                         framing, credential, X-Forwarded-*, X-MS-* and forwarding headers"
                    ),
                );
                continue;
            }
            if !seen.insert(lower.replace('_', "-")) {
                cx.error_at(
                    span.clone(),
                    &key,
                    format!("header {header:?} is mapped twice"),
                );
                continue;
            }
            if claim.get_ref().is_empty() {
                cx.error(&claim, &key, "claim name must not be empty");
                continue;
            }
            claims.push((name, claim.into_inner()));
        }
    }
    Identity {
        easy_auth_headers: raw.easy_auth_headers.unwrap_or(true),
        forward_token: raw.forward_token.unwrap_or(true),
        claims,
    }
}
