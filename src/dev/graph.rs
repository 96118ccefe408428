//! A Microsoft Graph stand-in for groups overage (`shared/azure-protocols.md` K.5), served
//! by `tollgate dev` and the tests: `transitiveMemberOf/microsoft.graph.group` paged with
//! `@odata.nextLink` (`$top`, default 100, at most 999), `getMemberObjects` (one page),
//! Graph's error bodies (`{"error": {"code", "message"}}`), and knobs for what tests need:
//! throttling (429 with `Retry-After`), a page failing mid-way, an outage, missing
//! permission (403 `Authorization_RequestDenied`).
//!
//! The directory needs no state shared with the token minter: a user whose `oid` is
//! [`overage_user`]`(n)` is in the `n` groups [`group_id`]`(1..=n)`, so `tollgate dev token
//! --groups-overage 500` and a running `tollgate dev` agree without talking. Other users can
//! be added with [`GraphMock::set_user`]; an unknown user is 404 as in Graph.
//!
//! A request must carry `Authorization: Bearer` with a JWT whose `aud` is the mock's own base
//! URL (what a credential obtains for the scope `{graph_endpoint}/.default`); its signature is
//! not checked here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Method, StatusCode, Uri};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// The `oid` of every overage user starts with this; the last 12 digits are its group count.
pub const OVERAGE_OID_PREFIX: &str = "6e0a9e00-0000-4000-8000-";
/// Group ids of overage users start with this; the last 12 digits are the group's number.
pub const GROUP_ID_PREFIX: &str = "6e0a9e01-0000-4000-8000-";
/// The default page size, as Graph's.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// The `oid` of a development user in `groups` groups (`6e0a9e00-0000-4000-8000-000000000500`).
pub fn overage_user(groups: u32) -> String {
    format!("{OVERAGE_OID_PREFIX}{groups:012}")
}

/// The id of development group number `n` (`6e0a9e01-0000-4000-8000-000000000001`).
pub fn group_id(n: u32) -> String {
    format!("{GROUP_ID_PREFIX}{n:012}")
}

/// Groups a JWT holds at most; beyond, Entra sends the overage marker instead.
pub const JWT_GROUPS_LIMIT: u32 = 200;

/// How many groups the overage user with this `oid` is in, if it is one.
pub fn overage_group_count(oid: &str) -> Option<u32> {
    oid.to_ascii_lowercase()
        .strip_prefix(OVERAGE_OID_PREFIX)?
        .parse()
        .ok()
}

/// The groups of an overage user's `oid`, if it is one.
fn overage_groups(oid: &str) -> Option<Vec<String>> {
    Some((1..=overage_group_count(oid)?).map(group_id).collect())
}

/// The overage claims Entra writes in place of `groups` (`_claim_names`, `_claim_sources`
/// naming the retired Azure AD Graph URL, which tollgate never calls).
pub fn overage_claims(tenant: &str, oid: &str) -> [(String, Value); 2] {
    let endpoint = format!("https://graph.windows.net/{tenant}/users/{oid}/getMemberObjects");
    [
        ("_claim_names".to_owned(), json!({ "groups": "src1" })),
        (
            "_claim_sources".to_owned(),
            json!({ "src1": { "endpoint": endpoint } }),
        ),
    ]
}

/// What the mock should get wrong, for tests.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// The next this many requests answer 429 with `Retry-After: retry_after`.
    pub throttle: usize,
    /// The `Retry-After` seconds of a throttled answer; `None` sends none.
    pub retry_after: Option<u64>,
    /// The page (0-based) of `transitiveMemberOf` that answers 500 `generalException`.
    pub fail_page: Option<usize>,
    /// Every request answers 503 `serviceNotAvailable` (no `Retry-After`).
    pub down: bool,
    /// Every request answers 403 `Authorization_RequestDenied` (the app lacks
    /// `GroupMember.Read.All`).
    pub forbidden: bool,
    /// Every `@odata.nextLink` points at this origin instead of the mock's own.
    pub next_link_origin: Option<String>,
}

/// One answer: status, JSON body, `Retry-After`.
#[derive(Debug)]
pub struct GraphReply {
    /// The status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: Value,
    /// `Retry-After` seconds, if any.
    pub retry_after: Option<u64>,
}

