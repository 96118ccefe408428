//! Groups of overage tokens: Entra leaves `groups` out of a token whose user is in more
//! groups than fit (more than 200 in a JWT) and marks it instead (`_claim_names`, or
//! `hasgroups`). For an issuer with `groups_overage = "graph"`, [`GraphGroups`] resolves the
//! caller's transitive groups with Microsoft Graph:
//! `GET {graph_endpoint}/v1.0/users/{oid}/transitiveMemberOf/microsoft.graph.group?$select=id`
//! with an app-only token for `{graph_endpoint}/.default`, following every `@odata.nextLink`
//! on the same origin (never the token's `_claim_sources` URL), waiting out 429 and 503 with
//! their `Retry-After` (bounded).
//!
//! Results are cached per caller (`oid`; one [`GraphGroups`] per issuer) for [`CACHE_TTL`],
//! bounded by [`Limits`] in entries and estimated bytes (oldest out first), and fetched once
//! however many requests wait (the first request fetches; the others wait on its slot). A
//! failure is remembered for [`FAILURE_TTL`], so an outage does not multiply Graph requests.
//!
//! The decision itself stays in [`decide`](mod@super::decide): it asks for a lookup
//! ([`decide::groups_for`](super::decide::groups_for)), the listener awaits it here and
//! decides again with the [`Resolution`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use crate::config::GraphSettings;
use crate::credential::{AccessToken, Credential};
use crate::telemetry::metrics::{GRAPH_RESULTS, Metrics};
use crate::telemetry::redact::Secret;

/// How long a caller's resolved groups are used before Graph is asked again.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// How long a failed lookup is remembered (its waiters share it; later requests wait this
/// long before Graph is asked again).
pub const FAILURE_TTL: Duration = Duration::from_secs(5);
/// The longest a whole lookup may take, every page and every wait included.
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(20);
/// The longest `Retry-After` waited out; a longer one makes the lookup fail.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Throttled answers (429, 503) waited out per page before giving up.
pub const MAX_THROTTLED: u32 = 3;
/// Pages followed at most (999 groups a page: ~100,000 groups).
pub const MAX_PAGES: usize = 100;
/// Groups accepted for one caller; more makes the lookup fail (Graph's own
/// `getMemberGroups` stops at 11,000).
pub const MAX_GROUPS_PER_CALLER: usize = 50_000;
/// Largest Graph page body read.
const MAX_PAGE_BYTES: usize = 4 << 20;
/// Estimated bytes of a cache entry besides its group ids (key, slot, map overhead).
const ENTRY_OVERHEAD: usize = 160;

/// How large the cache of one issuer may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Callers cached at most. Defaults to 10,000.
    pub entries: usize,
    /// Estimated bytes of all cached entries at most ([`GroupSet::bytes`] plus a fixed
    /// overhead each). Defaults to 32 MiB.
    pub bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            entries: 10_000,
            bytes: 32 << 20,
        }
    }
}

/// A caller's group object ids: lower case, sorted, without duplicates.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GroupSet {
    ids: Box<[Box<str>]>,
}

