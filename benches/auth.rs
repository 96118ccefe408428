//! Hot-path micro-benchmarks: token verification with warm keys (RS256 2048, ES256), through
//! the verified-signature cache, and with jsonwebtoken for comparison; path normalisation;
//! route matching over a 100-route table; the header rewrite every forwarded request gets; the
//! groups lookup of an overage token (cache hit); the access-log line; the on-behalf-of
//! cache-hit path (the caller's token verified, its digest, the cached token).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use serde_json::json;
use tollgate::config::{
    self, Algorithm, KeySource, Mode, PathMatch, Position, Requirements, Route,
};
use tollgate::dev::issuer::SigningKey;
use tollgate::inbound::issuer::{Issuer, Issuers};
use tollgate::inbound::jwks::KeySet;
use tollgate::inbound::signature_cache::SignatureCache;
use tollgate::inbound::{InboundState, Verdict, decide, identity, jwt, policy::Routes};
use tollgate::path;
use tollgate::proxy::headers;
use tollgate::telemetry::access_log::Access;
use tollgate::telemetry::metrics::Metrics;

const ISS: &str = "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0";

/// An issuer trusting `key`, and an Entra-shaped token signed by it.
fn issuer_and_token(alg: Algorithm) -> (Issuers, String, SigningKey) {
    let key = SigningKey::generate(alg, "kid-1").expect("key");
    let settings = config::Issuer {
        name: "entra".into(),
        issuer: ISS.into(),
        keys: KeySource::JwksUri(
            "https://login.microsoftonline.com/keys"
                .parse()
                .expect("url"),
        ),
        audiences: vec!["api://orders".into()],
        algorithms: vec![alg],
        clock_skew: Duration::from_secs(60),
        jwks_refresh: Duration::from_secs(3600),
        ca_file: None,
        tenants: vec![],
        groups_overage: config::GroupsOverage::Deny,
    };
    let jwks = json!({ "keys": [key.jwk()] }).to_string();
    let keys =
        KeySet::from_document(&settings, jwks.as_bytes(), Arc::new(Metrics::new())).expect("keys");
    let issuers = Issuers::new(vec![Issuer::new(&settings, keys)]);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = json!({
        "aud": "api://orders", "iss": ISS, "iat": now, "nbf": now, "exp": now + 3600,
        "aio": "E2RgYJg3f8jzGvV9/dG5uXtD1nM6AQ==", "azp": "c0ffee00-1111-2222-3333-444455556666", "azpacr": "2",
        "oid": "a1b2c3d4-0000-1111-2222-333344445555", "rh": "0.AAAA", "roles": ["Orders.Read", "Orders.Write"],
        "sub": "a1b2c3d4-0000-1111-2222-333344445555", "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "uti": "Q1w2E3r4T5y6U7i8O9p0", "ver": "2.0",
    });
    let token = key.mint(&claims, &json!({})).expect("token");
    (issuers, token, key)
}

fn bench_verify(c: &mut Criterion) {
    for alg in [Algorithm::RS256, Algorithm::ES256] {
        let (issuers, token, key) = issuer_and_token(alg);
        c.bench_function(&format!("verify/{alg}_warm_keys"), |b| {
            b.iter(|| {
                jwt::verify(black_box(&token), &issuers, None, SystemTime::now()).map(|v| v.cached)
            })
        });
        let cache = SignatureCache::new(10_000).expect("cache");
        c.bench_function(&format!("verify/{alg}_cached"), |b| {
            b.iter(|| {
                jwt::verify(black_box(&token), &issuers, Some(&cache), SystemTime::now())
                    .map(|v| v.cached)
            })
        });
        // The same check through jsonwebtoken, which parses the public key on every call:
        // why tollgate verifies with pre-parsed aws-lc-rs keys instead.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk()).expect("jwk");
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key");
        let mut validation = jsonwebtoken::Validation::new(if alg == Algorithm::RS256 {
            jsonwebtoken::Algorithm::RS256
        } else {
            jsonwebtoken::Algorithm::ES256
        });
        validation.set_audience(&["api://orders"]);
        validation.set_issuer(&[ISS]);
        c.bench_function(&format!("verify/{alg}_jsonwebtoken"), |b| {
            b.iter(|| {
                jsonwebtoken::decode::<serde_json::Value>(black_box(&token), &decoding, &validation)
                    .is_ok()
            })
        });
    }
}

