//! What the backend learns about the caller: forged identity headers never arrive, Easy Auth
//! headers and claim headers do, and no token reaches a log line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use parking_lot::Mutex;
use serde_json::{Value, json};
use support::issuer::MockIssuer;
use support::{Backend, TestProxy, get, server};

const OID: &str = "00000000-0000-0000-0000-0000000000aa";

async fn start(issuer: &MockIssuer, backend: &Backend, identity: &str, routes: &str) -> TestProxy {
    let toml = format!(
        "{}{}{identity}\n{routes}",
        server(backend.addr(), ""),
        issuer.toml("idp", "")
    );
    let proxy = TestProxy::start(&toml).await;
    support::eventually("ready", || async {
        proxy.admin_get("/readyz").await.status == 200
    })
    .await;
    proxy
}

const FORGED: [(&str, &str); 9] = [
    ("x-ms-client-principal", "eyJmb3JnZWQiOnRydWV9"),
    ("x-ms-client-principal-id", "forged-id"),
    ("x-ms-client-principal-name", "admin@contoso.com"),
    ("x-ms-client-principal-idp", "forged"),
    ("x_ms_client_principal_id", "forged-underscore"),
    ("x-ms-token-aad-access-token", "forged-token"),
    ("x-user-roles", "Admin"),
    ("x_user_roles", "Admin"),
    ("X-Tenant-Id", "forged-tenant"),
];

#[tokio::test]
async fn forged_identity_headers_never_reach_the_backend_on_any_route() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let identity = "[identity.claims]\n\"X-User-Roles\" = \"roles\"\n\"X-Tenant-Id\" = \"tid\"\n";
    let routes = "[[routes]]\nprefix = \"/public\"\nallow_anonymous = true\n[[routes]]\nprefix = \"/api\"\nroles_any = [\"reader\"]\n";
    let proxy = start(&issuer, &backend, identity, routes).await;
    let token = format!(
        "Bearer {}",
        issuer.token(json!({"roles": ["reader"], "tid": "real-tenant"}))
    );
    let mut headers: Vec<(&str, &str)> = FORGED.to_vec();
    // Naming tollgate's own header in Connection must not remove (or keep) anything it sets.
    headers.push(("connection", "X-MS-CLIENT-PRINCIPAL-ID, x-user-roles"));

    // Anonymous route, no token: every forged header is gone.
    let reply = get(proxy.addr, "/public", &headers).await;
    assert_eq!(reply.status, 200);
    let seen = backend.only();
    for (name, _) in FORGED {
        assert_eq!(
            seen.header(name),
            None,
            "{name} reached the backend on an anonymous route"
        );
    }

    // Authenticated route: only tollgate's values arrive.
    backend.clear();
    headers.push(("authorization", &token));
    let reply = get(proxy.addr, "/api", &headers).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = backend.only();
    assert_eq!(seen.header_all("x-ms-client-principal-id"), [OID]);
    assert_eq!(seen.header_all("x-user-roles"), ["reader"]);
    assert_eq!(seen.header_all("x-tenant-id"), ["real-tenant"]);
    assert_eq!(seen.header_all("x-ms-client-principal-idp"), ["aad"]);
    for name in [
        "x_ms_client_principal_id",
        "x_user_roles",
        "x-ms-token-aad-access-token",
    ] {
        assert_eq!(seen.header(name), None, "{name}");
    }
    assert!(
        !seen
            .headers
            .iter()
            .any(|(_, v)| v.starts_with("forged") || v == "Admin"),
        "{:?}",
        seen.headers
    );

    // Denied and unrouted requests reach nothing at all.
    backend.clear();
    let guest = format!("Bearer {}", issuer.token(json!({"roles": ["guest"]})));
    assert_eq!(
        get(proxy.addr, "/api", &[FORGED[1], ("authorization", &guest)])
            .await
            .status,
        403
    );
    assert_eq!(get(proxy.addr, "/elsewhere", &FORGED).await.status, 403);
    backend.assert_nothing_received();
}