impl GroupSet {
    /// The set of `ids` (any case, any order, repeats allowed).
    pub fn new(ids: Vec<String>) -> GroupSet {
        let mut ids: Vec<Box<str>> = ids
            .into_iter()
            .map(|mut id| {
                id.make_ascii_lowercase();
                id.into_boxed_str()
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        GroupSet { ids: ids.into() }
    }

    /// Whether `id` is one of them, ignoring ASCII case.
    pub fn contains(&self, id: &str) -> bool {
        if id.bytes().any(|b| b.is_ascii_uppercase()) {
            let lower = id.to_ascii_lowercase();
            self.ids.binary_search(&lower.as_str().into()).is_ok()
        } else {
            self.ids.binary_search_by(|x| (**x).cmp(id)).is_ok()
        }
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The ids, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.ids.iter().map(|id| &**id)
    }

    /// Estimated heap bytes held.
    pub fn bytes(&self) -> usize {
        self.ids
            .iter()
            .map(|id| id.len() + size_of::<Box<str>>())
            .sum()
    }
}

/// Why a caller's groups are not known. Every one of them refuses the request
/// (`groups_unavailable`): never an allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// The token has no usable `oid` to look up.
    NoObjectId,
    /// No app-only Graph token from `graph_credential`.
    TokenFailed,
    /// Graph kept answering 429 or 503, or asked to wait longer than [`MAX_RETRY_AFTER`].
    Throttled,
    /// Graph answered another error status (403: permission missing; 404: no such user).
    Status(u16),
    /// Graph could not be reached.
    Unreachable,
    /// Graph's answer was not a page of groups.
    InvalidResponse,
    /// An `@odata.nextLink` left `graph_endpoint`'s origin: not followed.
    NextLinkOffOrigin,
    /// More than [`MAX_PAGES`] pages or [`MAX_GROUPS_PER_CALLER`] groups.
    TooMany,
    /// The lookup took longer than [`LOOKUP_DEADLINE`].
    Timeout,
}

impl Unavailable {
    /// A short code for logs and `explain`.
    pub fn reason(&self) -> String {
        match self {
            Unavailable::NoObjectId => "no_oid".into(),
            Unavailable::TokenFailed => "graph_token_failed".into(),
            Unavailable::Throttled => "graph_throttled".into(),
            Unavailable::Status(s) => format!("graph_status_{s}"),
            Unavailable::Unreachable => "graph_unreachable".into(),
            Unavailable::InvalidResponse => "graph_invalid_response".into(),
            Unavailable::NextLinkOffOrigin => "next_link_off_origin".into(),
            Unavailable::TooMany => "too_many_groups".into(),
            Unavailable::Timeout => "graph_timeout".into(),
        }
    }
}

/// What the listener learned about one caller's groups, handed to the decision.
#[derive(Clone, Debug)]
pub struct Resolution {
    /// The issuer (by name) whose token it is.
    pub issuer: String,
    /// The caller.
    pub oid: String,
    /// The groups, or why they are not known.
    pub outcome: Result<Arc<GroupSet>, Unavailable>,
}

/// One caller's entry: filled once, by whichever waiting request gets there first.
struct Slot {
    created: Instant,
    cell: tokio::sync::OnceCell<Result<Arc<GroupSet>, Unavailable>>,
}

impl Slot {
    /// Whether the entry may still be used: not yet filled (a fetch is on its way), or filled
    /// within its time to live.
    fn fresh(&self, now: Instant) -> bool {
        let ttl = match self.cell.get() {
            None => return true,
            Some(Ok(_)) => CACHE_TTL,
            Some(Err(_)) => FAILURE_TTL,
        };
        now.duration_since(self.created) < ttl
    }

