use super::*;
use crate::dev::issuer::SigningKey;

fn issuer(algorithms: Vec<Algorithm>) -> config::Issuer {
    config::Issuer {
        name: "idp".into(),
        issuer: "https://idp/".into(),
        keys: KeySource::JwksUri("https://idp/keys".parse().unwrap()),
        audiences: vec!["api".into()],
        algorithms,
        clock_skew: Duration::from_secs(60),
        jwks_refresh: Duration::from_secs(3600),
        ca_file: None,
        tenants: vec![],
    }
}

#[test]
fn der_matches_aws_lc() {
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let public = aws_lc_rs::signature::KeyPair::public_key(&key);
    let der = rsa_public_key_der(
        public.modulus().big_endian_without_leading_zero(),
        public.exponent().big_endian_without_leading_zero(),
    );
    assert_eq!(der, public.as_ref());
}

#[test]
fn parses_usable_keys_and_skips_the_rest() {
    let rsa = SigningKey::generate(Algorithm::RS256, "rsa").unwrap();
    let ec = SigningKey::generate(Algorithm::ES256, "ec").unwrap();
    let mut enc = rsa.jwk();
    enc["use"] = "enc".into();
    enc["kid"] = "enc".into();
    let mut nokid = rsa.jwk();
    nokid.as_object_mut().unwrap().remove("kid");
    let mut hs = rsa.jwk();
    hs["kid"] = "hs".into();
    hs["alg"] = "HS256".into();
    let doc = serde_json::json!({ "keys": [rsa.jwk(), ec.jwk(), enc, nokid, hs, {"kty": "oct", "k": "c2VjcmV0", "kid": "oct"}] });
    let keys = parse(
        doc.to_string().as_bytes(),
        &[Algorithm::RS256, Algorithm::ES256],
    )
    .unwrap();
    assert_eq!(keys.kids(), ["ec", "rsa"]);
    assert!(
        keys.get("rsa")
            .unwrap()
            .verifier(Algorithm::RS256)
            .is_some()
    );
    assert!(
        keys.get("rsa")
            .unwrap()
            .verifier(Algorithm::ES256)
            .is_none()
    );
    assert!(keys.generation > 0);
    // An issuer allowing only ES256 sees no RSA key.
    let only_ec = parse(doc.to_string().as_bytes(), &[Algorithm::ES256]).unwrap();
    assert_eq!(only_ec.kids(), ["ec"]);
}

#[test]
fn refuses_documents_without_usable_keys() {
    assert!(matches!(
        parse(b"not json", &[Algorithm::RS256]),
        Err(JwksError::NotJwks(_))
    ));
    assert!(matches!(
        parse(br#"{"keys":[]}"#, &[Algorithm::RS256]),
        Err(JwksError::NoUsableKey { .. })
    ));
    let small = serde_json::json!({"keys": [{"kty":"RSA","kid":"small","n":"AQAB","e":"AQAB"}]});
    assert!(
        parse(small.to_string().as_bytes(), &[Algorithm::RS256]).is_err(),
        "a tiny RSA key is refused"
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_kid_refetch_is_throttled() {
    let set = KeySet::new(&issuer(vec![Algorithm::RS256]), Arc::new(Metrics::new())).unwrap();
    // Nothing listens at https://idp: every fetch fails fast, which is what is counted here.
    let metrics = set.metrics.clone();
    let errors = || {
        metrics
            .jwks_refresh
            .with_label_values(&["idp", "error"])
            .get()
    };
    assert!(!set.refetch_for_unknown_kid(0).await);
    assert_eq!(errors(), 1);
    for _ in 0..10 {
        assert!(!set.refetch_for_unknown_kid(0).await);
    }
    assert_eq!(errors(), 1, "throttled for 30 s");
    tokio::time::advance(UNKNOWN_KID_REFETCH_INTERVAL).await;
    assert!(!set.refetch_for_unknown_kid(0).await);
    assert_eq!(errors(), 2);
}

#[test]
fn refresh_jitter_stays_within_a_tenth() {
    let hour = Duration::from_secs(3600);
    assert_eq!(jittered(hour, 0), hour);
    assert_eq!(jittered(hour, u16::MAX), Duration::from_secs(3240));
    let mid = jittered(hour, u16::MAX / 2);
    assert!(mid > Duration::from_secs(3240) && mid < hour);
}
