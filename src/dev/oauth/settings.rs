//! What the provider starts with: the web client's registration, the tenant, the roles of
//! app-only tokens, the user the sign-in page suggests, the access-token lifetime.

use std::time::Duration;

use rustls_pki_types::CertificateDer;

use super::{
    DEFAULT_ACCESS_TOKEN_LIFETIME, DEV_CLIENT_SECRET, DEV_USER_OBJECT_ID, DEV_WEB_CLIENT_ID,
};
use crate::dev::identity::DEV_TENANT_ID;
use crate::telemetry::redact::Secret;

/// The user a sign-in is for: what the authorize page asks, what the tokens say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevUser {
    /// `name`. Defaults to `Dev User`.
    pub name: String,
    /// `preferred_username`. Defaults to `dev.user@tollgate.dev` (or the `login_hint`).
    pub preferred_username: String,
    /// `oid`, a GUID. Defaults to [`DEV_USER_OBJECT_ID`].
    pub oid: String,
    /// `roles` (app roles). Default none.
    pub roles: Vec<String>,
    /// `groups` (object ids). Default none.
    pub groups: Vec<String>,
}

impl Default for DevUser {
    fn default() -> Self {
        DevUser {
            name: "Dev User".to_owned(),
            preferred_username: "dev.user@tollgate.dev".to_owned(),
            oid: DEV_USER_OBJECT_ID.to_owned(),
            roles: Vec::new(),
            groups: Vec::new(),
        }
    }
}

/// What the provider starts with. [`Default`] is the web client [`DEV_WEB_CLIENT_ID`] with
/// secret [`DEV_CLIENT_SECRET`], loopback callbacks only, no certificate, tenant
/// [`DEV_TENANT_ID`], one-hour access tokens.
#[derive(Clone, Debug)]
pub struct OAuthSettings {
    /// The web client's id.
    pub client_id: String,
    /// Its secret.
    pub client_secret: Secret<String>,
    /// Redirect URIs registered besides loopback `http(s)://127.0.0.1|localhost|[::1]:*/…`
    /// ending in [`CALLBACK_PATH`](super::CALLBACK_PATH). Matched exactly, as Entra does.
    pub redirect_uris: Vec<String>,
    /// Certificates whose keys may sign `private_key_jwt` assertions for the client.
    pub certificates: Vec<CertificateDer<'static>>,
    /// `tid` of every token.
    pub tenant_id: String,
    /// `roles` of client-credentials (app-only) tokens.
    pub app_roles: Vec<String>,
    /// What the authorize page suggests.
    pub user: DevUser,
    /// Lifetime of access tokens (`expires_in`). Changeable later with
    /// [`OAuthProvider::set_access_token_lifetime`](super::OAuthProvider::set_access_token_lifetime).
    pub access_token_lifetime: Duration,
}

impl Default for OAuthSettings {
    fn default() -> Self {
        OAuthSettings {
            client_id: DEV_WEB_CLIENT_ID.to_owned(),
            client_secret: Secret::new(DEV_CLIENT_SECRET.to_owned()),
            redirect_uris: Vec::new(),
            certificates: Vec::new(),
            tenant_id: DEV_TENANT_ID.to_owned(),
            app_roles: Vec::new(),
            user: DevUser::default(),
            access_token_lifetime: DEFAULT_ACCESS_TOKEN_LIFETIME,
        }
    }
}