    fn bytes(&self) -> usize {
        ENTRY_OVERHEAD
            + match self.cell.get() {
                Some(Ok(set)) => set.bytes(),
                _ => 0,
            }
    }
}

/// An issuer's Graph lookups: the settings, the app-only token, the per-caller cache.
pub struct GraphGroups {
    issuer: String,
    settings: GraphSettings,
    credential_config: crate::config::Credential,
    credential: Arc<dyn Credential>,
    client: reqwest::Client,
    scope: String,
    token: tokio::sync::Mutex<Option<AccessToken>>,
    cache: Mutex<HashMap<Box<str>, Arc<Slot>>>,
    limits: Limits,
    metrics: Arc<Metrics>,
}

/// One page of `transitiveMemberOf`.
#[derive(Deserialize)]
struct Page {
    value: Vec<Member>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct Member {
    id: String,
    #[serde(rename = "@odata.type")]
    kind: Option<String>,
}

impl GraphGroups {
    /// Lookups for `issuer` with `settings`, calling Graph as `credential` (built from
    /// `credential_config`) through `client`.
    pub fn new(
        issuer: &str,
        settings: GraphSettings,
        credential_config: crate::config::Credential,
        credential: Arc<dyn Credential>,
        client: reqwest::Client,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> GraphGroups {
        GraphGroups {
            issuer: issuer.to_owned(),
            scope: format!(
                "{}/.default",
                settings.endpoint.as_str().trim_end_matches('/')
            ),
            settings,
            credential_config,
            credential,
            client,
            token: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
            limits,
            metrics,
        }
    }

    /// Whether these lookups serve `settings` with `credential` as they are: a reload with the
    /// same keeps them, and their cache.
    pub fn serves(
        &self,
        issuer: &str,
        settings: &GraphSettings,
        credential: &crate::config::Credential,
    ) -> bool {
        self.issuer == issuer && &self.settings == settings && &self.credential_config == credential
    }

    /// Shows this issuer's Graph series from the first scrape (once the snapshot holding these
    /// lookups is built whole).
    pub fn show_series(&self) {
        for result in GRAPH_RESULTS {
            self.metrics
                .graph_requests
                .with_label_values(&[&self.issuer, result]);
        }
        let cached = self.cached();
        self.metrics
            .groups_cache_entries
            .with_label_values(&[&self.issuer])
            .set(i64::try_from(cached).unwrap_or(i64::MAX));
    }

    /// Callers cached now (fetches under way included).
    pub fn cached(&self) -> usize {
        self.cache.lock().len()
    }

    /// Estimated bytes of the cached entries.
    pub fn cached_bytes(&self) -> usize {
        self.cache.lock().values().map(|s| s.bytes()).sum()
    }

    /// The groups of `oid`: cached, or fetched once for every request that waits.
    pub async fn resolve(&self, oid: &str) -> Result<Arc<GroupSet>, Unavailable> {
        if !is_object_id(oid) {
            return Err(Unavailable::NoObjectId);
        }
        let slot = {
            let mut cache = self.cache.lock();
            let now = Instant::now();
            match cache.get(oid) {
                Some(slot) if slot.fresh(now) => slot.clone(),
                _ => {
                    let slot = Arc::new(Slot {
                        created: now,
                        cell: tokio::sync::OnceCell::new(),
                    });
                    cache.insert(oid.into(), slot.clone());
                    self.evict(&mut cache, oid);
                    slot
                }
            }
        };
        // Whether this request filled the slot: then the entry's size is known, and the byte
        // bound is applied (a cache hit does not scan the cache).
        let mut filled = false;
        let outcome = slot
            .cell
            .get_or_init(|| {
                let filled = &mut filled;
                async move {
                    *filled = true;
                    self.fetch_logged(oid).await
                }
            })
            .await
            .clone();
        if filled {
            let mut cache = self.cache.lock();
            self.evict(&mut cache, oid);
        }
        outcome
    }

    /// [`GraphGroups::fetch`] within [`LOOKUP_DEADLINE`], logged by `oid`.
    async fn fetch_logged(&self, oid: &str) -> Result<Arc<GroupSet>, Unavailable> {
        let outcome = match tokio::time::timeout(LOOKUP_DEADLINE, self.fetch(oid)).await {
            Ok(outcome) => outcome.map(Arc::new),
            Err(_) => Err(Unavailable::Timeout),
        };
        match &outcome {
            Ok(set) => tracing::debug!(
                issuer = %self.issuer,
                oid,
                groups = set.len(),
                "groups resolved from Microsoft Graph"
            ),
            Err(e) => tracing::warn!(
                issuer = %self.issuer,
                oid,
                reason = %e.reason(),
                "groups could not be resolved from Microsoft Graph"
            ),
        }
        outcome
    }

    /// Removes the oldest entries (never `keep`) until the cache is within its limits, expired
    /// ones first; updates the gauge.
    fn evict(&self, cache: &mut HashMap<Box<str>, Arc<Slot>>, keep: &str) {
        let now = Instant::now();
        let over = |cache: &HashMap<Box<str>, Arc<Slot>>| {
            cache.len() > self.limits.entries
                || cache.values().map(|s| s.bytes()).sum::<usize>() > self.limits.bytes
        };
        if over(cache) {
            cache.retain(|k, s| &**k == keep || s.fresh(now));
        }
        if over(cache) {
            let mut by_age: Vec<(Instant, Box<str>, usize)> = cache
                .iter()
                .filter(|(k, _)| &***k != keep)
                .map(|(k, s)| (s.created, k.clone(), s.bytes()))
                .collect();
            by_age.sort_unstable_by_key(|entry| entry.0);
            let mut bytes: usize = cache.values().map(|s| s.bytes()).sum();
            for (_, key, size) in by_age {
                if cache.len() <= self.limits.entries && bytes <= self.limits.bytes {
                    break;
                }
                cache.remove(&key);
                bytes -= size;
            }
        }
        self.metrics
            .groups_cache_entries
            .with_label_values(&[&self.issuer])
            .set(i64::try_from(cache.len()).unwrap_or(i64::MAX));
    }

    fn count(&self, result: &str) {
        self.metrics
            .graph_requests
            .with_label_values(&[&self.issuer, result])
            .inc();
    }

    /// The first page's URL: `{endpoint}/v1.0/users/{oid}/transitiveMemberOf/microsoft.graph.group?$select=id&$top=999`.
    pub fn first_page(&self, oid: &str) -> Url {
        let mut url = self.settings.endpoint.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend([
                "v1.0",
                "users",
                oid,
                "transitiveMemberOf",
                "microsoft.graph.group",
            ]);
        }
        url.set_query(Some("$select=id&$top=999"));
        url
    }

