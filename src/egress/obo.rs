//! On-behalf-of targets (`on_behalf_of = "ISSUER"`): the app's request carries a caller's
//! access token; tollgate checks it as the inbound side checks a bearer token, trades it at
//! Entra ID for the target's token in the caller's name (the jwt-bearer grant,
//! [`grant::on_behalf_of`]), keeps that in [`cache`], and the request goes on
//! with it.
//!
//! The check is the inbound verifier itself (issuer, its audiences, signature, expiry),
//! handed in by `app` as a [`CheckCaller`] when the snapshot is built: egress may not import
//! inbound (ARCHITECTURE.md, "Layers"). Every refusal is answered by [`Refusal::response`],
//! before anything is sent downstream:
//!
//! | what happened | answer |
//! | --- | --- |
//! | no bearer token | 401 `Bearer realm="tollgate"` |
//! | a token inbound would refuse | 401 `error="invalid_token"` |
//! | Entra: `interaction_required`, `consent_required`, a claims challenge, `invalid_grant` | 401 `error="insufficient_claims"` (with `claims=` when Entra sent one), JSON naming the AADSTS code |
//! | Entra: `invalid_client` and other refusals of tollgate's own request | 503, `Retry-After: 30` |
//! | Entra unreachable, 429, 5xx, past [`EXCHANGE_TIMEOUT`] | 503, Entra's `Retry-After` or 5 s |

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use tokio::time::Instant;

use crate::credential::{BoxFuture, Credential, CredentialError, ErrorDetail, LOG_TARGET, grant};
use crate::proxy::{Body, json_error};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::redact::Secret;

pub mod cache;

use cache::{Fresh, How, Key, OboCache};

/// Longest wait for Entra's answer to one exchange.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// `Retry-After` when Entra is unreachable or gave none.
const RETRY_TRANSIENT: Duration = Duration::from_secs(5);
/// `Retry-After` when Entra refused tollgate's own credential or request.
const RETRY_CONFIGURATION: Duration = Duration::from_secs(30);

/// A caller whose token passed the issuer's checks.
pub struct Caller {
    /// The token, to send as the assertion.
    pub token: Secret<String>,
    /// `oid`: how logs name the caller.
    pub oid: Option<String>,
    /// `tid`: the tenant to exchange at for a multi-tenant issuer.
    pub tid: Option<String>,
}

/// Why the caller's token was refused, as inbound would say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallerRefused {
    /// No bearer token.
    Missing,
    /// A token that does not pass: the `tollgate_auth_failures_total` reason and the
    /// client's description.
    Invalid {
        /// Short reason (`expired`, `bad_audience`, ...), for logs.
        reason: &'static str,
        /// What is wrong, without details.
        description: &'static str,
    },
    /// The issuer's keys are not fetched yet: 503.
    KeysUnavailable,
}

/// Checks the caller's token in a request's headers at the time of the call. Built by `app`
/// from the inbound verifier of the target's issuer.
pub type CheckCaller =
    Arc<dyn Fn(&HeaderMap) -> BoxFuture<'static, Result<Caller, CallerRefused>> + Send + Sync>;

/// What one exchange failed with.
#[derive(Debug)]
pub enum Failure {
    /// Entra wants the user back: `interaction_required`, `consent_required`, a claims
    /// challenge, or `invalid_grant` (the caller's token refused).
    Challenge {
        /// The metric result: `interaction_required`, `consent_required` or `invalid_grant`.
        result: &'static str,
        /// What Entra said.
        detail: ErrorDetail,
    },
    /// The exchange could not be made: tollgate's own credential or request refused
    /// (`invalid_client`), or Entra unreachable, throttling, failing or too slow.
    Unavailable {
        /// The metric result: `invalid_client` or `unavailable`.
        result: &'static str,
        /// For the 503 body and the log.
        message: String,
        /// The `Retry-After` of the 503.
        retry_after: Duration,
    },
}

