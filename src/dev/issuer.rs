//! The local development issuer: signing keys, a JWKS and discovery document, and `mint()`.
//!
//! `tollgate demo`, `tollgate dev token` and the tests all mint tokens here, so the code that
//! makes test tokens is the code the tool ships with. It is for local work only: keys are
//! generated on the spot or kept in a file next to the user's configuration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use parking_lot::RwLock;
use serde_json::{Value, json};

use super::http::LoopbackServer;
use crate::config::Algorithm;
use crate::inbound::jwks::verification_algorithm;
use crate::jose::{self, PrivateKey};

/// Where `tollgate dev` serves the local issuer, and the `iss` of its tokens.
pub const DEV_ISSUER: &str = "http://127.0.0.1:8079/";
/// The default audience of development tokens.
pub const DEV_AUDIENCE: &str = "api://tollgate-dev";

/// A private signing key with its `kid`.
pub struct SigningKey {
    /// Key id, published in the JWKS and written in token headers.
    pub kid: String,
    /// The algorithm it signs with.
    pub alg: Algorithm,
    inner: PrivateKey,
}

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The crypto library refused.
    #[error("key generation or parsing failed")]
    Crypto,
    /// The PEM text holds no private key.
    #[error("no PRIVATE KEY block in the PEM text")]
    NoPem,
    /// The key file could not be written.
    #[error("writing the key file: {0}")]
    Io(#[source] std::io::Error),
}

/// Writes `bytes` to a new file at `path` readable by its owner only (mode 0600).
pub(super) fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// The RFC 7638 thumbprint of a public JWK: SHA-256 over its required members in
/// lexicographic order, base64url.
pub fn thumbprint(jwk: &Value) -> String {
    let members: &[&str] = match jwk["kty"].as_str() {
        Some("RSA") => &["e", "kty", "n"],
        Some("EC") => &["crv", "kty", "x", "y"],
        _ => &["crv", "kty", "x"],
    };
    let fields: Vec<String> = members
        .iter()
        .map(|m| format!("\"{m}\":{}", jwk[*m]))
        .collect();
    let canonical = format!("{{{}}}", fields.join(","));
    URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref(),
    )
}

