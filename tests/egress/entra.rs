//! The credentials that end at the Entra token endpoint: workload identity (its token file
//! re-read at each fetch), client secret, client certificate (PS256 and RS256 assertions
//! verified by the mock), and a managed identity as federated credential.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::*;
use support::imds::Id;
use support::imds::entra::{EntraAuth, EntraConfig};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const APP: &str = "a0a0a0a0-1111-2222-3333-444444444444";

#[tokio::test(start_paused = true)]
async fn workload_identity_reads_the_rotated_file_on_the_next_fetch() {
    let expected = Arc::new(Mutex::new("k8s-token-v1".to_owned()));
    let entra = Mock::entra(EntraConfig::new(
        TENANT,
        APP,
        EntraAuth::exact(expected.clone()),
    ))
    .start()
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    std::fs::write(&file, "k8s-token-v1\n").unwrap();
    let backend = Backend::start().await;
    // Everything from the environment, as the webhook injects it; the authority has the
    // webhook's trailing slash.
    let authority = format!("{}/", entra.url());
    let env = [
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", APP),
        ("AZURE_FEDERATED_TOKEN_FILE", file.to_str().unwrap()),
        ("AZURE_AUTHORITY_HOST", authority.as_str()),
    ];
    let app = start(
        &simple(&backend, "[credentials.mi]\nkind = \"workload_identity\"\n"),
        &env,
    )
    .await;
    let reply = app.get("/api/x", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        backend.only().header("authorization"),
        Some(format!("Bearer {}", entra.last_token()).as_str())
    );
    let asked = &entra.log()[0];
    assert_eq!(asked.path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(asked.field("scope"), Some("api://orders/.default"));
    assert_eq!(asked.field("client_assertion"), Some("k8s-token-v1"));

    // Kubernetes rotates the projected token; the old one is no longer accepted.
    std::fs::write(&file, "k8s-token-v2").unwrap();
    *expected.lock() = "k8s-token-v2".to_owned();
    tokio::time::advance(Duration::from_secs(55 * 60 + 1)).await;
    support::eventually("the refresh", || async { entra.issued().len() == 2 }).await;
    assert_eq!(entra.log().len(), 2, "the new file was used at once");
    assert_eq!(
        entra.log()[1].field("client_assertion"),
        Some("k8s-token-v2")
    );
    backend.clear();
    app.get("/api/x", &[]).await;
    assert_eq!(
        backend.only().header("authorization"),
        Some(format!("Bearer {}", entra.last_token()).as_str())
    );
}

#[tokio::test]
async fn workload_identity_settings_in_the_file_win_and_authority_needs_no_slash() {
    let expected = Arc::new(Mutex::new("projected".to_owned()));
    let entra = Mock::entra(EntraConfig::new(TENANT, APP, EntraAuth::exact(expected)))
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "projected").unwrap();
    let backend = Backend::start().await;
    let credential = format!(
        "[credentials.mi]\nkind = \"workload_identity\"\ntenant_id = \"{TENANT}\"\nclient_id = \"{APP}\"\ntoken_file = \"{}\"\nauthority_host = \"{}\"\n",
        file.display(),
        entra.url()
    );
    let env = [
        ("AZURE_CLIENT_ID", "someone-else"),
        ("AZURE_TENANT_ID", "elsewhere"),
    ];
    let app = start(&simple(&backend, &credential), &env).await;
    assert_eq!(app.get("/api/x", &[]).await.status, 200);
}

fn secret_credential(entra: &Mock, source: &str) -> String {
    format!(
        "[credentials.mi]\nkind = \"client_secret\"\ntenant_id = \"{TENANT}\"\nclient_id = \"{APP}\"\nauthority_host = \"{}\"\n{source}\n",
        entra.url()
    )
}

