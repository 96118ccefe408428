//! Every `tollgate_*` metric family, registered once on an owned registry, and on `/metrics`
//! with its `# HELP` and `# TYPE` from the first scrape, series or not: a rule over a family
//! that is not there yet (`tollgate_jwks_keys == 0` before any key was fetched) never fires.
//!
//! Label values come from enums (`as_str()`) or from names in the configuration, never from
//! a request: a raw path as a label would let any client grow the registry without bound.

use std::sync::OnceLock;

use http::StatusCode;
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Statuses whose `tollgate_requests_total` series a [`RouteSeries`] keeps resolved.
const USUAL_STATUSES: [u16; 14] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 429, 500, 502, 504,
];
/// How many `decision` label values there are.
pub const DECISIONS: usize = 4;

/// One route's inbound series, resolved on first use and kept with the route table of a
/// configuration snapshot: per request, a resolved series costs an atomic add, where
/// `with_label_values` hashes the labels and takes the family's lock (~500 instructions for
/// the two families, callgrind).
#[derive(Debug, Default)]
pub struct RouteSeries {
    duration: OnceLock<Histogram>,
    /// `requests{route, decision, status}`, by decision index and [`USUAL_STATUSES`] index.
    requests: [[OnceLock<IntCounter>; USUAL_STATUSES.len()]; DECISIONS],
}

impl RouteSeries {
    /// Counts a request to `route` answered with `status` (`decision`: its index below
    /// [`DECISIONS`] and label) and observes how long it took.
    pub fn record(
        &self,
        metrics: &Metrics,
        route: &str,
        decision: (usize, &str),
        status: StatusCode,
        seconds: f64,
    ) {
        let labels = || [route, decision.1, status.as_str()];
        match USUAL_STATUSES.iter().position(|&s| s == status.as_u16()) {
            Some(i) => self.requests[decision.0][i]
                .get_or_init(|| metrics.requests.with_label_values(&labels()))
                .inc(),
            None => metrics.requests.with_label_values(&labels()).inc(),
        }
        self.duration
            .get_or_init(|| metrics.request_duration.with_label_values(&[route]))
            .observe(seconds);
    }
}

/// Latency buckets in seconds: sub-millisecond proxying up to slow upstreams.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The metric families. Cheap to clone handles live inside; share it as `Arc<Metrics>`.
#[derive(Clone)]
pub struct Metrics {
    /// Every family, in registration order. The registry's own `gather` leaves out families
    /// without a series, so `/metrics` is gathered from these instead.
    families: std::sync::Arc<[Box<dyn Collector>]>,
    /// `tollgate_requests_total{route, decision, status}`: inbound requests answered.
    pub requests: IntCounterVec,
    /// `tollgate_request_duration_seconds{route}`: inbound time to response head.
    pub request_duration: HistogramVec,
    /// `tollgate_upstream_duration_seconds`: upstream time to response head.
    pub upstream_duration: Histogram,
    /// `tollgate_auth_failures_total{reason}`: rejected or audited tokens, by reason.
    pub auth_failures: IntCounterVec,
    /// `tollgate_jwks_refresh_total{issuer, result}`: key set fetches.
    pub jwks_refresh: IntCounterVec,
    /// `tollgate_jwks_keys{issuer}`: usable keys per issuer.
    pub jwks_keys: IntGaugeVec,
    /// `tollgate_identity_headers_dropped_total{header}`: claim headers left out (too large).
    pub identity_headers_dropped: IntCounterVec,
    /// `tollgate_egress_requests_total{target, status}`: egress requests answered.
    pub egress_requests: IntCounterVec,
    /// `tollgate_egress_request_duration_seconds{target}`: egress time to response head.
    pub egress_request_duration: HistogramVec,
    /// `tollgate_egress_token_requests_total{credential, result}`: token fetches.
    pub egress_token_requests: IntCounterVec,
    /// `tollgate_egress_token_expiry_timestamp_seconds{credential, scope}`: cached token expiry.
    pub egress_token_expiry: GaugeVec,
    /// `tollgate_obo_requests_total{target, result}`: on-behalf-of requests, by how the
    /// caller's token fared (see `egress::obo::Outcome`).
    pub obo_requests: IntCounterVec,
    /// `tollgate_obo_cache_entries`: on-behalf-of tokens cached now.
    pub obo_cache_entries: IntGauge,
    /// `tollgate_config_reloads_total{result}`: configuration reloads, `success` or `error`.
    pub config_reloads: IntCounterVec,
    /// `tollgate_config_last_reload_successful`: 0 while the file holds a refused change.
    pub config_last_reload_successful: IntGauge,
    /// `tollgate_open_connections{listener}`: client connections open now.
    pub open_connections: IntGaugeVec,
    /// `tollgate_ready`: 1 when `/readyz` answers 200.
    pub ready: IntGauge,
    /// `tollgate_logins_total{result}`: browser sign-ins, `success` or the failure.
    pub logins: IntCounterVec,
    /// `tollgate_session_refresh_total{result}`: session token refreshes.
    pub session_refreshes: IntCounterVec,
    /// `tollgate_graph_requests_total{issuer, result}`: Microsoft Graph requests made to
    /// resolve an overage token's groups (one per page and per retry), by [`GRAPH_RESULTS`].
    pub graph_requests: IntCounterVec,
    /// `tollgate_groups_cache_entries{issuer}`: callers whose groups are cached (or being
    /// fetched) now.
    pub groups_cache_entries: IntGaugeVec,
}

