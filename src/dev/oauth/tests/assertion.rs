//! Client assertions: the dev identity endpoint's managed-identity token and `dev token`'s
//! workload-identity token as federated credentials, and `private_key_jwt` by certificate.

use std::path::Path;

use serde_json::json;

use super::*;
use crate::credential::client_certificate::Signer;
use crate::credential::entra::JWT_BEARER;
use crate::dev::identity::{DEV_CLIENT_ID, Identity, IdentityEndpoint};
use crate::dev::issuer::TokenSpec;
use crate::telemetry::redact::Secret;

impl Fixture {
    /// A client-credentials request authenticated by `assertion`, at `now`.
    fn with_assertion(&self, assertion: &str, now: SystemTime) -> Reply {
        let form = owned(&[
            ("grant_type", "client_credentials"),
            ("scope", "api://orders/.default"),
            ("client_id", DEV_WEB_CLIENT_ID),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ]);
        self.post_at("/oauth2/v2.0/token", &form, &HeaderMap::new(), now)
    }

    /// A token from the dev issuer for `audience` with `extra` claims.
    fn dev_token(&self, audience: &str, extra: Value) -> String {
        let spec = TokenSpec {
            audience: audience.to_owned(),
            object_id: Some("00000000-0000-0000-0000-00000000d3e7".into()),
            lifetime: Duration::from_secs(3600),
            extra: extra.as_object().cloned().unwrap_or_default(),
            ..TokenSpec::default()
        };
        self.issuer.mint(&spec).unwrap()
    }
}

/// An RSA certificate and key in one PEM file, as `kind = "client_certificate"` reads it.
fn certificate(dir: &Path, name: &str) -> (std::path::PathBuf, CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["client.example".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
    (path, cert.der().clone())
}

#[test]
fn the_dev_identity_endpoints_managed_identity_token_is_a_federated_credential() {
    let f = fixture();
    let identity = IdentityEndpoint::new(
        f.issuer.clone(),
        Identity::default(),
        Secret::new("h".into()),
    );
    let uri: Uri = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://AzureADTokenExchange"
        .parse()
        .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("metadata", HeaderValue::from_static("true"));
    let (_, answer) = identity
        .respond(&Method::GET, &uri, &headers, SystemTime::now())
        .unwrap();
    let mi_token = answer.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&mi_token)["appid"], DEV_CLIENT_ID);

    let reply = f.with_assertion(&mi_token, SystemTime::now());
    assert_eq!(reply.status, StatusCode::OK, "{:?}", body(&reply));
    let access = claims(body(&reply)["access_token"].as_str().unwrap());
    assert_eq!(
        (access["appid"].as_str(), access["azpacr"].as_str()),
        (Some(DEV_WEB_CLIENT_ID), Some("2"))
    );

    // The same assertion redeems a code (browser sign-in with no secret anywhere).
    let code = f.code(&[]);
    let form = owned(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", CALLBACK),
        ("code_verifier", VERIFIER),
        ("client_id", DEV_WEB_CLIENT_ID),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", &mi_token),
    ]);
    assert_eq!(f.post("/oauth2/v2.0/token", &form).status, StatusCode::OK);
}

#[test]
fn a_workload_identity_token_from_the_dev_issuer_is_a_federated_credential() {
    let f = fixture();
    let token = f.dev_token(TOKEN_EXCHANGE_AUDIENCE, json!({}));
    assert_eq!(
        f.with_assertion(&token, SystemTime::now()).status,
        StatusCode::OK
    );
}

#[test]
fn federated_assertions_are_checked() {
    let f = fixture();
    let now = SystemTime::now();
    let wrong_audience = f.dev_token("api://orders", json!({}));
    assert_eq!(
        error_of(&f.with_assertion(&wrong_audience, now)),
        ("invalid_client".into(), 700212)
    );
    let user = f.dev_token(TOKEN_EXCHANGE_AUDIENCE, json!({"scp": "read"}));
    assert_eq!(
        error_of(&f.with_assertion(&user, now)),
        ("invalid_client".into(), 700229)
    );
    let good = f.dev_token(TOKEN_EXCHANGE_AUDIENCE, json!({}));
    let expired = f.with_assertion(&good, now + Duration::from_secs(3600 + 301));
    assert_eq!(error_of(&expired), ("invalid_client".into(), 700024));
    let early = f.dev_token(TOKEN_EXCHANGE_AUDIENCE, json!({"nbf": unix(now) + 3000}));
    assert_eq!(error_of(&f.with_assertion(&early, now)).1, 700024);

    // Same `iss`, another key: the signature does not verify.
    let impostor = fixture();
    let forged = impostor.dev_token(TOKEN_EXCHANGE_AUDIENCE, json!({}));
    let reply = f.with_assertion(&forged, now);
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(&reply), ("invalid_client".into(), 700027));
    // A tampered payload neither.
    let (head, rest) = good.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let payload = URL_SAFE_NO_PAD.encode(
        json!({"iss": DEV_ISSUER, "aud": TOKEN_EXCHANGE_AUDIENCE, "exp": unix(now) + 60})
            .to_string(),
    );
    let tampered = format!("{head}.{payload}.{signature}");
    assert_eq!(error_of(&f.with_assertion(&tampered, now)).1, 700027);
    // `alg: none` is not a signature.
    let none = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#)
    );
    assert_eq!(error_of(&f.with_assertion(&none, now)).1, 700027);
    // Another issuer's token: no federated credential trusts it.
    let other = LocalIssuer::new(
        "https://sts.example/",
        SigningKey::generate(Algorithm::RS256, "o").unwrap(),
    );
    let foreign = other
        .mint(&TokenSpec {
            audience: TOKEN_EXCHANGE_AUDIENCE.into(),
            lifetime: Duration::from_secs(60),
            ..TokenSpec::default()
        })
        .unwrap();
    assert_eq!(
        error_of(&f.with_assertion(&foreign, now)),
        ("invalid_request".into(), 70021)
    );
    // The assertion type is checked.
    let mut form = owned(&[
        ("grant_type", "client_credentials"),
        ("scope", "api://x/.default"),
        ("client_id", DEV_WEB_CLIENT_ID),
        ("client_assertion", &good),
    ]);
    form.push(("client_assertion_type".into(), "urn:other".into()));
    assert_eq!(
        error_of(&f.post("/oauth2/v2.0/token", &form)),
        ("invalid_request".into(), 50027)
    );
}

