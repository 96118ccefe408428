//! Redaction by type: secrets whose `Debug` never shows them, and a header-map view that
//! masks credentials.

use std::fmt;

use http::HeaderMap;

/// A token, client secret, assertion or private key. `Debug` prints `Secret(..)`; there is
/// no `Display`, so it cannot reach a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

/// A short, stable fingerprint of a secret for correlating log lines: the first 8 hex digits
/// of its SHA-256. Not reversible, and too short to confirm a guess offline with certainty.
pub fn fingerprint(secret: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret);
    hex::encode(&digest.as_ref()[..4])
}

/// True for headers whose values are credentials: `Authorization`, `Cookie`, `X-MS-TOKEN-*`
/// and the managed-identity request secrets.
pub fn is_sensitive(name: &str) -> bool {
    const EXACT: [&str; 7] = [
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-identity-header",
        "secret",
        "x-ms-client-principal",
    ];
    let lower = name.to_ascii_lowercase();
    EXACT.contains(&lower.as_str()) || lower.starts_with("x-ms-token-")
}

/// `Debug` for a header map with credential values replaced by `<redacted>`.
pub struct RedactedHeaders<'a>(pub &'a HeaderMap);

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.0 {
            if is_sensitive(name.as_str()) {
                map.entry(&name.as_str(), &"<redacted>");
            } else {
                map.entry(&name.as_str(), &value);
            }
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_hides_value() {
        let s = Secret::new("eyJhbGciOi.secret".to_string());
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert_eq!(s.expose(), "eyJhbGciOi.secret");
    }

    #[test]
    fn headers_are_masked() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer abc.def.ghi".parse().unwrap());
        h.insert("cookie", "session=1".parse().unwrap());
        h.insert("x-ms-token-aad-access-token", "tok".parse().unwrap());
        h.insert("accept", "text/plain".parse().unwrap());
        let shown = format!("{:?}", RedactedHeaders(&h));
        assert!(
            !shown.contains("abc.def") && !shown.contains("session=1") && !shown.contains("tok\""),
            "{shown}"
        );
        assert!(shown.contains("text/plain"));
    }

    #[test]
    fn fingerprint_is_short_and_stable() {
        assert_eq!(fingerprint(b"abc"), "ba7816bf");
    }
}
