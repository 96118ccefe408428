//! The command line: `check` in-process and as a binary, `run` with real signals, and logs
//! that never carry a credential.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Child processes run in real time: std's Instant is right for their deadlines.
#![allow(clippy::disallowed_types)]

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_prints_a_summary_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "ok.toml",
        "[server]\nupstream = \"http://127.0.0.1:3000\"\n[[routes]]\nprefix = \"/\"\nallow_anonymous = true\n[[routes]]\nprefix = \"/x\"\nallow_anonymous = true\n",
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(": ok"), "{stdout}");
    assert!(stdout.contains("inbound  0.0.0.0:8080"), "{stdout}");
    assert!(
        stdout.contains(" 1. prefix /  [all methods]  anonymous"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning:") && stdout.contains("routes[1]: never matches"),
        "{stdout}"
    );
}

#[test]
fn check_reports_every_error_with_position_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bad.toml",
        "[server]\nupstream = \"http://127.0.0.1:3000\"\nlisten = \"nowhere\"\n[[routes]]\nprefix = \"/\"\nmethods = [\"GTE\"]\nallow_anonymous = true\n",
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("{}:3:10: server.listen", path.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{}:6:12: routes[0].methods", path.display())),
        "{stdout}"
    );
    assert!(stdout.contains("2 error(s)"), "{stdout}");
}

/// A managed identity whose `endpoint` is set does not detect its source: `check` says which
/// endpoint it uses instead.
#[test]
fn check_says_where_each_managed_identity_gets_its_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "mi.toml",
        "[egress]\n[[egress.targets]]\nname = \"t\"\nurl = \"https://t.example.com\"\nscope = \"api://t/.default\"\ncredential = \"detected\"\n\
         [credentials.detected]\nkind = \"managed_identity\"\n\
         [credentials.local]\nkind = \"managed_identity\"\nendpoint = \"http://127.0.0.1:8079\"\n\
         [credentials.fic]\nkind = \"managed_identity_federation\"\ntenant_id = \"t\"\nclient_id = \"c\"\nendpoint = \"http://127.0.0.1:8079/\"\n",
    );
    let (text, code) = tollgate::cli::check::report(&path, std::sync::Arc::new(|_| None));
    assert_eq!(code, std::process::ExitCode::SUCCESS, "{text}");
    let imds = "IMDS at http://127.0.0.1:8079/metadata/identity/oauth2/token";
    for line in [
        "note: credential detected (managed_identity) detects its source (App Service, Arc, IMDS, ...) from the environment at run time".to_owned(),
        format!("note: credential local (managed_identity) uses {imds} (its endpoint), whatever the environment says"),
        format!("note: credential fic (managed_identity_federation) uses {imds} (its endpoint), whatever the environment says"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
    }
}

#[test]
fn check_takes_the_config_from_the_environment_then_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "env.toml",
        "[server]\nupstream = \"http://127.0.0.1:1\"\n[[routes]]\nprefix = \"/\"\nallow_anonymous = true\n",
    );
    let out = Command::new(BIN)
        .arg("check")
        .env("TOLLGATE_CONFIG", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::rename(&path, dir.path().join("tollgate.toml")).unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .env_remove("TOLLGATE_CONFIG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let missing = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .env_remove("TOLLGATE_CONFIG")
        .current_dir(missing.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("tollgate.toml"));
}

#[test]
fn every_shipped_config_checks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (text, code) = tollgate::cli::check::report(&path, std::sync::Arc::new(|_| None));
            assert_eq!(code, std::process::ExitCode::SUCCESS, "{text}");
            checked += 1;
        }
    }
    assert!(checked >= 2);
}

#[test]
fn bad_arguments_exit_2() {
    let out = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A `tollgate run` child process with its admin address.
struct Running {
    child: Child,
    admin: SocketAddr,
    inbound: SocketAddr,
}

impl Running {
    fn start(dir: &Path, upstream: SocketAddr, routes: &str) -> Running {
        let (inbound, admin) = (free_port(), free_port());
        let config = write(
            dir,
            "tollgate.toml",
            &format!(
                // One thread: the single-threaded runtime (signals, reload, logs) is covered
                // here; ci/promtool.sh runs the default multi-threaded one.
                "[server]\nlisten = \"{inbound}\"\nupstream = \"http://{upstream}\"\nworker_threads = 1\n[admin]\nlisten = \"{admin}\"\n{routes}"
            ),
        );
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let running = Running {
            child,
            admin,
            inbound,
        };
        running.wait_ready();
        running
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if http_get(self.admin, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tollgate did not become ready");
    }

    /// Sends a signal (`"HUP"`, `"TERM"`) with kill(1): unsafe code is forbidden here.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut out = String::new();
                self.child
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_string(&mut out)
                    .unwrap();
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut out)
                    .unwrap();
                return (status, out);
            }
            assert!(Instant::now() < deadline, "tollgate did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A blocking GET with `Connection: close`; the whole response as text.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
    )
}

fn http_request(addr: SocketAddr, request: &str) -> Option<String> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn run_reloads_on_sighup_and_exits_0_on_sigterm_without_logging_secrets() {
    let backend = support::Backend::start().await;
    let upstream = backend.addr();
    let dir = tempfile::tempdir().unwrap();
    let route = |p: &str| format!("[[routes]]\nprefix = \"{p}\"\nallow_anonymous = true\n");
    let running = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        let route = route("/a");
        move || Running::start(&dir, upstream, &route)
    })
    .await
    .unwrap();

    let secret_request = "GET /a/secret HTTP/1.1\r\nhost: x\r\nauthorization: Bearer eyJsecret.token.value\r\ncookie: session=cookie-secret\r\nx-ms-token-aad-access-token: aad-secret\r\nconnection: close\r\n\r\n";
    let (inbound, admin) = (running.inbound, running.admin);
    let reply = tokio::task::spawn_blocking(move || http_request(inbound, secret_request))
        .await
        .unwrap()
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // SIGHUP reloads the file even when it did not change (a file change alone is not).
    running.signal("HUP");
    support::eventually("SIGHUP counted a reload", || async move {
        tokio::task::spawn_blocking(move || {
            http_get(admin, "/metrics")
                .is_some_and(|m| m.contains("tollgate_config_reloads_total{result=\"success\"} 1"))
        })
        .await
        .unwrap()
    })
    .await;
    // And the file watcher picks up an edit.
    let config = dir.path().join("tollgate.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("prefix = \"/a\"", "prefix = \"/b\"");
    std::fs::write(&config, text).unwrap();
    support::eventually("the edit applies", || async move {
        tokio::task::spawn_blocking(move || {
            http_get(inbound, "/b/x").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
        })
        .await
        .unwrap()
    })
    .await;
    let hup = running;

    hup.signal("TERM");
    let (status, logs) = tokio::task::spawn_blocking(move || hup.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(logs.contains("SIGTERM received"), "{logs}");
    let access: Vec<serde_json::Value> = logs
        .lines()
        .filter(|line| line.contains("\"target\":\"tollgate::access\""))
        .map(|line| serde_json::from_str(line).expect("an access line is one JSON object"))
        .collect();
    assert!(
        access
            .iter()
            .any(|a| a["path"] == "/a/secret" && a["status"] == 200 && a["level"] == "INFO"),
        "the access log line is missing:\n{logs}"
    );
    for secret in ["eyJsecret", "cookie-secret", "aad-secret"] {
        assert!(!logs.contains(secret), "{secret} reached the logs:\n{logs}");
    }
}

