//! The admin listener: health, readiness and the metric names of the contract.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{Backend, TestProxy, get, server};

#[tokio::test]
async fn health_readiness_and_metrics() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&format!(
        "{}[[routes]]\nname = \"open\"\nprefix = \"/open\"\nallow_anonymous = true\n",
        server(backend.addr(), "")
    ))
    .await;
    assert_eq!(proxy.admin_get("/healthz").await.status, 200);
    let ready = proxy.admin_get("/readyz").await;
    assert_eq!(
        (ready.status.as_u16(), ready.text().as_str()),
        (200, "ready\n")
    );

    assert_eq!(proxy.get("/open/x").await.status, 200);
    assert_eq!(proxy.get("/some/random/path-123").await.status, 403);
    let metrics = proxy.admin_get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text();
    for name in [
        "tollgate_requests_total",
        "tollgate_request_duration_seconds",
        "tollgate_upstream_duration_seconds",
        "tollgate_config_reloads_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing from:\n{text}"
        );
    }
    assert!(
        text.contains(
            r#"tollgate_requests_total{decision="anonymous",route="open",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"tollgate_requests_total{decision="denied",route="none",status="403"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tollgate_config_reloads_total{result="error"} 0"#),
        "{text}"
    );
    assert!(
        !text.contains("random"),
        "a request path became a label:\n{text}"
    );
}

#[tokio::test]
async fn admin_refuses_other_methods_and_paths() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&format!(
        "{}[[routes]]\nprefix = \"/\"\nallow_anonymous = true\n",
        server(backend.addr(), "")
    ))
    .await;
    assert_eq!(proxy.admin_get("/nope").await.status, 404);
    let req = http::Request::post("/metrics")
        .header("host", "x")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(support::send(proxy.admin, req).await.status, 405);
    // The admin listener is not the proxy: nothing reaches the backend through it.
    assert_eq!(get(proxy.admin, "/", &[]).await.status, 404);
    backend.assert_nothing_received();
}

/// Gauges of configured things are on the first scrape: an issuer whose keys were never
/// fetched shows 0 keys (so `tollgate_jwks_keys == 0` can fire), and an issuer removed by a
/// reload leaves no stale series.
#[tokio::test]
async fn issuer_series_exist_from_the_first_scrape_and_leave_with_the_issuer() {
    let backend = Backend::start().await;
    // Keys from a port nothing listens on: never fetched.
    let issuer = |name: &str| {
        format!(
            "[[issuers]]\nname = \"{name}\"\nissuer = \"https://{name}.example\"\njwks_uri = \"http://127.0.0.1:1/keys\"\naudiences = [\"api://x\"]\n"
        )
    };
    let route = "[[routes]]\nprefix = \"/\"\n";
    let base = server(backend.addr(), "");
    let proxy = TestProxy::start(&format!(
        "{base}{}{}{route}",
        issuer("down"),
        issuer("other")
    ))
    .await;
    let text = proxy.admin_get("/metrics").await.text();
    for line in [
        "tollgate_jwks_keys{issuer=\"down\"} 0",
        "tollgate_jwks_keys{issuer=\"other\"} 0",
        "tollgate_jwks_refresh_total{issuer=\"down\",result=\"success\"} 0",
        "tollgate_ready 0",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    for family in [
        "tollgate_auth_failures_total",
        "tollgate_egress_token_expiry_timestamp_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family}:\n{text}"
        );
    }

    proxy.write_config(&format!("{base}{}{route}", issuer("down")));
    support::eventually("the reload applies", || async {
        proxy.reloads("success") == 1
    })
    .await;
    let text = proxy.admin_get("/metrics").await.text();
    assert!(
        text.contains("tollgate_jwks_keys{issuer=\"down\"} 0"),
        "{text}"
    );
    assert!(
        !text.contains("tollgate_jwks_keys{issuer=\"other\"}"),
        "{text}"
    );
    backend.assert_nothing_received();
}