fn route(i: usize) -> Route {
    Route {
        name: format!("r{i}"),
        position: Position::default(),
        path: PathMatch::Prefix(format!("/api/v1/service{i}/items")),
        methods: i.is_multiple_of(3).then(|| vec![Method::GET, Method::POST]),
        case_insensitive: i.is_multiple_of(7),
        allow_anonymous: false,
        require: Requirements::default(),
        mode: Mode::Enforce,
        unauthenticated: Default::default(),
    }
}

fn bench_paths(c: &mut Criterion) {
    c.bench_function("path/normalise_plain", |b| {
        b.iter(|| path::normalise(black_box("/api/v1/service42/items/123")).map(|n| n.len()))
    });
    c.bench_function("path/normalise_dirty", |b| {
        b.iter(|| {
            path::normalise(black_box(
                "/api//v1/./service42/%69tems/../items;jsessionid=1/123",
            ))
            .map(|n| n.len())
        })
    });
}

fn bench_routes(c: &mut Criterion) {
    let mut routes: Vec<Route> = (0..99).map(route).collect();
    routes.push(Route {
        path: PathMatch::Prefix("/".into()),
        ..route(99)
    });
    let routes = Routes::new(routes);
    c.bench_function("routes/match_last_of_100", |b| {
        b.iter(|| {
            routes
                .find(
                    black_box(&Method::GET),
                    black_box("/api/v1/service98/items/7"),
                )
                .map(|r| r.name.len())
        })
    });
    c.bench_function("routes/catch_all_after_99", |b| {
        b.iter(|| {
            routes
                .find(black_box(&Method::GET), black_box("/other/path"))
                .map(|r| r.name.len())
        })
    });
}

fn bench_headers(c: &mut Criterion) {
    let mut base = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        ("user-agent", "curl/8.0"),
        ("accept", "application/json"),
        ("authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig"),
        ("connection", "keep-alive"),
        ("x-request-id", "5f0c6a"),
        ("content-type", "application/json"),
    ] {
        base.insert(k, HeaderValue::from_static(v));
    }
    let claims = [http::HeaderName::from_static("x-user-roles")];
    let peer = HeaderValue::from_static("10.1.2.3");
    c.bench_function("headers/strip_and_forward", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |h| {
                identity::strip_spoofable(h, &claims);
                headers::strip_hop_by_hop(h);
                let host = h.get("host").cloned();
                headers::Forwarded {
                    peer_ip: &peer,
                    scheme: "http",
                    host: host.as_ref(),
                    trusted: false,
                }
                .apply(h);
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

/// The whole inbound decision (`inbound::decide`, what the listener and `explain` call) on
/// an Entra-shaped token: a protected route with a role requirement (signature cached, as
/// for a client that repeats its token), and an anonymous route without a token.
fn bench_decide(c: &mut Criterion) {
    let (_, token, key) = issuer_and_token(Algorithm::RS256);
    let toml = format!(
        r#"
[server]
upstream = "http://127.0.0.1:3000"
[[issuers]]
name = "entra"
issuer = "{ISS}"
jwks_uri = "https://login.microsoftonline.com/keys"
audiences = ["api://orders"]
[[routes]]
prefix = "/health"
allow_anonymous = true
[[routes]]
prefix = "/orders"
roles_any = ["Orders.Read"]
"#
    );
    let config = config::parse(&toml, std::path::Path::new("bench.toml"), &|_| None)
        .expect("config")
        .config;
    let metrics = Arc::new(Metrics::new());
    let state = InboundState::build(&config, None, &metrics, None, &|_| None)
        .expect("state")
        .expect("a [server]");
    let jwks = json!({ "keys": [key.jwk()] }).to_string();
    for issuer in state.issuers.iter() {
        issuer.keys.load_document(jwks.as_bytes()).expect("keys");
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    let get = Method::GET;
    let empty = HeaderMap::new();
    for (name, path, headers) in [
        (
            "decide/protected_route_cached_token",
            "/orders/42",
            &headers,
        ),
        ("decide/anonymous_route_no_token", "/health", &empty),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                let trace = decide(
                    Some(&state),
                    &get,
                    black_box(path),
                    headers,
                    SystemTime::now(),
                );
                matches!(trace.verdict, Verdict::Forward(_))
            })
        });
    }
}

