//! `[[resources]]`: OAuth protected resources (an MCP server, any API whose clients discover how
//! to get a token), as validated data, and where each one's metadata document lives (RFC 9728).

use url::Url;

use super::Position;
use crate::path::{self, PathError};

/// The well-known path of protected resource metadata (RFC 9728 §3).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// `[[resources]]`: a protected resource whose metadata tollgate publishes and whose
/// challenges point to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// The resource identifier, exactly as written (RFC 9728 §1.2, RFC 8707): an absolute
    /// `https` URL (`http` on a loopback host) without query or fragment. A token's `aud` is
    /// compared with it as a string.
    pub resource: String,
    /// The request paths it covers: this path and everything below it, on whole segments
    /// (a route pattern's normal form).
    pub prefix: String,
    /// The `[[issuers]]` entry (by name) whose issuer URL is advertised as the authorization
    /// server, and whose `audiences` a token for the resource may also name.
    pub issuer: String,
    /// `scopes_supported` of the metadata, in the order written. Defaults to none (the member
    /// is left out).
    pub scopes_supported: Vec<String>,
    /// `resource_documentation` of the metadata: a page for people. Defaults to none.
    pub resource_documentation: Option<Url>,
    /// Where its metadata document is served: [`metadata_path`] of `resource`, normalised as
    /// request paths are.
    pub metadata_path: String,
    /// Where it was written.
    pub position: Position,
}

/// The path of a resource's metadata document (RFC 9728 §3.1): the well-known path inserted
/// between the host and the resource's path (`https://mcp.contoso.com/mcp` →
/// `/.well-known/oauth-protected-resource/mcp`), the bare well-known path when the resource has
/// no path (`https://mcp.contoso.com` or `https://mcp.contoso.com/`). Normalised as a request
/// path is, so it is compared with what tollgate routes on; a path no request can have (an
/// encoded `/`, say) is an error.
pub fn metadata_path(resource: &Url) -> Result<String, PathError> {
    let own = resource.path();
    let inserted = if own == "/" || own.is_empty() {
        METADATA_PATH.to_owned()
    } else {
        format!("{METADATA_PATH}{own}")
    };
    path::normalise(&inserted).map(|p| p.into_owned())
}

/// Whether `s` is one RFC 6749 scope-token (§3.3): printable ASCII but space, `"` and `\`,
/// so that it can stand in a `scope="..."` challenge parameter as it is.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_paths_follow_rfc9728_section_3_1() {
        let path = |url: &str| metadata_path(&Url::parse(url).unwrap());
        for (url, want) in [
            (
                "https://mcp.contoso.com/mcp",
                "/.well-known/oauth-protected-resource/mcp",
            ),
            (
                "https://mcp.contoso.com",
                "/.well-known/oauth-protected-resource",
            ),
            (
                "https://mcp.contoso.com/",
                "/.well-known/oauth-protected-resource",
            ),
            (
                "https://x.test/a/b/",
                "/.well-known/oauth-protected-resource/a/b/",
            ),
            (
                "http://127.0.0.1:8080/m%63p",
                "/.well-known/oauth-protected-resource/mcp",
            ),
        ] {
            assert_eq!(path(url).as_deref(), Ok(want), "{url}");
        }
        assert_eq!(path("https://x.test/a%2Fb"), Err(PathError::EncodedSlash));
    }

    #[test]
    fn scope_tokens() {
        for good in [
            "tools.read",
            "api://mcp/tools.read",
            "https://x/a.b",
            "!#[]~",
        ] {
            assert!(is_scope_token(good), "{good}");
        }
        for bad in ["", "a b", "a\"b", "a\\b", "é", "a\tb"] {
            assert!(!is_scope_token(bad), "{bad:?}");
        }
    }
}
