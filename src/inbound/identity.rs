//! Identity headers: the client-supplied ones are stripped on every request before anything
//! else happens; the verified ones are added after authorization, in the shapes App Service
//! Easy Auth uses, so an app written for Easy Auth runs unchanged.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::{Value, json};

use super::claims::Claims;
use crate::config::Identity;

/// An identity header longer than this is left out (and counted), never truncated: a
/// truncated list of roles would be a different list.
pub const MAX_IDENTITY_HEADER_BYTES: usize = 8 * 1024;

/// `X-MS-CLIENT-PRINCIPAL`: base64 of the principal JSON.
pub static PRINCIPAL: HeaderName = HeaderName::from_static("x-ms-client-principal");
/// `X-MS-CLIENT-PRINCIPAL-ID`: `oid`, else `sub`.
pub static PRINCIPAL_ID: HeaderName = HeaderName::from_static("x-ms-client-principal-id");
/// `X-MS-CLIENT-PRINCIPAL-NAME`: a human-readable name.
pub static PRINCIPAL_NAME: HeaderName = HeaderName::from_static("x-ms-client-principal-name");
/// `X-MS-CLIENT-PRINCIPAL-IDP`: always `aad`.
pub static PRINCIPAL_IDP: HeaderName = HeaderName::from_static("x-ms-client-principal-idp");

/// The identity provider name Easy Auth uses for Entra ID.
pub const IDP: &str = "aad";
/// The claim types of the principal's name and roles: tollgate passes claim names as they are
/// in the token (Easy Auth maps some to long URIs), so these name the token's own claims.
pub const NAME_TYPE: &str = "name";
/// See [`NAME_TYPE`].
pub const ROLE_TYPE: &str = "roles";

/// Characters percent-encoded in identity header values: controls, `%` itself, and (by
/// `utf8_percent_encode`) everything outside ASCII.
const ENCODE: &AsciiSet = &CONTROLS.add(b'%');

/// The identity headers for one verified token, and those left out for size.
#[derive(Debug, Default)]
pub struct IdentityHeaders {
    /// Headers to set.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Headers left out because their value exceeded [`MAX_IDENTITY_HEADER_BYTES`].
    pub dropped: Vec<HeaderName>,
}

/// Computes the identity headers `identity` asks for. Pure: `tollgate explain` prints them.
pub fn identity_headers(claims: &Claims, identity: &Identity) -> IdentityHeaders {
    let mut out = IdentityHeaders::default();
    let mut add = |name: &HeaderName, text: Option<String>| {
        let Some(text) = text else { return };
        match header_value(text) {
            Some(v) if v.len() <= MAX_IDENTITY_HEADER_BYTES => out.set.push((name.clone(), v)),
            _ => out.dropped.push(name.clone()),
        }
    };
    if identity.easy_auth_headers {
        add(&PRINCIPAL, Some(STANDARD.encode(principal_json(claims))));
        add(&PRINCIPAL_ID, principal_id(claims).map(str::to_owned));
        add(&PRINCIPAL_NAME, principal_name(claims).map(str::to_owned));
        add(&PRINCIPAL_IDP, Some(IDP.to_owned()));
    }
    for (header, claim) in &identity.claims {
        add(header, claims.header_text(claim));
    }
    out
}

/// Sets the identity headers on a request bound for the upstream, and removes the token
/// unless `forward_token` keeps it.
pub fn inject(headers: &mut HeaderMap, computed: IdentityHeaders, identity: &Identity) {
    for (name, value) in computed.set {
        headers.insert(name, value);
    }
    if !identity.forward_token {
        headers.remove(AUTHORIZATION);
    }
}

/// The Easy Auth principal: `{auth_typ, claims: [{typ, val}], name_typ, role_typ}`, every claim
/// of the token, array claims as repeated entries, non-string values as JSON text.
pub fn principal(claims: &Claims) -> Value {
    json!({
        "auth_typ": IDP,
        "claims": claim_list(claims),
        "name_typ": NAME_TYPE,
        "role_typ": ROLE_TYPE,
    })
}

