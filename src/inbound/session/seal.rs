//! Sealing: AES-256-GCM (authenticated encryption, from aws-lc-rs) under a ring of keys. The
//! first key seals; every key opens, so a new key is rolled out first as a second key on
//! every replica, then moved to the front, and the old one removed once no session sealed
//! with it can still be alive.
//!
//! A sealed value is base64url (no padding) of `version (1) || key id (4) || nonce (12) ||
//! ciphertext || tag (16)`. The key id is the first four bytes of a SHA-256 of the key, so
//! opening tries one key, and a value sealed under a key no longer in the ring is refused as
//! such. Each value is bound to its purpose (the cookie's name) as associated data: a login
//! cookie cannot be replayed as a session cookie.
//!
//! Nonces are random (96 bits from the system's generator). NIST SP 800-38D bounds random
//! nonces to 2^32 seals per key; a session is sealed once per login and once per refresh,
//! orders of magnitude below that, and keys are rotated long before.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// The length of a session key: 32 bytes (AES-256).
pub const KEY_LEN: usize = 32;
/// The format version, the first byte of every sealed value.
const VERSION: u8 = 1;
/// The length of a key id.
const KEY_ID_LEN: usize = 4;
/// The length of the GCM tag.
const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to its plaintext, before base64.
pub const OVERHEAD: usize = 1 + KEY_ID_LEN + NONCE_LEN + TAG_LEN;

/// Keys that seal and open session values.
pub struct KeyRing {
    keys: Vec<RingKey>,
    random: SystemRandom,
}

struct RingKey {
    id: [u8; KEY_ID_LEN],
    key: LessSafeKey,
}

/// Why a key ring could not be made.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key at all.
    #[error("at least one session key is needed")]
    Empty,
    /// A key is not base64.
    #[error("session key {0} is not base64 (make one with `tollgate dev session-key`)")]
    NotBase64(usize),
    /// A key is not 32 bytes.
    #[error(
        "session key {index} is {len} bytes; it must be 32 (make one with `tollgate dev session-key`)"
    )]
    WrongLength {
        /// Its position in the list, from 0.
        index: usize,
        /// Its length.
        len: usize,
    },
    /// Two keys are the same.
    #[error("session key {0} is listed twice")]
    Duplicate(usize),
}

/// Why a sealed value could not be opened. All mean the same to a caller: no session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not base64url, too short, or another format version.
    #[error("not a sealed value")]
    Malformed,
    /// Sealed under a key that is not in the ring (removed, or another deployment's).
    #[error("sealed under a key that is not configured")]
    UnknownKey,
    /// The tag does not verify: tampered, truncated, or sealed for another purpose.
    #[error("does not verify")]
    Forged,
}

/// The system's random generator failed; nothing was sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the system random generator failed")]
pub struct SealError;

impl KeyRing {
    /// A ring of `keys`; the first seals.
    pub fn new(keys: &[[u8; KEY_LEN]]) -> Result<KeyRing, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut ring = Vec::with_capacity(keys.len());
        for (index, bytes) in keys.iter().enumerate() {
            if keys[..index].contains(bytes) {
                return Err(KeyError::Duplicate(index));
            }
            let unbound =
                UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| KeyError::WrongLength {
                    index,
                    len: bytes.len(),
                })?;
            ring.push(RingKey {
                id: key_id(bytes),
                key: LessSafeKey::new(unbound),
            });
        }
        Ok(KeyRing {
            keys: ring,
            random: SystemRandom::new(),
        })
    }

    /// A ring from the configuration's base64 keys (standard or URL-safe alphabet, padded or
    /// not), 32 bytes each.
    pub fn from_base64(keys: &[impl AsRef<str>]) -> Result<KeyRing, KeyError> {
        let mut raw = Vec::with_capacity(keys.len());
        for (index, text) in keys.iter().enumerate() {
            let text = text.as_ref().trim();
            let bytes = STANDARD
                .decode(text)
                .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
                .map_err(|_| KeyError::NotBase64(index))?;
            let key: [u8; KEY_LEN] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyError::WrongLength {
                        index,
                        len: bytes.len(),
                    })?;
            raw.push(key);
        }
        KeyRing::new(&raw)
    }

    /// `plaintext` sealed under the first key for `purpose`, as base64url text.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<String, SealError> {
        let sealer = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| SealError)?;
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.push(VERSION);
        out.extend_from_slice(&sealer.id);
        out.extend_from_slice(&nonce);
        let header = out.len();
        out.extend_from_slice(plaintext);
        let tag = sealer
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(purpose)),
                &mut out[header..],
            )
            .map_err(|_| SealError)?;
        out.extend_from_slice(tag.as_ref());
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// The plaintext of a value [`KeyRing::seal`] made for `purpose` with a key of this ring.
    pub fn open(&self, purpose: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let mut bytes = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| OpenError::Malformed)?;
        if bytes.len() < OVERHEAD || bytes[0] != VERSION {
            return Err(OpenError::Malformed);
        }
        let id = &bytes[1..1 + KEY_ID_LEN];
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(OpenError::UnknownKey)?;
        let nonce_at = 1 + KEY_ID_LEN;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[nonce_at..nonce_at + NONCE_LEN]);
        let body = nonce_at + NONCE_LEN;
        let plaintext_len = key
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(purpose)),
                &mut bytes[body..],
            )
            .map_err(|_| OpenError::Forged)?
            .len();
        bytes.drain(..body);
        bytes.truncate(plaintext_len);
        Ok(bytes)
    }
}

/// A new random session key, base64 (`tollgate dev session-key`).
pub fn new_key() -> Result<String, SealError> {
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new().fill(&mut key).map_err(|_| SealError)?;
    Ok(STANDARD.encode(key))
}

/// The associated data of a value sealed for `purpose`.
fn aad(purpose: &str) -> Vec<u8> {
    let mut aad = b"tollgate/session/1/".to_vec();
    aad.extend_from_slice(purpose.as_bytes());
    aad
}

/// The id of a key: the first bytes of a SHA-256 of it, under a label of its own so the id
/// says nothing usable about the key.
fn key_id(key: &[u8; KEY_LEN]) -> [u8; KEY_ID_LEN] {
    let mut input = b"tollgate session key id/".to_vec();
    input.extend_from_slice(key);
    let d = digest(&SHA256, &input);
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&d.as_ref()[..KEY_ID_LEN]);
    id
}

#[cfg(test)]
mod tests;
