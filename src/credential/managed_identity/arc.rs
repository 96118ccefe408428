//! Azure Arc's challenge: the first request is answered 401 with
//! `WWW-Authenticate: Basic realm=<path to a .key file>`; the key file's contents, read only
//! from the agent's own directory, go back as `Authorization: Basic <contents>`.

use std::path::{Path, PathBuf};

use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};

use crate::credential::transport::retry_after;
use crate::credential::{
    AccessToken, CredentialError, Endpoint, read_secret_file, request_token, response, unreachable,
};

/// Largest key file read; the agent's are far smaller (every SDK checks this first).
pub const MAX_KEY_BYTES: u64 = 4096;

/// Runs the challenge: `request` builds the same GET each time (with `Metadata: true`).
pub async fn fetch(
    request: impl Fn() -> reqwest::RequestBuilder,
    key_dir: &Path,
) -> Result<AccessToken, CredentialError> {
    let first = request()
        .send()
        .await
        .map_err(|e| unreachable(Endpoint::Arc, &e))?;
    if first.status() != reqwest::StatusCode::UNAUTHORIZED {
        // An error status is reported (and retried) like any other; a 2xx without a
        // challenge is not the agent.
        let status = first.status();
        let retry_after = retry_after(first.headers());
        let detail = response::parse_error(&first.bytes().await.unwrap_or_default());
        return Err(if status.is_success() {
            CredentialError::InvalidResponse {
                endpoint: Endpoint::Arc,
                reason: "expected a 401 challenge first".into(),
            }
        } else {
            CredentialError::Rejected {
                endpoint: Endpoint::Arc,
                status: status.as_u16(),
                detail,
                retry_after,
            }
        });
    }
    let challenge = first
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| invalid("the 401 carries no WWW-Authenticate challenge"))?;
    let key_path = key_file(challenge, key_dir)?;
    let size = tokio::fs::metadata(&key_path)
        .await
        .map_err(|e| CredentialError::Setup(format!("Arc key file {}: {e}", key_path.display())))?
        .len();
    if size > MAX_KEY_BYTES {
        return Err(invalid("the challenge key file is larger than 4096 bytes"));
    }
    let key = read_secret_file(&key_path, "Arc key file").await?;
    // The raw file contents, not base64 of user:password as Basic usually means: what the
    // Arc agent expects.
    let answer = format!("Basic {}", key.expose());
    request_token(Endpoint::Arc, request().header(AUTHORIZATION, answer)).await
}

/// The key file a challenge names, if it is a `.key` file directly in `key_dir`. The
/// directory part is checked and then not used: the path is rebuilt from `key_dir` and the
/// file name, so a forged realm cannot make tollgate read another file.
pub fn key_file(challenge: &str, key_dir: &Path) -> Result<PathBuf, CredentialError> {
    let scheme = "basic realm=";
    let realm = challenge
        .get(..scheme.len())
        .filter(|p| p.eq_ignore_ascii_case(scheme))
        .map(|_| challenge[scheme.len()..].trim().trim_matches('"'))
        .ok_or_else(|| invalid("the challenge is not `Basic realm=<path>`"))?;
    let path = Path::new(realm);
    let name = path
        .file_name()
        .filter(|_| path.extension().is_some_and(|e| e == "key"))
        .ok_or_else(|| invalid("the challenge does not name a .key file"))?;
    if path.parent() != Some(key_dir) {
        return Err(invalid(
            "the challenge names a file outside the Arc token directory",
        ));
    }
    Ok(key_dir.join(name))
}

fn invalid(reason: &str) -> CredentialError {
    CredentialError::InvalidResponse {
        endpoint: Endpoint::Arc,
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_paths() {
        let dir = Path::new("/var/opt/azcmagent/tokens");
        let ok = [
            "Basic realm=/var/opt/azcmagent/tokens/abc.key",
            "basic realm=/var/opt/azcmagent/tokens/abc.key",
            "Basic realm=\"/var/opt/azcmagent/tokens/abc.key\"",
            "Basic realm=/var/opt/azcmagent/tokens/abc.key ",
        ];
        for c in ok {
            assert_eq!(key_file(c, dir).unwrap(), dir.join("abc.key"), "{c}");
        }
        let bad = [
            "Bearer realm=/var/opt/azcmagent/tokens/abc.key",
            "Basic realm=/etc/shadow",
            "Basic realm=/etc/abc.key",
            "Basic realm=/var/opt/azcmagent/tokens/../../../etc/abc.key",
            "Basic realm=/var/opt/azcmagent/tokens/abc.txt",
            "Basic realm=/var/opt/azcmagent/tokens/sub/abc.key",
            "Basic realm=",
            "Basic",
        ];
        for c in bad {
            assert!(key_file(c, dir).is_err(), "{c}");
        }
    }
}
