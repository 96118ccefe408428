//! `…/token` (`POST`, form-encoded): the authorization code (single use, 10 minutes, bound to
//! client, redirect URI and PKCE challenge), refresh token (every use returns a new one; the
//! old one keeps working, as Entra's do) and client credentials grants, each once the client
//! has proved itself.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::client::Proof;
use super::error::{ErrorKind, OAuthError};
use super::mint::{self, OIDC_SCOPES};
use super::{Grant, OAuthProvider, OAuthRequest, Params, Reply, json};

impl OAuthProvider {
    /// The token endpoint.
    pub(super) fn token(&self, req: &OAuthRequest<'_>, now: SystemTime) -> Reply {
        if let Some(status) = self.knobs.lock().fail_token_endpoint {
            let kind = if status.is_server_error() {
                ErrorKind::TemporarilyUnavailable
            } else {
                ErrorKind::InvalidRequest
            };
            let error =
                OAuthError::new(kind, 50000, "tollgate dev was told to fail token requests.");
            let mut reply = error.reply(now);
            reply.status = status;
            return reply;
        }
        match self.grant(req, now) {
            Ok((body, summary)) => json(StatusCode::OK, body, summary),
            Err(error) => error.reply(now),
        }
    }

    fn grant(
        &self,
        req: &OAuthRequest<'_>,
        now: SystemTime,
    ) -> Result<(Value, String), OAuthError> {
        if *req.method != Method::POST {
            let message = "The endpoint only accepts POST requests.";
            return Err(OAuthError::new(ErrorKind::InvalidRequest, 900561, message));
        }
        let form = Params::parse(req.body);
        let grant_type = form
            .get("grant_type")
            .ok_or_else(|| OAuthError::missing("grant_type"))?;
        if !matches!(
            grant_type,
            "authorization_code" | "refresh_token" | "client_credentials" | JWT_BEARER_GRANT
        ) {
            let message = format!("The app requested an unsupported grant type '{grant_type}'.");
            return Err(OAuthError::new(
                ErrorKind::UnsupportedGrantType,
                70003,
                message,
            ));
        }
        let proof = self
            .client
            .authenticate(&form, req.headers, &self.issuer, req.base, now)?;
        match grant_type {
            "authorization_code" => self.redeem_code(&form, proof, now),
            "refresh_token" => self.refresh(&form, proof, now),
            JWT_BEARER_GRANT => self.on_behalf_of(&form, proof, now),
            _ => self.client_credentials(&form, proof, now),
        }
    }

    fn redeem_code(
        &self,
        form: &Params,
        proof: Proof,
        now: SystemTime,
    ) -> Result<(Value, String), OAuthError> {
        let value = form
            .get("code")
            .ok_or_else(|| OAuthError::missing("code"))?;
        let redirect_uri = form
            .get("redirect_uri")
            .ok_or_else(|| OAuthError::missing("redirect_uri"))?;
        let (grant, nonce) = {
            let mut grants = self.grants.lock();
            let code = grants.codes.get_mut(value).ok_or_else(|| {
                invalid_grant(
                    70000,
                    "The provided value for the 'code' parameter is not valid.",
                )
            })?;
            if code.redeemed {
                return Err(invalid_grant(
                    54005,
                    "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
                ));
            }
            if now >= code.expires {
                return Err(invalid_grant(
                    70008,
                    "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
                ));
            }
            if code.redirect_uri != redirect_uri {
                let message = format!(
                    "The redirect_uri '{redirect_uri}' is not the one the authorization code was issued for."
                );
                return Err(invalid_grant(70000, &message));
            }
            check_verifier(code.challenge.as_deref(), form.get("code_verifier"))?;
            code.redeemed = true;
            (code.grant.clone(), code.nonce.clone())
        };
        self.counters.codes_redeemed.fetch_add(1, Ordering::Relaxed);
        // At /token, `scope` names one resource (AADSTS700022 otherwise); without it the
        // token is for the first resource asked for at /authorize.
        let (scopes, strict) = match form.get("scope") {
            Some(scope) => (split(scope), true),
            None => (grant.scopes.clone(), false),
        };
        self.user_tokens(
            "authorization_code",
            &grant,
            &scopes,
            strict,
            nonce.as_deref(),
            proof,
            now,
        )
    }

