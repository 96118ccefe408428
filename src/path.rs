//! The one reading of a request path, shared by route matching and forwarding: what is
//! authorised is exactly what the upstream (or egress target) receives.
//!
//! tollgate reads a path as a Java servlet container does, the strictest of the common
//! backends, and forwards the result, which every other backend then reads the same way:
//!
//! - `;` parameters are removed from every segment (`/admin;x=1/a` is `/admin/a`), so a
//!   segment that is only parameters (`/;x/admin`) is empty and merged away, as Tomcat merges
//!   the `//` it leaves; `..;` is a dot segment;
//! - an escape of a character that may stand raw in a segment is decoded: unreserved ones
//!   (`%61` is `a`, `%2E` is `.`), sub-delimiters but `;`, `:` and `@` (`%24` is `$`); other
//!   escapes stay, with upper-case hex (`%3B`, `%3F`, `%25`, `%20`, `%C3%A9`);
//! - dot segments are removed (RFC 3986 §5.2.4) and repeated slashes merged;
//! - refused: `%2F`, `%5C`, a raw `\`, control characters raw or encoded, malformed escapes,
//!   and double encoding (`%25` followed by two hex digits), which a backend that decodes twice
//!   would read as something else.
//!
//! The forwarded path therefore holds no `;` parameter, no dot segment and no empty segment,
//! and an escape it still holds decodes to a character no route pattern may contain
//! (`config::validate` allows only the characters decoded here). So whether a segment equals
//! a pattern's segment is the same whether a backend routes on the path as received (Express)
//! or decoded once (Django, Go, ASP.NET Core, Tomcat, nginx): `tests/path.rs` checks each
//! backend family's reading against the route that authorised the request.

use std::borrow::Cow;

/// Why a request path is refused with 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%2F`: the upstream might decode it into a separator that was never authorised.
    #[error("the path contains an encoded slash (%2F)")]
    EncodedSlash,
    /// `%5C` or a raw `\`: some servers treat a backslash as a separator.
    #[error("the path contains a backslash")]
    Backslash,
    /// NUL or another control character, raw or encoded: truncation and log-injection tricks.
    #[error("the path contains a control character")]
    ControlCharacter,
    /// `%` not followed by two hex digits.
    #[error("the path contains an invalid percent-encoding")]
    BadEscape,
    /// `%25` followed by two hex digits: a backend that decodes twice reads another path.
    #[error("the path contains a double percent-encoding (%25 followed by hex digits)")]
    DoubleEncoding,
    /// Not an absolute path (`*`, an authority, or empty).
    #[error("the request target is not an absolute path")]
    NotAbsolute,
}

/// Normalises a request path (without its query): the path routes are matched on and the
/// path that is forwarded. Borrows when the path is already normal, the common case.
pub fn normalise(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_plain(raw.as_bytes()) {
        return Ok(Cow::Borrowed(raw));
    }
    normalise_slow(raw).map(Cow::Owned)
}

/// True when the path has nothing to decode, remove or refuse: no `%`, `\`, `;`, control
/// character, empty segment or dot segment.
#[inline]
fn is_plain(bytes: &[u8]) -> bool {
    let mut prev = b'/';
    let mut segment_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' | b'\\' | b';' | 0..=0x1f | 0x7f => return false,
            b'/' => {
                if prev == b'/' && i > 0 {
                    return false;
                }
                if i > 0 && is_dot_segment(&bytes[segment_start..i]) {
                    return false;
                }
                segment_start = i + 1;
            }
            _ => {}
        }
        prev = b;
    }
    !is_dot_segment(&bytes[segment_start..])
}

fn is_dot_segment(segment: &[u8]) -> bool {
    matches!(segment, b"." | b"..")
}

