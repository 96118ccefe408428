use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use serde_json::Value;

use super::principal::derived_guid;
use super::*;
use crate::config::Algorithm;
use crate::dev::issuer::{DEV_ISSUER, LocalIssuer, SigningKey};

const SECRET: &str = "the-identity-header";
const IMDS: &str = "/metadata/identity/oauth2/token?api-version=2018-02-01";
const APP: &str = "/msi/token?api-version=2019-08-01";
const METADATA: (&str, &str) = ("metadata", "true");
const HEADER: (&str, &str) = ("x-identity-header", SECRET);

fn endpoint() -> IdentityEndpoint {
    let key = SigningKey::generate(Algorithm::RS256, "k").unwrap();
    let identity = Identity {
        roles: vec!["Orders.Read".into()],
        ..Identity::default()
    };
    IdentityEndpoint::new(
        LocalIssuer::new(DEV_ISSUER, key),
        identity,
        Secret::new(SECRET.to_owned()),
    )
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

fn send(ep: &IdentityEndpoint, method: Method, uri: &str, headers: &[(&str, &str)]) -> Answer {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let uri: Uri = uri.parse().unwrap();
    ep.respond(&method, &uri, &map, now())
        .expect("an identity path")
        .1
}

fn get(ep: &IdentityEndpoint, uri: &str, headers: &[(&str, &str)]) -> Answer {
    send(ep, Method::GET, uri, headers)
}

/// The token's claims, after checking its RS256 signature against the issuer's JWKS.
fn verified_claims(ep: &IdentityEndpoint, token: &str) -> Value {
    let jwk = &ep.issuer.jwks()["keys"][0];
    let b64 = |v: &Value| URL_SAFE_NO_PAD.decode(v.as_str().unwrap()).unwrap();
    let (input, signature) = token.rsplit_once('.').unwrap();
    aws_lc_rs::signature::RsaPublicKeyComponents {
        n: b64(&jwk["n"]),
        e: b64(&jwk["e"]),
    }
    .verify(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        input.as_bytes(),
        &URL_SAFE_NO_PAD.decode(signature).unwrap(),
    )
    .expect("signed by the local issuer");
    let payload = input.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn assert_refused(answer: &Answer, status: StatusCode, field: &str, want: &str) {
    assert_eq!(answer.status, status, "{answer:?} {}", answer.body);
    assert_eq!(answer.body[field], want, "{}", answer.body);
    assert!(answer.body.get("access_token").is_none());
}

#[test]
fn imds_answers_every_value_as_a_string() {
    let ep = endpoint();
    let answer = get(&ep, &format!("{IMDS}&resource=api://orders"), &[METADATA]);
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let body = answer.body.as_object().unwrap();
    let issued = 1_750_000_000u64;
    let want = [
        ("refresh_token", String::new()),
        ("expires_in", "3600".into()),
        ("expires_on", (issued + 3600).to_string()),
        ("ext_expires_in", "3600".into()),
        ("not_before", issued.to_string()),
        ("resource", "api://orders".into()),
        ("token_type", "Bearer".into()),
        ("client_id", DEV_CLIENT_ID.into()),
    ];
    for (field, value) in want {
        assert_eq!(body[field], Value::String(value), "{field}");
    }
    assert_eq!(body.len(), 9, "{body:?}");
    let claims = verified_claims(&ep, body["access_token"].as_str().unwrap());
    assert_eq!(claims["iss"], DEV_ISSUER);
    assert_eq!(claims["aud"], "api://orders");
    assert_eq!(claims["exp"], issued + 3600);
    assert_eq!(claims["nbf"], issued);
    assert_eq!(claims["tid"], DEV_TENANT_ID);
    assert_eq!(claims["oid"], DEV_OBJECT_ID);
    assert_eq!(claims["sub"], DEV_OBJECT_ID);
    assert_eq!(claims["appid"], DEV_CLIENT_ID);
    assert_eq!(claims["azp"], DEV_CLIENT_ID);
    assert_eq!(claims["idtyp"], "app");
    assert_eq!(claims["roles"], serde_json::json!(["Orders.Read"]));
    assert!(claims.get("scp").is_none(), "app-only: no scp");
}

#[test]
fn imds_refuses_what_imds_refuses() {
    let ep = endpoint();
    let resource = "&resource=api://orders";
    // No Metadata header, or not the lower-case value: the SSRF guard, which probes rely on.
    for headers in [&[][..], &[("metadata", "True")], &[HEADER]] {
        let answer = get(&ep, &format!("{IMDS}{resource}"), headers);
        assert_refused(&answer, StatusCode::BAD_REQUEST, "error", "bad_request_102");
    }
    let no_metadata_post = send(&ep, Method::POST, IMDS, &[]);
    assert_refused(
        &no_metadata_post,
        StatusCode::BAD_REQUEST,
        "error",
        "bad_request_102",
    );
    let post = send(&ep, Method::POST, &format!("{IMDS}{resource}"), &[METADATA]);
    assert_refused(
        &post,
        StatusCode::METHOD_NOT_ALLOWED,
        "error",
        "method_not_allowed",
    );
    let path = "/metadata/identity/oauth2/token";
    for query in [
        "?resource=api://orders",
        "?api-version=2017-09-01&resource=api://orders",
        "?api-version=latest&resource=api://orders",
        "?api-version=2018-02-01",
        "?api-version=2018-02-01&resource=",
        "?api-version=2018-02-01&resource=api://orders&client_id=a&msi_res_id=b",
    ] {
        let answer = get(&ep, &format!("{path}{query}"), &[METADATA]);
        assert_refused(&answer, StatusCode::BAD_REQUEST, "error", "invalid_request");
    }
    // Later versions are fine (the Rust SDK sends 2019-08-01).
    let later = format!("{path}?api-version=2019-08-01{resource}");
    assert_eq!(get(&ep, &later, &[METADATA]).status, StatusCode::OK);
}

#[test]
fn app_service_answers_a_string_epoch_and_no_expires_in() {
    let ep = endpoint();
    for path in [APP, "/MSI/token?api-version=2019-08-01"] {
        let answer = get(
            &ep,
            &format!("{path}&resource=https://vault.azure.net"),
            &[HEADER],
        );
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        let body = answer.body.as_object().unwrap();
        let mut fields: Vec<&str> = body.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "access_token",
                "client_id",
                "expires_on",
                "resource",
                "token_type"
            ]
        );
        assert_eq!(body["expires_on"], "1750003600");
        assert_eq!(body["resource"], "https://vault.azure.net");
        let claims = verified_claims(&ep, body["access_token"].as_str().unwrap());
        assert_eq!(claims["aud"], "https://vault.azure.net");
        assert_eq!(claims["exp"], 1_750_003_600u64);
    }
}

