//! `…/logout` (`GET` or `POST`): end session. Every request counts as a sign-out; the browser
//! goes to `post_logout_redirect_uri` (with `state`) when the client may receive it (a
//! loopback URL, or the origin of a registered redirect URI), else sees the signed-out page,
//! as Entra shows its generic one.

use std::sync::atomic::Ordering;

use http::{Method, StatusCode};
use url::Url;

use super::{Content, OAuthProvider, OAuthRequest, Params, Reply, html, page};

impl OAuthProvider {
    /// The end-session endpoint.
    pub(super) fn logout(&self, req: &OAuthRequest<'_>) -> Reply {
        let mut params = Params::parse(req.uri.query().unwrap_or_default().as_bytes());
        match *req.method {
            Method::GET => {}
            Method::POST => params.0.extend(Params::parse(req.body).0),
            _ => {
                let page = page::error(900561, "Use GET or POST.");
                return html(
                    StatusCode::METHOD_NOT_ALLOWED,
                    page,
                    "logout: wrong method".into(),
                );
            }
        }
        let signed_out = self.counters.sign_outs.fetch_add(1, Ordering::Relaxed) + 1;
        let target = params
            .get("post_logout_redirect_uri")
            .filter(|uri| self.client.accepts_logout_redirect(uri))
            .and_then(|uri| Url::parse(uri).ok());
        match target {
            Some(mut url) => {
                if let Some(state) = params.get("state") {
                    url.query_pairs_mut().append_pair("state", state);
                }
                Reply {
                    status: StatusCode::FOUND,
                    content: Content::Redirect(url.into()),
                    summary: format!("sign-out {signed_out}, back to the app"),
                }
            }
            None => {
                let why = match params.get("post_logout_redirect_uri") {
                    Some(_) => "post_logout_redirect_uri not registered",
                    None => "no post_logout_redirect_uri",
                };
                let summary = format!("sign-out {signed_out}, signed-out page ({why})");
                html(StatusCode::OK, page::signed_out(), summary)
            }
        }
    }
}