fn normalise_slow(raw: &str) -> Result<String, PathError> {
    let mut segments: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    // Skip the leading '/'; every piece after it is one segment.
    for piece in raw[1..].split('/') {
        // Parameters go before decoding, as Tomcat removes them from the undecoded path: an
        // encoded `%3B` is part of the segment's name, not a delimiter, for every backend.
        let base = piece.split_once(';').map_or(piece, |(base, _)| base);
        let segment = decode_segment(base)?;
        match segment.as_str() {
            // An empty segment (`//`, or only parameters) is merged into its neighbours.
            "" | "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            _ => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(raw.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// Decodes one segment: escapes of characters that may stand raw in a segment become those
/// characters, others are kept (upper-case hex).
fn decode_segment(piece: &str) -> Result<String, PathError> {
    let bytes = piece.as_bytes();
    let mut out = String::with_capacity(piece.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let value = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok())
                    .ok_or(PathError::BadEscape)?;
                match value {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                    v if is_segment_char(v) => out.push(char::from(v)),
                    v => {
                        out.push('%');
                        out.push(char::from(HEX[usize::from(v >> 4)]));
                        out.push(char::from(HEX[usize::from(v & 0xf)]));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            _ => {
                // Copy the run of ordinary characters up to the next escape in one go.
                let end = bytes[i..]
                    .iter()
                    .position(|&c| matches!(c, b'%' | b'\\' | 0..=0x1f | 0x7f))
                    .map_or(bytes.len(), |n| i + n);
                out.push_str(&piece[i..end]);
                i = end;
            }
        }
    }
    // Checked on the decoded text: `%25%34%31` decodes to `%2541` here, which a second
    // decode would turn into `A`.
    if out
        .as_bytes()
        .windows(5)
        .any(|w| w[..3] == *b"%25" && w[3].is_ascii_hexdigit() && w[4].is_ascii_hexdigit())
    {
        return Err(PathError::DoubleEncoding);
    }
    Ok(out)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The characters a segment may hold raw (RFC 3986 §3.3 `pchar`: unreserved, sub-delimiters,
/// `:` and `@`) except `;`, which Java backends read as the start of parameters. Exactly the
/// characters a route pattern may contain besides `/`.
pub fn is_segment_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'_' | b'~' // unreserved
                | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' // sub-delims
                | b':' | b'@'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        // (raw, the path matched and forwarded)
        let cases = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//admin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/admin/../x", "/x"),
            ("/admin/./x", "/admin/x"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/..", "/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/%2e%2e/admin", "/admin"),
            ("/public/%2E%2e/admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/%7Euser", "/~user"),
            ("/a%20b", "/a%20b"),
            ("/a%3bb", "/a%3Bb"),
            ("/odata/%24metadata", "/odata/$metadata"),
            ("/items/a%2Cb%2c%3A%40%2B%3d", "/items/a,b,:@+="),
            ("/a%3F%23%5B%5D%22", "/a%3F%23%5B%5D%22"),
            ("/100%25", "/100%25"),
            ("/100%25zz", "/100%25zz"),
            ("/admin;x=1", "/admin"),
            ("/admin;x=1/users", "/admin/users"),
            ("/admin;", "/admin"),
            ("/public/..;/admin", "/admin"),
            ("/public/%2e%2e;x/admin", "/admin"),
            ("/;x/admin/secret", "/admin/secret"),
            ("/;/admin", "/admin"),
            ("/;x;y=%2F/admin", "/admin"),
            ("/a/;x", "/a/"),
            ("/;", "/"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/a.b/c..d/...", "/a.b/c..d/..."),
        ];
        for (raw, want) in cases {
            let n = normalise(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(n, want, "normalise({raw:?})");
        }
    }

    #[test]
    fn plain_paths_borrow() {
        for raw in ["/", "/a/b", "/a/b/", "/a.b/..c", "/api/v1/orders"] {
            assert!(matches!(normalise(raw).unwrap(), Cow::Borrowed(_)), "{raw}");
        }
    }

    #[test]
    fn refuses() {
        let cases = [
            ("/a%2Fb", PathError::EncodedSlash),
            ("/a%2fb", PathError::EncodedSlash),
            ("/a%5Cb", PathError::Backslash),
            ("/a%5cb", PathError::Backslash),
            ("/a\\b", PathError::Backslash),
            ("/a%00b", PathError::ControlCharacter),
            ("/a%0Ab", PathError::ControlCharacter),
            ("/a%0d%0aSet-Cookie:x", PathError::ControlCharacter),
            ("/a%7F", PathError::ControlCharacter),
            ("/a\u{1}b", PathError::ControlCharacter),
            ("/a%zz", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("/a%", PathError::BadEscape),
            ("/%252e%252e/admin", PathError::DoubleEncoding),
            ("/a%252F", PathError::DoubleEncoding),
            ("/a%25%34%31", PathError::DoubleEncoding),
            ("*", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("example.com:443", PathError::NotAbsolute),
        ];
        for (raw, want) in cases {
            assert_eq!(normalise(raw), Err(want), "normalise({raw:?})");
        }
    }

    #[test]
    fn normal_form_is_a_fixed_point() {
        for raw in [
            "//a/../b/%2e/c;p/",
            "/x/%41%42/./",
            "/..;/..;/z",
            "/a/b/../../../c",
        ] {
            let once = normalise(raw).unwrap().into_owned();
            let twice = normalise(&once).unwrap();
            assert_eq!(twice, once, "{raw}");
        }
    }
}
