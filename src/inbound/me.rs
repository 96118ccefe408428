//! `GET /.auth/me`, as Easy Auth serves it: the caller's principal as JSON, for a valid token
//! from any configured issuer. The token itself is never echoed back.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};
use serde_json::json;

use super::identity::{self, IDP};
use super::jwt::Verified;
use super::session::headers::expires_on;
use super::session::record::Tokens;
use crate::proxy::{Body, full};

/// The path, answered by tollgate itself before any route is matched.
pub const PATH: &str = "/.auth/me";

/// `[{provider_name, user_id, user_claims: [{typ, val}], issuer}]`, Easy Auth's shape; a
/// browser session's tokens (`access_token`, `expires_on`, `id_token`, `refresh_token`) when
/// `tokens` is given (`[login] me_tokens`).
pub fn response(verified: &Verified<'_>, tokens: Option<&Tokens>) -> Response<Body> {
    let claims = &verified.claims;
    let mut entry = json!({
        "provider_name": IDP,
        "user_id": identity::principal_name(claims).or_else(|| identity::principal_id(claims)),
        "user_claims": identity::claim_list(claims),
        "issuer": verified.issuer.name,
    });
    if let (Some(t), Some(map)) = (tokens, entry.as_object_mut()) {
        map.insert("access_token".into(), t.access_token.clone().into());
        map.insert("expires_on".into(), expires_on(t.access_expires).into());
        map.insert("id_token".into(), t.id_token.clone().into());
        if let Some(rt) = &t.refresh_token {
            map.insert("refresh_token".into(), rt.clone().into());
        }
    }
    let body = json!([entry]);
    let mut r = Response::new(full(body.to_string()));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
