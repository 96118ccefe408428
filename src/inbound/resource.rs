//! Protected resource metadata (RFC 9728) for the `[[resources]]` of a configuration: each
//! resource's document, built once; which resource covers a request path; the audiences a
//! token for it may name (RFC 8707); and what its challenges add (`resource_metadata`, and the
//! scopes of a 403 written as the resource names them).

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, ALLOW, CACHE_CONTROL, CONTENT_TYPE,
};
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::{Value, json};

use super::issuer::split_template;
use crate::config::{self, METADATA_PATH, PathMatch};
use crate::proxy::{Body, full};

/// The methods a metadata path answers; any other gets 405 with this `Allow`.
pub const ALLOWED_METHODS: &str = "GET, HEAD, OPTIONS";

/// The protected resources of one configuration.
#[derive(Default)]
pub struct Resources(Vec<ProtectedResource>);

/// One `[[resources]]` entry, ready to serve and to bind tokens to.
pub struct ProtectedResource {
    /// The settings.
    pub settings: config::Resource,
    /// The `aud` values a token for a covered path may carry: the resource itself, then its
    /// issuer's `audiences`.
    pub audiences: Vec<String>,
    /// The metadata document, serialised once.
    pub document: Bytes,
    prefix: PathMatch,
    /// `scheme://host[:port]` of the resource URL, for a `resource_metadata` URL when the
    /// request's own origin is unknown (`tollgate explain` without a URL).
    own_origin: String,
}

impl Resources {
    /// Compiles `resources`, whose issuers are among `issuers` (validation made sure).
    pub fn new(resources: &[config::Resource], issuers: &[config::Issuer]) -> Resources {
        Resources(
            resources
                .iter()
                .map(|r| ProtectedResource::new(r, issuers.iter().find(|i| i.name == r.issuer)))
                .collect(),
        )
    }

    /// Whether the configuration has none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every resource, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &ProtectedResource> {
        self.0.iter()
    }

    /// Whether tollgate answers `path` itself: with resources configured, the well-known path
    /// and everything below it (an unknown one is 404, never forwarded). Without any, the
    /// upstream may serve its own metadata.
    #[inline]
    pub fn owns(&self, path: &str) -> bool {
        !self.is_empty()
            && path
                .strip_prefix(METADATA_PATH)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The resource whose metadata document is at `path` (exactly: RFC 9728 §3.1 builds the
    /// URL from the resource identifier, so a client asks for this spelling).
    pub fn at_metadata_path(&self, path: &str) -> Option<&ProtectedResource> {
        self.0.iter().find(|r| r.settings.metadata_path == path)
    }

    /// The resource covering a normalised request path: of the prefixes that match it (as the
    /// matched route compares case), the longest.
    #[inline]
    pub fn covering(&self, path: &str, case_insensitive: bool) -> Option<&ProtectedResource> {
        self.0
            .iter()
            .filter(|r| r.prefix.matches(path, case_insensitive))
            .max_by_key(|r| r.settings.prefix.trim_end_matches('/').len())
    }
}

impl ProtectedResource {
    fn new(settings: &config::Resource, issuer: Option<&config::Issuer>) -> ProtectedResource {
        let audiences = std::iter::once(settings.resource.clone())
            .chain(issuer.into_iter().flat_map(|i| i.audiences.iter().cloned()))
            .collect();
        let own_origin = url::Url::parse(&settings.resource)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        ProtectedResource {
            document: Bytes::from(document(settings, issuer).to_string()),
            audiences,
            prefix: PathMatch::Prefix(settings.prefix.clone()),
            own_origin,
            settings: settings.clone(),
        }
    }

    /// The absolute URL of its metadata document on `origin` (`https://host[:port]`, the
    /// request's own as tollgate sees it), or on the resource's own origin when that is
    /// unknown or has no host.
    pub fn metadata_url(&self, origin: Option<&str>) -> String {
        let origin = origin
            .filter(|o| {
                o.split_once("://")
                    .is_some_and(|(_, host)| !host.is_empty())
            })
            .unwrap_or(&self.own_origin);
        format!("{origin}{}", self.settings.metadata_path)
    }

    /// The answer at its metadata path: the document for `GET` and `HEAD`, a CORS preflight
    /// answer for `OPTIONS` (browser-based clients send `MCP-Protocol-Version`); the document
    /// is public, so any origin may read it.
    pub fn respond(&self, method: &Method) -> Response<Body> {
        let mut r = if *method == Method::OPTIONS {
            let mut r = Response::new(full(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            let h = r.headers_mut();
            h.insert(ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
            h.insert(
                ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD"),
            );
            h.insert(ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("*"));
            h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
            r
        } else {
            let mut r = Response::new(full(self.document.clone()));
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            // A reload may change it; clients fetch it after a 401, not per request.
            h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
            r
        };
        r.headers_mut()
            .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        if *method == Method::HEAD {
            crate::proxy::for_head(r)
        } else {
            r
        }
    }
}

/// The `scope` parameter of a 403's challenge: the scopes the route requires, each written as
/// the covering resource's `scopes_supported` names it when it does (`api://mcp/tools.read`
/// for `tools.read`: the `scp` claim holds the short name, a client asks the authorization
/// server for the full one), else as the route writes it.
pub fn challenge_scope(scopes: &[String], resource: Option<&ProtectedResource>) -> String {
    let supported = resource.map_or(&[][..], |r| &r.settings.scopes_supported[..]);
    let mut out = String::new();
    for scope in scopes {
        let full = supported.iter().find(|s| {
            *s == scope
                || s.strip_suffix(scope.as_str())
                    .is_some_and(|head| head.ends_with('/'))
        });
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(full.unwrap_or(scope));
    }
    out
}

/// The metadata document (RFC 9728 §2): `resource`, `authorization_servers` (the issuer's URL;
/// for a `{tenantid}` issuer, one per allowed tenant), `scopes_supported` when given,
/// `bearer_methods_supported` (tollgate reads the `Authorization` header only) and
/// `resource_documentation` when given.
fn document(settings: &config::Resource, issuer: Option<&config::Issuer>) -> Value {
    let servers: Vec<String> = match issuer {
        None => Vec::new(),
        Some(i) => match split_template(&i.issuer) {
            None => vec![i.issuer.clone()],
            Some((head, tail)) => i
                .tenants
                .iter()
                .map(|t| format!("{head}{t}{tail}"))
                .collect(),
        },
    };
    let mut doc = json!({
        "resource": settings.resource,
        "authorization_servers": servers,
    });
    if let Some(map) = doc.as_object_mut() {
        if !settings.scopes_supported.is_empty() {
            map.insert("scopes_supported".into(), json!(settings.scopes_supported));
        }
        map.insert("bearer_methods_supported".into(), json!(["header"]));
        if let Some(d) = &settings.resource_documentation {
            map.insert("resource_documentation".into(), json!(d.as_str()));
        }
    }
    doc
}

#[cfg(test)]
mod tests;