/// [`principal`] as JSON text, written directly: the request path builds one for every
/// authenticated request, and a `serde_json::Value` tree costs several times as much
/// (bench/NOTES.md).
pub fn principal_json(claims: &Claims) -> String {
    use crate::telemetry::access_log::push_string;
    use std::fmt::Write;
    let mut out = String::with_capacity(512);
    out.push_str("{\"auth_typ\":\"aad\",\"claims\":[");
    let mut first = true;
    for (name, value) in claims.iter() {
        let items = match value {
            Value::Array(items) => items.as_slice(),
            other => std::slice::from_ref(other),
        };
        for item in items {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str("{\"typ\":");
            push_string(&mut out, name);
            out.push_str(",\"val\":");
            match item {
                Value::String(s) => push_string(&mut out, s),
                // Numbers and booleans need no escaping; anything else goes through serde.
                Value::Number(n) => {
                    let _ = write!(out, "\"{n}\"");
                }
                Value::Bool(b) => out.push_str(if *b { "\"true\"" } else { "\"false\"" }),
                other => push_string(&mut out, &other.to_string()),
            }
            out.push('}');
        }
    }
    let _ = write!(
        out,
        "],\"name_typ\":\"{NAME_TYPE}\",\"role_typ\":\"{ROLE_TYPE}\"}}"
    );
    out
}

/// Every claim as `{typ, val}` entries, arrays repeated.
pub fn claim_list(claims: &Claims) -> Vec<Value> {
    let mut list = Vec::new();
    for (name, value) in claims.iter() {
        let items: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for item in items {
            let val = match item {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            list.push(json!({ "typ": name, "val": val }));
        }
    }
    list
}

/// `X-MS-CLIENT-PRINCIPAL-ID`: the caller's `oid`, else `sub`.
pub fn principal_id(claims: &Claims) -> Option<&str> {
    claims.object_id().or_else(|| claims.str("sub"))
}

/// `X-MS-CLIENT-PRINCIPAL-NAME`: the first of `preferred_username`, `upn`, `unique_name`,
/// `email`, `name`; for an application token (none of those), its client id.
pub fn principal_name(claims: &Claims) -> Option<&str> {
    ["preferred_username", "upn", "unique_name", "email", "name"]
        .iter()
        .find_map(|c| claims.str(c))
        .or_else(|| claims.client_app())
}

/// A header value for `text`: kept as is when it is printable ASCII, else percent-encoded
/// (UTF-8). `None` only if even that is not a valid value.
pub fn header_value(text: String) -> Option<HeaderValue> {
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        // Takes the String's buffer as it is: no copy.
        HeaderValue::try_from(text).ok()
    } else {
        HeaderValue::try_from(utf8_percent_encode(&text, ENCODE).to_string()).ok()
    }
}

/// Removes every header a client could use to impersonate someone: the names mapped in
/// `[identity.claims]`, `X-MS-CLIENT-PRINCIPAL*` and `X-MS-TOKEN-*`, each also spelled with
/// `_` for `-` (some frameworks read `X_MS_CLIENT_PRINCIPAL_ID` as the same header).
///
/// Runs first, on every route including anonymous ones: a route that never looks at a token
/// must still not let a forged identity through to the upstream.
pub fn strip_spoofable(headers: &mut HeaderMap, claim_headers: &[HeaderName]) {
    // Collecting into an empty Vec does not allocate: the usual request pays nothing.
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_spoofable(name.as_str(), claim_headers))
        .cloned()
        .collect();
    for name in doomed {
        tracing::debug!(header = %name, "removed client-supplied identity header");
        headers.remove(name);
    }
}

/// Whether a (lower-case) header name is one tollgate alone may set.
pub fn is_spoofable(name: &str, claim_headers: &[HeaderName]) -> bool {
    starts_with_folded(name, "x-ms-client-principal")
        || starts_with_folded(name, "x-ms-token-")
        || claim_headers
            .iter()
            .any(|h| h.as_str().len() == name.len() && starts_with_folded(name, h.as_str()))
}

