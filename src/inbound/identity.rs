//! Identity headers: the client-supplied ones are stripped on every request before anything
//! else happens; the verified ones are added after authorization.

use http::{HeaderMap, HeaderName};

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