#[test]
fn run_refuses_an_invalid_file_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bad.toml",
        "[server]\nupstream = \"gopher://x\"\n",
    );
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:2:12: server.upstream", path.display())),
        "{stderr}"
    );
}

mod explain {
    use serde_json::json;
    use tollgate::cli::explain::{Keys, report};
    use tollgate::config::Algorithm;
    use tollgate::dev::issuer::{LocalIssuer, SigningKey, TokenSpec};

    const CONFIG: &str = r#"
[server]
upstream = "http://127.0.0.1:3000"
[[issuers]]
name = "dev"
issuer = "https://issuer.test/"
jwks_uri = "https://issuer.test/keys"
audiences = ["api://orders"]
[identity.claims]
"X-Roles" = "roles"
[[routes]]
prefix = "/public"
allow_anonymous = true
[[routes]]
prefix = "/api"
roles_any = ["reader"]
"#;

    fn token(issuer: &LocalIssuer, roles: &[&str], lifetime: u64) -> String {
        issuer
            .mint(&TokenSpec {
                audience: "api://orders".into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                object_id: Some("oid-1".into()),
                lifetime: std::time::Duration::from_secs(lifetime),
                ..TokenSpec::default()
            })
            .unwrap()
    }

    #[tokio::test]
    async fn explains_every_decision() {
        let config = tollgate::config::parse(CONFIG, std::path::Path::new("t.toml"), &|_| None)
            .unwrap()
            .config;
        let issuer = LocalIssuer::new(
            "https://issuer.test/",
            SigningKey::generate(Algorithm::RS256, "k1").unwrap(),
        );
        let jwks = || Keys::Document(issuer.jwks().to_string().into_bytes());
        let get = http::Method::GET;
        let reader = token(&issuer, &["reader"], 600);

        let (text, allowed) =
            report(&config, Some(&reader), jwks(), &get, "//api/../api/orders").await;
        assert!(allowed, "{text}");
        for want in [
            "path: /api/orders",
            "route: \"/api\" (prefix /api, t.toml:",
            "[pass] signature",
            "[pass] roles_any in [reader]",
            "decision: allow",
            "x-roles: reader",
            "x-ms-client-principal-id: oid-1",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }

        let (text, allowed) = report(
            &config,
            Some(&token(&issuer, &["guest"], 600)),
            jwks(),
            &get,
            "/api",
        )
        .await;
        assert!(
            !allowed
                && text.contains("[FAIL] roles_any in [reader]")
                && text.contains("decision: 403 insufficient_scope"),
            "{text}"
        );

        let expired = issuer
            .signing_key()
            .mint(
                &json!({"iss": "https://issuer.test/", "aud": "api://orders", "exp": 1}),
                &json!({}),
            )
            .unwrap();
        let (text, allowed) = report(&config, Some(&expired), jwks(), &get, "/api").await;
        assert!(
            !allowed
                && text.contains("[FAIL] lifetime")
                && text.contains("decision: 401 invalid_token: token expired"),
            "{text}"
        );

        let (text, allowed) = report(&config, None, jwks(), &get, "/api").await;
        assert!(!allowed && text.contains("decision: 401"), "{text}");
        let (text, allowed) = report(&config, None, jwks(), &get, "/public/x").await;
        assert!(
            allowed && text.contains("decision: allow (anonymous)"),
            "{text}"
        );
        let (text, allowed) = report(&config, None, jwks(), &get, "/elsewhere").await;
        assert!(
            !allowed && text.contains("decision: 403 forbidden"),
            "{text}"
        );
        let (text, allowed) = report(&config, None, jwks(), &get, "/a%2Fb").await;
        assert!(!allowed && text.contains("decision: 400"), "{text}");
        // The proxy's reading of the path and the method, not one of its own.
        let (text, allowed) =
            report(&config, Some(&reader), jwks(), &get, "/;x/api;v=1/orders").await;
        assert!(allowed && text.contains("path: /api/orders"), "{text}");
        let lower = http::Method::from_bytes(b"get").unwrap();
        let (text, allowed) = report(&config, Some(&reader), jwks(), &lower, "/api").await;
        assert!(
            !allowed && text.contains("decision: 400 invalid_request") && text.contains("send GET"),
            "{text}"
        );
        assert!(!text.contains(&reader));
    }

    /// An overage token offline (`--jwks`): explain says its groups would come from Graph,
    /// and refuses as the proxy would without them; with `groups_overage = "deny"`, says so.
    #[tokio::test]
    async fn explains_groups_overage() {
        let issuer = LocalIssuer::new(
            "https://issuer.test/",
            SigningKey::generate(Algorithm::RS256, "k1").unwrap(),
        );
        let overage = issuer
            .mint(&TokenSpec {
                audience: "api://orders".into(),
                object_id: Some("6e0a9e00-0000-4000-8000-000000000500".into()),
                lifetime: std::time::Duration::from_secs(600),
                extra: json!({"_claim_names": {"groups": "src1"}})
                    .as_object()
                    .unwrap()
                    .clone(),
                ..TokenSpec::default()
            })
            .unwrap();
        let graph = r#"groups_overage = "graph"
graph_credential = "graph"
graph_endpoint = "http://127.0.0.1:9"
[credentials.graph]
kind = "managed_identity"
endpoint = "http://127.0.0.1:9"
"#;
        for (lines, want) in [
            (
                graph,
                "groups: overage token; would be resolved from Microsoft Graph for oid 6e0a9e00-0000-4000-8000-000000000500",
            ),
            ("", "groups_overage = \"deny\": groups_unavailable"),
        ] {
            let toml = format!(
                "[server]\nupstream = \"http://127.0.0.1:3000\"\n[[issuers]]\nname = \"dev\"\nissuer = \"https://issuer.test/\"\njwks_uri = \"https://issuer.test/keys\"\naudiences = [\"api://orders\"]\n{lines}\n[[routes]]\nprefix = \"/\"\ngroups_any = [\"g\"]\n"
            );
            let config = tollgate::config::parse(&toml, std::path::Path::new("t.toml"), &|_| None)
                .unwrap()
                .config;
            let jwks = Keys::Document(issuer.jwks().to_string().into_bytes());
            let (text, allowed) =
                report(&config, Some(&overage), jwks, &http::Method::GET, "/x").await;
            assert!(!allowed, "{text}");
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
            assert!(
                text.contains("decision: 403 insufficient_scope: groups_unavailable"),
                "{text}"
            );
        }
    }