#[tokio::test]
async fn client_secret_from_a_file_or_the_environment() {
    let entra = Mock::entra(EntraConfig::new(
        TENANT,
        APP,
        EntraAuth::Secret("s3cr3t~value".into()),
    ))
    .start()
    .await;
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "s3cr3t~value\n").unwrap();
    let from_file = secret_credential(&entra, &format!("secret_file = \"{}\"", file.display()));
    let app = start(&simple(&backend, &from_file), &[]).await;
    assert_eq!(app.get("/api/x", &[]).await.status, 200);
    assert_eq!(entra.log()[0].field("client_secret"), Some("s3cr3t~value"));

    let from_env = secret_credential(&entra, "secret_env = \"ORDERS_CLIENT_SECRET\"");
    let app = start(
        &simple(&backend, &from_env),
        &[("ORDERS_CLIENT_SECRET", "s3cr3t~value")],
    )
    .await;
    assert_eq!(app.get("/api/x", &[]).await.status, 200);
}

#[tokio::test]
async fn a_wrong_secret_is_503_with_the_aadsts_code_and_never_the_secret() {
    let entra = Mock::entra(EntraConfig::new(
        TENANT,
        APP,
        EntraAuth::Secret("right".into()),
    ))
    .start()
    .await;
    let backend = Backend::start().await;
    let credential = secret_credential(&entra, "secret_env = \"SECRET\"");
    let app = start(
        &simple(&backend, &credential),
        &[("SECRET", "wrong-but-sensitive")],
    )
    .await;
    let reply = app.get("/api/x", &[]).await;
    assert_no_token(
        &reply,
        &[
            "Entra ID answered HTTP 401",
            "invalid_client",
            "AADSTS7000215",
        ],
    );
    assert!(!reply.text().contains("wrong-but-sensitive"));
    assert!(
        !reply.text().contains("Trace ID"),
        "only the first line of the description"
    );
    assert_eq!(entra.served(), 0);
    assert_eq!(entra.calls(), 1, "401 is not retried");
    backend.assert_nothing_received();
}