/// What a session request will cost before its headers: the chunks of a sealed session
/// cookie joined and opened. 6 KiB of plaintext, about an Entra id_token, access token and
/// refresh token together, in two cookies.
fn bench_session(c: &mut Criterion) {
    use tollgate::inbound::session::{cookies, seal::KeyRing};
    let ring = KeyRing::new(&[[7; 32], [8; 32]]).expect("ring");
    let plaintext = vec![b'x'; 6 * 1024];
    let sealed = ring
        .seal("AppServiceAuthSession", &plaintext)
        .expect("seal");
    let chunks = cookies::split("AppServiceAuthSession", &sealed).expect("chunks");
    let mut header = chunks
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    header.push_str("; other=1");
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::COOKIE,
        HeaderValue::from_str(&header).expect("header"),
    );
    c.bench_function("session/open_6kib_from_cookie_header", |b| {
        b.iter(|| {
            let received = cookies::received(black_box(&headers));
            let value = cookies::join("AppServiceAuthSession", &received).expect("join");
            ring.open("AppServiceAuthSession", &value)
                .expect("open")
                .len()
        })
    });
}

/// A request's whole authentication beside its bearer twin: with a browser session, the cookie
/// joined and opened, the id_token's claims parsed, the decision, the identity headers and
/// the token headers; with a bearer token (signature cached), the decision and the identity
/// headers. Same user, same route.
fn bench_session_request(c: &mut Criterion) {
    use futures_util::FutureExt;
    use tollgate::inbound::jwt::Verified;
    use tollgate::inbound::session::{Resolved, headers as token_headers, record::Tokens};
    use tollgate::inbound::{Browser, SessionInput, decide_with};

    let (_, bearer, key) = issuer_and_token(Algorithm::RS256);
    let toml = format!(
        r#"
[server]
upstream = "http://127.0.0.1:3000"
[[issuers]]
name = "entra"
issuer = "{ISS}"
discovery = "https://login.microsoftonline.com/discovery"
audiences = ["api://orders"]
[credentials.web]
kind = "client_secret"
tenant_id = "t"
client_id = "web"
secret_env = "S"
[login]
issuer = "entra"
client_id = "web"
credential = "web"
session_keys = ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]
[[routes]]
prefix = "/orders"
roles_any = ["Orders.Read"]
"#
    );
    let env = |name: &str| (name == "S").then(|| "s".to_owned());
    let config = config::parse(&toml, std::path::Path::new("bench.toml"), &env)
        .expect("config")
        .config;
    let metrics = Arc::new(Metrics::new());
    let state = InboundState::build(&config, None, &metrics, None, &env)
        .expect("state")
        .expect("a [server]");
    let jwks = json!({ "keys": [key.jwk()] }).to_string();
    for issuer in state.issuers.iter() {
        issuer.keys.load_document(jwks.as_bytes()).expect("keys");
    }
    let sessions = state.sessions.clone().expect("[login]");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // An Entra-sized id_token; the access token is the bearer one; a 1.2 KB refresh token.
    let id_token = key
        .mint(
            &json!({
                "aud": "web", "iss": ISS, "iat": now, "nbf": now, "exp": now + 3600,
                "name": "Ana Example", "preferred_username": "ana@contoso.com", "nonce": "n".repeat(43),
                "oid": "a1b2c3d4-0000-1111-2222-333344445555", "roles": ["Orders.Read", "Orders.Write"],
                "sub": "Xq1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x", "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                "sid": "004c1e1a-0000-1111-2222-333344445555", "uti": "Q1w2E3r4T5y6U7i8O9p0", "ver": "2.0",
                "rh": "0.AAAAv4j5cvGGr0GRqy180BHbR_SGOmDaIqBAjHs0u-OLZE0MAAA.",
            }),
            &json!({}),
        )
        .expect("id_token");
    let tokens = Tokens {
        id_token,
        access_token: bearer.clone(),
        access_expires: now + 3600,
        refresh_token: Some("0.A".to_owned() + &"r".repeat(1200)),
    };
    let body = sessions.new_body(SystemTime::now(), "sid-bench".into());
    let set = sessions
        .seal_cookies(&body, &tokens, false, &[])
        .now_or_never()
        .expect("no store: ready at once")
        .expect("sealed");
    let cookie = set
        .iter()
        .map(|v| {
            v.to_str()
                .expect("ascii")
                .split(';')
                .next()
                .expect("pair")
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("; ");
    let mut with_cookie = HeaderMap::new();
    with_cookie.insert(
        http::header::COOKIE,
        HeaderValue::from_str(&cookie).expect("cookie"),
    );
    let mut with_bearer = HeaderMap::new();
    with_bearer.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {bearer}")).expect("header"),
    );
    let get = Method::GET;
    let login = &sessions.config;
    c.bench_function("request/session_cookie", |b| {
        b.iter(|| {
            let Resolved::Active(active) = sessions
                .resolve(
                    black_box(&with_cookie),
                    false,
                    SystemTime::now(),
                    &state.issuers,
                )
                .now_or_never()
                .expect("ready at once")
            else {
                panic!("no session")
            };
            let issuer = state.issuers.by_name("entra").expect("issuer");
            let verified = Verified {
                claims: active.claims,
                issuer,
                alg: active.alg,
                cached: true,
            };
            let browser = Browser {
                session: SessionInput::Active(verified),
                ..Browser::default()
            };
            let trace = decide_with(
                Some(&state),
                &get,
                "/orders/42",
                &with_cookie,
                browser,
                SystemTime::now(),
            );
            let v = trace.verified().expect("allowed");
            let computed = identity::identity_headers(&v.claims, &state.identity);
            let mut out = HeaderMap::new();
            token_headers::add_token_headers(&mut out, &active.tokens, login);
            computed.set.len() + out.len()
        })
    });
    c.bench_function("request/bearer_token", |b| {
        b.iter(|| {
            let trace = decide(
                Some(&state),
                &get,
                "/orders/42",
                black_box(&with_bearer),
                SystemTime::now(),
            );
            let v = trace.verified().expect("allowed");
            identity::identity_headers(&v.claims, &state.identity)
                .set
                .len()
        })
    });
    // The session cookie is this big on the wire.
    eprintln!(
        "session cookie: {} bytes in {} chunks",
        cookie.len(),
        set.len()
    );
}

