//! `[[resources]]`: each resource an absolute https URL with a metadata path of its own, a
//! prefix some route covers, an issuer that exists, scopes that can stand in a challenge.

use std::collections::HashSet;
use std::ops::Range;

use toml::Spanned;

use super::{Context, is_loopback, routes};
use crate::config::schema::RawResource;
use crate::config::{Issuer, Resource, Route, is_scope_token, metadata_path};

pub(super) fn resources(
    cx: &mut Context<'_>,
    raw: Vec<(RawResource, Range<usize>)>,
    issuers: &[Issuer],
    routes: &[Route],
) -> Vec<Resource> {
    let mut out: Vec<Resource> = Vec::new();
    let mut seen = (HashSet::new(), HashSet::new(), HashSet::new());
    for (i, (r, span)) in raw.into_iter().enumerate() {
        let key = format!("resources[{i}]");
        let Some(resource) = resource(cx, r, span.clone(), &key, issuers, routes) else {
            continue;
        };
        // One listener serves one document per path, and a path belongs to one resource.
        let duplicate = if !seen.0.insert(resource.resource.clone()) {
            Some(format!("duplicate resource {:?}", resource.resource))
        } else if !seen.1.insert(resource.prefix.clone()) {
            Some(format!(
                "duplicate prefix {:?}: another resource covers the same paths",
                resource.prefix
            ))
        } else if !seen.2.insert(resource.metadata_path.clone()) {
            Some(format!(
                "its metadata would be served at {}, as another resource's is: give the resources different paths",
                resource.metadata_path
            ))
        } else {
            None
        };
        match duplicate {
            Some(message) => cx.error_at(span, &key, message),
            None => out.push(resource),
        }
    }
    out
}

fn resource(
    cx: &mut Context<'_>,
    r: RawResource,
    span: Range<usize>,
    key: &str,
    issuers: &[Issuer],
    routes: &[Route],
) -> Option<Resource> {
    let errors = cx.errors.len();
    let position = cx.position(span.start);
    let url = resource_url(cx, &r.resource, &format!("{key}.resource"));
    let metadata = url.as_ref().and_then(|u| match metadata_path(u) {
        Ok(p) => Some(p),
        Err(e) => {
            cx.error(
                &r.resource,
                &format!("{key}.resource"),
                format!("its path cannot be served: {e}"),
            );
            None
        }
    });
    let prefix = routes::pattern(cx, &r.prefix, &format!("{key}.prefix"));
    if let Some(p) = &prefix
        && !routes
            .iter()
            .any(|route| route.path.matches(p, route.case_insensitive))
    {
        cx.error(
            &r.prefix,
            &format!("{key}.prefix"),
            format!("no route covers {p}: add a [[routes]] entry for it (requests no route covers get 403, never a challenge)"),
        );
    }
    if !issuers.iter().any(|i| &i.name == r.issuer.get_ref()) {
        cx.error(
            &r.issuer,
            &format!("{key}.issuer"),
            format!("no [[issuers]] entry is named {:?}", r.issuer.get_ref()),
        );
    }
    let scopes: Vec<String> = r
        .scopes_supported
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| {
            if is_scope_token(s.get_ref()) {
                Some(s.into_inner())
            } else {
                cx.error(
                    &s,
                    &format!("{key}.scopes_supported"),
                    format!("{:?} is not a scope: one scope per string, printable ASCII without spaces, \" or \\", s.get_ref()),
                );
                None
            }
        })
        .collect();
    let documentation = r
        .resource_documentation
        .as_ref()
        .and_then(|d| cx.url(d, &format!("{key}.resource_documentation")));
    if cx.errors.len() != errors {
        return None;
    }
    Some(Resource {
        resource: r.resource.into_inner(),
        prefix: prefix?,
        issuer: r.issuer.into_inner(),
        scopes_supported: scopes,
        resource_documentation: documentation,
        metadata_path: metadata?,
        position,
    })
}

/// The resource identifier: an absolute https URL (http on a loopback host, for development),
/// no query, no fragment (RFC 8707 §2), no user name or password.
fn resource_url(cx: &mut Context<'_>, text: &Spanned<String>, key: &str) -> Option<url::Url> {
    let url = cx.url(text, key)?;
    let problem = if url.scheme() != "https" && !is_loopback(&url) {
        Some(
            "must be an absolute https URL (plain http only for loopback hosts: 127.0.0.0/8, ::1, localhost)",
        )
    } else if url.query().is_some() || url.fragment().is_some() {
        Some(
            "must not have a query or a fragment (RFC 8707): a resource is named by its URL's path",
        )
    } else if !url.username().is_empty() || url.password().is_some() {
        Some("must not carry a user name or password")
    } else {
        None
    };
    match problem {
        Some(message) => {
            cx.error(text, key, message);
            None
        }
        None => Some(url),
    }
}