    fn refresh(
        &self,
        form: &Params,
        proof: Proof,
        now: SystemTime,
    ) -> Result<(Value, String), OAuthError> {
        let value = form
            .get("refresh_token")
            .ok_or_else(|| OAuthError::missing("refresh_token"))?;
        if self.knobs.lock().refuse_refresh_tokens {
            return Err(invalid_grant(
                700082,
                "The refresh token has expired due to inactivity.",
            ));
        }
        let grant = {
            let grants = self.grants.lock();
            let refresh = grants.refresh_tokens.get(value).ok_or_else(|| {
                invalid_grant(
                    70000,
                    "The provided value for the 'refresh_token' parameter is not valid.",
                )
            })?;
            refresh.grant.clone()
        };
        if grant.client_id != self.client.id {
            return Err(invalid_grant(
                70000,
                "The refresh token was issued to a different client.",
            ));
        }
        self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
        // A refresh token serves any resource the user consented to; scopes spanning several
        // resources get a token for the first.
        let scopes = form
            .get("scope")
            .map_or_else(|| grant.scopes.clone(), split);
        self.user_tokens("refresh_token", &grant, &scopes, false, None, proof, now)
    }

    /// On-behalf-of (`requested_token_use=on_behalf_of`): the signed-in user's token for the
    /// web app becomes a token for the API `scope` names, with the same user in it.
    fn on_behalf_of(
        &self,
        form: &Params,
        proof: Proof,
        now: SystemTime,
    ) -> Result<(Value, String), OAuthError> {
        if form.get("requested_token_use") != Some("on_behalf_of") {
            let message = "The request body must contain requested_token_use=on_behalf_of.";
            return Err(OAuthError::new(ErrorKind::InvalidRequest, 900144, message));
        }
        let assertion = form
            .get("assertion")
            .ok_or_else(|| OAuthError::missing("assertion"))?;
        let scope = form
            .get("scope")
            .ok_or_else(|| OAuthError::missing("scope"))?;
        let claims = super::assertion::verify_user_assertion(assertion, &self.issuer, now)?;
        let text = |name: &str| claims[name].as_str().unwrap_or_default().to_owned();
        let list = |name: &str| -> Vec<String> {
            claims[name]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let grant = Grant {
            client_id: self.client.id.clone(),
            user: super::DevUser {
                name: text("name"),
                preferred_username: text("preferred_username"),
                oid: text("oid"),
                roles: list("roles"),
                groups: list("groups"),
            },
            scopes: split(scope),
        };
        self.user_tokens(
            JWT_BEARER_GRANT,
            &grant,
            &grant.scopes,
            false,
            None,
            proof,
            now,
        )
    }

    fn client_credentials(
        &self,
        form: &Params,
        proof: Proof,
        now: SystemTime,
    ) -> Result<(Value, String), OAuthError> {
        let scope = form
            .get("scope")
            .ok_or_else(|| OAuthError::missing("scope"))?;
        let scopes = split(scope);
        let resource = match scopes.as_slice() {
            [one] => one.strip_suffix("/.default").filter(|r| !r.is_empty()),
            _ => None,
        };
        let Some(resource) = resource else {
            let message = format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            );
            return Err(OAuthError::new(ErrorKind::InvalidScope, 1002012, message));
        };
        let lifetime = self.knobs.lock().access_token_lifetime;
        let spec = mint::app_token(
            &self.client.id,
            resource,
            &self.tenant_id,
            &self.app_roles,
            proof,
            lifetime,
        );
        let access_token = self.sign(&spec.claims(&self.issuer.issuer, now))?;
        let body = json!({
            "token_type": "Bearer", "expires_in": lifetime.as_secs(),
            "ext_expires_in": lifetime.as_secs(), "access_token": access_token,
        });
        let summary = format!(
            "client_credentials: app-only token for {resource}, expires in {}s",
            lifetime.as_secs()
        );
        Ok((body, summary))
    }