    /// Every page of `oid`'s groups.
    async fn fetch(&self, oid: &str) -> Result<GroupSet, Unavailable> {
        let mut ids = Vec::new();
        let mut url = self.first_page(oid);
        for _ in 0..MAX_PAGES {
            let page = self.page(&url).await?;
            ids.extend(
                page.value
                    .into_iter()
                    .filter(|m| {
                        m.kind
                            .as_deref()
                            .is_none_or(|k| k == "#microsoft.graph.group")
                    })
                    .map(|m| m.id),
            );
            if ids.len() > MAX_GROUPS_PER_CALLER {
                return Err(Unavailable::TooMany);
            }
            let Some(next) = page.next_link else {
                return Ok(GroupSet::new(ids));
            };
            // Followed verbatim, but only on graph_endpoint's origin: a link elsewhere would
            // carry the app-only token there.
            url = match Url::parse(&next) {
                Ok(next) if next.origin() == self.settings.endpoint.origin() => next,
                _ => return Err(Unavailable::NextLinkOffOrigin),
            };
        }
        Err(Unavailable::TooMany)
    }

    /// One page, waiting out throttling.
    async fn page(&self, url: &Url) -> Result<Page, Unavailable> {
        let mut throttled = 0;
        loop {
            let token = self.app_token().await?;
            let sent = self
                .client
                .get(url.clone())
                .bearer_auth(token.expose())
                .header("ConsistencyLevel", "eventual")
                .header(http::header::ACCEPT, "application/json")
                .send()
                .await;
            let mut response = match sent {
                Ok(r) => r,
                Err(_) => {
                    self.count("unreachable");
                    return Err(Unavailable::Unreachable);
                }
            };
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            {
                self.count("throttled");
                throttled += 1;
                let wait = retry_after(response.headers())
                    .unwrap_or(Duration::from_secs(1 << (throttled - 1)));
                if throttled > MAX_THROTTLED || wait > MAX_RETRY_AFTER {
                    return Err(Unavailable::Throttled);
                }
                tracing::debug!(issuer = %self.issuer, status = status.as_u16(), wait_ms = wait.as_millis() as u64, "Microsoft Graph throttled; waiting");
                tokio::time::sleep(wait).await;
                continue;
            }
            if !status.is_success() {
                self.count("error");
                if status == StatusCode::UNAUTHORIZED {
                    // The token may have been revoked: the next lookup gets a new one.
                    *self.token.lock().await = None;
                }
                return Err(Unavailable::Status(status.as_u16()));
            }
            let mut body = Vec::new();
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_PAGE_BYTES => {
                        body.extend_from_slice(&chunk);
                    }
                    Ok(Some(_)) => {
                        self.count("invalid_response");
                        return Err(Unavailable::InvalidResponse);
                    }
                    Ok(None) => break,
                    Err(_) => {
                        self.count("unreachable");
                        return Err(Unavailable::Unreachable);
                    }
                }
            }
            return match serde_json::from_slice::<Page>(&body) {
                Ok(page) => {
                    self.count("success");
                    Ok(page)
                }
                Err(_) => {
                    self.count("invalid_response");
                    Err(Unavailable::InvalidResponse)
                }
            };
        }
    }

    /// The app-only Graph token, fetched once at a time and kept until a minute before it
    /// expires.
    async fn app_token(&self) -> Result<Secret<String>, Unavailable> {
        let mut token = self.token.lock().await;
        let margin = SystemTime::now() + Duration::from_secs(60);
        if let Some(t) = token.as_ref().filter(|t| t.expires_on > margin) {
            return Ok(t.token.clone());
        }
        match self.credential.fetch(&self.scope).await {
            Ok(fresh) => {
                let secret = fresh.token.clone();
                *token = Some(fresh);
                Ok(secret)
            }
            Err(e) => {
                self.count("token_failed");
                tracing::warn!(issuer = %self.issuer, credential = %self.settings.credential, error = %e, "no Microsoft Graph token");
                Err(Unavailable::TokenFailed)
            }
        }
    }
}

/// `Retry-After` in seconds (Graph sends seconds).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// An object id as Entra writes them: a GUID's characters (hex digits and `-`), so it is one
/// path segment as it is.
fn is_object_id(oid: &str) -> bool {
    !oid.is_empty() && oid.len() <= 64 && oid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

#[cfg(test)]
mod tests;
