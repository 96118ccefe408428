//! Which identity a request names, and the ids its token carries: the system-assigned
//! identity, or any user-assigned one named by client id, object (principal) id or resource
//! id with the protocol's own parameter names (IMDS `client_id`, `object_id`, `msi_res_id`;
//! App Service `client_id`, `principal_id` or `object_id`, `mi_res_id`).

use super::{Identity, Protocol};

/// A user-assigned identity named by a request, by what it is rather than by parameter name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Selector {
    Client(String),
    Object(String),
    Resource(String),
}

/// Who a token is for.
pub(super) struct Principal {
    pub(super) client_id: String,
    pub(super) object_id: String,
    pub(super) resource_id: Option<String>,
}

/// The system-assigned identity, or the user-assigned one a request names; the ids it
/// does not name are derived from the one it does, so they are stable across requests.
pub(super) fn principal(identity: &Identity, selector: Option<&Selector>) -> Principal {
    match selector {
        None => Principal {
            client_id: identity.client_id.clone(),
            object_id: identity.object_id.clone(),
            resource_id: None,
        },
        Some(Selector::Client(id)) => Principal {
            client_id: id.clone(),
            object_id: derived_guid("object_id", id),
            resource_id: None,
        },
        Some(Selector::Object(id)) => Principal {
            client_id: derived_guid("client_id", id),
            object_id: id.clone(),
            resource_id: None,
        },
        Some(Selector::Resource(id)) => Principal {
            client_id: derived_guid("client_id", id),
            object_id: derived_guid("object_id", id),
            resource_id: Some(id.clone()),
        },
    }
}

/// A protocol's query parameters naming a user-assigned identity, and what each names.
type ParameterNames = &'static [(&'static str, fn(String) -> Selector)];

/// The user-assigned identity named with this protocol's parameter names; more than one is
/// an error, as the services allow at most one.
pub(super) fn select<'q>(
    protocol: Protocol,
    param: &impl Fn(&str) -> Option<&'q str>,
) -> Result<Option<Selector>, String> {
    let names: ParameterNames = match protocol {
        Protocol::Imds => &[
            ("client_id", Selector::Client),
            ("object_id", Selector::Object),
            ("msi_res_id", Selector::Resource),
        ],
        Protocol::AppService => &[
            ("client_id", Selector::Client),
            ("principal_id", Selector::Object),
            ("object_id", Selector::Object),
            ("mi_res_id", Selector::Resource),
        ],
    };
    let mut found = names
        .iter()
        .filter_map(|(name, make)| param(name).map(|v| make(v.to_owned())));
    let first = found.next();
    if found.next().is_some() {
        let list: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
        return Err(format!("Only one of {} may be given", list.join(", ")));
    }
    Ok(first)
}

/// A GUID-shaped id derived from `value`: the same input always gives the same id.
pub(crate) fn derived_guid(kind: &str, value: &str) -> String {
    let input = format!("{kind}\0{value}");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    uuid::Uuid::from_bytes(bytes).to_string()
}