/// The access-log line every request writes (JSON format), timestamp included: the clock is
/// read as the proxy reads it, so consecutive lines share the cached second as in production.
fn bench_access_log(c: &mut Criterion) {
    let access = Access {
        method: "GET",
        path: "/api/v1/service42/items/123",
        route: "orders",
        status: 200,
        decision: "allowed",
        duration_ms: 1.234,
        upstream_status: Some(200),
        issuer: Some("entra"),
        error: None,
    };
    let mut line = String::with_capacity(256);
    c.bench_function("access_log/line", |b| {
        b.iter(|| {
            line.clear();
            black_box(&access).push_json(&mut line, SystemTime::now());
            line.len()
        })
    });
    // Every line in a second of its own: the date and clock text is made each time, which
    // production does once a second.
    let mut second = 1_795_358_343;
    c.bench_function("access_log/line_new_second", |b| {
        b.iter(|| {
            second += 1;
            line.clear();
            black_box(&access).push_json(&mut line, UNIX_EPOCH + Duration::from_secs(second));
            line.len()
        })
    });
}

/// An overage token (a user in 500 groups) on a route with `groups_any`, its groups cached:
/// the first decision, the cache hit, the second decision on the 500 groups; then, apart, the
/// identity claims and headers with the resolved groups in place of the marker. Graph is the
/// `tollgate dev` stand-in, called once to fill the cache.
fn bench_groups(c: &mut Criterion) {
    use futures_util::FutureExt;
    use tollgate::dev::graph::{group_id, overage_user};
    use tollgate::dev::server::DevServer;
    use tollgate::inbound::decide::{Groups, groups_for};
    use tollgate::inbound::{Browser, decide_with};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dev = runtime
        .block_on(DevServer::builder().start())
        .expect("dev server");
    let (_, _, key) = issuer_and_token(Algorithm::RS256);
    let toml = format!(
        r#"
[server]
upstream = "http://127.0.0.1:3000"
[[issuers]]
name = "entra"
issuer = "{ISS}"
jwks_uri = "https://login.microsoftonline.com/keys"
audiences = ["api://orders"]
groups_overage = "graph"
graph_credential = "graph"
graph_endpoint = "{url}"
[credentials.graph]
kind = "managed_identity"
endpoint = "{url}"
[[routes]]
prefix = "/reports"
groups_any = ["{wanted}"]
"#,
        url = dev.url(),
        wanted = group_id(500),
    );
    let config = config::parse(&toml, std::path::Path::new("bench.toml"), &|_| None)
        .expect("config")
        .config;
    let metrics = Arc::new(Metrics::new());
    let state = InboundState::build(&config, None, &metrics, None, &|_| None)
        .expect("state")
        .expect("a [server]");
    let jwks = json!({ "keys": [key.jwk()] }).to_string();
    for issuer in state.issuers.iter() {
        issuer.keys.load_document(jwks.as_bytes()).expect("keys");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let token = key
        .mint(
            &json!({
                "aud": "api://orders", "iss": ISS, "iat": now, "nbf": now, "exp": now + 3600,
                "oid": overage_user(500), "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                "_claim_names": {"groups": "src1"},
                "_claim_sources": {"src1": {"endpoint": "https://graph.windows.net/t/users/x/getMemberObjects"}},
            }),
            &json!({}),
        )
        .expect("token");
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    let get = Method::GET;
    let decided = |cached_only: bool| {
        let first = decide(
            Some(&state),
            &get,
            "/reports/q3",
            &headers,
            SystemTime::now(),
        );
        let lookup = groups_for(Some(&state), &first).expect("a lookup");
        let resolution = if cached_only {
            lookup.now_or_never().expect("a cache hit does not wait")
        } else {
            runtime.block_on(lookup)
        };
        let browser = Browser {
            groups: Some(resolution),
            ..Browser::default()
        };
        let trace = decide_with(
            Some(&state),
            &get,
            "/reports/q3",
            &headers,
            browser,
            SystemTime::now(),
        );
        assert!(matches!(trace.verdict, Verdict::Forward(_)), "{trace}");
        let Groups::Resolved(set) = &trace.groups else {
            panic!("resolved")
        };
        (trace.verified().expect("valid").claims.clone(), set.clone())
    };
    // Fills the cache: the one Graph lookup.
    let (claims, set) = decided(false);
    assert_eq!(dev.graph().lookups(), 1);
    c.bench_function("groups/overage_cache_hit_decide", |b| {
        b.iter(|| black_box(decided(true)).1.len())
    });
    assert_eq!(dev.graph().lookups(), 1, "every iteration was a cache hit");
    // What forwarding adds: the claims with the 500 groups in place of the marker, and the
    // identity headers (a 500-group principal is built, then left out: over 8 KiB).
    c.bench_function("groups/identity_headers_500_groups", |b| {
        b.iter(|| {
            let claims = claims.with_groups(set.iter());
            identity::identity_headers(&claims, &config.identity)
                .set
                .len()
        })
    });
    runtime.block_on(dev.stop());
}

/// An on-behalf-of request whose token is cached: the caller's token verified (signature
/// cache warm, as on every request after the first), its SHA-256 key, the cache lookup among
/// 10,000 entries. No exchange and no await point is reached.
fn bench_obo_hit(c: &mut Criterion) {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    use tollgate::egress::obo::cache::{Fresh, Key, MAX_BYTES, OboCache};

    let (issuers, token, _key) = issuer_and_token(Algorithm::RS256);
    let signatures = SignatureCache::new(10_000).expect("cache");
    let cache = OboCache::new(10_000, MAX_BYTES, None);
    let (credential, scope): (Arc<str>, Arc<str>) =
        (Arc::from("web"), Arc::from("api://x/.default"));
    fn run<F: Future>(fut: F) -> F::Output {
        match std::pin::pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("a cache hit does not wait"),
        }
    }
    let fill = |caller: &str| {
        let key = Key::new(&credential, &scope, caller);
        let fresh = Fresh {
            bearer: HeaderValue::from_str(&format!("Bearer obo-{}", caller.len())).expect("value"),
            expires: tokio::time::Instant::now() + Duration::from_secs(3600),
        };
        let _ = run(cache.get_or_exchange(key, || async move { Ok(fresh) }));
    };
    for n in 0..9_999 {
        fill(&format!("other-caller-{n}"));
    }
    fill(&token);
    c.bench_function("obo/cache_hit", |b| {
        b.iter(|| {
            let verified = jwt::verify(
                black_box(&token),
                &issuers,
                Some(&signatures),
                SystemTime::now(),
            )
            .expect("valid");
            black_box(verified.claims.object_id());
            let key = Key::new(&credential, &scope, black_box(&token));
            run(cache.get_or_exchange(key, || async { unreachable!("a hit") }))
                .0
                .expect("token")
        })
    });
}

criterion_group!(
    benches,
    bench_verify,
    bench_obo_hit,
    bench_paths,
    bench_routes,
    bench_headers,
    bench_decide,
    bench_session,
    bench_session_request,
    bench_groups,
    bench_access_log
);
criterion_main!(benches);
