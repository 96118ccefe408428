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
/// `name_typ` of the principal App Service writes for a bearer token (even when no claim of
/// that type exists): .NET's `ClaimTypes.Name`.
pub const NAME_TYPE: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name";
/// `role_typ`, always: .NET's `ClaimTypes.Role`. Under App Service's default ("legacy
/// claims") the `roles` claim itself keeps its short name, as here.
pub const ROLE_TYPE: &str = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role";

/// The claim types App Service writes for the JWT claims Entra issues: .NET's
/// `JwtSecurityTokenHandler` default inbound map, except `roles`, which its default legacy
/// mode leaves as `roles`. Claims not listed keep their names. Each type also as the header
/// writes it (`/` escaped), so the request path copies it instead of escaping it.
const CLAIM_TYPES: [(&str, &str, &str); 20] = [
    (
        "acr",
        "http://schemas.microsoft.com/claims/authnclassreference",
        r"http:\/\/schemas.microsoft.com\/claims\/authnclassreference",
    ),
    (
        "actort",
        "http://schemas.xmlsoap.org/ws/2009/09/identity/claims/actor",
        r"http:\/\/schemas.xmlsoap.org\/ws\/2009\/09\/identity\/claims\/actor",
    ),
    (
        "amr",
        "http://schemas.microsoft.com/claims/authnmethodsreferences",
        r"http:\/\/schemas.microsoft.com\/claims\/authnmethodsreferences",
    ),
    (
        "authmethod",
        "http://schemas.microsoft.com/ws/2008/06/identity/claims/authenticationmethod",
        r"http:\/\/schemas.microsoft.com\/ws\/2008\/06\/identity\/claims\/authenticationmethod",
    ),
    (
        "birthdate",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/dateofbirth",
        r"http:\/\/schemas.xmlsoap.org\/ws\/2005\/05\/identity\/claims\/dateofbirth",
    ),
    (
        "email",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
        r"http:\/\/schemas.xmlsoap.org\/ws\/2005\/05\/identity\/claims\/emailaddress",
    ),
    (
        "family_name",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname",
        r"http:\/\/schemas.xmlsoap.org\/ws\/2005\/05\/identity\/claims\/surname",
    ),
    (
        "gender",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/gender",
        r"http:\/\/schemas.xmlsoap.org\/ws\/2005\/05\/identity\/claims\/gender",
    ),
    (
        "given_name",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
        r"http:\/\/schemas.xmlsoap.org\/ws\/2005\/05\/identity\/claims\/givenname",
    ),
    (
        "group",
        "http://schemas.xmlsoap.org/claims/Group",
        r"http:\/\/schemas.xmlsoap.org\/claims\/Group",
    ),
    (
        "idp",
        "http://schemas.microsoft.com/identity/claims/identityprovider",
        r"http:\/\/schemas.microsoft.com\/identity\/claims\/identityprovider",
    ),
    (
        "nameid",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier",
        r"http:\/\/schemas.xmlsoap.org\/ws\/2005\/05\/identity\/claims\/nameidentifier",
    ),
    (
        "oid",
        "http://schemas.microsoft.com/identity/claims/objectidentifier",
        r"http:\/\/schemas.microsoft.com\/identity\/claims\/objectidentifier",
    ),
    (
        "role",
        "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
        r"http:\/\/schemas.microsoft.com\/ws\/2008\/06\/identity\/claims\/role",
    ),
    (
        "scp",
        "http://schemas.microsoft.com/identity/claims/scope",
        r"http:\/\/schemas.microsoft.com\/identity\/claims\/scope",
    ),
    (
        "sub",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier",
        r"http:\/\/schemas.xmlsoap.org\/ws\/2005\/05\/identity\/claims\/nameidentifier",
    ),
    (
        "tid",
        "http://schemas.microsoft.com/identity/claims/tenantid",
        r"http:\/\/schemas.microsoft.com\/identity\/claims\/tenantid",
    ),
    (
        "unique_name",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
        r"http:\/\/schemas.xmlsoap.org\/ws\/2005\/05\/identity\/claims\/name",
    ),
    (
        "upn",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
        r"http:\/\/schemas.xmlsoap.org\/ws\/2005\/05\/identity\/claims\/upn",
    ),
    (
        "website",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/webpage",
        r"http:\/\/schemas.xmlsoap.org\/ws\/2005\/05\/identity\/claims\/webpage",
    ),
];

/// The claim type App Service writes for the JWT claim `name`.
pub fn claim_type(name: &str) -> &str {
    mapped(name).map_or(name, |(typ, _)| typ)
}

