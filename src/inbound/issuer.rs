//! Trusted issuers: their settings, their key sets, and how a token's `iss` picks one,
//! including multi-tenant issuers whose `issuer` contains `{tenantid}`.

use std::sync::Arc;
use std::time::Duration;

use super::groups::GraphGroups;
use super::jwks::KeySet;
use crate::config::{self, Algorithm};

/// One trusted issuer, ready to check tokens.
pub struct Issuer {
    /// Name used in routes, metrics and logs.
    pub name: String,
    /// The expected `iss`, split around `{tenantid}` for multi-tenant issuers.
    pattern: IssuerPattern,
    /// Allowed tenants when multi-tenant.
    pub tenants: Vec<String>,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// Accepted algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Skew allowed for `exp`, `nbf`, `iat`.
    pub clock_skew: Duration,
    /// The signing keys.
    pub keys: Arc<KeySet>,
    /// What a route with `groups_any` does with this issuer's overage tokens.
    pub overage: Overage,
}

/// `groups_overage` of an issuer, ready to use.
#[derive(Clone, Default)]
pub enum Overage {
    /// `"deny"`: refused with `groups_unavailable`.
    #[default]
    Deny,
    /// `"graph"`: resolved with these lookups.
    Graph(Arc<GraphGroups>),
}

/// An `iss` value, or a template with one `{tenantid}`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum IssuerPattern {
    Exact(String),
    Template { prefix: String, suffix: String },
}

impl IssuerPattern {
    fn new(issuer: &str) -> Self {
        match split_template(issuer) {
            Some((prefix, suffix)) => IssuerPattern::Template {
                prefix: prefix.to_owned(),
                suffix: suffix.to_owned(),
            },
            None => IssuerPattern::Exact(issuer.to_owned()),
        }
    }
}

/// Splits `a{tenantid}b` (placeholder matched case-insensitively) into `(a, b)`.
pub(super) fn split_template(template: &str) -> Option<(&str, &str)> {
    let placeholder = config::TENANT_PLACEHOLDER;
    let at = template
        .as_bytes()
        .windows(placeholder.len())
        .position(|w| w.eq_ignore_ascii_case(placeholder.as_bytes()))?;
    Some((&template[..at], &template[at + placeholder.len()..]))
}

/// Whether `iss` is `template` with `{tenantid}` replaced by `tid` (or equals it when the
/// template has no placeholder). Allocation-free: it runs on every request for Entra keys.
pub fn template_matches(template: &str, tid: Option<&str>, iss: &str) -> bool {
    match split_template(template) {
        None => template == iss,
        Some((prefix, suffix)) => tid.is_some_and(|tid| {
            iss.len() == prefix.len() + tid.len() + suffix.len()
                && iss.starts_with(prefix)
                && iss.ends_with(suffix)
                && &iss[prefix.len()..prefix.len() + tid.len()] == tid
        }),
    }
}

/// How a token's `iss` relates to the configured issuers.
pub enum IssuerMatch<'a> {
    /// This issuer, and the tenant is allowed.
    Trusted(&'a Issuer),
    /// A multi-tenant issuer's shape, but the tenant is not allowed (or `tid` disagrees).
    TenantNotAllowed,
    /// No issuer.
    Unknown,
}

impl Issuer {
    /// Builds an issuer around its (possibly reused) key set; overage tokens are denied until
    /// [`Issuer::overage`] says otherwise (the inbound state sets it).
    pub fn new(settings: &config::Issuer, keys: Arc<KeySet>) -> Issuer {
        Issuer {
            name: settings.name.clone(),
            pattern: IssuerPattern::new(&settings.issuer),
            tenants: settings.tenants.clone(),
            audiences: settings.audiences.clone(),
            algorithms: settings.algorithms.clone(),
            clock_skew: settings.clock_skew,
            keys,
            overage: Overage::Deny,
        }
    }

    /// Whether `iss` (with the token's `tid`) belongs to this issuer.
    fn check(&self, iss: &str, tid: Option<&str>) -> Option<bool> {
        match &self.pattern {
            IssuerPattern::Exact(e) => (e == iss).then_some(true),
            IssuerPattern::Template { prefix, suffix } => {
                let middle = iss
                    .strip_prefix(prefix.as_str())?
                    .strip_suffix(suffix.as_str())?;
                if middle.is_empty() || middle.contains('/') {
                    return None;
                }
                // The tenant in `iss` must be the token's own `tid`, a GUID, and allowed.
                let allowed = tid == Some(middle)
                    && is_guid(middle)
                    && self.tenants.iter().any(|t| t.eq_ignore_ascii_case(middle));
                Some(allowed)
            }
        }
    }
}

/// Whether `s` looks like a GUID (8-4-4-4-12 hex digits).
pub fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The issuers of one configuration, in file order.
#[derive(Default)]
pub struct Issuers(Vec<Issuer>);

impl Issuers {
    /// Wraps the issuers.
    pub fn new(issuers: Vec<Issuer>) -> Self {
        Issuers(issuers)
    }

    /// The issuer a token's `iss` (and `tid`) names. The first configured match wins.
    pub fn find(&self, iss: &str, tid: Option<&str>) -> IssuerMatch<'_> {
        let mut shape_matched = false;
        for issuer in &self.0 {
            match issuer.check(iss, tid) {
                Some(true) => return IssuerMatch::Trusted(issuer),
                Some(false) => shape_matched = true,
                None => {}
            }
        }
        if shape_matched {
            IssuerMatch::TenantNotAllowed
        } else {
            IssuerMatch::Unknown
        }
    }

    /// Every issuer.
    pub fn iter(&self) -> impl Iterator<Item = &Issuer> {
        self.0.iter()
    }

    /// The issuer with this name.
    pub fn by_name(&self, name: &str) -> Option<&Issuer> {
        self.0.iter().find(|i| i.name == name)
    }

    /// True when every issuer has fetched keys.
    pub fn all_ready(&self) -> bool {
        self.0.iter().all(|i| i.keys.is_ready())
    }

    /// Names of issuers still without keys.
    pub fn not_ready(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter(|i| !i.keys.is_ready())
            .map(|i| i.name.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "11111111-1111-1111-1111-111111111111";

    #[test]
    fn templates() {
        let t = "https://login.microsoftonline.com/{tenantid}/v2.0";
        let iss = format!("https://login.microsoftonline.com/{T1}/v2.0");
        assert!(template_matches(t, Some(T1), &iss));
        assert!(template_matches(
            "https://x/{TenantId}/",
            Some(T1),
            &format!("https://x/{T1}/")
        ));
        assert!(!template_matches(t, Some("other"), &iss));
        assert!(!template_matches(t, None, &iss));
        assert!(template_matches("https://x/", None, "https://x/"));
        assert!(!template_matches("https://x/", None, "https://x"));
    }

    #[test]
    fn guids() {
        assert!(is_guid(T1));
        assert!(is_guid("9188040d-6c67-4c5b-b112-36a304b66dad"));
        assert!(!is_guid("9188040d6c674c5bb11236a304b66dad"));
        assert!(!is_guid("../../../../../../../../../../../.."));
    }
}
