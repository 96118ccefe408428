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

    // The IMDS request as Microsoft documents it.
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

/// A request that names a host no target has, in its URI (`HTTP_PROXY`) or its `Host`, is
/// refused, and never matched by path prefix: no token is asked for, nothing is sent. The
/// identity endpoint holds the (start-up) token fetch, so a request that got as far as asking
/// for a token would wait, not answer 421.
#[tokio::test]
async fn a_host_no_target_has_is_refused_before_any_token_is_asked() {
    let backend = Backend::start().await;
    let imds = Mock::imds().hold().start().await;
    let app = start(&simple(&backend, &imds_credential("mi", &imds, "")), &[]).await;
    let requests: [&[u8]; 3] = [
        b"GET http://attacker.example/api/v1/users HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n",
        b"GET http://attacker.example/api/v1/users HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        b"GET /api/v1/users HTTP/1.1\r\nHost: attacker.example:15001\r\nConnection: close\r\n\r\n",
    ];
    for request in requests {
        let out = support::raw(app.egress, request).await;
        assert_eq!(raw_status(&out), 421, "{out}");
        assert!(out.contains("unknown_host"), "{out}");
    }
    backend.assert_nothing_received();
    assert!(imds.calls() <= 1, "only the start-up fetch may have asked");
    assert_eq!(app.requests("none", "421"), 3);
}

/// Generated hostile paths under a target with a base path: what reaches the target is the
/// base path followed by the normalised rest, never above the base path; a refusal sends
/// nothing.
#[test]
fn egress_paths_never_climb_above_a_target_s_base_path() {
    use proptest::prelude::*;
    use proptest::test_runner::TestRunner;

    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(Backend::start());
    let imds = rt.block_on(Mock::imds().start());
    let egress = format!(
        "[[egress.targets]]\nname = \"api\"\nurl = \"http://{}/base\"\ncredential = \"mi\"\nscope = \"api://orders/.default\"\n{}",
        backend.addr(),
        imds_credential("mi", &imds, "")
    );
    let app = rt.block_on(start(&config(&backend, &egress), &[]));
    const ATOMS: &[&str] = &[
        "api", "API", "admin", "x", "", ".", "..", "%2e", "%2E%2e", ".%2e", ";x", "..;", "%2f",
        "%5c", "%252e", "%3B", "~", "%61pi",
    ];
    let segment = prop::collection::vec(prop::sample::select(ATOMS), 0..3).prop_map(|a| a.concat());
    let path = prop::collection::vec(segment, 0..5)
        .prop_map(|segments| format!("/api/{}", segments.join("/")));
    let mut runner = TestRunner::new(support::client::proptest_config(128));
    runner
        .run(&path, |raw| {
            backend.clear();
            let reply = rt.block_on(app.get(&raw, &[]));
            let status = reply.status.as_u16();
            let rest = tollgate::path::normalise(&raw).ok().and_then(|p| {
                let p = p.into_owned();
                if p == "/api" {
                    Some("/".to_owned())
                } else {
                    p.strip_prefix("/api/").map(|r| format!("/{r}"))
                }
            });
            match rest {
                Some(rest) => {
                    prop_assert_eq!(status, 200, "{}", raw);
                    let seen = backend.seen();
                    prop_assert_eq!(seen.len(), 1);
                    prop_assert_eq!(&seen[0].path, &format!("/base{rest}"), "{}", raw);
                }
                None => {
                    prop_assert!(matches!(status, 400 | 404), "{} gave {}", raw, status);
                    prop_assert_eq!(backend.count(), 0, "{}", raw);
                }
            }
            Ok(())
        })
        .unwrap();
}