impl Failure {
    /// The failure for a token endpoint's error.
    pub fn classify(error: CredentialError) -> Failure {
        let transient = |message: String, retry_after: Option<Duration>| Failure::Unavailable {
            result: "unavailable",
            message,
            retry_after: retry_after.unwrap_or(RETRY_TRANSIENT).max(RETRY_TRANSIENT),
        };
        let CredentialError::Rejected {
            status,
            detail,
            retry_after,
            ..
        } = error
        else {
            return transient(error.to_string(), None);
        };
        let code = detail.code.as_deref().unwrap_or_default();
        let sub = detail.suberror().unwrap_or_default();
        if status == 429 || status >= 500 || code == "temporarily_unavailable" {
            return transient(
                format!("Entra ID answered HTTP {status}: {detail}"),
                retry_after,
            );
        }
        let consent =
            code == "consent_required" || sub == "consent_required" || detail.aadsts == Some(65001);
        let result = if consent {
            "consent_required"
        } else if code == "interaction_required" || detail.claims().is_some() || !sub.is_empty() {
            "interaction_required"
        } else if code == "invalid_grant" {
            "invalid_grant"
        } else {
            let result = if matches!(code, "invalid_client" | "unauthorized_client") {
                "invalid_client"
            } else {
                "unavailable"
            };
            return Failure::Unavailable {
                result,
                message: format!("Entra ID refused tollgate's request: {detail}"),
                retry_after: RETRY_CONFIGURATION,
            };
        };
        Failure::Challenge { result, detail }
    }

    fn result(&self) -> &'static str {
        match self {
            Failure::Challenge { result, .. } | Failure::Unavailable { result, .. } => result,
        }
    }

    #[cfg(test)]
    pub(crate) fn unavailable_for_test() -> Failure {
        Failure::Unavailable {
            result: "unavailable",
            message: "test".into(),
            retry_after: RETRY_TRANSIENT,
        }
    }
}

/// Why an on-behalf-of request got no token.
#[derive(Debug)]
pub enum Refusal {
    /// The caller's token.
    Caller(CallerRefused),
    /// The exchange.
    Exchange(Arc<Failure>),
}

impl Refusal {
    /// The response, and its error code for the access log.
    pub fn response(&self) -> (Response<Body>, &'static str) {
        match self {
            Refusal::Caller(CallerRefused::Missing) => {
                let mut r = json_error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a bearer token is required: send the caller's access token as Authorization: Bearer",
                );
                r.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tollgate\""),
                );
                (r, "unauthorized")
            }
            Refusal::Caller(CallerRefused::Invalid { description, .. }) => {
                let mut r = json_error(StatusCode::UNAUTHORIZED, "invalid_token", description);
                if let Ok(v) = HeaderValue::from_str(&format!(
                    "Bearer realm=\"tollgate\", error=\"invalid_token\", error_description=\"{description}\""
                )) {
                    r.headers_mut().insert(WWW_AUTHENTICATE, v);
                }
                (r, "invalid_token")
            }
            Refusal::Caller(CallerRefused::KeysUnavailable) => {
                let mut r = json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "signing keys are not available yet",
                );
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("5"));
                (r, "temporarily_unavailable")
            }
            Refusal::Exchange(failure) => match &**failure {
                Failure::Challenge { result, detail } => (challenge(result, detail), result),
                Failure::Unavailable {
                    message,
                    retry_after,
                    ..
                } => {
                    let mut r = json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "token_unavailable",
                        message,
                    );
                    r.headers_mut()
                        .insert(RETRY_AFTER, HeaderValue::from(retry_after.as_secs()));
                    (r, "token_unavailable")
                }
            },
        }
    }
}

/// 401 `Bearer error="insufficient_claims"` with Entra's claims challenge (base64, as
/// RFC 6750 §3 and Entra's own APIs send it) and a JSON body naming the AADSTS code.
fn challenge(result: &str, detail: &ErrorDetail) -> Response<Body> {
    let description = match result {
        "consent_required" => "the user or an administrator must consent to the downstream API",
        "invalid_grant" => "Entra ID refused the caller's token: sign the user in again",
        _ => "the downstream API needs the user to sign in again (claims challenge)",
    };
    let mut header = format!(
        "Bearer realm=\"tollgate\", error=\"insufficient_claims\", error_description=\"{description}\""
    );
    if let Some(claims) = detail.claims() {
        header.push_str(&format!(", claims=\"{}\"", STANDARD.encode(claims)));
    }
    let aadsts = detail.aadsts.map(|c| format!("AADSTS{c}"));
    let body = serde_json::json!({
        "error": result,
        "error_description": format!(
            "{description}{}",
            detail.description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
        ),
        "aadsts": aadsts,
        "suberror": detail.suberror(),
        "claims": detail.claims(),
    });
    let mut r = Response::new(crate::proxy::full(body.to_string()));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    if let Ok(v) = HeaderValue::from_str(&header) {
        h.insert(WWW_AUTHENTICATE, v);
    }
    r
}

/// One on-behalf-of target's exchange settings.
pub struct Obo {
    /// The `[[issuers]]` entry whose tokens are exchanged.
    pub issuer: String,
    /// Whether the issuer is multi-tenant (`{tenantid}`): exchange at the caller's tenant.
    multi_tenant: bool,
    check: CheckCaller,
    credential: Arc<dyn Credential>,
    credential_name: Arc<str>,
    scope: Arc<str>,
}

