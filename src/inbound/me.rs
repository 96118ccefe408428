//! `GET /.auth/me`, as Easy Auth serves it: the caller's principal as JSON, for a valid token
//! from any configured issuer. The token itself is never echoed back.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};
use serde_json::json;

use super::identity::{self, IDP};
use super::jwt::Verified;
use crate::proxy::{Body, full};

/// The path, answered by tollgate itself before any route is matched.
pub const PATH: &str = "/.auth/me";

/// `[{provider_name, user_id, user_claims: [{typ, val}], issuer}]`, Easy Auth's shape without
/// the token-store fields.
pub fn response(verified: &Verified<'_>) -> Response<Body> {
    let claims = &verified.claims;
    let body = json!([{
        "provider_name": IDP,
        "user_id": identity::principal_name(claims).or_else(|| identity::principal_id(claims)),
        "user_claims": identity::claim_list(claims),
        "issuer": verified.issuer.name,
    }]);
    let mut r = Response::new(full(body.to_string()));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