    /// `explain` shows the challenge a 401 or 403 would carry: with a path only, the metadata
    /// URL is on the resource's own origin; with a whole URL, on that URL's.
    #[tokio::test]
    async fn explains_the_challenge_of_a_covered_path() {
        let resources = r#"
[[routes]]
prefix = "/mcp"
scopes_any = ["tools.read"]
[[resources]]
resource = "https://mcp.contoso.com/mcp"
prefix = "/mcp"
issuer = "dev"
scopes_supported = ["api://mcp/tools.read"]
"#;
        let config = tollgate::config::parse(
            &format!("{CONFIG}{resources}"),
            std::path::Path::new("t.toml"),
            &|_| None,
        )
        .unwrap()
        .config;
        let issuer = LocalIssuer::new(
            "https://issuer.test/",
            SigningKey::generate(Algorithm::RS256, "k1").unwrap(),
        );
        let jwks = || Keys::Document(issuer.jwks().to_string().into_bytes());
        let get = http::Method::GET;
        let (text, allowed) = report(&config, None, jwks(), &get, "/mcp/tools").await;
        assert!(!allowed, "{text}");
        for want in [
            "resource: https://mcp.contoso.com/mcp (prefix /mcp, t.toml:21): a token must have aud in [https://mcp.contoso.com/mcp, api://orders]; metadata at https://mcp.contoso.com/.well-known/oauth-protected-resource/mcp",
            "decision: 401 unauthorized: a bearer token is required",
            "challenge: WWW-Authenticate: Bearer realm=\"tollgate\", resource_metadata=\"https://mcp.contoso.com/.well-known/oauth-protected-resource/mcp\"",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        let (text, _) = report(
            &config,
            Some(&token(&issuer, &["reader"], 600)),
            jwks(),
            &get,
            "http://127.0.0.1:8080/mcp/tools?x=1",
        )
        .await;
        assert!(
            text.contains("challenge: WWW-Authenticate: Bearer realm=\"tollgate\", error=\"insufficient_scope\", error_description=\"a required scope is missing\", scope=\"api://mcp/tools.read\", resource_metadata=\"http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp\""),
            "{text}"
        );
        let (text, allowed) = report(
            &config,
            None,
            jwks(),
            &get,
            "/.well-known/oauth-protected-resource/mcp",
        )
        .await;
        assert!(
            allowed && text.contains("decision: answer with the protected resource metadata"),
            "{text}"
        );
    }

    /// The proxy and `explain` decide every request of a table alike: both call
    /// `inbound::decide_with` and `refetch_for`; here the proxy runs for real, with keys from a
    /// real JWKS endpoint, and `explain` fetches the same keys. Their `WWW-Authenticate`
    /// challenges agree too, `resource_metadata` included (`explain` is given the URL).
    #[tokio::test]
    async fn agrees_with_the_proxy_on_a_table_of_requests() {
        use super::support::issuer::MockIssuer;
        use tollgate::inbound::Verdict;

        let backend = super::support::Backend::start().await;
        let issuer = MockIssuer::start().await;
        let graph = super::support::graph::GraphRig::start().await;
        let toml = format!(
            "{}{}{}{}",
            super::support::server(backend.addr(), ""),
            issuer.toml("entra", &graph.issuer_lines()),
            graph.credential(),
            r#"
[[routes]]
prefix = "/groups"
groups_any = ["6e0a9e01-0000-4000-8000-000000000002"]
[[routes]]
prefix = "/public"
allow_anonymous = true
[[routes]]
prefix = "/api"
roles_any = ["reader"]
[[routes]]
prefix = "/audit"
roles_any = ["admin"]
mode = "audit"
[[routes]]
exact = "/admin"
methods = ["POST"]
roles_all = ["admin"]
[[routes]]
prefix = "/mcp"
scopes_any = ["tools.read"]
[[resources]]
resource = "https://mcp.contoso.com/mcp"
prefix = "/mcp"
issuer = "entra"
scopes_supported = ["api://mcp/tools.read"]
"#
        );
        let proxy = super::support::TestProxy::start(&toml).await;
        let reader = issuer.token(json!({"roles": ["reader"]}));
        let guest = issuer.token(json!({"roles": ["guest"]}));
        let admin = issuer.token(json!({"roles": ["admin"]}));
        let expired = issuer.token(json!({"exp": 1}));
        let other_audience = issuer.token(json!({"aud": "api://other"}));
        let unknown_key = issuer.sign(&issuer.claims(), &json!({"kid": "nobody"}));
        let overage =
            |oid: &str| issuer.token(json!({"oid": oid, "_claim_names": {"groups": "src1"}}));
        let in_three = overage(&super::support::graph::user(3));
        let in_one = overage(&super::support::graph::user(1));
        let unknown_user = overage("00000000-0000-0000-0000-0000000000ff");
        let listed = issuer.token(json!({"groups": ["6e0a9e01-0000-4000-8000-000000000002"]}));
        let tools = issuer.token(json!({"scp": "tools.read"}));
        let for_the_resource =
            issuer.token(json!({"scp": "tools.read", "aud": "https://mcp.contoso.com/mcp"}));
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("GET", "/public/x", None),
            ("GET", "/public/x", Some("not.a.token")),
            ("GET", "/public/x", Some(&reader)),
            ("GET", "/api/orders", Some(&reader)),
            ("HEAD", "/api/orders", Some(&reader)),
            ("GET", "/api/../api/orders", Some(&reader)),
            ("GET", "/api/orders", Some(&guest)),
            ("GET", "/api/orders", None),
            ("GET", "/api/orders", Some(&expired)),
            ("GET", "/api/orders", Some(&other_audience)),
            ("GET", "/api/orders", Some(&unknown_key)),
            ("GET", "/api/orders", Some("not.a.token")),
            ("GET", "/elsewhere", Some(&reader)),
            ("GET", "/a%2Fb", Some(&reader)),
            ("GET", "/api%252Forders", Some(&reader)),
            ("get", "/api/orders", Some(&reader)),
            ("GET", "/.auth/me", Some(&reader)),
            ("GET", "/.auth/me", None),
            ("GET", "/.auth/me", Some(&expired)),
            ("GET", "/audit/x", Some(&guest)),
            ("POST", "/admin", Some(&admin)),
            ("POST", "/admin", Some(&reader)),
            ("GET", "/admin", Some(&admin)),
            ("GET", "/groups/x", Some(&in_three)),
            ("GET", "/groups/x", Some(&in_one)),
            ("GET", "/groups/x", Some(&unknown_user)),
            ("GET", "/groups/x", Some(&listed)),
            ("GET", "/groups/x", Some(&reader)),
            ("GET", "/mcp/tools", None),
            ("GET", "/mcp/tools", Some(&expired)),
            ("GET", "/mcp/tools", Some(&reader)),
            ("GET", "/mcp/tools", Some(&tools)),
            ("GET", "/mcp/tools", Some(&for_the_resource)),
            ("GET", "/mcp/tools", Some(&other_audience)),
            ("GET", "/.well-known/oauth-protected-resource/mcp", None),
            (
                "HEAD",
                "/.well-known/oauth-protected-resource/mcp",
                Some(&expired),
            ),
            ("GET", "/.well-known/oauth-protected-resource/nope", None),
            ("POST", "/.well-known/oauth-protected-resource/mcp", None),
        ];
        let config = proxy.app.live().load().config.clone();
        for (method, path, token) in cases {
            let method = http::Method::from_bytes(method.as_bytes()).unwrap();
            // As a whole URL: its origin is the one the proxy sees, for `resource_metadata`.
            let url = format!("http://{}{path}", proxy.addr);
            let explained =
                tollgate::cli::explain::explanation(&config, *token, Keys::Fetch, &method, &url)
                    .await;
            let mut req = http::Request::builder()
                .method(method.clone())
                .uri(*path)
                .header("host", proxy.addr.to_string());
            if let Some(token) = token {
                req = req.header("authorization", format!("Bearer {token}"));
            }
            let before = backend.count();
            let reply = super::support::send(
                proxy.addr,
                req.body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap(),
            )
            .await;
            let forwarded = backend.count() > before;
            let what = format!(
                "{method} {path} (token {}):\n{}",
                token.is_some(),
                explained.text
            );
            match explained.verdict {
                Verdict::Forward(_) => {
                    assert!(forwarded, "explain forwards, the proxy did not: {what}");
                    assert_eq!(reply.status, 200, "{what}");
                }
                Verdict::Me | Verdict::Metadata => {
                    assert!(!forwarded, "{what}");
                    assert_eq!(reply.status, 200, "{what}");
                }
                Verdict::Auth(_) => panic!("no [login] in this table: {what}"),
                Verdict::Reject(_) => {
                    assert!(!forwarded, "explain refuses, the proxy forwarded: {what}");
                    let refusal = explained.refusal.expect("a refusal");
                    assert_eq!(reply.status, refusal.status, "{what}");
                    assert_eq!(
                        reply.header("www-authenticate").map(str::to_owned),
                        refusal.challenge_value(),
                        "{what}"
                    );
                    if let Some(challenge) = refusal.challenge_value() {
                        assert!(explained.text.contains(&challenge), "{what}");
                    }
                    if method != http::Method::HEAD {
                        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
                        assert_eq!(body["error"], refusal.error, "{what}");
                        assert_eq!(body["error_description"], refusal.description, "{what}");
                    }
                }
            }
        }
    }