impl Obo {
    /// The exchange of `issuer`'s callers for `scope` with `credential`.
    pub fn new(
        issuer: &crate::config::Issuer,
        check: CheckCaller,
        credential: Arc<dyn Credential>,
        credential_name: &str,
        scope: &str,
    ) -> Obo {
        let multi_tenant = issuer
            .issuer
            .to_ascii_lowercase()
            .contains(crate::config::TENANT_PLACEHOLDER);
        Obo {
            issuer: issuer.name.clone(),
            multi_tenant,
            check,
            credential,
            credential_name: Arc::from(credential_name),
            scope: Arc::from(scope),
        }
    }

    /// The `Authorization` value for the target: the caller checked, then the cached token
    /// or the one exchange for it. Counted in `tollgate_obo_requests_total` and logged with
    /// the caller's `oid`, never the token.
    pub async fn bearer(
        &self,
        headers: &HeaderMap,
        cache: &OboCache,
        metrics: &Metrics,
        target: &str,
    ) -> Result<HeaderValue, Refusal> {
        let caller = match (self.check)(headers).await {
            Ok(caller) => caller,
            Err(refused) => {
                let result = match &refused {
                    CallerRefused::Missing => "missing_token",
                    CallerRefused::Invalid { .. } | CallerRefused::KeysUnavailable => {
                        "invalid_token"
                    }
                };
                let reason = match &refused {
                    CallerRefused::Invalid { reason, .. } => reason,
                    CallerRefused::Missing => "missing_token",
                    CallerRefused::KeysUnavailable => "keys_unavailable",
                };
                count(metrics, target, result);
                tracing::info!(target: LOG_TARGET, egress_target = target, issuer = %self.issuer, result, reason, "on-behalf-of caller refused; nothing sent");
                return Err(Refusal::Caller(refused));
            }
        };
        let oid = caller.oid.as_deref().unwrap_or("-");
        let key = Key::new(&self.credential_name, &self.scope, caller.token.expose());
        let (answer, how) = cache.get_or_exchange(key, || self.exchange(&caller)).await;
        let result = match (&answer, how) {
            (Err(failure), _) => failure.result(),
            (Ok(_), How::Hit) => "cache_hit",
            (Ok(_), How::Exchanged) => "exchanged",
            (Ok(_), How::Shared) => "shared",
        };
        count(metrics, target, result);
        match &answer {
            Ok(_) if how == How::Hit => {
                tracing::debug!(target: LOG_TARGET, egress_target = target, caller_oid = oid, result, "on-behalf-of token from the cache");
            }
            Ok(_) => {
                tracing::info!(target: LOG_TARGET, egress_target = target, caller_oid = oid, scope = %self.scope, result, "on-behalf-of token acquired");
            }
            Err(failure) => {
                let aadsts = match &**failure {
                    Failure::Challenge { detail, .. } => detail.aadsts,
                    Failure::Unavailable { .. } => None,
                };
                let message = match &**failure {
                    Failure::Challenge { detail, .. } => detail.to_string(),
                    Failure::Unavailable { message, .. } => message.clone(),
                };
                tracing::warn!(target: LOG_TARGET, egress_target = target, caller_oid = oid, scope = %self.scope, result, aadsts, error = %message, "on-behalf-of exchange failed; nothing sent");
            }
        }
        answer.map_err(Refusal::Exchange)
    }

    /// One exchange at Entra ID: the caller's tenant for a multi-tenant issuer, else the
    /// credential's.
    async fn exchange(&self, caller: &Caller) -> Result<Fresh, Failure> {
        let setup = |message: String| Failure::Unavailable {
            result: "invalid_client",
            message,
            retry_after: RETRY_CONFIGURATION,
        };
        let Some(registration) = self.credential.registration() else {
            return Err(setup(format!(
                "credential {} is not an app registration's",
                self.credential_name
            )));
        };
        let url = match (self.multi_tenant, caller.tid.as_deref()) {
            (false, _) => registration.endpoint.url().clone(),
            (true, Some(tid)) => registration
                .endpoint
                .for_tenant(tid)
                .map_err(|e| setup(e.to_string()))?,
            (true, None) => return Err(setup("the caller's token has no tid".into())),
        };
        let requested = Instant::now();
        let asked = SystemTime::now();
        let exchange = grant::on_behalf_of(
            registration.endpoint.client(),
            &url,
            registration.client_id,
            &*self.credential,
            &caller.token,
            &self.scope,
        );
        let token = match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
            Err(_) => {
                return Err(Failure::Unavailable {
                    result: "unavailable",
                    message: format!(
                        "Entra ID did not answer within {}s",
                        EXCHANGE_TIMEOUT.as_secs()
                    ),
                    retry_after: RETRY_TRANSIENT,
                });
            }
            Ok(answer) => answer.map_err(Failure::classify)?,
        };
        let lifetime = token
            .expires_on
            .duration_since(asked)
            .unwrap_or(Duration::ZERO);
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", token.token.expose()))
            .map_err(|_| Failure::Unavailable {
                result: "unavailable",
                message: "Entra ID sent a token that is not a header value".into(),
                retry_after: RETRY_TRANSIENT,
            })?;
        bearer.set_sensitive(true);
        Ok(Fresh {
            bearer,
            expires: requested + lifetime,
        })
    }
}

