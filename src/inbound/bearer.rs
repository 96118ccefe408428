//! The bearer token of a request: `Authorization: Bearer <token>` only (RFC 6750 §2.1; never
//! the query string), one header, at most 16 KiB.

use http::HeaderMap;
use http::header::AUTHORIZATION;

use super::jwt::AuthError;

/// Largest token accepted. Entra tokens are 1–3 KiB; a large one is an attack or a mistake.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Bytes a JWT may contain: base64url, the `.` separators, and `=` (tolerated padding). A
/// table, because the check runs over every byte of every token.
static TOKEN_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'=');
        b += 1;
    }
    table
};

/// The bearer token, `Ok(None)` when the request carries none (no header, or another
/// scheme such as Basic).
pub fn extract(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    // Two headers could be read differently by tollgate and the upstream.
    if values.next().is_some() {
        return Err(AuthError::MultipleAuthorization);
    }
    // The scheme ends at the first space or tab: a backend that splits on either would
    // otherwise find a token in `Bearer<TAB>...` that tollgate never checked.
    let bytes = value.as_bytes();
    let scheme_end = bytes
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(bytes.len());
    if !bytes[..scheme_end].eq_ignore_ascii_case(b"bearer") {
        return Ok(None);
    }
    let token = bytes[scheme_end..].trim_ascii();
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::TokenTooLarge);
    }
    if token.is_empty() || !token.iter().all(|&b| TOKEN_BYTES[usize::from(b)]) {
        return Err(AuthError::Malformed(
            "the token contains characters outside base64url",
        ));
    }
    // All bytes were checked to be ASCII.
    std::str::from_utf8(token)
        .map(Some)
        .map_err(|_| AuthError::Malformed("the token is not ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn extracts() {
        assert_eq!(extract(&headers(&[])).unwrap(), None);
        assert_eq!(extract(&headers(&["Bearer a.b.c"])).unwrap(), Some("a.b.c"));
        assert_eq!(extract(&headers(&["bearer a.b.c"])).unwrap(), Some("a.b.c"));
        assert_eq!(
            extract(&headers(&["BEARER   a.b.c  "])).unwrap(),
            Some("a.b.c")
        );
        assert_eq!(extract(&headers(&["Basic dXNlcjpw"])).unwrap(), None);
        assert_eq!(extract(&headers(&["Bearerx"])).unwrap(), None);
        assert!(matches!(
            extract(&headers(&["Bearer a.b.c", "Bearer d.e.f"])),
            Err(AuthError::MultipleAuthorization)
        ));
        assert!(matches!(
            extract(&headers(&["Bearer "])),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            extract(&headers(&["Bearer"])),
            Err(AuthError::Malformed(_))
        ));
        assert_eq!(
            extract(&headers(&["Bearer\ta.b.c"])).unwrap(),
            Some("a.b.c")
        );
        assert!(matches!(
            extract(&headers(&["Bearer a b"])),
            Err(AuthError::Malformed(_))
        ));
        let big = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert!(matches!(
            extract(&headers(&[&big])),
            Err(AuthError::TokenTooLarge)
        ));
    }

    /// How a lenient backend reads a credential (ASP.NET Core's `JwtBearerHandler`, passport's
    /// `http-bearer`, most hand-written middleware): the scheme up to the first space or tab,
    /// compared ignoring case, and the rest, trimmed, as the token.
    fn lenient_token(value: &str) -> Option<&str> {
        let (scheme, rest) = value.split_once([' ', '\t'])?;
        let token = rest.trim_matches([' ', '\t']);
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    }

    fn credential() -> impl Strategy<Value = String> {
        let scheme = prop::sample::select(vec![
            "Bearer", "bearer", "BEARER", "bEaReR", "Basic", "Bearerx", "xBearer", "Token", "",
        ]);
        let gap = prop::sample::select(vec!["", " ", "\t", "  ", " \t ", "\t\t"]);
        let token = prop::collection::vec(
            prop::sample::select(vec![
                "eyJ", "a", "Z", "0", "-", "_", ".", "=", "+", "/", ",", " ", "\t", "\"", "~",
                "Bearer ",
            ]),
            0..12,
        )
        .prop_map(|parts| parts.concat());
        (scheme, gap.clone(), token, gap)
            .prop_map(|(scheme, gap, token, tail)| format!("{scheme}{gap}{token}{tail}"))
    }

    proptest! {
        /// Whatever a lenient backend would take as a bearer token, tollgate takes as the
        /// same token or refuses; it never lets one through as "no token".
        #[test]
        fn agrees_with_a_lenient_reader_or_refuses(value in credential()) {
            let Ok(header) = http::HeaderValue::from_str(&value) else {
                return Ok(());
            };
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, header.clone());
            let ours = extract(&h);
            let theirs = header.to_str().ok().and_then(lenient_token);
            match (&ours, theirs) {
                (Ok(Some(t)), Some(l)) => prop_assert_eq!(*t, l),
                (Ok(Some(t)), None) => prop_assert!(false, "tollgate found {t:?} in {value:?}"),
                (Ok(None), Some(l)) => prop_assert!(false, "token {l:?} in {value:?} passed unchecked"),
                (Ok(None), None) | (Err(_), _) => {}
            }
            if let Ok(Some(t)) = ours {
                prop_assert!(t.bytes().all(|b| TOKEN_BYTES[usize::from(b)]));
            }
            // A second header, of any value, is always refused.
            h.append(AUTHORIZATION, header);
            prop_assert!(matches!(extract(&h), Err(AuthError::MultipleAuthorization)));
        }
    }
}
