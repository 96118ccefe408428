//! The session cookie's chunks. A sealed session is often longer than the 4 KB a browser keeps
//! in one cookie (Entra's tokens are large), so it is split into `NAME`, `NAME1`, `NAME2`, ...,
//! each `name=value` at most [`MAX_PAIR_BYTES`]. The first value starts with the number of
//! chunks and a `.` (never in base64url), so a reader takes exactly those chunks: a chunk left
//! over from a longer session is ignored, a missing one is an error. Integrity is the seal's
//! job: a wrong or reordered chunk fails to open.
//!
//! Cookies are read and written with the `cookie` crate.

use cookie::{Cookie, SameSite};
use http::HeaderMap;
use http::header::COOKIE;

/// The largest `name=value` of one chunk: under the 4,096 bytes browsers keep per cookie,
/// with room for the attributes.
pub const MAX_PAIR_BYTES: usize = 4000;
/// The most chunks a session may have (about 100 KB): more is not a session.
pub const MAX_CHUNKS: usize = 25;

/// Why the chunks a request carries do not make a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// No cookie of that name.
    #[error("no session cookie")]
    Absent,
    /// The first chunk has no valid chunk count.
    #[error("the session cookie is malformed")]
    Malformed,
    /// A chunk the first one announces is missing.
    #[error("session cookie chunk {0} is missing")]
    MissingChunk(usize),
    /// A chunk came twice (two cookies of one name, from another path or domain): which one
    /// the app meant cannot be told, so neither counts.
    #[error("the session cookie {0} came twice")]
    Ambiguous(String),
}

/// How the cookies are set.
#[derive(Clone, Copy, Debug)]
pub struct Attributes {
    /// `Secure`: everywhere but plain http to a loopback address.
    pub secure: bool,
    /// `Max-Age`, seconds.
    pub max_age: u64,
}

/// The cookies of a request, every `Cookie` header (HTTP/2 sends several), in order.
pub fn received(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .map(|c| (c.name().to_owned(), c.value().to_owned()))
        .collect()
}

/// Whether `cookie` is `name` or one of its chunks (`name` followed by digits).
pub fn is_chunk(name: &str, cookie: &str) -> bool {
    cookie
        .strip_prefix(name)
        .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit()))
}

/// The name of chunk `i`: `NAME`, `NAME1`, `NAME2`, ...
fn chunk_name(name: &str, i: usize) -> String {
    if i == 0 {
        name.to_owned()
    } else {
        format!("{name}{i}")
    }
}

/// `value` split into chunks of cookie `name`: `(cookie name, cookie value)` pairs, each
/// `name=value` at most [`MAX_PAIR_BYTES`]. `value` is ASCII (base64url), so any cut is a
/// boundary. `None` when it would take more than [`MAX_CHUNKS`].
pub fn split(name: &str, value: &str) -> Option<Vec<(String, String)>> {
    for count in 1..=MAX_CHUNKS {
        let prefix = format!("{count}.");
        let capacity = |i: usize| {
            let overhead = chunk_name(name, i).len() + 1 + if i == 0 { prefix.len() } else { 0 };
            MAX_PAIR_BYTES.saturating_sub(overhead)
        };
        let total: usize = (0..count).map(capacity).sum();
        if total < value.len() {
            continue;
        }
        let mut chunks = Vec::with_capacity(count);
        let mut rest = value;
        for i in 0..count {
            let (this, next) = rest.split_at(capacity(i).min(rest.len()));
            let text = if i == 0 {
                format!("{prefix}{this}")
            } else {
                this.to_owned()
            };
            chunks.push((chunk_name(name, i), text));
            rest = next;
        }
        return Some(chunks);
    }
    None
}