/// The `result` values of `tollgate_graph_requests_total`: a page read (`success`), a 429 or
/// 503 waited out (`throttled`), another error status (`error`), no answer (`unreachable`),
/// no app-only token for Graph (`token_failed`), an answer that is not a page of groups
/// (`invalid_response`).
pub const GRAPH_RESULTS: [&str; 6] = [
    "success",
    "throttled",
    "error",
    "unreachable",
    "token_failed",
    "invalid_response",
];

/// The `result` values of `tollgate_logins_total`.
pub const LOGIN_RESULTS: [&str; 9] = [
    "success",
    "state_mismatch",
    "login_expired",
    "provider_error",
    "code_redemption_failed",
    "id_token_invalid",
    "nonce_mismatch",
    "provider_unavailable",
    "insecure_transport",
];

impl Metrics {
    /// Creates every family.
    pub fn new() -> Self {
        // The registry only checks the definitions: unique names, valid labels.
        let registry = Registry::new();
        let families = std::cell::RefCell::new(Vec::<Box<dyn Collector>>::new());
        let register = |c: &dyn CloneCollector| {
            registry
                .register(c.boxed())
                .expect("metric registered once");
            families.borrow_mut().push(c.boxed());
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition");
            register(&c);
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            let h = HistogramVec::new(opts, labels).expect("static metric definition");
            register(&h);
            h
        };
        let requests = counter(
            "tollgate_requests_total",
            "Inbound requests answered, by route, decision and status.",
            &["route", "decision", "status"],
        );
        let request_duration = histogram(
            "tollgate_request_duration_seconds",
            "Inbound request time until the response head, by route.",
            &["route"],
        );
        let upstream_duration = Histogram::with_opts(
            HistogramOpts::new(
                "tollgate_upstream_duration_seconds",
                "Upstream time until the response head.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("static metric definition");
        register(&upstream_duration);
        let auth_failures = counter(
            "tollgate_auth_failures_total",
            "Requests whose token was missing or invalid, or failed a route requirement, by reason.",
            &["reason"],
        );
        let jwks_refresh = counter(
            "tollgate_jwks_refresh_total",
            "Key set fetches per issuer, by result.",
            &["issuer", "result"],
        );
        let jwks_keys = IntGaugeVec::new(
            Opts::new("tollgate_jwks_keys", "Usable signing keys per issuer."),
            &["issuer"],
        )
        .expect("static metric definition");
        register(&jwks_keys);
        let identity_headers_dropped = counter(
            "tollgate_identity_headers_dropped_total",
            "Identity headers left out because their value exceeded the size limit, by header.",
            &["header"],
        );
        let egress_requests = counter(
            "tollgate_egress_requests_total",
            "Egress requests answered, by target and status.",
            &["target", "status"],
        );
        let egress_request_duration = histogram(
            "tollgate_egress_request_duration_seconds",
            "Egress request time until the response head, by target.",
            &["target"],
        );
        let egress_token_requests = counter(
            "tollgate_egress_token_requests_total",
            "Access token fetches per credential, by result.",
            &["credential", "result"],
        );
        let egress_token_expiry = GaugeVec::new(
            Opts::new(
                "tollgate_egress_token_expiry_timestamp_seconds",
                "Expiry (unix time) of the cached access token per credential and scope.",
            ),
            &["credential", "scope"],
        )
        .expect("static metric definition");
        register(&egress_token_expiry);
        let obo_requests = counter(
            "tollgate_obo_requests_total",
            "On-behalf-of egress requests, by target and result (cache_hit, exchanged, shared, missing_token, invalid_token, interaction_required, consent_required, invalid_grant, invalid_client, unavailable).",
            &["target", "result"],
        );
        let obo_cache_entries = IntGauge::new(
            "tollgate_obo_cache_entries",
            "On-behalf-of tokens cached now (bounded by [egress] obo_cache_entries).",
        )
        .expect("static metric definition");
        register(&obo_cache_entries);
        let config_reloads = counter(
            "tollgate_config_reloads_total",
            "Configuration reloads, by result (success, error).",
            &["result"],
        );
        let config_last_reload_successful = IntGauge::new(
            "tollgate_config_last_reload_successful",
            "1 when the last reload succeeded (or none happened), 0 while the configuration file holds a refused change.",
        )
        .expect("static metric definition");
        config_last_reload_successful.set(1);
        register(&config_last_reload_successful);
        let open_connections = IntGaugeVec::new(
            Opts::new(
                "tollgate_open_connections",
                "Client connections open now, by listener.",
            ),
            &["listener"],
        )
        .expect("static metric definition");
        register(&open_connections);
        let ready = IntGauge::new("tollgate_ready", "1 when /readyz answers 200, else 0.")
            .expect("static metric definition");
        register(&ready);
        let logins = counter(
            "tollgate_logins_total",
            "Browser sign-ins at the callback, by result (success, or the failure).",
            &["result"],
        );
        let session_refreshes = counter(
            "tollgate_session_refresh_total",
            "Session token refreshes with the refresh token, by result.",
            &["result"],
        );
        let graph_requests = counter(
            "tollgate_graph_requests_total",
            "Microsoft Graph requests resolving overage tokens' groups, by issuer and result.",
            &["issuer", "result"],
        );
        let groups_cache_entries = IntGaugeVec::new(
            Opts::new(
                "tollgate_groups_cache_entries",
                "Callers whose groups from Microsoft Graph are cached now, per issuer.",
            ),
            &["issuer"],
        )
        .expect("static metric definition");
        register(&groups_cache_entries);
        // Series whose labels are known in advance start at zero, so that `increase()` sees
        // the first one. Per-issuer series start when the issuer's key set is built.
        for result in ["success", "error"] {
            config_reloads.with_label_values(&[result]);
        }
        for result in LOGIN_RESULTS {
            logins.with_label_values(&[result]);
        }
        for result in ["success", "failed", "no_refresh_token"] {
            session_refreshes.with_label_values(&[result]);
        }
        Metrics {
            families: families.into_inner().into(),
            requests,
            request_duration,
            upstream_duration,
            auth_failures,
            jwks_refresh,
            jwks_keys,
            identity_headers_dropped,
            egress_requests,
            egress_request_duration,
            egress_token_requests,
            egress_token_expiry,
            obo_requests,
            obo_cache_entries,
            config_reloads,
            config_last_reload_successful,
            open_connections,
            ready,
            logins,
            session_refreshes,
            graph_requests,
            groups_cache_entries,
        }
    }

    /// Every family in the Prometheus text exposition format, sorted by name, its series
    /// sorted by label values. A family without series yet is its `# HELP` and `# TYPE` lines.
    pub fn encode(&self) -> String {
        let mut families: Vec<MetricFamily> =
            self.families.iter().flat_map(|c| c.collect()).collect();
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        for mut family in families {
            if family.get_metric().is_empty() {
                // The encoder refuses an empty family; its header is two fixed lines.
                header(&mut out, &family);
                continue;
            }
            family.mut_metric().sort_by(|a, b| {
                let values = |m: &prometheus::proto::Metric| {
                    m.get_label()
                        .iter()
                        .map(|l| l.value().to_owned())
                        .collect::<Vec<_>>()
                };
                values(a).cmp(&values(b))
            });
            // Encoding into a Vec cannot fail for a family with a name and a series.
            let _ = TextEncoder::new().encode(std::slice::from_ref(&family), &mut out);
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A family handle that can be registered and also kept: the handles share their series.
trait CloneCollector {
    fn boxed(&self) -> Box<dyn Collector>;
}

impl<C: Collector + Clone + 'static> CloneCollector for C {
    fn boxed(&self) -> Box<dyn Collector> {
        Box::new(self.clone())
    }
}

/// `# HELP` and `# TYPE` of a family, as the text encoder writes them. The help texts are
/// this file's constants; escaped anyway, as the format asks (`\\` and `\n`).
fn header(out: &mut Vec<u8>, family: &MetricFamily) {
    use std::io::Write;
    let help = family.help().replace('\\', "\\\\").replace('\n', "\\n");
    let kind = format!("{:?}", family.get_field_type()).to_lowercase();
    let name = family.name();
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_series_count_into_the_same_families_as_with_label_values() {
        let m = Metrics::new();
        let series = RouteSeries::default();
        for status in [200, 200, 418] {
            let status = StatusCode::from_u16(status).unwrap();
            series.record(&m, "api", (1, "anonymous"), status, 0.002);
        }
        series.record(&m, "api", (2, "denied"), StatusCode::FORBIDDEN, 0.001);
        let text = m.encode();
        for line in [
            r#"tollgate_requests_total{decision="anonymous",route="api",status="200"} 2"#,
            r#"tollgate_requests_total{decision="anonymous",route="api",status="418"} 1"#,
            r#"tollgate_requests_total{decision="denied",route="api",status="403"} 1"#,
            r#"tollgate_request_duration_seconds_count{route="api"} 4"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    /// Every family, with its type, as `/metrics` shows it before anything happened.
    const FAMILIES: [(&str, &str); 21] = [
        ("tollgate_auth_failures_total", "counter"),
        ("tollgate_config_last_reload_successful", "gauge"),
        ("tollgate_config_reloads_total", "counter"),
        ("tollgate_egress_request_duration_seconds", "histogram"),
        ("tollgate_egress_requests_total", "counter"),
        ("tollgate_egress_token_expiry_timestamp_seconds", "gauge"),
        ("tollgate_egress_token_requests_total", "counter"),
        ("tollgate_graph_requests_total", "counter"),
        ("tollgate_groups_cache_entries", "gauge"),
        ("tollgate_identity_headers_dropped_total", "counter"),
        ("tollgate_jwks_keys", "gauge"),
        ("tollgate_jwks_refresh_total", "counter"),
        ("tollgate_logins_total", "counter"),
        ("tollgate_obo_cache_entries", "gauge"),
        ("tollgate_obo_requests_total", "counter"),
        ("tollgate_open_connections", "gauge"),
        ("tollgate_ready", "gauge"),
        ("tollgate_request_duration_seconds", "histogram"),
        ("tollgate_requests_total", "counter"),
        ("tollgate_session_refresh_total", "counter"),
        ("tollgate_upstream_duration_seconds", "histogram"),
    ];

    #[test]
    fn every_family_is_on_the_first_scrape_with_help_and_type() {
        let text = Metrics::new().encode();
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let expected: Vec<String> = FAMILIES
            .iter()
            .map(|(name, kind)| format!("# TYPE {name} {kind}"))
            .collect();
        assert_eq!(types, expected, "in name order:\n{text}");
        for (name, _) in FAMILIES {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
        }
    }

    #[test]
    fn a_family_without_series_looks_as_with_one() {
        let m = Metrics::new();
        let empty = m.encode();
        m.jwks_keys.with_label_values(&["entra"]).set(2);
        let with = m.encode();
        let header = |text: &str| {
            text.lines()
                .filter(|l| l.contains(" tollgate_jwks_keys "))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(header(&empty), header(&with));
        assert!(
            with.contains("tollgate_jwks_keys{issuer=\"entra\"} 2\n"),
            "{with}"
        );
    }
}
