//! The local managed-identity endpoint behind `tollgate dev`: the IMDS protocol and App
//! Service's 2019-08-01 protocol, with the quirks the Azure SDKs depend on (IMDS writes every
//! value as a JSON string; App Service writes `expires_on` and no `expires_in`), answered with
//! tokens from the local issuer.
//!
//! [`IdentityEndpoint::respond`] is a pure function of the request and `now`; the listener in
//! [`super::server`] only moves bytes. Refusals follow the real services: IMDS without
//! `Metadata: true` is 400 `bad_request_102` (the answer the SDKs' IMDS probe looks for), App
//! Service without the right `X-IDENTITY-HEADER` is refused before anything else is read.
//! Any user-assigned identity a request names exists here: its token carries that id.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{Value, json};

use super::issuer::{KeyError, LocalIssuer, TokenSpec};
use crate::credential::managed_identity::source::IMDS_TOKEN_PATH;
use crate::credential::scope_to_resource;
use crate::telemetry::redact::Secret;
pub(crate) use principal::derived_guid;
use principal::{Principal, Selector, principal, select};

/// App Service's token path; `IDENTITY_ENDPOINT` points here. Matched without regard to case,
/// as the platform's own `/MSI/token` is.
pub const APP_SERVICE_TOKEN_PATH: &str = "/msi/token";
/// The only App Service protocol version served.
pub const APP_SERVICE_API_VERSION: &str = "2019-08-01";
/// The oldest IMDS version accepted; later ones work too (the Rust SDK sends 2019-08-01).
pub const IMDS_MIN_API_VERSION: &str = "2018-02-01";
/// `tid` of development tokens.
pub const DEV_TENANT_ID: &str = "d3e7d3e7-0000-4000-8000-00000000007e";
/// Client id (`appid`, `azp`) of the development system-assigned identity.
pub const DEV_CLIENT_ID: &str = "d3e7d3e7-0000-4000-8000-0000000000c1";
/// Object id (`oid`, `sub`) of the development system-assigned identity.
pub const DEV_OBJECT_ID: &str = "d3e7d3e7-0000-4000-8000-0000000000b1";
/// Random bytes in a generated `IDENTITY_HEADER`.
const HEADER_BYTES: usize = 32;

/// The system-assigned identity and what every token says.
#[derive(Clone, Debug)]
pub struct Identity {
    /// `tid`. Defaults to [`DEV_TENANT_ID`].
    pub tenant_id: String,
    /// `appid` and `azp` of the system-assigned identity. Defaults to [`DEV_CLIENT_ID`].
    pub client_id: String,
    /// `oid` and `sub` of the system-assigned identity. Defaults to [`DEV_OBJECT_ID`].
    pub object_id: String,
    /// `roles` granted to every identity, so the inbound side can require them. Default none.
    pub roles: Vec<String>,
    /// Token lifetime. Defaults to 1 hour.
    pub lifetime: Duration,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            tenant_id: DEV_TENANT_ID.to_owned(),
            client_id: DEV_CLIENT_ID.to_owned(),
            object_id: DEV_OBJECT_ID.to_owned(),
            roles: Vec::new(),
            lifetime: Duration::from_secs(3600),
        }
    }
}

/// The protocol a request speaks, told by its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `GET /metadata/identity/oauth2/token`, `Metadata: true`, every value a string.
    Imds,
    /// `GET /msi/token`, `X-IDENTITY-HEADER`, string-epoch `expires_on`, no `expires_in`.
    AppService,
}

impl Protocol {
    /// The protocol served at `path`, if any.
    pub fn for_path(path: &str) -> Option<Protocol> {
        // One trailing slash is accepted: msal-node (Node's @azure/identity) asks IMDS for
        // `/metadata/identity/oauth2/token/`, and IMDS answers it.
        let path = match path.strip_suffix('/') {
            Some(rest) if !rest.is_empty() => rest,
            _ => path,
        };
        if path == IMDS_TOKEN_PATH {
            Some(Protocol::Imds)
        } else if path.eq_ignore_ascii_case(APP_SERVICE_TOKEN_PATH) {
            Some(Protocol::AppService)
        } else {
            None
        }
    }

    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Imds => "imds",
            Protocol::AppService => "app_service",
        }
    }
}

/// A response: status and JSON body. Its `Debug` leaves the body out (it may hold a token).
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// The JSON body in the protocol's own shape.
    pub body: Value,
    /// One line for the log: what was minted, or why the request was refused. No secrets.
    pub summary: String,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// The identity endpoint: the issuer that signs, the identity, and App Service's secret.
