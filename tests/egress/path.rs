//! The request path: token injection, the app's own Authorization replaced, path prefix
//! stripped, Host and absolute-form matching, https targets, unknown targets and tunnels.

use super::*;
use support::client::raw_status;
use support::tls::TestCa;

#[tokio::test]
async fn the_target_gets_the_mock_token_and_never_the_apps_own() {
    let backend = Backend::start().await;
    let imds = Mock::imds().start().await;
    let app = start(&simple(&backend, &imds_credential("mi", &imds, "")), &[]).await;

    let reply = app
        .get(
            "/api/orders/7?expand=lines",
            &[
                ("authorization", "Bearer the-apps-own-token"),
                ("authorization", "Basic c2Vjb25kOm9uZQ=="),
                ("connection", "x-hop"),
                ("x-hop", "dropped"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = backend.only();
    assert_eq!(
        seen.header_all("authorization"),
        [format!("Bearer {}", imds.last_token())]
    );
    assert_eq!(seen.path, "/orders/7");
    assert_eq!(seen.query.as_deref(), Some("expand=lines"));
    assert_eq!(
        seen.header("host"),
        Some(backend.addr().to_string().as_str())
    );
    assert_eq!(
        seen.header("x-hop"),
        None,
        "hop-by-hop headers are stripped"
    );

    // The IMDS request as A.1 describes it.
    let asked = &imds.log()[0];
    assert_eq!(asked.method, "GET");
    assert_eq!(asked.path, "/metadata/identity/oauth2/token");
    assert_eq!(asked.param("api-version"), Some("2018-02-01"));
    assert_eq!(asked.param("resource"), Some("api://orders"));
    assert_eq!(asked.header("metadata"), Some("true"));

    assert_eq!(app.requests("api", "200"), 1);
    assert_eq!(app.token_requests("mi", "success"), 1);
    assert_eq!(
        app.expiry("mi", "api://orders/.default"),
        exp_of(&imds.last_token()) as f64
    );
}

#[tokio::test]
async fn the_imds_mock_refuses_requests_without_the_metadata_header() {
    let imds = Mock::imds().start().await;
    let reply = support::get(
        imds.addr,
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://x",
        &[],
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"], "bad_request_102");
    assert_eq!(imds.served(), 0);
}

#[tokio::test]
async fn https_targets_are_trusted_through_ca_file_only() {
    let backend = Backend::start().await;
    let imds = Mock::imds().start().await;
    let ca = TestCa::new();
    let front = support::tls::tls_front(&ca, backend.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let egress = format!(
        "[[egress.targets]]\nname = \"trusted\"\nurl = \"https://{front}/base\"\ncredential = \"mi\"\nscope = \"api://orders/.default\"\nca_file = \"{}\"\n\
         [[egress.targets]]\nname = \"untrusted\"\nurl = \"https://{front}\"\ncredential = \"mi\"\nscope = \"api://orders/.default\"\n{}",
        ca_file.display(),
        imds_credential("mi", &imds, "")
    );
    let app = start(&config(&backend, &egress), &[]).await;

    let reply = app.get("/trusted/x", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = backend.only();
    assert_eq!(seen.path, "/base/x", "the target URL's base path is kept");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {}", imds.last_token()).as_str())
    );
    assert_eq!(seen.header("host"), Some(front.to_string().as_str()));

    backend.clear();
    let reply = app.get("/untrusted/x", &[]).await;
    assert_eq!(reply.status, 502, "an unknown CA is refused");
    assert_eq!(reply.json()["error"], "target_unreachable");
    backend.assert_nothing_received();
}

#[tokio::test]
async fn targets_match_by_host_and_absolute_form_uri() {
    let backend = Backend::start().await;
    let imds = Mock::imds().start().await;
    let egress = format!(
        "{}host = \"orders.internal\"\n{}",
        target("api", &backend, "mi", "api://orders/.default"),
        imds_credential("mi", &imds, "")
    );
    let app = start(&config(&backend, &egress), &[]).await;

    // HTTP_PROXY style: the absolute URI names the host; the path is forwarded whole.
    let out = support::raw(
        app.egress,
        b"GET http://orders.internal/v1/orders HTTP/1.1\r\nHost: orders.internal\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&out), 200, "{out}");
    assert_eq!(backend.only().path, "/v1/orders");

    backend.clear();
    let out = support::raw(
        app.egress,
        b"GET /v1/lines HTTP/1.1\r\nHost: Orders.Internal:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&out), 200, "{out}");
    assert_eq!(backend.only().path, "/v1/lines");
}

#[tokio::test]
async fn unknown_targets_and_tunnels_are_refused_and_nothing_is_sent() {
    let backend = Backend::start().await;
    let imds = Mock::imds().start().await;
    let app = start(&simple(&backend, &imds_credential("mi", &imds, "")), &[]).await;

    for path in ["/other/x", "/", "/apix/y"] {
        let reply = app.get(path, &[("authorization", "Bearer app")]).await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.json()["error"], "unknown_target");
    }
    let out = support::raw(
        app.egress,
        b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&out), 405, "{out}");
    assert!(out.contains("tunnel_refused"), "{out}");
    backend.assert_nothing_received();
    assert_eq!(app.requests("none", "404"), 3);
}