impl SigningKey {
    /// A fresh key for `alg` (RSA 2048 for RS*/PS*, P-256/P-384, Ed25519).
    pub fn generate(alg: Algorithm, kid: &str) -> Result<SigningKey, KeyError> {
        let inner = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => PrivateKey::Rsa(
                RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Crypto)?,
            ),
            Algorithm::ES256 => PrivateKey::Ec(
                EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| KeyError::Crypto)?,
            ),
            Algorithm::ES384 => PrivateKey::Ec(
                EcdsaKeyPair::generate(&sig::ECDSA_P384_SHA384_FIXED_SIGNING)
                    .map_err(|_| KeyError::Crypto)?,
            ),
            Algorithm::EdDSA => {
                PrivateKey::Ed(Ed25519KeyPair::generate().map_err(|_| KeyError::Crypto)?)
            }
        };
        Ok(SigningKey {
            kid: kid.to_owned(),
            alg,
            inner,
        })
    }

    /// The private key as PKCS#8 PEM, to keep the development issuer stable across runs.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        let der = match &self.inner {
            PrivateKey::Rsa(k) => k.as_der().map_err(|_| KeyError::Crypto)?.as_ref().to_vec(),
            PrivateKey::Ec(k) => k
                .to_pkcs8v1()
                .map_err(|_| KeyError::Crypto)?
                .as_ref()
                .to_vec(),
            PrivateKey::Ed(k) => k
                .to_pkcs8()
                .map_err(|_| KeyError::Crypto)?
                .as_ref()
                .to_vec(),
        };
        let body = STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        Ok(format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        ))
    }

    /// Reads a key written by [`SigningKey::to_pem`].
    pub fn from_pem(pem: &str, alg: Algorithm, kid: &str) -> Result<SigningKey, KeyError> {
        let body: String = pem
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        let der = STANDARD.decode(body.trim()).map_err(|_| KeyError::NoPem)?;
        let inner = match alg {
            Algorithm::ES256 => PrivateKey::Ec(
                EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .map_err(|_| KeyError::Crypto)?,
            ),
            Algorithm::ES384 => PrivateKey::Ec(
                EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P384_SHA384_FIXED_SIGNING, &der)
                    .map_err(|_| KeyError::Crypto)?,
            ),
            Algorithm::EdDSA => {
                PrivateKey::Ed(Ed25519KeyPair::from_pkcs8(&der).map_err(|_| KeyError::Crypto)?)
            }
            _ => PrivateKey::Rsa(RsaKeyPair::from_pkcs8(&der).map_err(|_| KeyError::Crypto)?),
        };
        Ok(SigningKey {
            kid: kid.to_owned(),
            alg,
            inner,
        })
    }

    /// Reads the key at `path`, or creates one there (mode 0600) if the file does not exist,
    /// so tokens minted today still verify tomorrow. Its `kid` is its RFC 7638 thumbprint.
    pub fn load_or_create(path: &std::path::Path, alg: Algorithm) -> Result<SigningKey, KeyError> {
        let mut key = match std::fs::read_to_string(path) {
            Ok(pem) => SigningKey::from_pem(&pem, alg, "")?,
            Err(_) => {
                let key = SigningKey::generate(alg, "")?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(KeyError::Io)?;
                }
                write_private(path, key.to_pem()?.as_bytes()).map_err(KeyError::Io)?;
                key
            }
        };
        key.kid = thumbprint(&key.jwk());
        Ok(key)
    }

    /// The public key as a JWK (`use: sig`, with `kid` and `alg`).
    pub fn jwk(&self) -> Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match &self.inner {
            PrivateKey::Rsa(k) => {
                let public = k.public_key();
                json!({
                    "kty": "RSA", "use": "sig", "kid": self.kid, "alg": self.alg.as_str(),
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                })
            }
            PrivateKey::Ec(k) => {
                let point = k.public_key().as_ref();
                let half = (point.len() - 1) / 2;
                let crv = if self.alg == Algorithm::ES256 {
                    "P-256"
                } else {
                    "P-384"
                };
                json!({
                    "kty": "EC", "use": "sig", "kid": self.kid, "alg": self.alg.as_str(), "crv": crv,
                    "x": b64(&point[1..1 + half]), "y": b64(&point[1 + half..]),
                })
            }
            PrivateKey::Ed(k) => json!({
                "kty": "OKP", "use": "sig", "kid": self.kid, "alg": "EdDSA", "crv": "Ed25519",
                "x": b64(k.public_key().as_ref()),
            }),
        }
    }

    /// Whether `signature` over `message` verifies with this key's public key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let public = match &self.inner {
            PrivateKey::Rsa(k) => k.public_key().as_ref().to_vec(),
            PrivateKey::Ec(k) => k.public_key().as_ref().to_vec(),
            PrivateKey::Ed(k) => k.public_key().as_ref().to_vec(),
        };
        sig::UnparsedPublicKey::new(verification_algorithm(self.alg), public)
            .verify(message, signature)
            .is_ok()
    }

    /// Signs `message` with this key's algorithm.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        jose::sign(&self.inner, self.alg, message).map_err(|_| KeyError::Crypto)
    }

    /// A signed token: header `{alg, typ: "JWT", kid}` plus `extra_header` members (which
    /// win), and `claims` as the payload.
    pub fn mint(&self, claims: &Value, extra_header: &Value) -> Result<String, KeyError> {
        let mut header = serde_json::Map::new();
        header.insert("kid".into(), Value::from(self.kid.as_str()));
        if let Some(extra) = extra_header.as_object() {
            for (k, v) in extra {
                header.insert(k.clone(), v.clone());
            }
        }
        jose::encode(&self.inner, self.alg, &header, claims).map_err(|_| KeyError::Crypto)
    }
}

/// What a minted token says; `claims()` fills in `iss`, `iat`, `nbf`, `exp` and a `uti`.
#[derive(Clone, Debug, Default)]
pub struct TokenSpec {
    /// `aud`.
    pub audience: String,
    /// `roles`.
    pub roles: Vec<String>,
    /// `scp` (joined with spaces).
    pub scopes: Vec<String>,
    /// `tid`.
    pub tenant: Option<String>,
    /// `oid` (and `sub`).
    pub object_id: Option<String>,
    /// `azp` (v2 client app).
    pub client_app: Option<String>,
    /// Lifetime from now.
    pub lifetime: Duration,
    /// Any other claims, added last (they win).
    pub extra: serde_json::Map<String, Value>,
}