#[test]
fn private_key_jwt_signed_by_a_registered_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, der) = certificate(dir.path(), "client.pem");
    let (other_pem, _) = certificate(dir.path(), "other.pem");
    let f = fixture_with(OAuthSettings {
        certificates: vec![der],
        ..OAuthSettings::default()
    });
    let now = SystemTime::now();
    let endpoint = format!("{BASE}/{DEV_TENANT_ID}/oauth2/v2.0/token");
    for alg in [Algorithm::PS256, Algorithm::RS256] {
        let signer = Signer::load(&pem, alg).unwrap();
        for aud in [endpoint.as_str(), "http://localhost:8079/oauth2/v2.0/token"] {
            let assertion = signer.assertion(DEV_WEB_CLIENT_ID, aud, now).unwrap();
            let reply = f.with_assertion(assertion.expose(), now);
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{alg} {aud}: {:?}",
                body(&reply)
            );
        }
    }
    let signer = Signer::load(&pem, Algorithm::PS256).unwrap();
    let cases = [
        (
            signer.assertion(
                DEV_WEB_CLIENT_ID,
                "http://127.0.0.1:9999/oauth2/v2.0/token",
                now,
            ),
            now,
            700023,
        ),
        (
            signer.assertion(
                DEV_WEB_CLIENT_ID,
                "https://127.0.0.1:8079/oauth2/v2.0/token",
                now,
            ),
            now,
            700023,
        ),
        (
            signer.assertion(DEV_WEB_CLIENT_ID, "http://127.0.0.1:8079/keys", now),
            now,
            700023,
        ),
        (
            signer.assertion("another-client", &endpoint, now),
            now,
            700021,
        ),
        (
            signer.assertion(DEV_WEB_CLIENT_ID, &endpoint, now),
            now + Duration::from_secs(600 + 301),
            700024,
        ),
        (
            Signer::load(&other_pem, Algorithm::PS256)
                .unwrap()
                .assertion(DEV_WEB_CLIENT_ID, &endpoint, now),
            now,
            700027,
        ),
    ];
    for (assertion, at, code) in cases {
        let reply = f.with_assertion(assertion.unwrap().expose(), at);
        assert_eq!(error_of(&reply), ("invalid_client".into(), code));
    }
    // A signature by another key under the registered certificate's thumbprint.
    let good = signer.assertion(DEV_WEB_CLIENT_ID, &endpoint, now).unwrap();
    let forged_by = Signer::load(&other_pem, Algorithm::PS256)
        .unwrap()
        .assertion(DEV_WEB_CLIENT_ID, &endpoint, now)
        .unwrap();
    let head = good.expose().split('.').next().unwrap();
    let rest = forged_by.expose().split_once('.').unwrap().1;
    assert_eq!(
        error_of(&f.with_assertion(&format!("{head}.{rest}"), now)).1,
        700027
    );
}

#[test]
fn thumbprints_in_every_encoding_msal_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, der) = certificate(dir.path(), "client.pem");
    let f = fixture_with(OAuthSettings {
        certificates: vec![der.clone()],
        ..OAuthSettings::default()
    });
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
    let assertion = Signer::load(&pem, Algorithm::PS256)
        .unwrap()
        .assertion(
            DEV_WEB_CLIENT_ID,
            &format!("{BASE}/oauth2/v2.0/token"),
            SystemTime::now(),
        )
        .unwrap();
    let (_, rest) = assertion.expose().split_once('.').unwrap();
    // Re-signing is not possible here, so a changed header must fail on the signature, not on
    // the thumbprint: the certificate is found in each encoding.
    for thumbprint in [
        STANDARD.encode(digest.as_ref()),
        URL_SAFE_NO_PAD.encode(digest.as_ref()) + "=",
    ] {
        let header = URL_SAFE_NO_PAD
            .encode(json!({"alg": "PS256", "typ": "JWT", "x5t#S256": thumbprint}).to_string());
        let reply = f.with_assertion(&format!("{header}.{rest}"), SystemTime::now());
        let description = body(&reply)["error_description"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            description.contains("invalid signature"),
            "{thumbprint}: {description}"
        );
    }
}
