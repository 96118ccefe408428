//! The configuration file, mirrored one-to-one by serde types. No logic lives here.
//!
//! Every table refuses unknown keys. Values that validation may complain about are
//! [`Spanned`], so the complaint can name a line and column. Sections are deserialized one at
//! a time by [`super::validate`], so an error in one section does not hide the others.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A string value with its place in the file.
pub type Text = Spanned<String>;

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawServer {
    pub listen: Option<Text>,
    pub upstream: Option<Text>,
    pub tls: Option<Spanned<RawTls>>,
    pub preserve_host: Option<bool>,
    pub request_timeout: Option<Text>,
    pub max_header_bytes: Option<Spanned<i64>>,
    pub token_cache_entries: Option<Spanned<i64>>,
    pub header_read_timeout: Option<Text>,
    pub max_connections: Option<Spanned<i64>>,
    pub shutdown_grace: Option<Text>,
    pub ca_file: Option<Text>,
    pub worker_threads: Option<Spanned<i64>>,
    pub trusted_proxies: Option<Spanned<Vec<Text>>>,
}

/// `[server] tls = { cert, key }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawTls {
    pub cert: Text,
    pub key: Text,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawAdmin {
    pub listen: Option<Text>,
}

/// `[log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawLog {
    pub format: Option<Text>,
}

/// `[[issuers]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawIssuer {
    pub name: Text,
    pub issuer: Text,
    pub discovery: Option<Text>,
    pub jwks_uri: Option<Text>,
    pub audiences: Option<Spanned<Vec<Text>>>,
    pub algorithms: Option<Spanned<Vec<Text>>>,
    pub clock_skew: Option<Text>,
    pub jwks_refresh: Option<Text>,
    pub ca_file: Option<Text>,
    pub tenants: Option<Spanned<Vec<Text>>>,
    pub groups_overage: Option<Text>,
    pub graph_credential: Option<Text>,
    pub graph_endpoint: Option<Text>,
}

/// `[identity]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawIdentity {
    pub easy_auth_headers: Option<bool>,
    pub forward_token: Option<bool>,
    pub claims: Option<Spanned<BTreeMap<String, Text>>>,
}

/// `[[routes]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawRoute {
    pub name: Option<Text>,
    pub prefix: Option<Text>,
    pub exact: Option<Text>,
    pub methods: Option<Spanned<Vec<Text>>>,
    pub allow_anonymous: Option<Spanned<bool>>,
    pub roles_any: Option<Vec<Text>>,
    pub roles_all: Option<Vec<Text>>,
    pub scopes_any: Option<Vec<Text>>,
    pub client_apps: Option<Vec<Text>>,
    pub tenants: Option<Vec<Text>>,
    pub principals: Option<Vec<Text>>,
    pub groups_any: Option<Vec<Text>>,
    pub issuers: Option<Vec<Text>>,
    pub claims: Option<BTreeMap<String, Spanned<OneOrMany>>>,
    pub mode: Option<Text>,
    pub case_insensitive: Option<bool>,
    pub unauthenticated: Option<Text>,
}

/// `[[resources]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawResource {
    pub resource: Text,
    pub prefix: Text,
    pub issuer: Text,
    pub scopes_supported: Option<Vec<Text>>,
    pub resource_documentation: Option<Text>,
}

/// A claim requirement's value: one string, or a list of allowed strings.
#[derive(Debug)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut all = Vec::new();
                while let Some(v) = seq.next_element::<String>()? {
                    all.push(v);
                }
                Ok(OneOrMany(all))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `[egress]`, without its `targets` (read one by one).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawEgress {
    pub listen: Option<Text>,
    pub obo_cache_entries: Option<Spanned<i64>>,
}

/// `[[egress.targets]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawTarget {
    pub name: Text,
    pub url: Text,
    pub scope: Text,
    pub credential: Text,
    pub host: Option<Text>,
    pub ca_file: Option<Text>,
    pub request_timeout: Option<Text>,
    pub on_behalf_of: Option<Text>,
}

/// `[credentials.NAME]` with `kind = "managed_identity"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawManagedIdentity {
    pub kind: Text,
    pub client_id: Option<Text>,
    pub object_id: Option<Text>,
    pub resource_id: Option<Text>,
    pub endpoint: Option<Text>,
    pub ca_file: Option<Text>,
}

/// `[credentials.NAME]` with `kind = "workload_identity"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawWorkloadIdentity {
    pub kind: Text,
    pub tenant_id: Option<Text>,
    pub client_id: Option<Text>,
    pub token_file: Option<Text>,
    pub authority_host: Option<Text>,
    pub ca_file: Option<Text>,
}

/// `[credentials.NAME]` with `kind = "client_secret"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawClientSecret {
    pub kind: Text,
    pub tenant_id: Text,
    pub client_id: Text,
    pub secret_file: Option<Text>,
    pub secret_env: Option<Text>,
    pub authority_host: Option<Text>,
    pub ca_file: Option<Text>,
}

/// `[credentials.NAME]` with `kind = "client_certificate"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawClientCertificate {
    pub kind: Text,
    pub tenant_id: Text,
    pub client_id: Text,
    pub certificate: Text,
    pub assertion_algorithm: Option<Text>,
    pub authority_host: Option<Text>,
    pub ca_file: Option<Text>,
}

/// `[credentials.NAME]` with `kind = "managed_identity_federation"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawFederation {
    pub kind: Text,
    pub tenant_id: Text,
    pub client_id: Text,
    pub identity_client_id: Option<Text>,
    pub endpoint: Option<Text>,
    pub audience: Option<Text>,
    pub authority_host: Option<Text>,
    pub ca_file: Option<Text>,
}

/// `[login]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawLogin {
    pub issuer: Text,
    pub client_id: Text,
    pub credential: Text,
    pub scopes: Option<Spanned<Vec<Text>>>,
    pub session_keys: Spanned<Vec<Text>>,
    pub session_lifetime: Option<Text>,
    pub refresh_extension: Option<Text>,
    pub cookie_name: Option<Text>,
    pub token_headers: Option<bool>,
    pub refresh_token_header: Option<bool>,
    pub me_tokens: Option<bool>,
    pub allowed_redirects: Option<Vec<Text>>,
    pub allowed_origins: Option<Vec<Text>>,
    pub session_store: Option<Text>,
}
