//! A JWKS document into ready-to-verify keys: which JWKs are usable for the issuer's
//! algorithms, and the public key of each (RSA from `n` and `e` through aws-lc's own encoding,
//! EC from the curve point).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::signature::{
    self as sig, ParsedPublicKey, RsaPublicKeyComponents, VerificationAlgorithm,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::{GENERATIONS, JwksError, Key, Keys};
use crate::config::Algorithm;

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// One JWK, with only the members tollgate reads.
#[derive(Deserialize)]
pub(super) struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    issuer: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Parses a JWKS document into usable keys for `algorithms`. Keys that are not for
/// signatures, lack a `kid`, name another algorithm, or do not parse are left out.
pub fn parse(body: &[u8], algorithms: &[Algorithm]) -> Result<Keys, JwksError> {
    let doc: Document = serde_json::from_slice(body).map_err(JwksError::NotJwks)?;
    let mut by_kid = HashMap::new();
    let mut found = Vec::new();
    for value in doc.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        found.push(format!("{}:{}", jwk.kty, jwk.kid.as_deref().unwrap_or("-")));
        if let Some(key) = usable(&jwk, algorithms) {
            by_kid.insert(key.kid.clone(), Arc::new(key));
        }
    }
    if by_kid.is_empty() {
        return Err(JwksError::NoUsableKey {
            algorithms: algorithms
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(","),
            found: if found.is_empty() {
                "none".into()
            } else {
                found.join(", ")
            },
        });
    }
    Ok(Keys {
        generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
        by_kid,
    })
}

fn usable(jwk: &Jwk, algorithms: &[Algorithm]) -> Option<Key> {
    // An encryption key must never verify a signature.
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let kid = jwk.kid.clone()?;
    let alg = match &jwk.alg {
        None => None,
        Some(name) => Some(Algorithm::from_name(name)?),
    };
    let verifiers: Vec<(Algorithm, ParsedPublicKey)> = algorithms
        .iter()
        .filter(|a| alg.is_none_or(|own| own == **a))
        .filter_map(|&a| Some((a, public_key(jwk, a)?)))
        .collect();
    if verifiers.is_empty() {
        return None;
    }
    Some(Key {
        kid,
        alg,
        issuer: jwk.issuer.clone(),
        verifiers,
    })
}

/// The aws-lc-rs verification algorithm for a JOSE algorithm. RSA keys under 2048 bits are
/// refused by these parameters.
pub fn verification_algorithm(alg: Algorithm) -> &'static dyn VerificationAlgorithm {
    match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &sig::ED25519,
    }
}

/// The key in the form aws-lc-rs parses, if the key type fits the algorithm.
pub(super) fn public_key(jwk: &Jwk, alg: Algorithm) -> Option<ParsedPublicKey> {
    let b64 = |s: &Option<String>| URL_SAFE_NO_PAD.decode(s.as_deref()?).ok();
    let bytes = match (jwk.kty.as_str(), alg) {
        (
            "RSA",
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => {
            let n = b64(&jwk.n)?;
            // 2048 to 8192 bits, as the verification parameters require: refuse at load
            // time rather than failing every signature later.
            let bits = n.iter().skip_while(|&&b| b == 0).count() * 8;
            if !(2048..=8192).contains(&bits) {
                return None;
            }
            rsa_public_key(&n, &b64(&jwk.e)?)?
        }
        ("EC", Algorithm::ES256 | Algorithm::ES384) => {
            let (curve, len) = if alg == Algorithm::ES256 {
                ("P-256", 32)
            } else {
                ("P-384", 48)
            };
            let (x, y) = (b64(&jwk.x)?, b64(&jwk.y)?);
            if jwk.crv.as_deref() != Some(curve) || x.len() != len || y.len() != len {
                return None;
            }
            [&[0x04][..], &x, &y].concat()
        }
        ("OKP", Algorithm::EdDSA) if jwk.crv.as_deref() == Some("Ed25519") => b64(&jwk.x)?,
        _ => return None,
    };
    ParsedPublicKey::new(verification_algorithm(alg), bytes).ok()
}

/// The X.509 `SubjectPublicKeyInfo` of the RSA key (`n`, `e`), encoded by aws-lc from the
/// components. `RsaPublicKeyComponents::to_parsed_public_key` would skip the encoding, but also
/// aws-lc's `RSA_check_key`, which `ParsedPublicKey::new` runs on parsing: an even modulus, or
/// an exponent of 1, even or above 2^33, would then be taken as a key instead of refused.
fn rsa_public_key(n: &[u8], e: &[u8]) -> Option<Vec<u8>> {
    // JWK integers are minimal (RFC 7518 §6.3.1), but a leading zero was always accepted;
    // aws-lc takes components without one.
    let minimal = |b: &[u8]| b.iter().position(|&x| x != 0).map(|i| b[i..].to_vec());
    RsaPublicKeyComponents {
        n: minimal(n)?,
        e: minimal(e)?,
    }
    .as_der()
    .ok()
    .map(|der: PublicKeyX509Der<'static>| der.as_ref().to_vec())
}
