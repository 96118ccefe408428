//! What the tokens say, as Entra v2 writes them: delegated access tokens for one resource,
//! id tokens (back-dated 300 s), and app-only tokens for the client credentials grant.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::Grant;
use super::client::Proof;
use super::error::{ErrorKind, OAuthError};
use crate::dev::identity::derived_guid;
use crate::dev::issuer::TokenSpec;

/// Scopes that ask for an id token, claims or a refresh token, never for a resource.
pub(super) const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];
/// The resource of a scope named without one (`User.Read`), as Entra reads it.
const GRAPH: &str = "https://graph.microsoft.com";
/// The delegated scope of a token whose request named none (only OIDC scopes, or `.default`).
const DEFAULT_SCOPE_NAME: &str = "user_impersonation";
/// id tokens live an hour whatever the access tokens do.
const ID_TOKEN_LIFETIME: u64 = 3600;
/// Entra back-dates an id token's `iat` and `nbf` by 5 minutes.
const ID_TOKEN_BACKDATE: u64 = 300;

/// The resource and delegated scopes an access token is for.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Audience {
    /// `aud`.
    pub resource: String,
    /// `scp` names (`read` of `api://x/read`).
    pub names: Vec<String>,
    /// The request's scopes for that resource, as written (the response's `scope`).
    pub scopes: Vec<String>,
}

pub(super) fn is_oidc(scope: &str) -> bool {
    OIDC_SCOPES.contains(&scope)
}

/// The resource a scope belongs to: `api://x/read` → `api://x`, `api://x/.default` →
/// `api://x`, `https://graph.microsoft.com/User.Read` → Graph, a bare `User.Read` → Graph.
/// `None` for OIDC scopes.
pub(super) fn resource_of(scope: &str) -> Option<&str> {
    if is_oidc(scope) {
        return None;
    }
    let after_scheme = scope.find("://").map_or(0, |i| i + 3);
    Some(match scope[after_scheme..].rfind('/') {
        Some(i) => &scope[..after_scheme + i],
        None if after_scheme > 0 => scope,
        None => GRAPH,
    })
}

/// The audience for `scopes`: the first non-OIDC scope's resource, else `client_id` (a
/// sign-in that asked for OIDC scopes only gets a token for the app itself). With `strict`
/// (an explicit `scope` at the token endpoint), scopes of two resources are AADSTS700022.
pub(super) fn audience(
    scopes: &[String],
    client_id: &str,
    strict: bool,
) -> Result<Audience, OAuthError> {
    let mut resources = scopes.iter().filter_map(|s| resource_of(s));
    let Some(resource) = resources.next() else {
        return Ok(Audience {
            resource: client_id.to_owned(),
            names: vec![DEFAULT_SCOPE_NAME.to_owned()],
            scopes: Vec::new(),
        });
    };
    if strict && resources.any(|r| r != resource) {
        return Err(OAuthError::new(
            ErrorKind::InvalidScope,
            700022,
            "The provided value for the input parameter scope is not valid because it contains more than one resource.",
        ));
    }
    let mine: Vec<String> = scopes
        .iter()
        .filter(|s| resource_of(s) == Some(resource))
        .cloned()
        .collect();
    let mut names: Vec<String> = mine
        .iter()
        .map(|s| s[resource.len()..].trim_start_matches('/').to_owned())
        .filter(|n| !n.is_empty() && n != ".default")
        .collect();
    if names.is_empty() {
        names.push(DEFAULT_SCOPE_NAME.to_owned());
    }
    Ok(Audience {
        resource: resource.to_owned(),
        names,
        scopes: mine,
    })
}

/// A delegated access token for the grant's user.
pub(super) fn user_access_token(
    grant: &Grant,
    audience: &Audience,
    tenant: &str,
    proof: Proof,
    lifetime: Duration,
) -> TokenSpec {
    let user = &grant.user;
    let mut extra = user_claims(grant, tenant);
    extra.insert("azpacr".into(), json!(proof.acr()));
    TokenSpec {
        audience: audience.resource.clone(),
        roles: user.roles.clone(),
        scopes: audience.names.clone(),
        tenant: Some(tenant.to_owned()),
        object_id: Some(user.oid.clone()),
        client_app: Some(grant.client_id.clone()),
        lifetime,
        extra,
    }
}