/// The Graph stand-in: a directory of users' groups, faults, and counters.
#[derive(Default)]
pub struct GraphMock {
    users: Mutex<HashMap<String, Vec<String>>>,
    faults: Mutex<Faults>,
    page_size: Mutex<Option<usize>>,
    requests: AtomicUsize,
    first_pages: AtomicUsize,
}

impl GraphMock {
    /// An empty directory (overage users exist anyway), no faults.
    pub fn new() -> GraphMock {
        GraphMock::default()
    }

    /// Adds (or replaces) a user and its groups.
    pub fn set_user(&self, oid: &str, groups: Vec<String>) {
        self.users.lock().insert(oid.to_ascii_lowercase(), groups);
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock() = faults;
    }

    /// The page size used when a request gives no `$top` (or a larger one): for tests that
    /// want many pages.
    pub fn set_page_size(&self, size: Option<usize>) {
        *self.page_size.lock() = size;
    }

    /// Requests answered (every page, every throttled or failed answer).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// First pages asked for: one per lookup of a caller's groups.
    pub fn lookups(&self) -> usize {
        self.first_pages.load(Ordering::SeqCst)
    }

    /// The answer to a request for a Graph path (`/v1.0/...`), `None` for any other path.
    /// `base` is the mock's own scheme, host and port.
    pub fn respond(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        base: &str,
    ) -> Option<GraphReply> {
        let rest = uri.path().strip_prefix("/v1.0/users/")?;
        let (oid, operation) = rest.split_once('/')?;
        let operation = match (method, operation) {
            (&Method::GET, "transitiveMemberOf/microsoft.graph.group") => Operation::Transitive,
            (&Method::POST, "getMemberObjects") => Operation::MemberObjects,
            _ => {
                return Some(error(
                    StatusCode::BAD_REQUEST,
                    "Request_BadRequest",
                    "Unsupported request.",
                ));
            }
        };
        self.requests.fetch_add(1, Ordering::SeqCst);
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let param = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let skip: usize = param("$skiptoken")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if operation == Operation::Transitive && skip == 0 {
            self.first_pages.fetch_add(1, Ordering::SeqCst);
        }
        if !authorised(headers, base) {
            return Some(error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            ));
        }
        let faults = {
            let mut faults = self.faults.lock();
            let now = faults.clone();
            faults.throttle = faults.throttle.saturating_sub(1);
            now
        };
        if faults.throttle > 0 {
            return Some(GraphReply {
                retry_after: faults.retry_after,
                ..error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    "Too many requests. Please try again later.",
                )
            });
        }
        if faults.down {
            return Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "serviceNotAvailable",
                "The service is temporarily unavailable.",
            ));
        }
        if faults.forbidden {
            return Some(error(
                StatusCode::FORBIDDEN,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            ));
        }
        let known = self.users.lock().get(&oid.to_ascii_lowercase()).cloned();
        let Some(groups) = known.or_else(|| overage_groups(oid)) else {
            return Some(error(
                StatusCode::NOT_FOUND,
                "Request_ResourceNotFound",
                &format!(
                    "Resource '{oid}' does not exist or one of its queried reference-property objects are not present."
                ),
            ));
        };
        if operation == Operation::MemberObjects {
            return Some(ok(json!({
                "@odata.context": format!("{base}/v1.0/$metadata#Collection(Edm.String)"),
                "value": groups,
            })));
        }
        let largest = self.page_size.lock().unwrap_or(999);
        let top = param("$top")
            .and_then(|t| t.parse().ok())
            .unwrap_or(DEFAULT_PAGE_SIZE)
            .clamp(1, 999)
            .min(largest);
        if faults.fail_page.is_some_and(|page| skip == page * top) {
            return Some(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "generalException",
                "An unexpected error occurred.",
            ));
        }
        let page: Vec<Value> = groups
            .iter()
            .skip(skip)
            .take(top)
            .map(|id| json!({"@odata.type": "#microsoft.graph.group", "id": id}))
            .collect();
        let mut body = json!({
            "@odata.context": format!("{base}/v1.0/$metadata#directoryObjects(id)"),
            "value": page,
        });
        if skip + top < groups.len() {
            let origin = faults.next_link_origin.as_deref().unwrap_or(base);
            body["@odata.nextLink"] = json!(format!(
                "{origin}/v1.0/users/{oid}/transitiveMemberOf/microsoft.graph.group?$select=id&$top={top}&$skiptoken={}",
                skip + top
            ));
        }
        Some(ok(body))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Operation {
    Transitive,
    MemberObjects,
}