fn count(metrics: &Metrics, target: &str, result: &str) {
    metrics
        .obo_requests
        .with_label_values(&[target, result])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential;

    fn rejected(status: u16, body: serde_json::Value) -> CredentialError {
        CredentialError::Rejected {
            endpoint: credential::Endpoint::Entra,
            status,
            detail: credential::response::parse_error(body.to_string().as_bytes()),
            retry_after: None,
        }
    }

    #[test]
    fn entra_errors_are_classified_as_the_contract_says() {
        let claims = r#"{"access_token":{"polids":{"essential":true,"values":["p"]}}}"#;
        let cases = [
            (
                400,
                serde_json::json!({"error": "invalid_grant", "error_codes": [50076], "suberror": "basic_action", "claims": claims}),
                "interaction_required",
            ),
            (
                400,
                serde_json::json!({"error": "interaction_required", "error_codes": [50079]}),
                "interaction_required",
            ),
            (
                400,
                serde_json::json!({"error": "invalid_grant", "error_codes": [65001], "suberror": "consent_required"}),
                "consent_required",
            ),
            (
                400,
                serde_json::json!({"error": "consent_required", "error_codes": [65001]}),
                "consent_required",
            ),
            (
                400,
                serde_json::json!({"error": "invalid_grant", "error_codes": [50013]}),
                "invalid_grant",
            ),
            (
                400,
                serde_json::json!({"error": "invalid_grant", "error_codes": [500133]}),
                "invalid_grant",
            ),
            (
                401,
                serde_json::json!({"error": "invalid_client", "error_codes": [7000215]}),
                "invalid_client",
            ),
            (
                400,
                serde_json::json!({"error": "unauthorized_client", "error_codes": [700016]}),
                "invalid_client",
            ),
            (
                400,
                serde_json::json!({"error": "invalid_scope", "error_codes": [70011]}),
                "unavailable",
            ),
            (
                503,
                serde_json::json!({"error": "temporarily_unavailable", "error_codes": [50196]}),
                "unavailable",
            ),
            (429, serde_json::json!({}), "unavailable"),
        ];
        for (status, body, want) in cases {
            let failure = Failure::classify(rejected(status, body.clone()));
            assert_eq!(failure.result(), want, "{body}");
        }
        let unreachable = CredentialError::Unreachable {
            endpoint: credential::Endpoint::Entra,
            message: "connection failed".into(),
        };
        assert_eq!(Failure::classify(unreachable).result(), "unavailable");
    }

    #[test]
    fn a_challenge_carries_the_claims_in_base64_and_names_the_code() {
        let claims = r#"{"access_token":{"polids":{"essential":true,"values":["p"]}}}"#;
        let failure = Failure::classify(rejected(
            400,
            serde_json::json!({"error": "invalid_grant", "error_description": "AADSTS50076: Due to a configuration change", "error_codes": [50076], "suberror": "basic_action", "claims": claims}),
        ));
        let (r, code) = Refusal::Exchange(Arc::new(failure)).response();
        assert_eq!(
            (r.status(), code),
            (StatusCode::UNAUTHORIZED, "interaction_required")
        );
        let challenge = r.headers()[WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.starts_with("Bearer realm=\"tollgate\", error=\"insufficient_claims\""));
        assert!(challenge.ends_with(&format!(", claims=\"{}\"", STANDARD.encode(claims))));
    }

    #[test]
    fn transient_failures_are_503_with_retry_after() {
        let mut e = rejected(503, serde_json::json!({"error": "temporarily_unavailable"}));
        if let CredentialError::Rejected { retry_after, .. } = &mut e {
            *retry_after = Some(Duration::from_secs(12));
        }
        let (r, _) = Refusal::Exchange(Arc::new(Failure::classify(e))).response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[RETRY_AFTER], "12");
    }
}