    /// The response of a user grant: an access token for the audience of `scopes`; an id
    /// token when `openid` was asked for; a refresh token when `offline_access` was, and on
    /// every refresh.
    #[allow(clippy::too_many_arguments)]
    fn user_tokens(
        &self,
        grant_type: &str,
        grant: &Grant,
        scopes: &[String],
        strict: bool,
        nonce: Option<&str>,
        proof: Proof,
        now: SystemTime,
    ) -> Result<(Value, String), OAuthError> {
        let audience = mint::audience(scopes, &grant.client_id, strict)?;
        let lifetime = self.knobs.lock().access_token_lifetime;
        let spec = mint::user_access_token(grant, &audience, &self.tenant_id, proof, lifetime);
        let access_token = self.sign(&spec.claims(&self.issuer.issuer, now))?;
        let asked = |s: &str| grant.scopes.iter().chain(scopes).any(|k| k == s);
        let mut granted = audience.scopes.clone();
        granted.extend(
            OIDC_SCOPES
                .iter()
                .filter(|s| asked(s))
                .map(|s| s.to_string()),
        );
        let mut body = json!({
            "token_type": "Bearer", "scope": granted.join(" "),
            "expires_in": lifetime.as_secs(), "ext_expires_in": lifetime.as_secs(),
            "access_token": access_token,
        });
        let mut parts = vec![format!("access token for {}", audience.resource)];
        if asked("openid") {
            let claims = mint::id_token(&self.issuer.issuer, grant, &self.tenant_id, nonce, now);
            body["id_token"] = json!(self.sign(&claims)?);
            parts.push("id token".into());
        }
        if grant_type == "refresh_token" || asked("offline_access") {
            body["refresh_token"] = json!(self.issue_refresh_token(grant, now)?);
            parts.push("refresh token".into());
        }
        let summary = format!(
            "{grant_type}: {} for user {} of client {}, expires in {}s",
            parts.join(", "),
            grant.user.oid,
            grant.client_id,
            lifetime.as_secs()
        );
        Ok((body, summary))
    }

    fn sign(&self, claims: &Value) -> Result<String, OAuthError> {
        self.issuer
            .signing_key()
            .mint(claims, &json!({}))
            .map_err(|_| {
                OAuthError::new(
                    ErrorKind::ServerError,
                    50000,
                    "There was an error issuing a token.",
                )
            })
    }
}

/// PKCE (RFC 7636 §4.6): a code issued with a challenge needs the verifier whose SHA-256 is
/// that challenge; one issued without needs none.
fn check_verifier(challenge: Option<&str>, verifier: Option<&str>) -> Result<(), OAuthError> {
    let mismatch = || {
        invalid_grant(
            50148,
            "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.",
        )
    };
    match (challenge, verifier) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(invalid_grant(
            50148,
            "The code_verifier is missing; the authorization request had a code_challenge.",
        )),
        (None, Some(_)) => Err(invalid_grant(
            50148,
            "A code_verifier was sent, but the authorization request had no code_challenge.",
        )),
        (Some(challenge), Some(verifier)) => {
            let computed = URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()));
            if computed == challenge {
                Ok(())
            } else {
                Err(mismatch())
            }
        }
    }
}

/// The jwt-bearer grant of on-behalf-of (RFC 7523 §2.1).
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

fn split(scope: &str) -> Vec<String> {
    scope.split_ascii_whitespace().map(str::to_owned).collect()
}

fn invalid_grant(code: u32, description: &str) -> OAuthError {
    OAuthError::new(ErrorKind::InvalidGrant, code, description)
}
