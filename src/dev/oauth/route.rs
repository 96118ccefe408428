//! Which endpoint a path names, at the root or under a tenant as Entra's are
//! (`/{tenant}/oauth2/v2.0/token`), and the discovery documents.
//!
//! The `issuer` of the root discovery document is the dev issuer, the `iss` of every token, on
//! http and https alike, so tollgate's `[[issuers]]` entry holds wherever it reads discovery
//! from. The tenant-shaped documents (`/{tenant}/v2.0/.well-known/openid-configuration`) are
//! what the Azure SDKs read: there `issuer` is `{base}/{tenant}/v2.0`, at the document's own
//! origin, the shape of Entra's, because msal-node refuses a document whose issuer is at
//! another origin. Nothing validates tokens against that value.

use http::Uri;
use serde_json::{Value, json};

use super::Params;
use crate::dev::issuer::LocalIssuer;

/// An endpoint of the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/.well-known/openid-configuration`, `/{tenant}/v2.0/.well-known/openid-configuration`.
    Discovery,
    /// `/common/discovery/instance`: Entra's instance discovery.
    InstanceDiscovery,
    /// `…/oauth2/v2.0/authorize`.
    Authorize,
    /// `…/oauth2/v2.0/token`.
    Token,
    /// `…/oauth2/v2.0/logout`: end session.
    Logout,
}

impl Endpoint {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Discovery => "discovery",
            Endpoint::InstanceDiscovery => "instance_discovery",
            Endpoint::Authorize => "authorize",
            Endpoint::Token => "token",
            Endpoint::Logout => "logout",
        }
    }
}

/// The tenant (if the path has one) and the endpoint of `path`.
pub fn route(path: &str) -> Option<(Option<&str>, Endpoint)> {
    let rest = path.strip_prefix('/')?;
    if let Some(endpoint) = endpoint(rest) {
        return Some((None, endpoint));
    }
    let (tenant, rest) = rest.split_once('/')?;
    if !is_tenant(tenant) {
        return None;
    }
    endpoint(rest).map(|endpoint| (Some(tenant), endpoint))
}

fn endpoint(rest: &str) -> Option<Endpoint> {
    Some(match rest {
        ".well-known/openid-configuration" | "v2.0/.well-known/openid-configuration" => {
            Endpoint::Discovery
        }
        "discovery/instance" => Endpoint::InstanceDiscovery,
        "oauth2/v2.0/authorize" => Endpoint::Authorize,
        "oauth2/v2.0/token" => Endpoint::Token,
        "oauth2/v2.0/logout" => Endpoint::Logout,
        _ => return None,
    })
}

/// A GUID, a domain name, or `common` / `organizations` / `consumers`: letters, digits, `-`,
/// `.`, `_`, not starting with a dot (so never `..`).
pub fn is_tenant(tenant: &str) -> bool {
    (1..=256).contains(&tenant.len())
        && !tenant.starts_with('.')
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// The OpenID Connect discovery document for `base`, under `tenant` if given.
pub fn discovery(issuer: &LocalIssuer, base: &str, tenant: Option<&str>) -> Value {
    let mut document = issuer.discovery(base);
    let at = match tenant {
        Some(t) => format!("{base}/{t}"),
        None => base.to_owned(),
    };
    let members = json!({
        "authorization_endpoint": format!("{at}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{at}/oauth2/v2.0/token"),
        "end_session_endpoint": format!("{at}/oauth2/v2.0/logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "form_post"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported":
            ["client_secret_post", "client_secret_basic", "private_key_jwt"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "subject_types_supported": ["pairwise"],
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "nbf", "nonce", "oid", "tid", "name",
            "preferred_username", "roles", "groups", "ver",
        ],
        "request_uri_parameter_supported": false,
        "frontchannel_logout_supported": false,
        "tenant_region_scope": null,
        "cloud_instance_name": "tollgate.dev",
    });
    if let (Some(doc), Some(extra)) = (document.as_object_mut(), members.as_object()) {
        doc.extend(extra.clone());
        if let Some(t) = tenant {
            doc.insert("issuer".into(), json!(format!("{base}/{t}/v2.0")));
        }
    }
    document
}

/// Entra's instance discovery answer: the tenant discovery document for the tenant of the
/// `authorization_endpoint` asked about, and this host as its own only alias.
pub fn instance_discovery(base: &str, uri: &Uri) -> Value {
    let query = Params::parse(uri.query().unwrap_or_default().as_bytes());
    let tenant = query
        .get("authorization_endpoint")
        .and_then(|a| url::Url::parse(a).ok())
        .and_then(|a| {
            let first = a.path_segments()?.next()?.to_owned();
            is_tenant(&first).then_some(first)
        })
        .unwrap_or_else(|| "common".to_owned());
    let host = base.split_once("://").map_or(base, |(_, h)| h);
    json!({
        "tenant_discovery_endpoint": format!("{base}/{tenant}/v2.0/.well-known/openid-configuration"),
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_at_the_root_and_under_a_tenant() {
        type Routed<'a> = Option<(Option<&'a str>, Endpoint)>;
        let cases: [(&str, Routed<'_>); 12] = [
            (
                "/.well-known/openid-configuration",
                Some((None, Endpoint::Discovery)),
            ),
            (
                "/t1/v2.0/.well-known/openid-configuration",
                Some((Some("t1"), Endpoint::Discovery)),
            ),
            (
                "/common/discovery/instance",
                Some((Some("common"), Endpoint::InstanceDiscovery)),
            ),
            ("/oauth2/v2.0/token", Some((None, Endpoint::Token))),
            (
                "/contoso.onmicrosoft.com/oauth2/v2.0/authorize",
                Some((Some("contoso.onmicrosoft.com"), Endpoint::Authorize)),
            ),
            (
                "/d3e7d3e7-0000-4000-8000-00000000007e/oauth2/v2.0/logout",
                Some((
                    Some("d3e7d3e7-0000-4000-8000-00000000007e"),
                    Endpoint::Logout,
                )),
            ),
            ("/a/b/oauth2/v2.0/token", None),
            ("/../oauth2/v2.0/token", None),
            ("/t%2F/oauth2/v2.0/token", None),
            ("/oauth2/v2.0/token/", None),
            ("/keys", None),
            ("/metadata/identity/oauth2/token", None),
        ];
        for (path, want) in cases {
            assert_eq!(route(path), want, "{path}");
        }
    }
}
