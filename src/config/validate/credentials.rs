//! `[credentials.NAME]` (one kind each) and `[egress]` with its targets.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;
use toml::de::DeValue;
use url::Url;

use super::Context;
use crate::config::schema::{
    RawClientCertificate, RawClientSecret, RawEgress, RawFederation, RawManagedIdentity, RawTarget,
    RawWorkloadIdentity, Text,
};
use crate::config::{
    Algorithm, ClientCertificateSettings, ClientSecretSettings, Credential, CredentialKind, Egress,
    FederationSettings, ManagedIdentitySettings, SecretSource, Target, UserAssigned,
    WorkloadIdentitySettings,
};

const KINDS: &str = "managed_identity, workload_identity, client_secret, client_certificate, managed_identity_federation";
/// Default audience of the managed-identity token used as a federated credential.
pub const DEFAULT_FEDERATION_AUDIENCE: &str = "api://AzureADTokenExchange";
const DEFAULT_EGRESS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15001);
const DEFAULT_TARGET_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn section(
    cx: &mut Context<'_>,
    value: &Spanned<DeValue<'_>>,
) -> BTreeMap<String, Credential> {
    let DeValue::Table(table) = value.get_ref() else {
        cx.error_at(
            value.span(),
            "credentials",
            "expected a table of named credentials: [credentials.NAME]".into(),
        );
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (name, entry) in table.iter() {
        let name = name.get_ref().to_string();
        let key = format!("credentials.{name}");
        let kind = match entry.get_ref() {
            DeValue::Table(t) => t
                .get("kind")
                .map(|k| (k.get_ref().as_str().map(str::to_owned), k.span())),
            _ => {
                cx.error_at(entry.span(), &key, "expected a table".into());
                continue;
            }
        };
        let credential = match kind {
            None => {
                cx.error_at(
                    entry.span(),
                    &format!("{key}.kind"),
                    format!("missing, expected one of {KINDS}"),
                );
                None
            }
            Some((kind, span)) => credential(cx, entry, kind.as_deref(), span, &key),
        };
        if let Some((kind, ca_file)) = credential {
            out.insert(
                name.clone(),
                Credential {
                    name,
                    kind,
                    ca_file,
                },
            );
        }
    }
    out
}

type Built = (CredentialKind, Option<std::path::PathBuf>);

fn credential(
    cx: &mut Context<'_>,
    entry: &Spanned<DeValue<'_>>,
    kind: Option<&str>,
    span: Range<usize>,
    key: &str,
) -> Option<Built> {
    match kind {
        Some("managed_identity") => {
            let r: RawManagedIdentity = cx.section(entry, key)?;
            let ids = [
                r.client_id.map(|v| UserAssigned::ClientId(v.into_inner())),
                r.object_id.map(|v| UserAssigned::ObjectId(v.into_inner())),
                r.resource_id
                    .map(|v| UserAssigned::ResourceId(v.into_inner())),
            ];
            let mut ids = ids.into_iter().flatten();
            let user_assigned = ids.next();
            if ids.next().is_some() {
                cx.error(
                    &r.kind,
                    key,
                    "give at most one of client_id, object_id and resource_id",
                );
            }
            let endpoint = r
                .endpoint
                .as_ref()
                .and_then(|e| cx.url(e, &format!("{key}.endpoint")));
            Some((
                CredentialKind::ManagedIdentity(ManagedIdentitySettings {
                    user_assigned,
                    endpoint,
                }),
                r.ca_file.map(|f| cx.path(&f)),
            ))
        }
        Some("workload_identity") => {
            let r: RawWorkloadIdentity = cx.section(entry, key)?;
            let authority_host = authority(cx, r.authority_host.as_ref(), key);
            let kind = CredentialKind::WorkloadIdentity(WorkloadIdentitySettings {
                tenant_id: r.tenant_id.map(Spanned::into_inner),
                client_id: r.client_id.map(Spanned::into_inner),
                token_file: r.token_file.map(|f| cx.path(&f)),
                authority_host,
            });
            Some((kind, r.ca_file.map(|f| cx.path(&f))))
        }
        Some("client_secret") => {
            let r: RawClientSecret = cx.section(entry, key)?;
            let secret = match (r.secret_file, r.secret_env) {
                (Some(f), None) => Some(SecretSource::File(cx.path(&f))),
                (None, Some(e)) => Some(SecretSource::Env(e.into_inner())),
                (Some(f), Some(_)) => {
                    cx.error(&f, key, "give secret_file or secret_env, not both");
                    None
                }
                (None, None) => {
                    cx.error(
                        &r.kind,
                        key,
                        "missing secret_file or secret_env (a secret is never written inline)",
                    );
                    None
                }
            };
            let authority_host = authority(cx, r.authority_host.as_ref(), key);
            let kind = CredentialKind::ClientSecret(ClientSecretSettings {
                tenant_id: r.tenant_id.into_inner(),
                client_id: r.client_id.into_inner(),
                secret: secret?,
                authority_host,
            });
            Some((kind, r.ca_file.map(|f| cx.path(&f))))
        }
        Some("client_certificate") => {
            let r: RawClientCertificate = cx.section(entry, key)?;
            let assertion_algorithm =
                match r.assertion_algorithm.as_ref().map(|a| a.get_ref().as_str()) {
                    None | Some("PS256") => Algorithm::PS256,
                    Some("RS256") => Algorithm::RS256,
                    Some(_) => {
                        if let Some(a) = &r.assertion_algorithm {
                            cx.error(
                                a,
                                &format!("{key}.assertion_algorithm"),
                                "expected \"PS256\" or \"RS256\"",
                            );
                        }
                        Algorithm::PS256
                    }
                };
            let authority_host = authority(cx, r.authority_host.as_ref(), key);
            let kind = CredentialKind::ClientCertificate(ClientCertificateSettings {
                tenant_id: r.tenant_id.into_inner(),
                client_id: r.client_id.into_inner(),
                certificate: cx.path(&r.certificate),
                assertion_algorithm,
                authority_host,
            });
            Some((kind, r.ca_file.map(|f| cx.path(&f))))
        }
        Some("managed_identity_federation") => {
            let r: RawFederation = cx.section(entry, key)?;
            let endpoint = r
                .endpoint
                .as_ref()
                .and_then(|e| cx.url(e, &format!("{key}.endpoint")));
            let authority_host = authority(cx, r.authority_host.as_ref(), key);
            let kind = CredentialKind::ManagedIdentityFederation(FederationSettings {
                tenant_id: r.tenant_id.into_inner(),
                client_id: r.client_id.into_inner(),
                identity_client_id: r.identity_client_id.map(Spanned::into_inner),
                endpoint,
                audience: r.audience.map_or_else(
                    || DEFAULT_FEDERATION_AUDIENCE.to_owned(),
                    Spanned::into_inner,
                ),
                authority_host,
            });
            Some((kind, r.ca_file.map(|f| cx.path(&f))))
        }
        Some(other) => {
            cx.error_at(
                span,
                &format!("{key}.kind"),
                format!("unknown kind {other:?}, expected one of {KINDS}"),
            );
            None
        }
        None => {
            cx.error_at(
                span,
                &format!("{key}.kind"),
                format!("expected a string, one of {KINDS}"),
            );
            None
        }
    }
}

fn authority(cx: &mut Context<'_>, text: Option<&Text>, key: &str) -> Option<Url> {
    text.and_then(|t| cx.secure_url(t, &format!("{key}.authority_host")))
}

/// What the rest of the file declares that egress targets may name.
pub(super) struct Known<'a> {
    /// `[credentials.NAME]` sections.
    pub credentials: &'a BTreeMap<String, Credential>,
    /// `[[issuers]]` names.
    pub issuers: &'a HashSet<&'a str>,
    /// Whether there is a `[server]` (whose issuers' key sets verify on-behalf-of callers).
    pub server: bool,
}