/// An RSA certificate and key in one PEM, its DER, and its public key (SPKI DER).
fn rsa_identity() -> (String, Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["tollgate-client".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    (pem, cert.der().to_vec(), spki)
}

async fn certificate_round_trip(algorithm: &'static str, setting: &str) -> Mock {
    let (pem, cert_der, public_key_der) = rsa_identity();
    let auth = EntraAuth::Certificate {
        cert_der,
        public_key_der,
        algorithm,
    };
    let entra = Mock::entra(EntraConfig::new(TENANT, APP, auth))
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client.pem");
    std::fs::write(&file, pem).unwrap();
    let backend = Backend::start().await;
    // Two scopes: two assertions, so jti freshness is exercised.
    let egress = format!(
        "{}{}[credentials.mi]\nkind = \"client_certificate\"\ntenant_id = \"{TENANT}\"\nclient_id = \"{APP}\"\ncertificate = \"{}\"\nauthority_host = \"{}\"\n{setting}\n",
        target("a", &backend, "mi", "api://a/.default"),
        target("b", &backend, "mi", "api://b/.default"),
        file.display(),
        entra.url()
    );
    let app = start(&config(&backend, &egress), &[]).await;
    for t in ["/a/x", "/b/x"] {
        let reply = app.get(t, &[]).await;
        assert_eq!(reply.status, 200, "{algorithm} {t}: {}", reply.text());
    }
    let assertions = entra.assertions();
    assert_eq!(assertions.len(), 2);
    for (header, claims) in &assertions {
        assert_eq!(header["alg"], algorithm);
        assert_eq!(claims["aud"], entra.token_endpoint().as_str());
        assert_eq!(
            (claims["iss"].as_str(), claims["sub"].as_str()),
            (Some(APP), Some(APP))
        );
        let lifetime = claims["exp"].as_u64().unwrap() - claims["nbf"].as_u64().unwrap();
        assert!(lifetime <= 600, "short-lived: {lifetime}");
    }
    assert_ne!(assertions[0].1["jti"], assertions[1].1["jti"]);
    entra
}

#[tokio::test]
async fn client_certificate_signs_ps256_with_x5t_s256_by_default() {
    let entra = certificate_round_trip("PS256", "").await;
    let (header, _) = &entra.assertions()[0];
    assert!(
        header.get("x5t#S256").is_some() && header.get("x5t").is_none(),
        "{header}"
    );
    let form = &entra.log()[0];
    assert_eq!(
        form.field("client_assertion_type"),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    assert_eq!(form.field("client_secret"), None);
}

#[tokio::test]
async fn client_certificate_signs_rs256_with_x5t_when_asked() {
    let entra = certificate_round_trip("RS256", "assertion_algorithm = \"RS256\"").await;
    let (header, _) = &entra.assertions()[0];
    assert!(
        header.get("x5t").is_some() && header.get("x5t#S256").is_none(),
        "{header}"
    );
}

#[tokio::test]
async fn managed_identity_federation_presents_the_mi_token_as_assertion() {
    let imds = Mock::imds()
        .user_assigned_only()
        .identity(Id::Client("uami-client".into()))
        .start()
        .await;
    let issued = imds.issued_handle();
    let auth = EntraAuth::Assertion(Arc::new(move |a| issued.lock().iter().any(|t| t == a)));
    let entra = Mock::entra(EntraConfig::new(TENANT, APP, auth))
        .start()
        .await;
    let backend = Backend::start().await;
    let credential = format!(
        "[credentials.mi]\nkind = \"managed_identity_federation\"\ntenant_id = \"{TENANT}\"\nclient_id = \"{APP}\"\nidentity_client_id = \"uami-client\"\nendpoint = \"{}\"\nauthority_host = \"{}\"\n",
        imds.url(),
        entra.url()
    );
    let app = start(&simple(&backend, &credential), &[]).await;
    let reply = app.get("/api/x", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        backend.only().header("authorization"),
        Some(format!("Bearer {}", entra.last_token()).as_str())
    );
    let mi = &imds.log()[0];
    assert_eq!(mi.param("resource"), Some("api://AzureADTokenExchange"));
    assert_eq!(mi.param("client_id"), Some("uami-client"));
    let exchange = &entra.log()[0];
    assert_eq!(exchange.field("client_id"), Some(APP));
    assert_eq!(
        exchange.field("client_assertion"),
        Some(imds.last_token().as_str())
    );
    assert_eq!(exchange.field("scope"), Some("api://orders/.default"));
}

#[tokio::test]
async fn logs_never_carry_a_token_secret_or_assertion() {
    let capture = super::capture::start();

    let entra = Mock::entra(EntraConfig::new(
        TENANT,
        APP,
        EntraAuth::Secret("right-secret".into()),
    ))
    .start()
    .await;
    let backend = Backend::start().await;
    let credential = secret_credential(&entra, "secret_env = \"SECRET\"");
    let app = start(
        &simple(&backend, &credential),
        &[("SECRET", "right-secret")],
    )
    .await;
    assert_eq!(
        app.get("/api/orders", &[("authorization", "Bearer apps-own")])
            .await
            .status,
        200
    );
    let wrong = start(
        &simple(&backend, &credential),
        &[("SECRET", "wrong-secret")],
    )
    .await;
    assert_eq!(wrong.get("/api/orders", &[]).await.status, 503);

    let logs = capture.text();
    assert!(logs.contains("access token acquired"), "{logs}");
    assert!(
        logs.contains("no access token: egress requests get 503"),
        "{logs}"
    );
    assert!(
        logs.contains("AADSTS7000215"),
        "the failure is logged with its code"
    );
    assert!(
        logs.contains("egress_target=\"api\"") || logs.contains("egress_target=api"),
        "{logs}"
    );
    for secret in [
        entra.last_token().as_str(),
        "right-secret",
        "wrong-secret",
        "apps-own",
    ] {
        assert!(!logs.contains(secret), "{secret:?} leaked into the logs");
    }
}