/// The mapped type of a claim and its escaped form, if the claim is mapped.
fn mapped(name: &str) -> Option<(&'static str, &'static str)> {
    CLAIM_TYPES
        .binary_search_by(|(claim, ..)| (*claim).cmp(name))
        .ok()
        .map(|i| (CLAIM_TYPES[i].1, CLAIM_TYPES[i].2))
}

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

/// The Easy Auth principal: `{auth_typ, claims: [{typ, val}], name_typ, role_typ}`, as a
/// value (`tollgate explain` prints it). [`principal_json`] writes the header's bytes.
pub fn principal(claims: &Claims) -> Value {
    json!({
        "auth_typ": IDP,
        "claims": claim_list(claims),
        "name_typ": NAME_TYPE,
        "role_typ": ROLE_TYPE,
    })
}

/// The principal JSON exactly as App Service writes it: keys `auth_typ`, `claims`,
/// `name_typ`, `role_typ` in that order, no whitespace, `/` escaped as `\/`, one `{typ, val}`
/// entry per claim in the token's own order, array claims as one entry per element,
/// every value a string (numbers and booleans as their text, objects as compact JSON),
/// claim types mapped as .NET maps them ([`claim_type`]). Written directly: the request
/// path builds one for every authenticated request, and a `serde_json::Value` tree costs
/// several times as much (bench/NOTES.md).
pub fn principal_json(claims: &Claims) -> String {
    let mut out = String::with_capacity(768);
    out.push_str("{\"auth_typ\":\"aad\",\"claims\":[");
    let mut first = true;
    for_each_entry(claims, |name, val| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str("{\"typ\":");
        match mapped(name) {
            Some((_, escaped)) => {
                out.push('"');
                out.push_str(escaped);
                out.push('"');
            }
            None => push_escaped(&mut out, name),
        }
        out.push_str(",\"val\":");
        push_escaped(&mut out, val);
        out.push('}');
    });
    out.push_str(PRINCIPAL_TAIL);
    out
}

/// The end of the principal JSON: its name and role types, escaped.
const PRINCIPAL_TAIL: &str = r#"],"name_typ":"http:\/\/schemas.xmlsoap.org\/ws\/2005\/05\/identity\/claims\/name","role_typ":"http:\/\/schemas.microsoft.com\/ws\/2008\/06\/identity\/claims\/role"}"#;

/// Every claim as `{typ, val}` entries, in the token's order, arrays repeated (`/.auth/me`'s
/// `user_claims`, the principal's `claims`).
pub fn claim_list(claims: &Claims) -> Vec<Value> {
    let mut list = Vec::new();
    for_each_entry(claims, |name, val| {
        list.push(json!({ "typ": claim_type(name), "val": val }));
    });
    list
}

/// Calls `f(claim name, val)` for each principal entry of `claims`.
fn for_each_entry(claims: &Claims, mut f: impl FnMut(&str, &str)) {
    let mut text = String::new();
    for (name, value) in claims.iter() {
        let typ = name.as_str();
        let items = match value {
            Value::Array(items) => items.as_slice(),
            other => std::slice::from_ref(other),
        };
        for item in items {
            match item {
                Value::String(s) => f(typ, s),
                Value::Bool(b) => f(typ, if *b { "true" } else { "false" }),
                other => {
                    use std::fmt::Write;
                    text.clear();
                    let _ = write!(text, "{other}");
                    f(typ, &text);
                }
            }
        }
    }
}

/// `text` as a JSON string, escaped as App Service escapes it: `"`, `\\`, controls, and `/`.
/// Byte by byte: every byte that needs escaping is ASCII, so the runs between are whole
/// UTF-8 and are copied as they are.
fn push_escaped(out: &mut String, text: &str) {
    out.push('"');
    let mut start = 0;
    for (i, &b) in text.as_bytes().iter().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'/' => "\\/",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[start..i]);
        if escaped.is_empty() {
            use std::fmt::Write;
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escaped);
        }
        start = i + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

/// `X-MS-CLIENT-PRINCIPAL-ID`: the caller's `oid`, else `sub`.
pub fn principal_id(claims: &Claims) -> Option<&str> {
    claims.object_id().or_else(|| claims.str("sub"))
}