/// Prefix test treating `_` and `-` as the same byte; header names are already lower case.
fn starts_with_folded(name: &str, prefix: &str) -> bool {
    let fold = |b: u8| if b == b'_' { b'-' } else { b };
    name.len() >= prefix.len()
        && name
            .bytes()
            .zip(prefix.bytes())
            .all(|(a, b)| fold(a) == fold(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn easy_auth_shapes() {
        let claims = Claims::parse(
            br#"{"oid":"o-1","sub":"s-1","preferred_username":"ana@contoso.com","roles":["a","b"],"tid":"t","exp":5}"#,
        )
        .unwrap();
        let identity = Identity {
            easy_auth_headers: true,
            forward_token: false,
            claims: vec![(HeaderName::from_static("x-user-roles"), "roles".into())],
        };
        let computed = identity_headers(&claims, &identity);
        let get = |n: &str| {
            computed
                .set
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
        };
        assert_eq!(get("x-ms-client-principal-id").as_deref(), Some("o-1"));
        assert_eq!(
            get("x-ms-client-principal-name").as_deref(),
            Some("ana@contoso.com")
        );
        assert_eq!(get("x-ms-client-principal-idp").as_deref(), Some("aad"));
        assert_eq!(get("x-user-roles").as_deref(), Some("a,b"));
        let decoded: Value = serde_json::from_slice(
            &STANDARD
                .decode(get("x-ms-client-principal").unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(decoded["auth_typ"], "aad");
        assert_eq!(decoded["role_typ"], "roles");
        let roles: Vec<&str> = decoded["claims"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["typ"] == "roles")
            .map(|c| c["val"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["a", "b"], "array claims are repeated entries");
        assert!(
            decoded["claims"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["typ"] == "exp" && c["val"] == "5")
        );

        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        inject(&mut headers, computed, &identity);
        assert!(
            headers.get(AUTHORIZATION).is_none(),
            "forward_token = false removes the token"
        );
    }

    #[test]
    fn the_direct_principal_is_the_value_principal() {
        let claims = Claims::parse(
            br#"{"oid":"o","roles":["a","b\"q"],"n":5,"f":1.5,"t":true,"nul":null,"o":{"k":[1]},"esc":"line\nbreak\u0001","name":"Jos\u00e9"}"#,
        )
        .unwrap();
        let direct: Value = serde_json::from_str(&principal_json(&claims)).unwrap();
        assert_eq!(direct, principal(&claims));
    }

    #[test]
    fn values_are_encoded_and_oversized_ones_dropped() {
        assert_eq!(header_value("plain value".into()).unwrap(), "plain value");
        assert_eq!(header_value("José\n".into()).unwrap(), "Jos%C3%A9%0A");
        let long = format!(
            r#"{{"big":"{}","small":"x"}}"#,
            "a".repeat(MAX_IDENTITY_HEADER_BYTES + 1)
        );
        let claims = Claims::parse(long.as_bytes()).unwrap();
        let identity = Identity {
            easy_auth_headers: false,
            forward_token: true,
            claims: vec![
                (HeaderName::from_static("x-big"), "big".into()),
                (HeaderName::from_static("x-small"), "small".into()),
                (HeaderName::from_static("x-absent"), "absent".into()),
            ],
        };
        let computed = identity_headers(&claims, &identity);
        assert_eq!(computed.dropped, [HeaderName::from_static("x-big")]);
        assert_eq!(computed.set.len(), 1);
    }

    #[test]
    fn strips_every_spelling() {
        let claims = [HeaderName::from_static("x-user-roles")];
        let mut h = HeaderMap::new();
        for name in [
            "x-ms-client-principal",
            "x-ms-client-principal-id",
            "x_ms_client_principal_name",
            "x-ms-client-principal-idp",
            "x-ms-token-aad-access-token",
            "x_ms_token_aad_id_token",
            "x-user-roles",
            "x_user_roles",
            "x-user-roles-extra",
            "accept",
        ] {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                "forged".parse().unwrap(),
            );
        }
        strip_spoofable(&mut h, &claims);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-user-roles-extra"]);
    }
}