#[tokio::test]
async fn easy_auth_principal_and_claim_headers() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let identity = "[identity]\nforward_token = false\n[identity.claims]\n\"X-Roles\" = \"roles\"\n\"X-Name\" = \"name\"\n\"X-Big\" = \"big\"\n\"X-Absent\" = \"absent\"\n";
    let proxy = start(&issuer, &backend, identity, "[[routes]]\nprefix = \"/\"\n").await;
    let big = "x".repeat(9000);
    let token = issuer.token(json!({"roles": ["a", "b"], "name": "José Ñuñez", "big": big, "preferred_username": "jose@contoso.com"}));
    let reply = get(
        proxy.addr,
        "/",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = backend.only();
    assert_eq!(seen.header("authorization"), None, "forward_token = false");
    assert_eq!(seen.header("x-roles"), Some("a,b"));
    assert_eq!(seen.header("x-name"), Some("Jos%C3%A9 %C3%91u%C3%B1ez"));
    assert_eq!(
        seen.header("x-big"),
        None,
        "over 8 KiB: left out, not truncated"
    );
    assert_eq!(seen.header("x-absent"), None);
    assert_eq!(
        proxy
            .metrics()
            .identity_headers_dropped
            .with_label_values(&["x-big"])
            .get(),
        1
    );
    assert_eq!(seen.header("x-ms-client-principal-id"), Some(OID));
    assert_eq!(
        seen.header("x-ms-client-principal-name"),
        Some("jose@contoso.com")
    );
    assert_eq!(seen.header("x-ms-client-principal-idp"), Some("aad"));
    // The principal is dropped too: it carries the 9 KB claim. A normal token's is decoded.
    backend.clear();
    let token = issuer.token(json!({"roles": ["a", "b"], "tid": "t-1"}));
    get(
        proxy.addr,
        "/",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    let principal = backend
        .only()
        .header("x-ms-client-principal")
        .unwrap()
        .to_owned();
    let principal: Value = serde_json::from_slice(&STANDARD.decode(principal).unwrap()).unwrap();
    assert_eq!(principal["auth_typ"], "aad");
    assert_eq!(
        principal["name_typ"],
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
    );
    assert_eq!(
        principal["role_typ"],
        "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
    );
    let entries = principal["claims"].as_array().unwrap();
    let roles: Vec<&str> = entries
        .iter()
        .filter(|c| c["typ"] == "roles")
        .map(|c| c["val"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["a", "b"]);
    assert!(
        entries.iter().any(
            |c| c["typ"] == "http://schemas.microsoft.com/identity/claims/tenantid"
                && c["val"] == "t-1"
        ),
        "claim types mapped as App Service maps them"
    );
}

#[tokio::test]
async fn easy_auth_headers_can_be_turned_off() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let proxy = start(
        &issuer,
        &backend,
        "[identity]\neasy_auth_headers = false\n",
        "[[routes]]\nprefix = \"/\"\n",
    )
    .await;
    let token = issuer.token(json!({}));
    get(
        proxy.addr,
        "/",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    let seen = backend.only();
    assert!(
        !seen
            .headers
            .iter()
            .any(|(n, _)| n.starts_with("x-ms-client-principal")),
        "{:?}",
        seen.headers
    );
    assert!(seen.header("authorization").is_some());
}

/// Collects log output in memory.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Everything logged so far.
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().clone()).unwrap()
    }
}

/// The log capture of this test binary, installed on first use. Global, not scoped: tasks
/// may run on any thread, and callsite interest is process-wide. Every test of this binary
/// logs here, so each looks for its own route names.
fn capture() -> Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = Capture::default();
            let writer = capture.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in this test binary");
            capture
        })
        .clone()
}

#[tokio::test]
async fn no_token_or_secret_header_reaches_the_logs() {
    // Other tests of this binary log here too, which only widens what is checked.
    let capture = capture();
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let proxy = start(
        &issuer,
        &backend,
        "",
        "[[routes]]\nprefix = \"/api\"\nroles_any = [\"reader\"]\n",
    )
    .await;
    let good = issuer.token(json!({"roles": ["reader"]}));
    let forbidden = issuer.token(json!({"roles": ["guest"]}));
    let expired = issuer.token(json!({"exp": 1}));
    for (token, status) in [(&good, 200), (&forbidden, 403), (&expired, 401)] {
        let headers = [
            ("authorization", format!("Bearer {token}")),
            ("cookie", "session=cookie-secret-value".to_owned()),
            ("x-ms-token-aad-access-token", "aad-secret-value".to_owned()),
        ];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(get(proxy.addr, "/api", &headers).await.status, status);
    }
    let logs = capture.text();
    assert!(
        logs.contains("tollgate::access"),
        "nothing was captured:\n{logs}"
    );
    for secret in [
        good.as_str(),
        forbidden.as_str(),
        expired.as_str(),
        "cookie-secret-value",
        "aad-secret-value",
    ] {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(
            !logs.contains(signature),
            "a secret reached the logs:\n{logs}"
        );
    }
}

/// Every refusal writes one `token refused` line naming the route, the metric reason and the
/// detail, whatever the reason, and never the token.
#[tokio::test]
async fn every_refusal_writes_a_token_refused_line() {
    let capture = capture();
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let down = support::issuer::MockIssuer::start_with(
        "https://down.tollgate.test/",
        tollgate::config::Algorithm::RS256,
        support::issuer::Mode::Down,
    )
    .await;
    let toml = format!(
        "{}{}{}[[routes]]\nname = \"refusal-test\"\nprefix = \"/refusals\"\nroles_any = [\"reader\"]\n",
        server(backend.addr(), ""),
        issuer.toml("idp", ""),
        down.toml("down", "")
    );
    let proxy = TestProxy::start(&toml).await;
    let good = issuer.token(json!({"roles": ["reader"]}));
    support::eventually("the up issuer's keys", || async {
        let auth = format!("Bearer {good}");
        get(proxy.addr, "/refusals", &[("authorization", &auth)])
            .await
            .status
            == 200
    })
    .await;
    let cases = [
        (None, 401, "missing_token"),
        (Some(issuer.token(json!({"exp": 1}))), 401, "expired"),
        (
            Some(issuer.token(json!({"roles": ["guest"]}))),
            403,
            "forbidden",
        ),
        (
            Some(down.token(json!({"roles": ["reader"]}))),
            503,
            "keys_unavailable",
        ),
    ];
    for (token, status, _) in &cases {
        let auth = token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        assert_eq!(get(proxy.addr, "/refusals", &headers).await.status, *status);
    }
    // The log writer is the test's own, synchronous: every line is there once answered.
    let logs = capture.text();
    for (token, _, reason) in &cases {
        let line = logs.lines().find(|l| {
            l.contains("token refused")
                && l.contains("route=\"refusal-test\"")
                && l.contains(&format!("reason=\"{reason}\""))
        });
        let line = line.unwrap_or_else(|| panic!("no token refused line for {reason}:\n{logs}"));
        assert!(line.contains("error="), "{line}");
        if let Some(token) = token {
            let signature = token.rsplit('.').next().unwrap();
            assert!(
                !logs.contains(signature),
                "a token reached the logs:\n{logs}"
            );
        }
    }
}
