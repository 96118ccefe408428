use super::parse::{Jwk, public_key};
use super::*;
use crate::dev::issuer::SigningKey;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

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
        groups_overage: config::GroupsOverage::Deny,
    }
}

/// The hand-written encoder RSA keys went through before `rsa_public_key`: the DER of a PKCS#1
/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`. Kept as the
/// reference of the differential tests below.
fn former_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let trimmed = match bytes.iter().position(|&b| b != 0) {
            Some(i) => &bytes[i..],
            None => &[0][..],
        };
        let mut content = Vec::new();
        if trimmed[0] & 0x80 != 0 {
            content.push(0);
        }
        content.extend_from_slice(trimmed);
        tlv(0x02, &content)
    }
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(content);
        out
    }
    tlv(0x30, &[integer(n), integer(e)].concat())
}

/// What `public_key` did for an RSA JWK before: the size rule, then the hand-written DER.
fn former_rsa_key(n: &[u8], e: &[u8], alg: Algorithm) -> Option<ParsedPublicKey> {
    let bits = n.iter().skip_while(|&&b| b == 0).count() * 8;
    if !(2048..=8192).contains(&bits) {
        return None;
    }
    ParsedPublicKey::new(verification_algorithm(alg), former_der(n, e)).ok()
}

fn rsa_jwk(n: &[u8], e: &[u8]) -> Jwk {
    serde_json::from_value(serde_json::json!({
        "kty": "RSA", "kid": "k",
        "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e),
    }))
    .unwrap()
}

/// The RSA algorithms: every algorithm with an RSA padding.
fn rsa_algorithms() -> impl Iterator<Item = Algorithm> {
    Algorithm::ALL
        .into_iter()
        .filter(|&a| crate::jose::rsa_padding(a).is_some())
}

/// The same keys accepted and refused, and the same signatures verified, by the former
/// encoder and by aws-lc's components encoder.
fn assert_as_before(n: &[u8], e: &[u8], signatures: &[(Algorithm, &[u8], Vec<u8>)]) {
    let jwk = rsa_jwk(n, e);
    assert_eq!(rsa_algorithms().count(), 6, "RS256-512 and PS256-512");
    for alg in rsa_algorithms() {
        let (before, now) = (former_rsa_key(n, e, alg), public_key(&jwk, alg));
        assert_eq!(
            before.is_some(),
            now.is_some(),
            "{alg} n={} e={}",
            hex::encode(n),
            hex::encode(e)
        );
        let (Some(before), Some(now)) = (before, now) else {
            continue;
        };
        for (signed_with, message, signature) in signatures {
            let mut tampered = signature.clone();
            if let Some(b) = tampered.last_mut() {
                *b ^= 1;
            }
            for sig in [signature, &tampered] {
                let (b, a) = (
                    before.verify_sig(message, sig),
                    now.verify_sig(message, sig),
                );
                assert_eq!(b.is_ok(), a.is_ok(), "{alg} on a {signed_with} signature");
            }
        }
    }
}

/// RSA keys from rcgen (as the client-certificate tests make them) and from the dev issuer,
/// their signatures in every RSA algorithm, and variants of their components: leading zeros,
/// every kind of exponent aws-lc refuses, an even modulus.
#[test]
fn rsa_keys_verify_as_with_the_former_der_encoder() {
    let rcgen = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let from_rcgen = aws_lc_rs::rsa::KeyPair::from_pkcs8(&rcgen.serialize_der()).unwrap();
    let dev = SigningKey::generate(Algorithm::RS256, "dev").unwrap();
    let dev_pem = dev.to_pem().unwrap();
    let dev_der = base64::engine::general_purpose::STANDARD
        .decode(
            dev_pem
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    let from_dev = aws_lc_rs::rsa::KeyPair::from_pkcs8(&dev_der).unwrap();
    let three_k = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa3072).unwrap();
    let message: &[u8] = b"header.payload";
    for key in [&from_rcgen, &from_dev, &three_k] {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let signatures: Vec<(Algorithm, &[u8], Vec<u8>)> = rsa_algorithms()
            .map(|alg| {
                let padding = crate::jose::rsa_padding(alg).unwrap();
                let mut out = vec![0; key.public_modulus_len()];
                key.sign(padding, &rng, message, &mut out).unwrap();
                (alg, message, out)
            })
            .collect();
        let public = aws_lc_rs::signature::KeyPair::public_key(key);
        let n = public.modulus().big_endian_without_leading_zero().to_vec();
        let e = public.exponent().big_endian_without_leading_zero().to_vec();
        let mut even = n.clone();
        *even.last_mut().unwrap() &= 0xfe;
        let variants: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (n.clone(), e.clone()),
            ([&[0][..], &n].concat(), e.clone()),
            ([&[0, 0][..], &n].concat(), [&[0][..], &e].concat()),
            (n.clone(), vec![3]),
            (n.clone(), vec![1]),
            (n.clone(), vec![2]),
            (n.clone(), vec![1, 0, 0]),
            (n.clone(), vec![1, 0, 0, 0, 1]),
            (n.clone(), vec![2, 0, 0, 0, 1]),
            (n.clone(), vec![0]),
            (n.clone(), vec![]),
            (even, e.clone()),
            (n[1..].to_vec(), e.clone()),
        ];
        for (n, e) in variants {
            assert_as_before(&n, &e, &signatures);
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
    /// Arbitrary components, around the accepted sizes: accepted and refused alike.
    #[test]
    fn arbitrary_rsa_components_are_judged_as_before(
        zeros in 0usize..3,
        n in proptest::collection::vec(proptest::prelude::any::<u8>(), 250..=520),
        e in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..=6),
        signature in proptest::collection::vec(proptest::prelude::any::<u8>(), 256),
    ) {
        let n = [vec![0; zeros], n].concat();
        assert_as_before(&n, &e, &[(Algorithm::RS256, b"m", signature)]);
    }
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