    /// Keys that cannot be fetched: the proxy answers 503 with Retry-After (the token may be
    /// good), and `explain` says the same, from the same table.
    #[tokio::test]
    async fn agrees_with_the_proxy_when_keys_are_unavailable() {
        let backend = super::support::Backend::start().await;
        let issuer = LocalIssuer::new(
            "https://issuer.test/",
            SigningKey::generate(Algorithm::RS256, "k1").unwrap(),
        );
        let reader = token(&issuer, &["reader"], 600);
        let toml = format!(
            "{}{}",
            super::support::server(backend.addr(), ""),
            CONFIG
                .replace("[server]\nupstream = \"http://127.0.0.1:3000\"\n", "")
                .replace("https://issuer.test/keys", "http://127.0.0.1:1/keys")
        );
        let proxy = super::support::TestProxy::start(&toml).await;
        let bearer = format!("Bearer {reader}");
        let reply =
            super::support::get(proxy.addr, "/api/orders", &[("authorization", &bearer)]).await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header("retry-after"), Some("5"));
        backend.assert_nothing_received();

        let config = proxy.app.live().load().config.clone();
        let (text, allowed) = report(
            &config,
            Some(&reader),
            Keys::Fetch,
            &http::Method::GET,
            "/api/orders",
        )
        .await;
        assert!(!allowed, "{text}");
        assert!(
            text.contains(
                "decision: 503 temporarily_unavailable: signing keys are not available yet (Retry-After: 5)"
            ),
            "{text}"
        );
        assert!(text.contains("[FAIL] key: kid"), "{text}");
    }
}