pub(super) fn egress(
    cx: &mut Context<'_>,
    raw: RawEgress,
    targets: Vec<(RawTarget, Range<usize>)>,
    span: Range<usize>,
    known: &Known<'_>,
) -> Option<Egress> {
    let credentials = known.credentials;
    let obo_cache_entries = cx.count(
        raw.obo_cache_entries.as_ref(),
        "egress.obo_cache_entries",
        1,
        1_000_000,
        crate::config::DEFAULT_OBO_CACHE_ENTRIES,
    );
    let listen = raw
        .listen
        .as_ref()
        .and_then(|l| cx.listen(l, "egress.listen"))
        .unwrap_or(DEFAULT_EGRESS_LISTEN);
    if let Some(text) = &raw.listen
        && !listen.ip().to_canonical().is_loopback()
    {
        cx.warn(
            text,
            "egress.listen",
            format!(
                "{} is not a loopback address: whoever can reach it sends requests with the identity's tokens; keep it on 127.0.0.1",
                listen.ip()
            ),
        );
    }
    if targets.is_empty() {
        cx.error_at(
            span,
            "egress.targets",
            "an [egress] section needs at least one [[egress.targets]]".into(),
        );
    }
    cx.unique(
        targets
            .iter()
            .enumerate()
            .map(|(i, (t, _))| (&t.name, format!("egress.targets[{i}].name"))),
        "target",
    );
    let mut hosts = HashSet::new();
    let mut out = Vec::new();
    for (i, (t, _)) in targets.into_iter().enumerate() {
        let key = format!("egress.targets[{i}]");
        if !t
            .name
            .get_ref()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            cx.error(
                &t.name,
                &format!("{key}.name"),
                "must be one path segment: letters, digits, '-', '_' and '.'",
            );
        }
        if !credentials.contains_key(t.credential.get_ref()) {
            let msg = format!(
                "unknown credential {:?}: no [credentials.{}] section",
                t.credential.get_ref(),
                t.credential.get_ref()
            );
            cx.error(&t.credential, &format!("{key}.credential"), msg);
        }
        if t.scope.get_ref().trim().is_empty() {
            cx.error(&t.scope, &format!("{key}.scope"), "must not be empty");
        }
        let host = t.host.as_ref().map(|h| h.get_ref().to_ascii_lowercase());
        if let (Some(h), Some(text)) = (&host, &t.host) {
            if h.is_empty() || h.contains(['/', ' ', '@']) {
                cx.error(
                    text,
                    &format!("{key}.host"),
                    "must be a host name, such as \"api.internal\"",
                );
            } else if !hosts.insert(h.clone()) {
                cx.error(
                    text,
                    &format!("{key}.host"),
                    format!("host {h:?} is claimed by another target"),
                );
            }
        }
        let url = cx.secure_url(&t.url, &format!("{key}.url")).and_then(|u| {
            if !matches!(u.path(), "" | "/") && u.path().ends_with('/') {
                cx.error(
                    &t.url,
                    &format!("{key}.url"),
                    "a base path must not end with /",
                );
            }
            u.as_str().trim_end_matches('/').parse::<http::Uri>().ok()
        });
        let request_timeout = cx.duration(
            t.request_timeout.as_ref(),
            &format!("{key}.request_timeout"),
            DEFAULT_TARGET_TIMEOUT,
        );
        let ca_file = t.ca_file.as_ref().map(|f| cx.path(f));
        if let Some(issuer) = &t.on_behalf_of {
            on_behalf_of(
                cx,
                issuer,
                &key,
                credentials.get(t.credential.get_ref()),
                known,
            );
        }
        if let Some(url) = url {
            out.push(Target {
                name: t.name.into_inner(),
                url,
                scope: t.scope.into_inner(),
                credential: t.credential.into_inner(),
                host,
                ca_file,
                request_timeout,
                on_behalf_of: t.on_behalf_of.map(Spanned::into_inner),
            });
        }
    }
    Some(Egress {
        listen,
        targets: out,
        obo_cache_entries,
    })
}

/// `on_behalf_of = "ISSUER"`: a configured issuer, checked by the inbound side's key sets,
/// and an app registration's credential (a managed identity alone cannot exchange a token).
fn on_behalf_of(
    cx: &mut Context<'_>,
    issuer: &Text,
    key: &str,
    credential: Option<&Credential>,
    known: &Known<'_>,
) {
    let key = format!("{key}.on_behalf_of");
    if !known.issuers.contains(issuer.get_ref().as_str()) {
        let msg = format!(
            "unknown issuer {:?}: on_behalf_of names an [[issuers]] entry whose tokens may be exchanged",
            issuer.get_ref()
        );
        cx.error(issuer, &key, msg);
    } else if !known.server {
        cx.error(
            issuer,
            &key,
            "needs a [server] section: its issuers' key sets verify the caller's token",
        );
    }
    if let Some(c) = credential
        && let CredentialKind::ManagedIdentity(_) = c.kind
    {
        let msg = format!(
            "credential {:?} is a managed identity, which cannot exchange a caller's token: use an app registration's credential (client_secret, client_certificate, managed_identity_federation or workload_identity)",
            c.name
        );
        cx.error(issuer, &key, msg);
    }
}