/// `X-MS-CLIENT-PRINCIPAL-NAME`: the claim of the principal's `name_typ` (`unique_name`), else
/// the first of `preferred_username`, `upn`, `email`, `name`; for an application token (none
/// of those), its client id.
pub fn principal_name(claims: &Claims) -> Option<&str> {
    ["unique_name", "preferred_username", "upn", "email", "name"]
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
    /// App Service's bytes (a v1 access token's principal, the shape of the captured
    /// headers): payload order, mapped claim types, `amr` split, numbers and booleans as
    /// strings, an object as compact JSON, `/` escaped, padded standard base64.
    fn the_principal_is_written_as_app_service_writes_it() {
        let claims = Claims::parse(
            br#"{"aud":"api://orders","iss":"https://sts.windows.net/t-1/","iat":1615483502,"amr":["pwd","mfa"],"oid":"o-1","roles":["Orders.Read"],"scp":"user_impersonation","sub":"s-1","tid":"t-1","unique_name":"ana@contoso.com","in_corp":true,"_claim_names":{"groups":"src1"},"ver":"1.0"}"#,
        )
        .unwrap();
        let want = concat!(
            r#"{"auth_typ":"aad","claims":["#,
            r#"{"typ":"aud","val":"api:\/\/orders"},"#,
            r#"{"typ":"iss","val":"https:\/\/sts.windows.net\/t-1\/"},"#,
            r#"{"typ":"iat","val":"1615483502"},"#,
            r#"{"typ":"http:\/\/schemas.microsoft.com\/claims\/authnmethodsreferences","val":"pwd"},"#,
            r#"{"typ":"http:\/\/schemas.microsoft.com\/claims\/authnmethodsreferences","val":"mfa"},"#,
            r#"{"typ":"http:\/\/schemas.microsoft.com\/identity\/claims\/objectidentifier","val":"o-1"},"#,
            r#"{"typ":"roles","val":"Orders.Read"},"#,
            r#"{"typ":"http:\/\/schemas.microsoft.com\/identity\/claims\/scope","val":"user_impersonation"},"#,
            r#"{"typ":"http:\/\/schemas.xmlsoap.org\/ws\/2005\/05\/identity\/claims\/nameidentifier","val":"s-1"},"#,
            r#"{"typ":"http:\/\/schemas.microsoft.com\/identity\/claims\/tenantid","val":"t-1"},"#,
            r#"{"typ":"http:\/\/schemas.xmlsoap.org\/ws\/2005\/05\/identity\/claims\/name","val":"ana@contoso.com"},"#,
            r#"{"typ":"in_corp","val":"true"},"#,
            r#"{"typ":"_claim_names","val":"{\"groups\":\"src1\"}"},"#,
            r#"{"typ":"ver","val":"1.0"}],"#,
            r#""name_typ":"http:\/\/schemas.xmlsoap.org\/ws\/2005\/05\/identity\/claims\/name","#,
            r#""role_typ":"http:\/\/schemas.microsoft.com\/ws\/2008\/06\/identity\/claims\/role"}"#,
        );
        let json = principal_json(&claims);
        assert_eq!(json, want);
        // The same entries, unescaped, as `explain` shows them and `/.auth/me` lists them.
        assert_eq!(
            serde_json::from_str::<Value>(&json).unwrap(),
            principal(&claims)
        );
        assert_eq!(principal_name(&claims), Some("ana@contoso.com"));
        let header = identity_headers(
            &claims,
            &Identity {
                easy_auth_headers: true,
                forward_token: true,
                claims: vec![],
            },
        );
        let (_, value) = header.set.iter().find(|(k, _)| k == PRINCIPAL).unwrap();
        assert_eq!(
            value.to_str().unwrap(),
            STANDARD.encode(&json),
            "padded standard base64"
        );
    }

    #[test]
    fn the_claim_type_table_is_sorted_for_its_search() {
        assert!(CLAIM_TYPES.windows(2).all(|w| w[0].0 < w[1].0));
        for (claim, typ, escaped) in CLAIM_TYPES {
            let mut out = String::new();
            push_escaped(&mut out, typ);
            assert_eq!(out, format!("\"{escaped}\""), "{claim}");
        }
        let mut tail = String::from("],\"name_typ\":");
        push_escaped(&mut tail, NAME_TYPE);
        tail.push_str(",\"role_typ\":");
        push_escaped(&mut tail, ROLE_TYPE);
        tail.push('}');
        assert_eq!(tail, PRINCIPAL_TAIL);
        let mut odd = String::new();
        push_escaped(&mut odd, "a\"b\\c/d\u{1}é\n");
        assert_eq!(odd, r#""a\"b\\c\/d\u0001é\n""#);
        assert_eq!(
            claim_type("roles"),
            "roles",
            "legacy claims: roles keeps its name"
        );
        assert_eq!(claim_type("groups"), "groups");
        assert_eq!(
            claim_type("upn"),
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
        );
    }

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
        assert_eq!(decoded["role_typ"], ROLE_TYPE);
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