#[test]
fn app_service_refuses_a_missing_or_wrong_identity_header() {
    let ep = endpoint();
    let uri = format!("{APP}&resource=api://orders");
    let missing = get(&ep, &uri, &[METADATA]);
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.body["statusCode"], 400);
    assert!(missing.body["message"].is_string());
    let wrong = get(&ep, &uri, &[("x-identity-header", "guess"), METADATA]);
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body["statusCode"], 401);
    assert!(
        !wrong.body.to_string().contains(SECRET),
        "never echoes the secret"
    );
    for query in [
        "?api-version=2017-09-01&resource=api://orders",
        "?resource=api://orders",
        "?api-version=2019-08-01",
        "?api-version=2019-08-01&resource=api://orders&client_id=a&principal_id=b",
    ] {
        let answer = get(&ep, &format!("/msi/token{query}"), &[HEADER]);
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(answer.body["statusCode"], 400, "{query}");
    }
}

#[test]
fn the_scope_suffix_is_not_in_the_audience() {
    let ep = endpoint();
    let answer = get(
        &ep,
        &format!("{IMDS}&resource=api://orders/.default"),
        &[METADATA],
    );
    let claims = verified_claims(&ep, answer.body["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], "api://orders");
    assert_eq!(answer.body["resource"], "api://orders/.default", "echoed");
}

#[test]
fn user_assigned_identities_by_each_protocol_s_names() {
    let ep = endpoint();
    let arm = "/subscriptions/s/resourcegroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u";
    // (protocol path, parameter, value, claim that must carry the value)
    let cases = [
        (IMDS, "client_id", "c1", "appid"),
        (IMDS, "object_id", "o1", "oid"),
        (IMDS, "msi_res_id", arm, "xms_mirid"),
        (APP, "client_id", "c2", "azp"),
        (APP, "principal_id", "o2", "oid"),
        (APP, "object_id", "o3", "oid"),
        (APP, "mi_res_id", arm, "xms_mirid"),
    ];
    for (path, name, value, claim) in cases {
        let uri = format!("{path}&resource=api://orders&{name}={value}");
        let answer = get(&ep, &uri, &[METADATA, HEADER]);
        assert_eq!(answer.status, StatusCode::OK, "{name}");
        let claims = verified_claims(&ep, answer.body["access_token"].as_str().unwrap());
        assert_eq!(claims[claim], value, "{name}");
        assert_eq!(answer.body["client_id"], claims["appid"], "{name}");
        assert_ne!(
            claims["oid"], DEV_OBJECT_ID,
            "{name}: not the system identity"
        );
    }
    // IMDS echoes the object id or resource id a request named its identity by.
    for (name, value) in [("object_id", "o1"), ("msi_res_id", arm)] {
        let uri = format!("{IMDS}&resource=api://orders&{name}={value}");
        let answer = get(&ep, &uri, &[METADATA]);
        assert_eq!(answer.body[name], value, "{name}");
    }
    let answer = get(
        &ep,
        &format!("{IMDS}&resource=api://orders&client_id=c1"),
        &[METADATA],
    );
    assert!(answer.body.get("object_id").is_none() && answer.body.get("msi_res_id").is_none());
    // The same name twice gives the same derived ids.
    let uri = format!("{IMDS}&resource=api://x&client_id=c1");
    let twice: Vec<Value> = (0..2)
        .map(|_| {
            let answer = get(&ep, &uri, &[METADATA]);
            verified_claims(&ep, answer.body["access_token"].as_str().unwrap())["oid"].clone()
        })
        .collect();
    assert_eq!(twice[0], twice[1]);
    // App Service's name for a resource id means nothing to IMDS: the system identity.
    let uri = format!("{IMDS}&resource=api://x&mi_res_id={arm}");
    let answer = get(&ep, &uri, &[METADATA]);
    assert_eq!(answer.body["client_id"], DEV_CLIENT_ID);
}

#[test]
fn other_paths_are_not_identity_requests() {
    let ep = endpoint();
    for path in [
        "/keys",
        "/.well-known/openid-configuration",
        "/metadata/x",
        "/",
    ] {
        let uri: Uri = path.parse().unwrap();
        assert!(
            ep.respond(&Method::GET, &uri, &HeaderMap::new(), now())
                .is_none()
        );
    }
    assert_eq!(
        Protocol::for_path("/Metadata/identity/oauth2/token"),
        None,
        "IMDS paths are case-sensitive"
    );
    // msal-node adds a trailing slash to the IMDS path; one is accepted on both paths.
    assert_eq!(
        Protocol::for_path("/metadata/identity/oauth2/token/"),
        Some(Protocol::Imds)
    );
    assert_eq!(
        Protocol::for_path("/msi/token/"),
        Some(Protocol::AppService)
    );
    assert_eq!(
        Protocol::for_path("/metadata/identity/oauth2/token//"),
        None
    );
}

#[test]
fn generated_headers_are_random_and_debug_hides_tokens() {
    let (a, b) = (
        IdentityEndpoint::generate_header().unwrap(),
        IdentityEndpoint::generate_header().unwrap(),
    );
    assert_ne!(a.expose(), b.expose());
    assert_eq!(a.expose().len(), 43);
    assert_eq!(format!("{a:?}"), "Secret(..)");
    let ep = endpoint();
    let answer = get(&ep, &format!("{IMDS}&resource=api://x"), &[METADATA]);
    let token = answer.body["access_token"].as_str().unwrap().to_owned();
    let printed = format!("{answer:?} {}", answer.summary);
    assert!(!printed.contains(&token), "{printed}");
    assert!(printed.contains("api://x"), "{printed}");
}

#[test]
fn api_versions_compare_as_dates() {
    for (v, ok) in [
        ("2018-02-01", true),
        ("2019-08-01", true),
        ("2018-2-01", false),
        ("20180201xx", false),
        ("2018-02-0a", false),
    ] {
        assert_eq!(is_date(v), ok, "{v}");
    }
    assert_eq!(derived_guid("k", "v").len(), 36);
    assert_ne!(derived_guid("k", "v"), derived_guid("k", "w"));
    // The ids the hand-written GUID formatter gave before the uuid crate: a dev identity's
    // ids stay the same across versions.
    assert_eq!(
        derived_guid("client", "x"),
        "2c7417f4-5135-5a6b-47b8-80f9e8e42dbb"
    );
    assert_eq!(
        derived_guid("object", "11111111-2222"),
        "f4bceb3a-323b-1167-6566-ea6ffae7fd38"
    );
}