/// `Authorization: Bearer` with a JWT whose `aud` is `base` (a trailing `/` allowed).
fn authorised(headers: &HeaderMap, base: &str) -> bool {
    let Some(token) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    payload
        .as_ref()
        .and_then(|p| p.get("aud"))
        .and_then(Value::as_str)
        .is_some_and(|aud| aud.trim_end_matches('/') == base.trim_end_matches('/'))
}

fn ok(body: Value) -> GraphReply {
    GraphReply {
        status: StatusCode::OK,
        body,
        retry_after: None,
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> GraphReply {
    GraphReply {
        status,
        body: json!({"error": {"code": code, "message": message, "innerError": {"request-id": "00000000-0000-0000-0000-000000000000"}}}),
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(aud: &str) -> HeaderMap {
        let payload = URL_SAFE_NO_PAD.encode(json!({ "aud": aud }).to_string());
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer e30.{payload}.sig").parse().unwrap(),
        );
        h
    }

    fn get(mock: &GraphMock, uri: &str, headers: &HeaderMap) -> GraphReply {
        mock.respond(&Method::GET, &uri.parse().unwrap(), headers, "http://g")
            .unwrap()
    }

    #[test]
    fn pages_follow_until_every_group_is_listed() {
        let mock = GraphMock::new();
        let auth = bearer("http://g");
        let oid = overage_user(250);
        let mut uri =
            format!("/v1.0/users/{oid}/transitiveMemberOf/microsoft.graph.group?$select=id");
        let mut ids = Vec::new();
        loop {
            let reply = get(&mock, &uri, &auth);
            assert_eq!(reply.status, 200);
            for m in reply.body["value"].as_array().unwrap() {
                ids.push(m["id"].as_str().unwrap().to_owned());
            }
            match reply.body["@odata.nextLink"].as_str() {
                Some(next) => uri = next.strip_prefix("http://g").unwrap().to_owned(),
                None => break,
            }
        }
        assert_eq!(ids, (1..=250).map(group_id).collect::<Vec<_>>());
        assert_eq!(mock.requests(), 3);
        assert_eq!(mock.lookups(), 1);
    }

    #[test]
    fn faults_and_errors_have_graph_s_shapes() {
        let mock = GraphMock::new();
        let oid = overage_user(3);
        let uri = format!("/v1.0/users/{oid}/transitiveMemberOf/microsoft.graph.group");
        assert_eq!(get(&mock, &uri, &HeaderMap::new()).status, 401);
        assert_eq!(get(&mock, &uri, &bearer("http://other")).status, 401);
        let auth = bearer("http://g/");
        mock.set_faults(Faults {
            throttle: 1,
            retry_after: Some(2),
            ..Faults::default()
        });
        let throttled = get(&mock, &uri, &auth);
        assert_eq!(throttled.status, 429);
        assert_eq!(throttled.retry_after, Some(2));
        assert_eq!(throttled.body["error"]["code"], "TooManyRequests");
        assert_eq!(get(&mock, &uri, &auth).status, 200);
        mock.set_faults(Faults {
            forbidden: true,
            ..Faults::default()
        });
        assert_eq!(
            get(&mock, &uri, &auth).body["error"]["code"],
            "Authorization_RequestDenied"
        );
        mock.set_faults(Faults::default());
        let unknown = "/v1.0/users/0000/transitiveMemberOf/microsoft.graph.group";
        assert_eq!(get(&mock, unknown, &auth).status, 404);
        let objects = mock
            .respond(
                &Method::POST,
                &format!("/v1.0/users/{oid}/getMemberObjects")
                    .parse()
                    .unwrap(),
                &auth,
                "http://g",
            )
            .unwrap();
        assert_eq!(objects.body["value"].as_array().unwrap().len(), 3);
        assert!(
            mock.respond(&Method::GET, &"/keys".parse().unwrap(), &auth, "http://g")
                .is_none()
        );
    }
}