/// `dev token --groups-overage N`: the overage form Entra writes (no `groups`,
/// `_claim_names` and `_claim_sources`), for the dev Graph stand-in's user in N groups, and
/// `explain` says its groups would come from Graph.
#[test]
fn dev_token_mints_an_overage_token_explain_would_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("dev.pem");
    let out = Command::new(BIN)
        .args([
            "dev",
            "token",
            "--aud",
            "api://orders",
            "--groups-overage",
            "500",
            "--key",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let (_, claims) = tollgate::inbound::jwt::dangerous::decode_unverified(&token).unwrap();
    assert_eq!(claims["oid"], "6e0a9e00-0000-4000-8000-000000000500");
    assert_eq!(
        claims["_claim_names"],
        serde_json::json!({"groups": "src1"})
    );
    assert!(
        claims["_claim_sources"]["src1"]["endpoint"]
            .as_str()
            .unwrap()
            .starts_with("https://graph.windows.net/")
    );
    assert!(claims.get("groups").is_none());
    let both = Command::new(BIN)
        .args([
            "dev",
            "token",
            "--groups-overage",
            "5",
            "--oid",
            "x",
            "--key",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        !both.status.success(),
        "--oid and --groups-overage conflict"
    );

    let jwks = Command::new(BIN)
        .args(["dev", "jwks", "--key"])
        .arg(&key)
        .output()
        .unwrap();
    let jwks_file = write(
        dir.path(),
        "jwks.json",
        &String::from_utf8(jwks.stdout).unwrap(),
    );
    let config = write(
        dir.path(),
        "t.toml",
        "[server]\nupstream = \"http://127.0.0.1:3000\"\n[[issuers]]\nname = \"dev\"\nissuer = \"http://127.0.0.1:8079/\"\njwks_uri = \"http://127.0.0.1:8079/keys\"\naudiences = [\"api://orders\"]\ngroups_overage = \"graph\"\ngraph_credential = \"dev\"\ngraph_endpoint = \"http://127.0.0.1:8079\"\n[credentials.dev]\nkind = \"managed_identity\"\nendpoint = \"http://127.0.0.1:8079\"\n[[routes]]\nprefix = \"/\"\ngroups_any = [\"6e0a9e01-0000-4000-8000-000000000500\"]\n",
    );
    let explained = Command::new(BIN)
        .args(["explain", "--config"])
        .arg(&config)
        .arg("--jwks")
        .arg(&jwks_file)
        .args(["--token", &token, "GET", "/reports"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&explained.stdout);
    assert!(
        text.contains(
            "would be resolved from Microsoft Graph for oid 6e0a9e00-0000-4000-8000-000000000500"
        ),
        "{text}{}",
        String::from_utf8_lossy(&explained.stderr)
    );
}

#[test]
fn dev_token_verifies_with_dev_jwks_through_explain() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("dev.pem");
    let config = write(
        dir.path(),
        "t.toml",
        "[server]\nupstream = \"http://127.0.0.1:3000\"\n[[issuers]]\nname = \"dev\"\nissuer = \"http://127.0.0.1:8079/\"\njwks_uri = \"http://127.0.0.1:8079/keys\"\naudiences = [\"api://orders\"]\n[[routes]]\nprefix = \"/\"\nroles_any = [\"reader\"]\n",
    );
    let mint = |role: &str| {
        let out = Command::new(BIN)
            .args([
                "dev",
                "token",
                "--aud",
                "api://orders",
                "--role",
                role,
                "--exp",
                "5m",
                "--key",
            ])
            .arg(&key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (reader, guest) = (mint("reader"), mint("guest"));
    let jwks = Command::new(BIN)
        .args(["dev", "jwks", "--key"])
        .arg(&key)
        .output()
        .unwrap();
    let jwks_file = write(
        dir.path(),
        "jwks.json",
        &String::from_utf8(jwks.stdout).unwrap(),
    );
    let explain = |token: &str| {
        Command::new(BIN)
            .args(["explain", "--config"])
            .arg(&config)
            .arg("--jwks")
            .arg(&jwks_file)
            .args(["--token", token, "GET", "/orders"])
            .output()
            .unwrap()
    };
    let allowed = explain(&reader);
    assert_eq!(
        allowed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&allowed.stdout)
    );
    let refused = explain(&guest);
    assert_eq!(
        refused.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&refused.stdout)
    );
    // @file works too.
    let token_file = write(dir.path(), "token.txt", &format!("{reader}\n"));
    let from_file = explain(&format!("@{}", token_file.display()));
    assert_eq!(from_file.status.code(), Some(0));
}

/// `tollgate demo`'s web route, as its `open` line says: a browser navigating there goes to
/// sign-in at the local provider, signs in (the provider's form, posted as a browser would),
/// and comes back to the page with the backend seeing who signed in; the demo's app
/// registration proves itself with the local managed identity, no secret.
#[tokio::test]
async fn demo_signs_a_browser_in() {
    use std::io::BufRead;
    let mut child = Command::new(BIN)
        .args(["demo", "--port", "0", "--admin-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut web = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.starts_with("Press Ctrl-C") {
            break;
        }
        if let Some(url) = line.trim_start().strip_prefix("open ") {
            web = Some(url.to_owned());
        }
    }
    let web = web.expect("an `open` line");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let location = |r: &reqwest::Response| r.headers()["location"].to_str().unwrap().to_owned();
    let cookies = |r: &reqwest::Response| -> String {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .filter(|c| !c.ends_with('='))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let base = web.trim_end_matches("/web/").to_owned();
    let reply = http
        .get(&web)
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 302);
    let login = format!("{base}{}", location(&reply));
    let reply = http.get(&login).send().await.unwrap();
    assert_eq!(reply.status(), 302);
    let login_cookie = cookies(&reply);
    let authorize = location(&reply);
    let page = http
        .get(&authorize)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("id=\"sign-in\""),
        "the provider's sign-in page"
    );
    let user = tollgate::dev::oauth::DevUser {
        preferred_username: "ana@demo.local".into(),
        ..Default::default()
    };
    let form = tollgate::dev::oauth::sign_in_form(&authorize, &user);
    let reply = http.post(&authorize).form(&form).send().await.unwrap();
    let callback = location(&reply);
    let reply = http
        .get(&callback)
        .header("cookie", &login_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 302, "{}", reply.text().await.unwrap());
    assert_eq!(location(&reply), "/web/");
    let session = cookies(&reply);
    let reply = http
        .get(&web)
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let seen: serde_json::Value = reply.json().await.unwrap();
    let headers = seen["headers"].as_array().unwrap();
    let name = headers
        .iter()
        .find(|h| {
            h[0].as_str()
                .unwrap()
                .eq_ignore_ascii_case("x-ms-client-principal-name")
        })
        .expect("the principal name");
    assert_eq!(name[1], "ana@demo.local");
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// `tollgate demo`'s printed curl lines, run as printed: 200, 401, 403, then 200 anonymous.
/// The first sends forged identity headers, and the echo backend shows none of their values.
#[test]
fn demo_curl_lines_answer_as_printed() {
    use std::io::BufRead;
    let mut child = Command::new(BIN)
        .args(["demo", "--port", "0", "--admin-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut curls = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.starts_with("Press Ctrl-C") {
            break;
        }
        if line.trim_start().starts_with("curl -i") {
            curls.push(line);
        }
    }
    let replies: Vec<String> = curls.iter().map(|c| curl(c)).collect();
    // The MCP route's 401 leads, by the metadata it names, to the local issuer's discovery.
    let issuer = follow_the_challenge(&replies[4]);
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    let statuses: Vec<&str> = replies
        .iter()
        .map(|r| r.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["200", "401", "403", "200", "401", "200", "200"],
        "{curls:#?}"
    );
    assert_eq!(status.code(), Some(0));
    assert!(issuer.starts_with("http://127.0.0.1:"), "{issuer}");

    let forged = curls[0].matches("-H '").count() - 1;
    assert!(
        forged >= 3,
        "the 200 line sends forged headers: {}",
        curls[0]
    );
    let body = &replies[0][replies[0].find("\r\n\r\n").unwrap()..];
    for value in ["admin@contoso.com", "Admin", "/admin"] {
        assert!(
            !body.contains(value),
            "{value:?} reached the backend: {body}"
        );
    }
    assert!(
        body.contains("x-user-roles") && body.contains("reader"),
        "{body}"
    );
}

/// From a 401's `resource_metadata` to the metadata, to its first authorization server's
/// OpenID configuration, whose `issuer` must be that server: the issuer's URL.
fn follow_the_challenge(reply: &str) -> String {
    let url = reply
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no resource_metadata in {reply}"));
    let json_at = |url: &str| -> serde_json::Value {
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let reply = http_get(host.parse().unwrap(), path).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{url}: {reply}");
        serde_json::from_str(&reply[reply.find("\r\n\r\n").unwrap()..]).unwrap()
    };
    let metadata = json_at(url);
    let server = metadata["authorization_servers"][0].as_str().unwrap();
    let discovery = json_at(&format!(
        "{}/.well-known/openid-configuration",
        server.trim_end_matches('/')
    ));
    assert_eq!(discovery["issuer"], server, "{discovery}");
    assert!(
        discovery["authorization_endpoint"].is_string(),
        "{discovery}"
    );
    server.to_owned()
}

/// Runs one printed `curl -i [-H 'Name: value']... URL` line with a plain HTTP/1.1 request; the
/// whole response.
fn curl(line: &str) -> String {
    let headers = line
        .split(" -H '")
        .skip(1)
        .map(|h| h.split('\'').next().unwrap());
    let url = line.split_whitespace().last().unwrap();
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    for h in headers {
        request.push_str(&format!("{h}\r\n"));
    }
    request.push_str("\r\n");
    http_request(host.parse().unwrap(), &request).unwrap()
}

#[test]
fn dev_serves_both_protocols_prints_its_environment_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("dev-issuer.pem");
    let addr = free_port();
    let child = Command::new(BIN)
        .args(["dev", "--role", "Orders.Read", "--port"])
        .arg(addr.port().to_string())
        .arg("--key")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let jwks = loop {
        match http_get(addr, "/keys") {
            Some(reply) if reply.starts_with("HTTP/1.1 200") => break reply,
            _ if Instant::now() > deadline => panic!("tollgate dev did not start"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let imds = http_request(
        addr,
        "GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://x HTTP/1.1\r\nhost: x\r\nmetadata: true\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    assert!(imds.starts_with("HTTP/1.1 200"), "{imds}");
    let access_token = imds
        .split("\"access_token\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let app_service = http_get(addr, "/msi/token?api-version=2019-08-01&resource=api://x").unwrap();
    assert!(app_service.starts_with("HTTP/1.1 400"), "{app_service}");

    // `dev token` signs with the same key: its kid is the one served.
    let minted = Command::new(BIN)
        .args(["dev", "token", "--key"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(minted.status.success());
    let header = String::from_utf8(minted.stdout).unwrap();
    let header = header.split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap();
    assert!(
        jwks.contains(&format!("\"kid\":{}", header["kid"])),
        "{jwks}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for line in [
        format!("export IDENTITY_ENDPOINT=http://{addr}/msi/token"),
        format!("export AZURE_POD_IDENTITY_AUTHORITY_HOST=http://{addr}"),
        format!("discovery = \"http://{addr}/.well-known/openid-configuration\""),
        format!("endpoint = \"http://{addr}\""),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
    }
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("export IDENTITY_HEADER="))
        .unwrap();
    assert_eq!(
        text.matches(secret).count(),
        1,
        "IDENTITY_HEADER is printed once, never logged"
    );
    assert!(!text.contains(&access_token), "a token in the output");
    assert!(
        text.contains("token for api://x (system-assigned)"),
        "{text}"
    );
    // https too, with the dev CA kept beside the key, and the environment the SDKs need.
    let ca = dir.path().join("dev-ca.pem");
    assert!(ca.exists() && dir.path().join("dev-ca-key.pem").exists());
    let ca_line = format!("export SSL_CERT_FILE={}", ca.display());
    assert!(text.lines().any(|l| l == ca_line), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("export AZURE_AUTHORITY_HOST=https://127.0.0.1:")),
        "{text}"
    );
}

/// Every configuration the README shows as a whole file (the quick start and the recipes)
/// passes `tollgate check`, so the documentation cannot drift from the schema.
#[test]
fn readme_configurations_check() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut checked = 0;
    for block in readme.split("```toml\n").skip(1) {
        let text = block.split("```").next().unwrap();
        if !text.contains("[server]") && !text.contains("[egress]") {
            continue; // a fragment, not a whole file
        }
        let env = |name: &str| match name {
            "SESSION_KEY" => Some("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned()),
            _ => Some(format!("{}-value", name.to_ascii_lowercase())),
        };
        let result = tollgate::config::parse(text, Path::new("README.md"), &env);
        assert!(result.is_ok(), "{text}\n{}", result.err().unwrap());
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} whole configurations found");
}

/// `tollgate check` fails exactly when `tollgate run`, with the same file and environment,
/// fails before binding its listeners: both run the same start-up steps.
mod check_predicts_run {
    use std::collections::HashMap;
    use std::path::Path;
    use std::process::ExitCode;
    use std::sync::Arc;

    use tollgate::app::{App, StartOptions};
    use tollgate::config::SharedEnv;

    use super::support::tls::TestCa;

    const LISTENERS: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";
    const SERVER: &str = "[server]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:1\"\n";
    const ROUTE: &str = "[[routes]]\nprefix = \"/\"\nallow_anonymous = true\n";

    fn egress(credential: &str) -> String {
        format!(
            "[egress]\nlisten = \"127.0.0.1:0\"\n[[egress.targets]]\nname = \"graph\"\nurl = \"https://graph.microsoft.com\"\nscope = \"https://graph.microsoft.com/.default\"\ncredential = \"c\"\n[credentials.c]\n{credential}"
        )
    }

    /// What, the file after `[admin]`, the environment, whether run starts.
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, bool);

    fn env(pairs: &[(&str, &str)]) -> SharedEnv {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Arc::new(move |name: &str| map.get(name).cloned())
    }

    /// Whether `tollgate run` gets as far as serving: load, then start in-process.
    async fn run_starts(path: &Path, env: SharedEnv) -> Result<(), String> {
        let loaded = tollgate::config::load(path, &*env).map_err(|e| e.to_string())?;
        let options = StartOptions {
            config_path: path.to_path_buf(),
            env,
            watch_config: false,
        };
        let app = App::start(loaded, options)
            .await
            .map_err(|e| e.to_string())?;
        app.shutdown_within(std::time::Duration::ZERO).await;
        Ok(())
    }

    #[tokio::test]
    async fn for_a_table_of_configs() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let ca = TestCa::new();
        let (cert, key) = ca.issue(&["localhost"]);
        let (other_cert, _) = ca.issue(&["localhost"]);
        let cert = file("cert.pem", &cert);
        let other_cert = file("other.pem", &other_cert);
        let key = file("key.pem", &key);
        let not_pem = file("not.pem", "this is not PEM\n");
        let ca_pem = file("ca.pem", &ca.pem());
        let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let rsa_cert = rcgen::CertificateParams::new(vec!["tollgate-client".to_owned()])
            .unwrap()
            .self_signed(&rsa)
            .unwrap();
        let client_pem = file(
            "client.pem",
            &format!("{}{}", rsa_cert.pem(), rsa.serialize_pem()),
        );
        let missing = dir.path().join("missing.pem").display().to_string();
        let tls = |c: &str, k: &str| format!("[server.tls]\ncert = \"{c}\"\nkey = \"{k}\"\n");
        let wi = "kind = \"workload_identity\"\n";
        let wi_env = [
            ("AZURE_TENANT_ID", "11111111-1111-1111-1111-111111111111"),
            ("AZURE_CLIENT_ID", "22222222-2222-2222-2222-222222222222"),
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                "/var/run/secrets/azure/tokens/azure-identity-token",
            ),
        ];
        let secret = "kind = \"client_secret\"\ntenant_id = \"t\"\nclient_id = \"c\"\nsecret_env = \"APP_SECRET\"\n";
        let certificate = |pem: &str| {
            format!(
                "kind = \"client_certificate\"\ntenant_id = \"t\"\nclient_id = \"c\"\ncertificate = \"{pem}\"\n"
            )
        };
        let issuer = |extra: &str| {
            format!(
                "[[issuers]]\nname = \"i\"\nissuer = \"https://issuer.example\"\njwks_uri = \"https://issuer.example/keys\"\naudiences = [\"api://x\"]\n{extra}"
            )
        };

        // (what, the file after [admin], the environment, whether run starts)
        let cases: Vec<Case> = vec![
            ("a plain proxy", format!("{SERVER}{ROUTE}"), vec![], true),
            (
                "TLS files that exist",
                format!("{SERVER}{}{ROUTE}", tls(&cert, &key)),
                vec![],
                true,
            ),
            (
                "TLS files missing",
                format!("{SERVER}{}{ROUTE}", tls(&missing, &key)),
                vec![],
                false,
            ),
            (
                "a TLS key missing",
                format!("{SERVER}{}{ROUTE}", tls(&cert, &missing)),
                vec![],
                false,
            ),
            (
                "TLS files that are not PEM",
                format!("{SERVER}{}{ROUTE}", tls(&not_pem, &not_pem)),
                vec![],
                false,
            ),
            (
                "a TLS key of another certificate",
                format!("{SERVER}{}{ROUTE}", tls(&other_cert, &key)),
                vec![],
                false,
            ),
            (
                "an upstream ca_file",
                format!("{SERVER}ca_file = \"{ca_pem}\"\n{ROUTE}"),
                vec![],
                true,
            ),
            (
                "an upstream ca_file missing",
                format!("{SERVER}ca_file = \"{missing}\"\n{ROUTE}"),
                vec![],
                false,
            ),
            (
                "an upstream ca_file not PEM",
                format!("{SERVER}ca_file = \"{not_pem}\"\n{ROUTE}"),
                vec![],
                false,
            ),
            (
                "an issuer",
                format!("{SERVER}{}{ROUTE}", issuer("")),
                vec![],
                true,
            ),
            (
                "an issuer ca_file not PEM",
                format!(
                    "{SERVER}{}{ROUTE}",
                    issuer(&format!("ca_file = \"{not_pem}\"\n"))
                ),
                vec![],
                false,
            ),
            (
                "workload identity with the webhook's variables",
                egress(wi),
                wi_env.to_vec(),
                true,
            ),
            ("workload identity without them", egress(wi), vec![], false),
            (
                "workload identity without the token file variable",
                egress(wi),
                wi_env[..2].to_vec(),
                false,
            ),
            (
                "a client secret whose variable is set",
                egress(secret),
                vec![("APP_SECRET", "s3cret")],
                true,
            ),
            (
                "a client secret whose variable is unset",
                egress(secret),
                vec![],
                false,
            ),
            (
                "a client certificate",
                egress(&certificate(&client_pem)),
                vec![],
                true,
            ),
            (
                "a client certificate missing",
                egress(&certificate(&missing)),
                vec![],
                false,
            ),
            (
                "a client certificate without a key",
                egress(&certificate(&ca_pem)),
                vec![],
                false,
            ),
            (
                "a managed identity",
                egress("kind = \"managed_identity\"\n"),
                vec![],
                true,
            ),
            (
                "a target ca_file not PEM",
                egress(wi).replace(
                    "credential = \"c\"\n",
                    &format!("credential = \"c\"\nca_file = \"{not_pem}\"\n"),
                ),
                wi_env.to_vec(),
                false,
            ),
            (
                "a ${VAR} that is unset",
                format!("{SERVER}{ROUTE}").replace("127.0.0.1:1", "${UPSTREAM}"),
                vec![],
                false,
            ),
        ];
        let mut disagreements = Vec::new();
        for (i, (what, toml, vars, starts)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("case{i}.toml"));
            std::fs::write(&path, format!("{LISTENERS}{toml}")).unwrap();
            let (report, code) = tollgate::cli::check::report(&path, env(vars));
            let run = run_starts(&path, env(vars)).await;
            let checked = code == ExitCode::SUCCESS;
            if checked != run.is_ok() || run.is_ok() != *starts {
                disagreements.push(format!(
                    "{what}: check {}, run {:?}, expected run to {}\n{report}",
                    if checked { "ok" } else { "failed" },
                    run,
                    if *starts { "start" } else { "fail" },
                ));
            }
        }
        assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    }

    /// The one thing `check` cannot know: whether the address is free where `run` runs.
    /// It says so.
    #[tokio::test]
    async fn except_an_address_in_use_which_check_names() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            format!("{LISTENERS}{SERVER}{ROUTE}")
                .replace("127.0.0.1:0\"\nupstream", &format!("{addr}\"\nupstream")),
        )
        .unwrap();
        let (report, code) = tollgate::cli::check::report(&path, env(&[]));
        assert_eq!(code, ExitCode::SUCCESS, "{report}");
        assert!(
            report.contains(&format!("listen addresses free on the host (run exits 1 if one is taken): 127.0.0.1:0, {addr}")),
            "{report}"
        );
        let run = run_starts(&path, env(&[])).await;
        assert!(run.unwrap_err().contains("binding the inbound listener"));
    }
}

