//! Signing JWTs: compact JWS (RFC 7515 §7.1, `header.payload.signature`) with a private key.
//!
//! The one signer of every token tollgate makes: the certificate credential's client assertions
//! (`credential::client_certificate`) and the development issuer's tokens
//! (`dev::issuer`). It sits below both so that egress never imports `dev`, and it depends on
//! nothing in the crate but `config::Algorithm`.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::config::Algorithm;

/// A private key that signs JWS.
pub enum PrivateKey {
    /// RSA: RS256/384/512 (PKCS#1 v1.5) and PS256/384/512 (PSS).
    Rsa(RsaKeyPair),
    /// ECDSA: ES256 with a P-256 key, ES384 with a P-384 key.
    Ec(EcdsaKeyPair),
    /// Ed25519: EdDSA.
    Ed(Ed25519KeyPair),
}

/// Why a token could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key cannot make signatures of this algorithm (an EC key asked for RS256, say).
    #[error("this key cannot sign {0}")]
    WrongKey(Algorithm),
    /// The crypto library refused.
    #[error("signing failed")]
    Crypto,
}

/// The RSA signing padding of a JWS algorithm; `None` for a non-RSA one.
pub fn rsa_padding(alg: Algorithm) -> Option<&'static dyn sig::RsaEncoding> {
    Some(match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_SHA512,
        Algorithm::ES256 | Algorithm::ES384 | Algorithm::EdDSA => return None,
    })
}

/// The signature over `message` by `key` with JWS algorithm `alg`, in JWS form (ECDSA as the
/// fixed-width `r || s`, RFC 7518 §3.4).
pub fn sign(key: &PrivateKey, alg: Algorithm, message: &[u8]) -> Result<Vec<u8>, SignError> {
    let rng = SystemRandom::new();
    match key {
        PrivateKey::Rsa(k) => {
            let padding = rsa_padding(alg).ok_or(SignError::WrongKey(alg))?;
            let mut out = vec![0; k.public_modulus_len()];
            k.sign(padding, &rng, message, &mut out)
                .map_err(|_| SignError::Crypto)?;
            Ok(out)
        }
        PrivateKey::Ec(k) => {
            let curve = match alg {
                Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
                _ => return Err(SignError::WrongKey(alg)),
            };
            // The curve and hash are the key's own: ES256 from a P-384 key would not verify.
            if k.algorithm() != curve {
                return Err(SignError::WrongKey(alg));
            }
            Ok(k.sign(&rng, message)
                .map_err(|_| SignError::Crypto)?
                .as_ref()
                .to_vec())
        }
        PrivateKey::Ed(k) if alg == Algorithm::EdDSA => Ok(k.sign(message).as_ref().to_vec()),
        PrivateKey::Ed(_) => Err(SignError::WrongKey(alg)),
    }
}

/// A signed token: the header `{"alg": alg, "typ": "JWT"}` followed by the members of
/// `header` (which win over those two: the tests forge headers this way), the payload
/// `claims`, and the signature by `key`, each part base64url without padding.
pub fn encode(
    key: &PrivateKey,
    alg: Algorithm,
    header: &Map<String, Value>,
    claims: &Value,
) -> Result<String, SignError> {
    let mut full = Map::new();
    full.insert("alg".into(), Value::from(alg.as_str()));
    full.insert("typ".into(), Value::from("JWT"));
    for (name, value) in header {
        full.insert(name.clone(), value.clone());
    }
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(Value::Object(full).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = sign(key, alg, input.as_bytes())?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{KeyPair, UnparsedPublicKey};
    use serde_json::json;

    use super::*;

    fn rsa() -> PrivateKey {
        PrivateKey::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).unwrap())
    }

    fn ec(alg: &'static sig::EcdsaSigningAlgorithm) -> PrivateKey {
        PrivateKey::Ec(EcdsaKeyPair::generate(alg).unwrap())
    }

    fn public(key: &PrivateKey) -> Vec<u8> {
        match key {
            PrivateKey::Rsa(k) => k.public_key().as_ref().to_vec(),
            PrivateKey::Ec(k) => k.public_key().as_ref().to_vec(),
            PrivateKey::Ed(k) => k.public_key().as_ref().to_vec(),
        }
    }

    fn part(token: &str, i: usize) -> Vec<u8> {
        URL_SAFE_NO_PAD
            .decode(token.split('.').nth(i).unwrap())
            .unwrap()
    }

    #[test]
    fn tokens_verify_with_the_public_key() {
        let cases = [
            (
                rsa(),
                Algorithm::RS256,
                &sig::RSA_PKCS1_2048_8192_SHA256 as &dyn sig::VerificationAlgorithm,
            ),
            (rsa(), Algorithm::RS512, &sig::RSA_PKCS1_2048_8192_SHA512),
            (rsa(), Algorithm::PS256, &sig::RSA_PSS_2048_8192_SHA256),
            (rsa(), Algorithm::PS384, &sig::RSA_PSS_2048_8192_SHA384),
            (
                ec(&sig::ECDSA_P256_SHA256_FIXED_SIGNING),
                Algorithm::ES256,
                &sig::ECDSA_P256_SHA256_FIXED,
            ),
            (
                ec(&sig::ECDSA_P384_SHA384_FIXED_SIGNING),
                Algorithm::ES384,
                &sig::ECDSA_P384_SHA384_FIXED,
            ),
            (
                PrivateKey::Ed(Ed25519KeyPair::generate().unwrap()),
                Algorithm::EdDSA,
                &sig::ED25519,
            ),
        ];
        for (key, alg, verify) in cases {
            let mut header = Map::new();
            header.insert("kid".into(), json!("k1"));
            let token = encode(&key, alg, &header, &json!({"sub": "s"})).unwrap();
            let head: Value = serde_json::from_slice(&part(&token, 0)).unwrap();
            assert_eq!(
                head,
                json!({"alg": alg.as_str(), "typ": "JWT", "kid": "k1"})
            );
            let claims: Value = serde_json::from_slice(&part(&token, 1)).unwrap();
            assert_eq!(claims, json!({"sub": "s"}));
            let input = token.rsplit_once('.').unwrap().0;
            UnparsedPublicKey::new(verify, public(&key))
                .verify(input.as_bytes(), &part(&token, 2))
                .unwrap_or_else(|_| panic!("{alg}"));
        }
    }

    #[test]
    fn header_members_win() {
        let key = ec(&sig::ECDSA_P256_SHA256_FIXED_SIGNING);
        let mut header = Map::new();
        header.insert("typ".into(), json!("id_token"));
        header.insert("alg".into(), json!("RS256"));
        let token = encode(&key, Algorithm::ES256, &header, &json!({})).unwrap();
        let head: Value = serde_json::from_slice(&part(&token, 0)).unwrap();
        assert_eq!(head, json!({"alg": "RS256", "typ": "id_token"}));
    }

    #[test]
    fn a_key_signs_only_its_own_algorithms() {
        let p384 = ec(&sig::ECDSA_P384_SHA384_FIXED_SIGNING);
        let ed = PrivateKey::Ed(Ed25519KeyPair::generate().unwrap());
        for (key, alg) in [
            (&rsa(), Algorithm::ES256),
            (&rsa(), Algorithm::EdDSA),
            (&p384, Algorithm::ES256),
            (&p384, Algorithm::RS256),
            (&ed, Algorithm::ES256),
        ] {
            assert!(
                matches!(sign(key, alg, b"m"), Err(SignError::WrongKey(a)) if a == alg),
                "{alg}"
            );
        }
    }
}
