//! Request path normalisation, done once per request: what is authorised is exactly what is
//! forwarded (DESIGN §3.2).
//!
//! - percent-encoded unreserved characters are decoded (`%61` is `a`, `%2E` is `.`), other
//!   escapes keep their meaning and get upper-case hex;
//! - dot segments are removed (RFC 3986 §5.2.4) and repeated slashes merged;
//! - `%2F`, `%5C`, a raw `\`, and control characters raw or encoded are refused;
//! - a `;` parameter is ignored for matching (`/admin;x=1` matches as `/admin`), as Java
//!   servlet containers ignore it, and a `..;` segment is a dot segment, as Tomcat reads it.

use std::borrow::Cow;

/// A path normalised for forwarding, and the key routes are matched on.
#[derive(Debug, PartialEq, Eq)]
pub struct Normalised<'a> {
    /// The path to forward, always starting with `/`.
    pub path: Cow<'a, str>,
    /// The path with `;` parameters removed, when it had any.
    key: Option<String>,
}

impl Normalised<'_> {
    /// The path routes are matched on.
    #[inline]
    pub fn match_key(&self) -> &str {
        self.key.as_deref().unwrap_or(&self.path)
    }
}

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
    /// Not an absolute path (`*`, an authority, or empty).
    #[error("the request target is not an absolute path")]
    NotAbsolute,
}

/// Normalises a request path (without its query). Borrows when the path is already normal,
/// which is the common case.
pub fn normalise(raw: &str) -> Result<Normalised<'_>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_plain(raw.as_bytes()) {
        return Ok(Normalised {
            path: Cow::Borrowed(raw),
            key: None,
        });
    }
    normalise_slow(raw)
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

fn normalise_slow(raw: &str) -> Result<Normalised<'_>, PathError> {
    // Each output segment: its decoded text and where its `;` parameters start.
    let mut segments: Vec<(String, Option<usize>)> = Vec::new();
    let mut trailing_slash = false;
    let mut has_params = false;
    // Skip the leading '/'; every piece after it is one segment.
    for piece in raw[1..].split('/') {
        let segment = decode_segment(piece)?;
        let params_at = segment.find(';');
        let base = params_at.map_or(segment.as_str(), |at| &segment[..at]);
        match base {
            "" if params_at.is_none() => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            _ => {
                has_params |= params_at.is_some();
                segments.push((segment, params_at));
                trailing_slash = false;
            }
        }
    }
    let join = |with_params: bool| {
        let mut out = String::with_capacity(raw.len());
        for (segment, params_at) in &segments {
            out.push('/');
            match params_at {
                Some(at) if !with_params => out.push_str(&segment[..*at]),
                _ => out.push_str(segment),
            }
        }
        if out.is_empty() || trailing_slash {
            out.push('/');
        }
        out
    };
    Ok(Normalised {
        path: Cow::Owned(join(true)),
        key: has_params.then(|| join(false)),
    })
}

/// Decodes one segment: unreserved escapes become characters, others are kept (upper-case).
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
                    v if is_unreserved(v) => out.push(char::from(v)),
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
    Ok(out)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// RFC 3986 §2.3 unreserved characters.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        // (raw, forwarded path, match key)
        let cases = [
            ("/", "/", "/"),
            ("/a/b", "/a/b", "/a/b"),
            ("/a/b/", "/a/b/", "/a/b/"),
            ("//admin", "/admin", "/admin"),
            ("/a//b///c", "/a/b/c", "/a/b/c"),
            ("/admin/../x", "/x", "/x"),
            ("/admin/./x", "/admin/x", "/admin/x"),
            ("/a/b/..", "/a/", "/a/"),
            ("/a/.", "/a/", "/a/"),
            ("/..", "/", "/"),
            ("/../../etc/passwd", "/etc/passwd", "/etc/passwd"),
            ("/%2e%2e/admin", "/admin", "/admin"),
            ("/public/%2E%2e/admin", "/admin", "/admin"),
            ("/public/.%2e/admin", "/admin", "/admin"),
            ("/%61dmin", "/admin", "/admin"),
            ("/%7Euser", "/~user", "/~user"),
            ("/a%20b", "/a%20b", "/a%20b"),
            ("/a%3bb", "/a%3Bb", "/a%3Bb"),
            ("/admin;x=1", "/admin;x=1", "/admin"),
            ("/admin;x=1/users", "/admin;x=1/users", "/admin/users"),
            ("/public/..;/admin", "/admin", "/admin"),
            ("/a/;x", "/a/;x", "/a/"),
            ("/caf%C3%A9", "/caf%C3%A9", "/caf%C3%A9"),
            ("/a.b/c..d/...", "/a.b/c..d/...", "/a.b/c..d/..."),
        ];
        for (raw, path, key) in cases {
            let n = normalise(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(
                (n.path.as_ref(), n.match_key()),
                (path, key),
                "normalise({raw:?})"
            );
        }
    }

    #[test]
    fn plain_paths_borrow() {
        for raw in ["/", "/a/b", "/a/b/", "/a.b/..c", "/api/v1/orders"] {
            assert!(
                matches!(normalise(raw).unwrap().path, Cow::Borrowed(_)),
                "{raw}"
            );
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
            let once = normalise(raw).unwrap().path.into_owned();
            let twice = normalise(&once).unwrap();
            assert_eq!(twice.path, once, "{raw}");
        }
    }
}