/// The value the chunks of cookie `name` among `cookies` carry.
pub fn join(name: &str, cookies: &[(String, String)]) -> Result<String, ChunkError> {
    let find = |wanted: &str| -> Result<Option<&str>, ChunkError> {
        let mut found = cookies.iter().filter(|(n, _)| n == wanted);
        let first = found.next().map(|(_, v)| v.as_str());
        if found.next().is_some() {
            return Err(ChunkError::Ambiguous(wanted.to_owned()));
        }
        Ok(first)
    };
    let first = find(name)?.ok_or(ChunkError::Absent)?;
    let (count, head) = first.split_once('.').ok_or(ChunkError::Malformed)?;
    // Digits only, no sign and no leading zero: one spelling per count.
    if count.is_empty() || count.starts_with('0') || !count.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ChunkError::Malformed);
    }
    let count: usize = count.parse().map_err(|_| ChunkError::Malformed)?;
    if count > MAX_CHUNKS {
        return Err(ChunkError::Malformed);
    }
    let mut value = String::with_capacity(count * MAX_PAIR_BYTES);
    value.push_str(head);
    for i in 1..count {
        let chunk = find(&chunk_name(name, i))?.ok_or(ChunkError::MissingChunk(i))?;
        value.push_str(chunk);
    }
    Ok(value)
}

/// `Set-Cookie` values that store `value` under `name`, and clear every chunk of `name` the
/// browser sent that the new value does not use. `None` when the value needs more than
/// [`MAX_CHUNKS`] chunks.
pub fn set(
    name: &str,
    value: &str,
    attributes: Attributes,
    received: &[(String, String)],
) -> Option<Vec<String>> {
    let chunks = split(name, value)?;
    let mut out: Vec<String> = chunks
        .iter()
        .map(|(n, v)| build(n, v, attributes, attributes.max_age))
        .collect();
    for (stale, _) in received {
        if is_chunk(name, stale) && !chunks.iter().any(|(n, _)| n == stale) && !out_has(&out, stale)
        {
            out.push(build(stale, "", attributes, 0));
        }
    }
    Some(out)
}

/// Removes the chunks of `name` and the login cookie from the request's `Cookie` headers, so
/// the backend never sees a sealed session; other cookies pass as they were. A request
/// without them is left untouched (no allocation).
pub fn strip(headers: &mut HeaderMap, name: &str) {
    let login = super::login::LOGIN_COOKIE;
    // Most requests carry neither name anywhere: no parsing at all.
    let mentioned = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(name) || v.contains(login));
    if !mentioned {
        return;
    }
    let ours = |c: &Cookie<'_>| is_chunk(name, c.name()) || c.name() == login;
    let mut removed = false;
    let mut kept = String::new();
    for c in headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
    {
        if ours(&c) {
            removed = true;
            continue;
        }
        if !kept.is_empty() {
            kept.push_str("; ");
        }
        kept.push_str(c.name());
        kept.push('=');
        kept.push_str(c.value());
    }
    if !removed {
        return;
    }
    headers.remove(COOKIE);
    if !kept.is_empty()
        && let Ok(v) = http::HeaderValue::from_str(&kept)
    {
        headers.insert(COOKIE, v);
    }
}

/// `Set-Cookie` values that clear every chunk of `name` the browser sent.
pub fn clear(name: &str, secure: bool, received: &[(String, String)]) -> Vec<String> {
    let attributes = Attributes { secure, max_age: 0 };
    let mut out = Vec::new();
    for (cookie, _) in received {
        if is_chunk(name, cookie) && !out_has(&out, cookie) {
            out.push(build(cookie, "", attributes, 0));
        }
    }
    out
}

fn out_has(out: &[String], name: &str) -> bool {
    out.iter().any(|c| {
        c.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('='))
    })
}

/// One `Set-Cookie` value: `HttpOnly`, `SameSite=Lax`, `Path=/`, `Secure` as asked.
fn build(name: &str, value: &str, attributes: Attributes, max_age: u64) -> String {
    let seconds = i64::try_from(max_age).unwrap_or(i64::MAX);
    Cookie::build((name.to_owned(), value.to_owned()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(attributes.secure)
        .max_age(cookie::time::Duration::seconds(seconds))
        .build()
        .to_string()
}

#[cfg(test)]
mod tests;