/// A start-up failure is printed once, with each cause once, and `check` prints the same.
#[test]
fn a_start_up_error_says_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let config = write(
        dir.path(),
        "t.toml",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[server]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:1\"\n[server.tls]\ncert = \"{0}\"\nkey = \"{0}\"\n[[routes]]\nprefix = \"/\"\nallow_anonymous = true\n",
            missing.display()
        ),
    );
    let run = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("reading {}", missing.display())),
        "{stderr}"
    );

    let check = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(
        stdout.matches("No such file or directory").count(),
        1,
        "{stdout}"
    );
    assert!(
        stdout.contains("valid, but tollgate run would not start"),
        "{stdout}"
    );
}

/// `config/full.toml` holds every key of the README's configuration reference, each in its
/// section (credential keys in a credential of their kind), and every key it holds is in
/// the reference; and it loads.
#[test]
fn full_toml_holds_every_key_of_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let path = root.join("config/full.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let full: toml::Table = text.parse().unwrap();
    let full = toml::Value::Table(full);

    let (sections, kinds) = readme_keys(&readme);
    let documented: usize = sections.iter().map(|(_, keys)| keys.len()).sum();
    assert!(
        documented >= 64 && sections.len() == 9,
        "the README's key tables were not found: {sections:?}"
    );
    let mut missing = Vec::new();
    for (section, keys) in &sections {
        for key in keys {
            let key_path = resolve(section, key);
            if !has(&full, &key_path) {
                missing.push(key_path.join("."));
            }
        }
    }
    assert_eq!(kinds.len(), 5, "credential kinds: {kinds:?}");
    let credentials: Vec<&toml::Table> = full
        .get("credentials")
        .and_then(toml::Value::as_table)
        .map(|t| t.values().filter_map(toml::Value::as_table).collect())
        .unwrap_or_default();
    for (kind, keys) in &kinds {
        let of_kind: Vec<&&toml::Table> = credentials
            .iter()
            .filter(|c| c.get("kind").and_then(toml::Value::as_str) == Some(kind))
            .collect();
        for key in keys {
            if !of_kind.iter().any(|c| c.contains_key(key)) {
                missing.push(format!("credentials.<{kind}>.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "config/full.toml lacks keys the README documents: {missing:#?}"
    );

    // And the other way: nothing in full.toml that the reference does not document.
    let mut undocumented = Vec::new();
    for (section, value) in full.as_table().unwrap() {
        if section == "credentials" {
            for credential in value.as_table().unwrap().values() {
                let credential = credential.as_table().unwrap();
                let kind = credential["kind"].as_str().unwrap();
                let keys = &kinds.iter().find(|(k, _)| k == kind).unwrap().1;
                for key in credential.keys().filter(|k| *k != "kind") {
                    if !keys.contains(key) {
                        undocumented.push(format!("credentials.<{kind}>.{key}"));
                    }
                }
            }
            continue;
        }
        for key_path in leaf_keys(section, value) {
            let known = sections.iter().any(|(s, keys)| {
                keys.iter()
                    .any(|k| resolve(s, k).join(".") == key_path.join("."))
            });
            if !known {
                undocumented.push(key_path.join("."));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "config/full.toml has keys the README does not document: {undocumented:#?}"
    );

    // The secret_env credential names a variable; CI sets it for `tollgate check` too.
    let env = |name: &str| (name == "INTEGRATION_CLIENT_SECRET").then(|| "placeholder".to_owned());
    let loaded = tollgate::config::parse(&text, &path, &env);
    let loaded = loaded.unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

/// Key names by section, or by credential kind.
type Sections = Vec<(String, Vec<String>)>;

/// The keys of the README's configuration tables: per section (the heading's first `[...]`),
/// the first cell of each `| key | default | meaning |` row; and per credential kind, the
/// keys its row of the Credentials table names, plus those every kind takes.
fn readme_keys(readme: &str) -> (Sections, Sections) {
    let reference = readme
        .split("\n## Configuration reference\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap();
    let mut sections: Sections = Vec::new();
    let mut in_key_table = false;
    for line in reference.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            in_key_table = false;
            if let Some(section) = first_ticked(heading) {
                let section = section.trim_matches(|c| c == '[' || c == ']').to_owned();
                sections.push((section, Vec::new()));
            }
        } else if line.starts_with("| key | default | meaning |") {
            in_key_table = true;
        } else if !line.starts_with('|') {
            in_key_table = false;
        } else if in_key_table && let Some(key) = line.split('|').nth(1).and_then(first_ticked) {
            sections.last_mut().unwrap().1.push(key.to_owned());
        }
    }
    sections.retain(|(_, keys)| !keys.is_empty());

    let credentials = readme.split("\n### Credentials\n").nth(1).unwrap();
    let every_kind: Vec<String> = credentials
        .split("Every kind also takes ")
        .nth(1)
        .and_then(first_ticked)
        .map(|k| vec![k.to_owned()])
        .unwrap_or_default();
    let mut kinds = Vec::new();
    for line in credentials
        .lines()
        .skip_while(|l| !l.starts_with("| kind |"))
    {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split('|').collect();
        let Some(kind) = first_ticked(cells[1]) else {
            continue;
        };
        // Key names only: not values such as `"PS256"`, `$AZURE_TENANT_ID` or `x5t`.
        let mut keys: Vec<String> = ticked(cells[2])
            .filter(|k| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .map(str::to_owned)
            .collect();
        keys.extend(every_kind.iter().cloned());
        kinds.push((kind.to_owned(), keys));
    }
    (sections, kinds)
}

/// Every `code span` of a line of Markdown.
fn ticked(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}

fn first_ticked(text: &str) -> Option<&str> {
    ticked(text).next()
}

/// Where a README key lives in the file: `listen` under its section; `[identity.claims]`
/// and `egress.listen` as written; `targets[].name` under the section's `targets` array.
fn resolve(section: &str, key: &str) -> Vec<String> {
    let split = |s: &str| s.split('.').map(str::to_owned).collect::<Vec<_>>();
    if let Some(table) = key.strip_prefix('[') {
        return split(table.trim_end_matches(']'));
    }
    if let Some((array, field)) = key.split_once("[].") {
        return [split(section), vec![array.to_owned(), field.to_owned()]].concat();
    }
    if key.contains('.') {
        return split(key);
    }
    [split(section), vec![key.to_owned()]].concat()
}

/// Whether `path` leads somewhere in `value`; an array step is taken by any of its tables.
fn has(value: &toml::Value, path: &[String]) -> bool {
    match value {
        _ if path.is_empty() => true,
        toml::Value::Array(items) => items.iter().any(|item| has(item, path)),
        toml::Value::Table(table) => table.get(&path[0]).is_some_and(|v| has(v, &path[1..])),
        _ => false,
    }
}

/// The key paths a top-level section of full.toml sets: its keys, the keys of the tables in
/// its arrays (`egress.targets`), and `identity.claims` as a whole (its keys are header names).
fn leaf_keys(section: &str, value: &toml::Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let tables: Vec<&toml::Table> = match value {
        toml::Value::Table(t) => vec![t],
        toml::Value::Array(items) => items.iter().filter_map(toml::Value::as_table).collect(),
        _ => return out,
    };
    for table in tables {
        for (key, v) in table {
            let path = vec![section.to_owned(), key.clone()];
            match v {
                toml::Value::Array(items)
                    if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
                {
                    for item in items.iter().filter_map(toml::Value::as_table) {
                        for field in item.keys() {
                            out.push([path.clone(), vec![field.clone()]].concat());
                        }
                    }
                }
                _ => out.push(path),
            }
        }
    }
    out
}

/// `tollgate dev session-key`: a fresh random 32-byte key, base64, each time.
#[test]
fn dev_session_key_prints_a_fresh_key() {
    use base64::Engine;
    let key = || {
        let out = Command::new(BIN)
            .args(["dev", "session-key"])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (a, b) = (key(), key());
    assert_ne!(a, b);
    for k in [a, b] {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&k)
            .unwrap();
        assert_eq!(bytes.len(), 32, "{k}");
    }
}
