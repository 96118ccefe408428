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
    let bytes = value.as_bytes();
    if bytes.len() < 7 || !bytes[..7].eq_ignore_ascii_case(b"bearer ") {
        return Ok(None);
    }
    let token = bytes[7..].trim_ascii();
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
            extract(&headers(&["Bearer a b"])),
            Err(AuthError::Malformed(_))
        ));
        let big = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert!(matches!(
            extract(&headers(&[&big])),
            Err(AuthError::TokenTooLarge)
        ));
    }
}