/// The id token's claims: `aud` the client, `nonce` from `/authorize` (first sign-in only),
/// `iat = nbf = now - 300`, `exp = now + 3600`.
pub(super) fn id_token(
    iss: &str,
    grant: &Grant,
    tenant: &str,
    nonce: Option<&str>,
    now: SystemTime,
) -> Value {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let user = &grant.user;
    let mut claims = json!({
        "iss": iss, "aud": grant.client_id, "tid": tenant, "oid": user.oid, "ver": "2.0",
        "iat": now.saturating_sub(ID_TOKEN_BACKDATE), "nbf": now.saturating_sub(ID_TOKEN_BACKDATE),
        "exp": now + ID_TOKEN_LIFETIME,
    });
    if let Some(map) = claims.as_object_mut() {
        map.extend(user_claims(grant, tenant));
        if !user.roles.is_empty() {
            map.insert("roles".into(), json!(user.roles));
        }
        if let Some(nonce) = nonce {
            map.insert("nonce".into(), json!(nonce));
        }
    }
    claims
}

/// An app-only token for `client_id` (client credentials): `appid`/`azp`, `idtyp: app`, the
/// app roles, and the object id of the app's service principal.
pub(super) fn app_token(
    client_id: &str,
    resource: &str,
    tenant: &str,
    roles: &[String],
    proof: Proof,
    lifetime: Duration,
) -> TokenSpec {
    let mut extra = Map::new();
    extra.insert("appid".into(), json!(client_id));
    extra.insert("appidacr".into(), json!(proof.acr()));
    extra.insert("azpacr".into(), json!(proof.acr()));
    extra.insert("idtyp".into(), json!("app"));
    TokenSpec {
        audience: resource.to_owned(),
        roles: roles.to_vec(),
        scopes: Vec::new(),
        tenant: Some(tenant.to_owned()),
        object_id: Some(derived_guid("service_principal", client_id)),
        client_app: Some(client_id.to_owned()),
        lifetime,
        extra,
    }
}

/// Claims about the user shared by access and id tokens: names, groups, and `sub`, which is
/// pairwise (per user and app) as Entra's is.
fn user_claims(grant: &Grant, tenant: &str) -> Map<String, Value> {
    let user = &grant.user;
    let mut claims = Map::new();
    claims.insert("name".into(), json!(user.name));
    claims.insert("preferred_username".into(), json!(user.preferred_username));
    claims.insert(
        "sub".into(),
        json!(pairwise_subject(&user.oid, &grant.client_id)),
    );
    // A user of the Graph stand-in's directory in more groups than a JWT holds gets the
    // overage form, as from Entra; everyone else the groups picked on the sign-in page.
    let overage = crate::dev::graph::overage_group_count(&user.oid)
        .filter(|&n| n > crate::dev::graph::JWT_GROUPS_LIMIT);
    if overage.is_some() {
        claims.extend(crate::dev::graph::overage_claims(tenant, &user.oid));
    } else if !user.groups.is_empty() {
        claims.insert("groups".into(), json!(user.groups));
    }
    if grant.scopes.iter().any(|s| s == "email") && user.preferred_username.contains('@') {
        claims.insert("email".into(), json!(user.preferred_username));
    }
    claims
}

fn pairwise_subject(oid: &str, client_id: &str) -> String {
    let input = format!("sub\0{oid}\0{client_id}");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_resource_of_a_scope() {
        let cases = [
            ("api://x/read", Some("api://x")),
            ("api://x/.default", Some("api://x")),
            ("https://graph.microsoft.com/User.Read", Some(GRAPH)),
            ("User.Read", Some(GRAPH)),
            (
                "00000003-0000-0000-c000-000000000000/User.Read",
                Some("00000003-0000-0000-c000-000000000000"),
            ),
            ("api://x", Some("api://x")),
            (
                "https://orders.example/api/read",
                Some("https://orders.example/api"),
            ),
            ("openid", None),
            ("offline_access", None),
        ];
        for (scope, want) in cases {
            assert_eq!(resource_of(scope), want, "{scope}");
        }
    }

    #[test]
    fn the_audience_is_the_first_resource_or_the_client() {
        let a = audience(
            &strings(&["openid", "api://x/read", "api://x/write", "offline_access"]),
            "c",
            true,
        )
        .unwrap();
        assert_eq!(a.resource, "api://x");
        assert_eq!(a.names, strings(&["read", "write"]));
        assert_eq!(a.scopes, strings(&["api://x/read", "api://x/write"]));
        let a = audience(&strings(&["openid", "profile"]), "c", true).unwrap();
        assert_eq!(
            (a.resource.as_str(), a.names.clone()),
            ("c", strings(&["user_impersonation"]))
        );
        let a = audience(&strings(&["api://x/.default"]), "c", true).unwrap();
        assert_eq!(a.names, strings(&["user_impersonation"]));
        // Two resources: refused at the token endpoint, the first one otherwise.
        let two = strings(&["api://x/read", "api://y/read"]);
        assert_eq!(audience(&two, "c", true).unwrap_err().code, 700022);
        assert_eq!(audience(&two, "c", false).unwrap().resource, "api://x");
    }
}
