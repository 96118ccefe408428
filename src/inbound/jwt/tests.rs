use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::config::{self, KeySource};
use crate::dev::issuer::SigningKey;
use crate::inbound::jwks::KeySet;
use crate::telemetry::metrics::Metrics;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OTHER_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

fn settings(
    name: &str,
    iss: &str,
    algorithms: Vec<Algorithm>,
    tenants: Vec<String>,
) -> config::Issuer {
    config::Issuer {
        name: name.into(),
        issuer: iss.into(),
        keys: KeySource::JwksUri("https://idp.example/keys".parse().unwrap()),
        audiences: vec![
            "api://orders".into(),
            "11111111-2222-3333-4444-555555555555".into(),
        ],
        algorithms,
        clock_skew: Duration::from_secs(60),
        jwks_refresh: Duration::from_secs(3600),
        ca_file: None,
        tenants,
        groups_overage: config::GroupsOverage::Deny,
    }
}

fn issuers_with(list: Vec<(config::Issuer, Value)>) -> Issuers {
    Issuers::new(
        list.into_iter()
            .map(|(s, jwks)| {
                let keys = KeySet::from_document(
                    &s,
                    jwks.to_string().as_bytes(),
                    Arc::new(Metrics::new()),
                )
                .unwrap();
                Issuer::new(&s, keys)
            })
            .collect(),
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(iss: &str) -> Value {
    json!({ "iss": iss, "aud": "api://orders", "exp": now() + 600, "iat": now(), "nbf": now(), "roles": ["reader"] })
}

#[test]
fn reasons_are_the_metric_vocabulary() {
    let all = [
        AuthError::MultipleAuthorization,
        AuthError::TokenTooLarge,
        AuthError::Malformed("x"),
        AuthError::DisallowedAlgorithm("none".into()),
        AuthError::BadType("x".into()),
        AuthError::UnsupportedCritical,
        AuthError::BadIssuer("x".into()),
        AuthError::UnknownKey {
            issuer: "i".into(),
            kid: "k".into(),
            generation: 1,
        },
        AuthError::KeyMismatch(Algorithm::RS256),
        AuthError::KeysUnavailable("i".into()),
        AuthError::BadSignature,
        AuthError::BadAudience,
        AuthError::MissingExpiry,
        AuthError::Expired,
        AuthError::NotYetValid,
    ];
    let reasons: Vec<&str> = all.iter().map(AuthError::reason).collect();
    assert_eq!(
        reasons,
        [
            "multiple_tokens",
            "token_too_large",
            "malformed",
            "disallowed_algorithm",
            "bad_type",
            "unsupported_crit",
            "bad_issuer",
            "unknown_key",
            "key_mismatch",
            "keys_unavailable",
            "bad_signature",
            "bad_audience",
            "missing_exp",
            "expired",
            "not_yet_valid",
        ]
    );
    for e in &all {
        assert!(!e.description().is_empty());
    }
}

#[test]
fn every_algorithm_family_verifies() {
    for alg in [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let key = SigningKey::generate(alg, "k1").unwrap();
        let issuers = issuers_with(vec![(
            settings("idp", "https://idp.example/", vec![alg], vec![]),
            json!({ "keys": [key.jwk()] }),
        )]);
        let token = key
            .mint(&claims("https://idp.example/"), &json!({}))
            .unwrap();
        let verified = verify(&token, &issuers, None, SystemTime::now())
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(verified.alg, alg);
        assert_eq!(verified.claims.roles().collect::<Vec<_>>(), ["reader"]);
    }
}

#[test]
fn the_cache_skips_only_the_signature() {
    let key = SigningKey::generate(Algorithm::RS256, "k1").unwrap();
    let issuers = issuers_with(vec![(
        settings(
            "idp",
            "https://idp.example/",
            vec![Algorithm::RS256],
            vec![],
        ),
        json!({ "keys": [key.jwk()] }),
    )]);
    let cache = SignatureCache::new(16).unwrap();
    let mut c = claims("https://idp.example/");
    c["exp"] = json!(now() + 30);
    let token = key.mint(&c, &json!({})).unwrap();
    let first = verify(&token, &issuers, Some(&cache), SystemTime::now()).unwrap();
    assert!(!first.cached);
    let second = verify(&token, &issuers, Some(&cache), SystemTime::now()).unwrap();
    assert!(second.cached);
    // Past exp the cached entry does not help: the lifetime is checked every time.
    let later = SystemTime::now() + Duration::from_secs(120);
    assert_eq!(
        verify(&token, &issuers, Some(&cache), later).err(),
        Some(AuthError::Expired)
    );
}

#[test]
fn multi_tenant_issuers_honour_the_allow_list_and_key_issuer() {
    let template = "https://login.microsoftonline.com/{tenantid}/v2.0";
    let key = SigningKey::generate(Algorithm::RS256, "k1").unwrap();
    let mut jwk = key.jwk();
    jwk["issuer"] = json!(template);
    let issuers = issuers_with(vec![(
        settings(
            "entra",
            template,
            vec![Algorithm::RS256],
            vec![TENANT.into()],
        ),
        json!({ "keys": [jwk] }),
    )]);
    let token_for = |tid: &str, iss_tid: &str| {
        let mut c = claims(&format!("https://login.microsoftonline.com/{iss_tid}/v2.0"));
        c["tid"] = json!(tid);
        key.mint(&c, &json!({})).unwrap()
    };
    assert!(
        verify(
            &token_for(TENANT, TENANT),
            &issuers,
            None,
            SystemTime::now()
        )
        .is_ok()
    );
    let refused = [
        token_for(OTHER_TENANT, OTHER_TENANT),
        token_for(OTHER_TENANT, TENANT),
        token_for(TENANT, OTHER_TENANT),
    ];
    for token in refused {
        assert!(matches!(
            verify(&token, &issuers, None, SystemTime::now()),
            Err(AuthError::BadIssuer(_))
        ));
    }

    // A key published for one specific tenant vouches for that tenant only.
    let pinned_key = SigningKey::generate(Algorithm::RS256, "k2").unwrap();
    let mut pinned = pinned_key.jwk();
    pinned["issuer"] = json!(format!(
        "https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"
    ));
    let issuers = issuers_with(vec![(
        settings(
            "entra",
            template,
            vec![Algorithm::RS256],
            vec![TENANT.into(), OTHER_TENANT.into()],
        ),
        json!({ "keys": [pinned] }),
    )]);
    let mut c = claims(&format!("https://login.microsoftonline.com/{TENANT}/v2.0"));
    c["tid"] = json!(TENANT);
    let token = pinned_key.mint(&c, &json!({})).unwrap();
    assert!(matches!(
        verify(&token, &issuers, None, SystemTime::now()),
        Err(AuthError::BadIssuer(_))
    ));
}

#[test]
fn v1_and_v2_tokens_of_one_tenant() {
    let v1_key = SigningKey::generate(Algorithm::RS256, "v1").unwrap();
    let v2_key = SigningKey::generate(Algorithm::RS256, "v2").unwrap();
    let v1_iss = format!("https://sts.windows.net/{TENANT}/");
    let v2_iss = format!("https://login.microsoftonline.com/{TENANT}/v2.0");
    let issuers = issuers_with(vec![
        (
            settings("entra-v1", &v1_iss, vec![Algorithm::RS256], vec![]),
            json!({ "keys": [v1_key.jwk()] }),
        ),
        (
            settings("entra-v2", &v2_iss, vec![Algorithm::RS256], vec![]),
            json!({ "keys": [v2_key.jwk()] }),
        ),
    ]);
    let mut v1 = claims(&v1_iss);
    v1["appid"] = json!("client-1");
    v1["ver"] = json!("1.0");
    let token = v1_key.mint(&v1, &json!({"x5t": "v1"})).unwrap();
    let verified = verify(&token, &issuers, None, SystemTime::now()).unwrap();
    assert_eq!(
        (verified.issuer.name.as_str(), verified.claims.client_app()),
        ("entra-v1", Some("client-1"))
    );
    let mut v2 = claims(&v2_iss);
    v2["aud"] = json!("11111111-2222-3333-4444-555555555555");
    let token = v2_key.mint(&v2, &json!({})).unwrap();
    assert_eq!(
        verify(&token, &issuers, None, SystemTime::now())
            .unwrap()
            .issuer
            .name,
        "entra-v2"
    );
    // Keys do not cross: a v1 key cannot sign a v2-issuer token.
    let token = v1_key
        .mint(&claims(&v2_iss), &json!({"kid": "v2"}))
        .unwrap();
    assert_eq!(
        verify(&token, &issuers, None, SystemTime::now()).err(),
        Some(AuthError::BadSignature)
    );
}

#[test]
fn lifetime_with_skew() {
    let key = SigningKey::generate(Algorithm::ES256, "k").unwrap();
    let issuers = issuers_with(vec![(
        settings(
            "idp",
            "https://idp.example/",
            vec![Algorithm::ES256],
            vec![],
        ),
        json!({ "keys": [key.jwk()] }),
    )]);
    let t = now();
    let cases: Vec<(Value, Option<AuthError>)> = vec![
        (json!({"exp": t - 30}), None),
        (json!({"exp": t - 61}), Some(AuthError::Expired)),
        (json!({"exp": t + 600, "nbf": t + 30}), None),
        (
            json!({"exp": t + 600, "nbf": t + 120}),
            Some(AuthError::NotYetValid),
        ),
        (
            json!({"exp": t + 600, "iat": t + 120}),
            Some(AuthError::NotYetValid),
        ),
        (
            json!({"exp": (t + 600).to_string()}),
            Some(AuthError::Malformed("a date claim is not a number")),
        ),
        (
            json!({"exp": null}),
            Some(AuthError::Malformed("a date claim is not a number")),
        ),
    ];
    for (times, want) in cases {
        let mut c = json!({ "iss": "https://idp.example/", "aud": ["other", "api://orders"] });
        for (k, v) in times.as_object().unwrap() {
            c[k] = v.clone();
        }
        let token = key.mint(&c, &json!({})).unwrap();
        assert_eq!(
            verify(&token, &issuers, None, SystemTime::now()).err(),
            want,
            "{times}"
        );
    }
}
