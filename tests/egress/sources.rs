//! Each managed-identity source end to end, detected from the environment: App Service 2019
//! and 2017, Azure Arc's challenge, Service Fabric's pinned certificate, Cloud Shell. Also the
//! user-assigned parameter names per source and every `expires_on` shape.

use super::*;
use support::imds::{DateStyle, Id};
use support::tls::TestCa;

const MI: &str = "[credentials.mi]\nkind = \"managed_identity\"\n";

/// Starts tollgate with `env`, sends one request, and checks the target got the mock's token
/// and the expiry gauge holds the token's `exp`, whatever format the source wrote it in.
async fn round_trip(mock: &Mock, credential: &str, env: &[(&str, &str)]) -> Running {
    let backend = Backend::start().await;
    let app = start(&simple(&backend, credential), env).await;
    let reply = app.get("/api/x", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        backend.only().header("authorization"),
        Some(format!("Bearer {}", mock.last_token()).as_str())
    );
    assert_eq!(
        app.expiry("mi", "api://orders/.default"),
        exp_of(&mock.last_token()) as f64,
        "expires_on parsed exactly"
    );
    app
}

#[tokio::test]
async fn app_service_2019_sends_its_header_and_parses_a_string_epoch() {
    let mock = Mock::app_service("rotating-secret").start().await;
    let endpoint = format!("{}/MSI/token?x=1", mock.url());
    let env = [
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", "rotating-secret"),
    ];
    round_trip(&mock, MI, &env).await;
    let asked = &mock.log()[0];
    assert_eq!(asked.path, "/MSI/token");
    assert_eq!(
        asked.param("x"),
        Some("1"),
        "IDENTITY_ENDPOINT is used verbatim"
    );
    assert_eq!(asked.param("api-version"), Some("2019-08-01"));
    assert_eq!(asked.param("resource"), Some("api://orders"));
    assert_eq!(asked.header("x-identity-header"), Some("rotating-secret"));
}

