use super::*;

#[test]
fn rfc7638_thumbprint() {
    // The example of RFC 7638 §3.1.
    let jwk = json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"
    });
    assert_eq!(
        thumbprint(&jwk),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn a_created_key_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dev.pem");
    let first = SigningKey::load_or_create(&path, Algorithm::RS256).unwrap();
    let again = SigningKey::load_or_create(&path, Algorithm::RS256).unwrap();
    assert_eq!(first.jwk(), again.jwk());
    assert_eq!(first.kid, thumbprint(&first.jwk()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// The token the issuer made before it signed through `jose`, for the deterministic
/// algorithms (RS256 and EdDSA; PSS and ECDSA signatures are randomised): byte for byte.
#[test]
fn minted_tokens_are_those_of_the_former_signer() {
    let claims = json!({"sub": "s", "aud": "a", "exp": 1});
    let extra = json!({"typ": "at+jwt", "x": 1});
    for alg in [Algorithm::RS256, Algorithm::EdDSA] {
        let key = SigningKey::generate(alg, "k").unwrap();
        let der = STANDARD
            .decode(
                key.to_pem()
                    .unwrap()
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap();
        let mut header = json!({ "alg": alg.as_str(), "typ": "JWT", "kid": "k" });
        for (k, v) in extra.as_object().unwrap() {
            header[k] = v.clone();
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = if alg == Algorithm::RS256 {
            let k = RsaKeyPair::from_pkcs8(&der).unwrap();
            let mut out = vec![0; k.public_modulus_len()];
            k.sign(
                &sig::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut out,
            )
            .unwrap();
            out
        } else {
            let k = Ed25519KeyPair::from_pkcs8(&der).unwrap();
            k.sign(input.as_bytes()).as_ref().to_vec()
        };
        let former = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
        assert_eq!(key.mint(&claims, &extra).unwrap(), former, "{alg}");
    }
}

#[test]
fn pem_round_trip_keeps_the_public_key() {
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let key = SigningKey::generate(alg, "k").unwrap();
        let again = SigningKey::from_pem(&key.to_pem().unwrap(), alg, "k").unwrap();
        assert_eq!(key.jwk(), again.jwk(), "{alg}");
    }
}

#[test]
fn keys_verify_their_own_signatures_only_and_are_found_by_kid() {
    for alg in [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ] {
        let key = SigningKey::generate(alg, "a").unwrap();
        let signature = key.sign(b"message").unwrap();
        assert!(key.verify(b"message", &signature), "{alg}");
        assert!(!key.verify(b"massage", &signature), "{alg}");
        let other = SigningKey::generate(alg, "b").unwrap();
        assert!(!other.verify(b"message", &signature), "{alg}");
    }
    let issuer = LocalIssuer::new(
        DEV_ISSUER,
        SigningKey::generate(Algorithm::RS256, "old").unwrap(),
    );
    issuer.rotate(SigningKey::generate(Algorithm::RS256, "new").unwrap());
    assert_eq!(
        issuer.key("old").map(|k| k.kid.clone()).as_deref(),
        Some("old")
    );
    assert!(issuer.key("gone").is_none());
    issuer.retire_old_keys();
    assert!(issuer.key("old").is_none());
}