pub struct IdentityEndpoint {
    issuer: Arc<LocalIssuer>,
    identity: Identity,
    header: Secret<String>,
}

impl IdentityEndpoint {
    /// An endpoint minting with `issuer` for `identity`; App Service requests must carry
    /// `header` as `X-IDENTITY-HEADER`.
    pub fn new(issuer: Arc<LocalIssuer>, identity: Identity, header: Secret<String>) -> Self {
        IdentityEndpoint {
            issuer,
            identity,
            header,
        }
    }

    /// A fresh random `IDENTITY_HEADER` value: 32 bytes, base64url.
    pub fn generate_header() -> Result<Secret<String>, KeyError> {
        use aws_lc_rs::rand::SecureRandom;
        let mut bytes = [0u8; HEADER_BYTES];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Crypto)?;
        Ok(Secret::new(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The `X-IDENTITY-HEADER` value App Service requests must carry.
    pub fn header(&self) -> &Secret<String> {
        &self.header
    }

    /// The identity tokens are minted for.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The answer to a request, or `None` when `uri`'s path is not an identity endpoint.
    pub fn respond(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Option<(Protocol, Answer)> {
        let protocol = Protocol::for_path(uri.path())?;
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let answer = match self.check(protocol, method, &query, headers) {
            Err(refusal) => refusal,
            Ok((resource, selector)) => self.token(protocol, &resource, selector, now),
        };
        Some((protocol, answer))
    }

    /// The requested resource and identity, or the refusal the real service would give.
    fn check(
        &self,
        protocol: Protocol,
        method: &Method,
        query: &[(String, String)],
        headers: &HeaderMap,
    ) -> Result<(String, Option<Selector>), Answer> {
        let param = |name: &str| {
            let mut pairs = query.iter();
            pairs.find(|(k, _)| k == name).map(|(_, v)| v.as_str())
        };
        let checked = match protocol {
            Protocol::Imds => check_imds(method, headers, param("api-version")),
            Protocol::AppService => self.check_app_service(method, headers, param("api-version")),
        };
        let selected = checked.and_then(|()| {
            let resource = param("resource").filter(|r| !r.is_empty());
            let resource =
                resource.ok_or_else(|| invalid("Required query variable 'resource' is missing"))?;
            let selector = select(protocol, &param).map_err(|m| invalid(&m))?;
            Ok((resource.to_owned(), selector))
        });
        selected.map_err(|(status, code, message)| error(protocol, status, code, &message))
    }

    /// App Service's checks: the secret before anything else is read.
    fn check_app_service(
        &self,
        method: &Method,
        headers: &HeaderMap,
        api_version: Option<&str>,
    ) -> Result<(), Refusal> {
        let missing = "The X-IDENTITY-HEADER header is missing";
        match header(headers, "x-identity-header") {
            None => Err((StatusCode::BAD_REQUEST, "", missing.into())),
            Some(given) if !self.header_matches(given) => Err((
                StatusCode::UNAUTHORIZED,
                "",
                "The X-IDENTITY-HEADER header does not match IDENTITY_HEADER".into(),
            )),
            Some(_) if method != Method::GET => {
                Err((StatusCode::METHOD_NOT_ALLOWED, "", "Use GET".into()))
            }
            Some(_) if api_version != Some(APP_SERVICE_API_VERSION) => Err(invalid(
                "api-version must be 2019-08-01 (the 2017-09-01 protocol is not served)",
            )),
            Some(_) => Ok(()),
        }
    }

    fn header_matches(&self, given: &str) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(
            given.as_bytes(),
            self.header.expose().as_bytes(),
        )
        .is_ok()
    }

    /// The success answer: a token for `resource`, in the protocol's shape.
    fn token(
        &self,
        protocol: Protocol,
        resource: &str,
        selector: Option<Selector>,
        now: SystemTime,
    ) -> Answer {
        let who = principal(&self.identity, selector.as_ref());
        let spec = self.spec(resource, &who);
        let claims = spec.claims(&self.issuer.issuer, now);
        let minted = self.issuer.signing_key().mint(&claims, &json!({}));
        let access_token = match minted {
            Ok(t) => t,
            Err(e) => {
                let message = format!("signing the token failed: {e}");
                return error(
                    protocol,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "unknown",
                    &message,
                );
            }
        };
        let issued = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let lifetime = self.identity.lifetime.as_secs();
        let expires_on = (issued + lifetime).to_string();
        let body = match protocol {
            // IMDS: every value a string, the full field set, and the user-assigned identity's
            // object_id or msi_res_id echoed when the request named it by one.
            Protocol::Imds => {
                let mut body = json!({
                    "access_token": access_token, "refresh_token": "",
                    "expires_in": lifetime.to_string(), "expires_on": expires_on,
                    "ext_expires_in": lifetime.to_string(), "not_before": issued.to_string(),
                    "resource": resource, "token_type": "Bearer", "client_id": who.client_id,
                });
                match &selector {
                    Some(Selector::Object(id)) => body["object_id"] = json!(id),
                    Some(Selector::Resource(id)) => body["msi_res_id"] = json!(id),
                    Some(Selector::Client(_)) | None => {}
                }
                body
            }
            // App Service 2019: a string epoch and no expires_in.
            Protocol::AppService => json!({
                "access_token": access_token, "expires_on": expires_on, "resource": resource,
                "token_type": "Bearer", "client_id": who.client_id,
            }),
        };
        let identity = match &who.resource_id {
            Some(id) => format!("user-assigned {id}"),
            None if who.client_id == self.identity.client_id => "system-assigned".to_owned(),
            None => format!("user-assigned client_id {}", who.client_id),
        };
        Answer {
            status: StatusCode::OK,
            body,
            summary: format!(
                "token for {} ({identity}), expires in {lifetime}s",
                spec.audience
            ),
        }
    }

    /// The token's claims: `aud` is the resource as Entra writes it (no `/.default`), and
    /// the app-only claims of a managed identity.
    fn spec(&self, resource: &str, who: &Principal) -> TokenSpec {
        let mut extra = serde_json::Map::new();
        extra.insert("appid".into(), json!(who.client_id));
        // 2: the identity proved itself with a certificate-like credential, as MI does.
        extra.insert("appidacr".into(), json!("2"));
        extra.insert("azpacr".into(), json!("2"));
        extra.insert("idtyp".into(), json!("app"));
        if let Some(id) = &who.resource_id {
            extra.insert("xms_mirid".into(), json!(id));
        }
        TokenSpec {
            audience: scope_to_resource(resource).to_owned(),
            roles: self.identity.roles.clone(),
            scopes: Vec::new(),
            tenant: Some(self.identity.tenant_id.clone()),
            object_id: Some(who.object_id.clone()),
            client_app: Some(who.client_id.clone()),
            lifetime: self.identity.lifetime,
            extra,
        }
    }
}

/// Why a request is refused: status, IMDS `error` code, message.
type Refusal = (StatusCode, &'static str, String);

/// A 400 `invalid_request`.
fn invalid(message: &str) -> Refusal {
    (
        StatusCode::BAD_REQUEST,
        "invalid_request",
        message.to_owned(),
    )
}

/// IMDS's checks. The SSRF guard comes first: the SDKs probe for IMDS with a request that has
/// no `Metadata` header and take any answer as "IMDS is here", so it must get this 400,
/// whatever else the request says.
fn check_imds(
    method: &Method,
    headers: &HeaderMap,
    api_version: Option<&str>,
) -> Result<(), Refusal> {
    if header(headers, "metadata") != Some("true") {
        let message = "Required metadata header not specified";
        return Err((StatusCode::BAD_REQUEST, "bad_request_102", message.into()));
    }
    if method != Method::GET {
        let message = "The request method is not supported; use GET";
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message.into(),
        ));
    }
    match api_version {
        Some(v) if is_date(v) && v >= IMDS_MIN_API_VERSION => Ok(()),
        Some(_) => Err(invalid(
            "Invalid api-version: 2018-02-01 or later is required",
        )),
        None => Err(invalid("Required query variable 'api-version' is missing")),
    }
}

/// The protocol's error body: IMDS's OAuth-style `{error, error_description}`, App
/// Service's `{statusCode, message, correlationId}` (the shape MSAL Python reads).
fn error(protocol: Protocol, status: StatusCode, code: &str, message: &str) -> Answer {
    let body = match protocol {
        Protocol::Imds => json!({"error": code, "error_description": message}),
        Protocol::AppService => json!({
            "statusCode": status.as_u16(), "message": message,
            "correlationId": "00000000-0000-0000-0000-000000000000",
        }),
    };
    Answer {
        status,
        body,
        summary: format!("refused: {message}"),
    }
}

/// A header's value, if present and text.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `YYYY-MM-DD`, so that comparing as text compares as dates.
fn is_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

mod principal;
#[cfg(test)]
mod tests;
