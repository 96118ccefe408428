//! Hot-path micro-benchmarks: path normalisation, route matching over a 100-route table, and
//! the header rewrite every forwarded request gets.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use tollgate::config::{Mode, PathMatch, Position, Requirements, Route};
use tollgate::inbound::{identity, path, policy::Routes};
use tollgate::proxy::headers;

fn route(i: usize) -> Route {
    Route {
        name: format!("r{i}"),
        position: Position::default(),
        path: PathMatch::Prefix(format!("/api/v1/service{i}/items")),
        methods: (i % 3 == 0).then(|| vec![Method::GET, Method::POST]),
        case_insensitive: i % 7 == 0,
        allow_anonymous: false,
        require: Requirements::default(),
        mode: Mode::Enforce,
    }
}

fn bench_paths(c: &mut Criterion) {
    c.bench_function("path/normalise_plain", |b| {
        b.iter(|| path::normalise(black_box("/api/v1/service42/items/123")).map(|n| n.path.len()))
    });
    c.bench_function("path/normalise_dirty", |b| {
        b.iter(|| {
            path::normalise(black_box(
                "/api//v1/./service42/%69tems/../items;jsessionid=1/123",
            ))
            .map(|n| n.path.len())
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
    c.bench_function("routes/fall_through_100", |b| {
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
                headers::set_forwarded(h, &peer, "http", h.get("host").cloned());
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench_paths, bench_routes, bench_headers);
criterion_main!(benches);