#[tokio::test]
async fn app_service_2017_parses_every_date_form() {
    for style in [DateStyle::Linux, DateStyle::Windows, DateStyle::IntEpoch] {
        let mock = Mock::app_service_2017("msi-secret", style).start().await;
        let env = [
            ("MSI_ENDPOINT", mock.url()),
            ("MSI_SECRET", "msi-secret".into()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        round_trip(&mock, MI, &env).await;
        let asked = &mock.log()[0];
        assert_eq!(asked.param("api-version"), Some("2017-09-01"), "{style:?}");
        assert_eq!(asked.header("secret"), Some("msi-secret"));
    }
}

#[tokio::test]
async fn arc_answers_the_challenge_with_the_key_file() {
    let keys = tempfile::tempdir().unwrap();
    let mock = Mock::arc(keys.path()).start().await;
    let endpoint = format!("{}/metadata/identity/oauth2/token", mock.url());
    let dir = keys.path().to_str().unwrap();
    let env = [
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IMDS_ENDPOINT", "http://127.0.0.1:40342"),
        ("TOLLGATE_ARC_TOKEN_DIR", dir),
    ];
    round_trip(&mock, MI, &env).await;
    let log = mock.log();
    assert_eq!(log.len(), 2, "challenge, then the answer");
    assert_eq!(log[0].header("authorization"), None);
    let key = std::fs::read_to_string(keys.path().join("mock.key")).unwrap();
    assert_eq!(
        log[1].header("authorization"),
        Some(format!("Basic {key}").as_str())
    );
    assert_eq!(log[1].param("api-version"), Some("2020-06-01"));
    assert_eq!(log[1].header("metadata"), Some("true"));
}

#[tokio::test]
async fn arc_refuses_a_challenge_outside_its_directory() {
    let keys = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let mock = Mock::arc(keys.path()).start().await;
    let backend = Backend::start().await;
    let endpoint = format!("{}/metadata/identity/oauth2/token", mock.url());
    let env = [
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IMDS_ENDPOINT", "http://127.0.0.1:40342"),
        ("TOLLGATE_ARC_TOKEN_DIR", elsewhere.path().to_str().unwrap()),
    ];
    let app = start(&simple(&backend, MI), &env).await;
    let reply = app.get("/api/x", &[]).await;
    assert_no_token(&reply, &["Azure Arc", "outside the Arc token directory"]);
    assert!(
        mock.log()
            .iter()
            .all(|l| l.header("authorization").is_none())
    );
    backend.assert_nothing_received();
}

#[tokio::test]
async fn service_fabric_pins_the_certificate_thumbprint() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue(&["127.0.0.1"]);
    let der = support::tls::der(&cert);
    let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
    let thumbprint: String = sha1.as_ref().iter().map(|b| format!("{b:02X}:")).collect();
    let mock = Mock::service_fabric("sf-secret", &cert, &key).start().await;
    let endpoint = format!("{}/metadata/identity/oauth2/token", mock.url());
    let env = [
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", "sf-secret"),
        (
            "IDENTITY_SERVER_THUMBPRINT",
            thumbprint.trim_end_matches(':'),
        ),
    ];
    round_trip(&mock, MI, &env).await;
    assert_eq!(
        mock.log()[0].param("api-version"),
        Some("2019-07-01-preview")
    );

    // Another certificate's thumbprint: the TLS handshake fails, nothing is sent.
    let wrong = "0000000000000000000000000000000000000000";
    let env = [
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", "sf-secret"),
        ("IDENTITY_SERVER_THUMBPRINT", wrong),
    ];
    let backend = Backend::start().await;
    let app = start(&simple(&backend, MI), &env).await;
    let calls = mock.calls();
    tokio::time::pause();
    let reply = app.get("/api/x", &[]).await;
    assert_no_token(&reply, &["Service Fabric", "unreachable"]);
    assert_eq!(mock.calls(), calls, "no request got past the handshake");
    backend.assert_nothing_received();
}

#[tokio::test]
async fn cloud_shell_posts_a_form() {
    let mock = Mock::cloud_shell().start().await;
    let endpoint = format!("{}/oauth2/token", mock.url());
    round_trip(&mock, MI, &[("MSI_ENDPOINT", endpoint.as_str())]).await;
    let asked = &mock.log()[0];
    assert_eq!(asked.method, "POST");
    assert_eq!(asked.field("resource"), Some("api://orders"));
    assert_eq!(asked.header("metadata"), Some("true"));
}

/// One credential per way of naming a user-assigned identity, each behind its own target.
fn three_identities(backend: &Backend, endpoint: Option<&Mock>) -> String {
    let mut out = String::new();
    for (name, key, value) in [
        ("c", "client_id", "cid"),
        ("o", "object_id", "oid"),
        ("r", "resource_id", "/subscriptions/s/rg/uami"),
    ] {
        out += &target(name, backend, name, "api://orders/.default");
        out += &format!("[credentials.{name}]\nkind = \"managed_identity\"\n{key} = \"{value}\"\n");
        if let Some(mock) = endpoint {
            out += &format!("endpoint = \"{}\"\n", mock.url());
        }
    }
    config(backend, &out)
}

fn assigned(builder: support::imds::Builder) -> support::imds::Builder {
    builder
        .user_assigned_only()
        .identity(Id::Client("cid".into()))
        .identity(Id::Object("oid".into()))
        .identity(Id::Resource("/subscriptions/s/rg/uami".into()))
}

/// Calls each of the three targets and returns the parameter each identity request carried.
async fn selectors(app: &Running, mock: &Mock, names: [&str; 3]) {
    for (target, param) in ["c", "o", "r"].into_iter().zip(names) {
        let reply = app.get(&format!("/{target}/x"), &[]).await;
        assert_eq!(reply.status, 200, "{target}: {}", reply.text());
        assert!(
            mock.log().iter().any(|l| l.param(param).is_some()),
            "{target} should select with {param}"
        );
    }
}

#[tokio::test]
async fn user_assigned_identities_use_each_sources_own_parameter_names() {
    let backend = Backend::start().await;
    let imds = assigned(Mock::imds()).start().await;
    let app = start(&three_identities(&backend, Some(&imds)), &[]).await;
    selectors(&app, &imds, ["client_id", "object_id", "msi_res_id"]).await;

    let app_service = assigned(Mock::app_service("h")).start().await;
    let endpoint = format!("{}/msi/token", app_service.url());
    let env = [
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", "h"),
    ];
    let app = start(&three_identities(&backend, None), &env).await;
    selectors(
        &app,
        &app_service,
        ["client_id", "principal_id", "mi_res_id"],
    )
    .await;

    // 2017 knows only `clientid`; the others cannot be expressed and fail at start.
    let legacy = Mock::app_service_2017("s", DateStyle::Linux)
        .user_assigned_only()
        .identity(Id::Client("cid".into()))
        .start()
        .await;
    let env = [
        ("MSI_ENDPOINT", legacy.url()),
        ("MSI_SECRET", "s".to_owned()),
    ];
    let lookup = move |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
    let config = |user: tollgate::config::UserAssigned| tollgate::config::Credential {
        name: "mi".into(),
        kind: tollgate::config::CredentialKind::ManagedIdentity(
            tollgate::config::ManagedIdentitySettings {
                user_assigned: Some(user),
                endpoint: None,
            },
        ),
        ca_file: None,
    };
    let cred = tollgate::credential::build(
        &config(tollgate::config::UserAssigned::ClientId("cid".into())),
        &lookup,
    )
    .unwrap();
    cred.fetch("api://orders/.default").await.unwrap();
    assert_eq!(legacy.log()[0].param("clientid"), Some("cid"));
    let err = tollgate::credential::build(
        &config(tollgate::config::UserAssigned::ObjectId("oid".into())),
        &lookup,
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("cannot select a user-assigned identity by object_id"),
        "{err}"
    );
}