impl TokenSpec {
    /// The payload for issuer `iss` at `now`.
    pub fn claims(&self, iss: &str, now: SystemTime) -> Value {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut claims = json!({
            "iss": iss, "aud": self.audience, "iat": now, "nbf": now,
            "exp": now + self.lifetime.as_secs(), "ver": "2.0",
            "uti": format!("dev-{now}"),
        });
        let Some(map) = claims.as_object_mut() else {
            return claims;
        };
        if !self.roles.is_empty() {
            map.insert("roles".into(), json!(self.roles));
        }
        if !self.scopes.is_empty() {
            map.insert("scp".into(), json!(self.scopes.join(" ")));
        }
        for (name, value) in [
            ("tid", &self.tenant),
            ("oid", &self.object_id),
            ("sub", &self.object_id),
            ("azp", &self.client_app),
        ] {
            if let Some(v) = value {
                map.insert(name.into(), json!(v));
            }
        }
        for (k, v) in &self.extra {
            map.insert(k.clone(), v.clone());
        }
        claims
    }
}

/// A local issuer: an `iss` value, signing keys (the first signs), and their JWKS.
pub struct LocalIssuer {
    /// The `iss` of minted tokens.
    pub issuer: String,
    keys: RwLock<Vec<Arc<SigningKey>>>,
}

impl LocalIssuer {
    /// An issuer named `issuer` signing with `key`.
    pub fn new(issuer: &str, key: SigningKey) -> Arc<LocalIssuer> {
        Arc::new(LocalIssuer {
            issuer: issuer.to_owned(),
            keys: RwLock::new(vec![Arc::new(key)]),
        })
    }

    /// The key that signs now.
    pub fn signing_key(&self) -> Arc<SigningKey> {
        self.keys.read()[0].clone()
    }

    /// The published key with `kid`.
    pub fn key(&self, kid: &str) -> Option<Arc<SigningKey>> {
        self.keys.read().iter().find(|k| k.kid == kid).cloned()
    }

    /// Makes `key` the signing key; the old keys stay published (a rotation).
    pub fn rotate(&self, key: SigningKey) {
        self.keys.write().insert(0, Arc::new(key));
    }

    /// Stops publishing every key but the signing one.
    pub fn retire_old_keys(&self) {
        self.keys.write().truncate(1);
    }

    /// A token for `spec`, signed now.
    pub fn mint(&self, spec: &TokenSpec) -> Result<String, KeyError> {
        self.signing_key()
            .mint(&spec.claims(&self.issuer, SystemTime::now()), &json!({}))
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.keys.read().iter().map(|k| k.jwk()).collect::<Vec<_>>() })
    }

    /// The discovery document, for an issuer served at `base` (`http://127.0.0.1:port`).
    pub fn discovery(&self, base: &str) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{base}/keys"),
            "id_token_signing_alg_values_supported": [self.signing_key().alg.as_str()],
        })
    }

    /// The response for a path of the issuer's HTTP surface: discovery and JWKS.
    pub fn respond(&self, path: &str, base: &str) -> Option<Value> {
        match path {
            "/.well-known/openid-configuration" => Some(self.discovery(base)),
            "/keys" => Some(self.jwks()),
            _ => None,
        }
    }

    /// Serves discovery and JWKS on `addr` (port 0 for any) until the server is stopped or
    /// dropped.
    pub async fn serve(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<LoopbackServer> {
        let issuer = self.clone();
        let base = Arc::new(std::sync::OnceLock::<String>::new());
        let handler = {
            let base = base.clone();
            move |req: Request<Incoming>| {
                let body = issuer.respond(req.uri().path(), base.get().map_or("", String::as_str));
                async move { json_response(body) }
            }
        };
        let server = LoopbackServer::start(addr, handler).await?;
        let _ = base.set(format!("http://{}", server.addr));
        Ok(server)
    }
}

fn json_response(body: Option<Value>) -> Response<Full<Bytes>> {
    let (status, body) = match body {
        Some(v) => (StatusCode::OK, v.to_string()),
        None => (
            StatusCode::NOT_FOUND,
            "{\"error\":\"not_found\"}".to_owned(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests;
