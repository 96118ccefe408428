use proptest::prelude::*;

use super::*;

const A: [u8; KEY_LEN] = [1; KEY_LEN];
const B: [u8; KEY_LEN] = [2; KEY_LEN];
const C: [u8; KEY_LEN] = [3; KEY_LEN];

fn ring(keys: &[[u8; KEY_LEN]]) -> KeyRing {
    KeyRing::new(keys).unwrap()
}

#[test]
fn a_sealed_value_opens_for_its_purpose_only() {
    let r = ring(&[A]);
    let sealed = r.seal("AppServiceAuthSession", b"session").unwrap();
    assert_eq!(
        r.open("AppServiceAuthSession", &sealed).unwrap(),
        b"session"
    );
    assert_eq!(r.open("tollgate_login", &sealed), Err(OpenError::Forged));
    // Random nonces: the same plaintext seals differently every time.
    assert_ne!(sealed, r.seal("AppServiceAuthSession", b"session").unwrap());
    // Base64url without padding: a cookie value as it is.
    assert!(
        sealed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
}

#[test]
fn rotation_new_keys_seal_old_keys_still_open() {
    let before = ring(&[A]);
    let old = before.seal("s", b"old session").unwrap();
    // Step 1: B added behind A everywhere; A still seals.
    // Step 2: B moved to the front: it seals, A still opens.
    let during = ring(&[B, A]);
    assert_eq!(during.open("s", &old).unwrap(), b"old session");
    let new = during.seal("s", b"new session").unwrap();
    assert_eq!(ring(&[B]).open("s", &new).unwrap(), b"new session");
    // A replica still on the old ring cannot open what the new key sealed.
    assert_eq!(before.open("s", &new), Err(OpenError::UnknownKey));
    // Step 3: A removed: its sessions are over.
    assert_eq!(ring(&[B]).open("s", &old), Err(OpenError::UnknownKey));
    // Another deployment's keys open nothing of these.
    assert_eq!(ring(&[C]).open("s", &new), Err(OpenError::UnknownKey));
}

#[test]
fn garbage_is_malformed() {
    let r = ring(&[A]);
    for bad in ["", "x", "not base64!", "AAAA", &"A".repeat(40)] {
        assert!(r.open("s", bad).is_err(), "{bad:?}");
    }
    assert_eq!(r.open("s", "AAAA"), Err(OpenError::Malformed));
}

#[test]
fn keys_from_the_configuration() {
    let a = STANDARD.encode(A);
    let b_url = URL_SAFE_NO_PAD.encode(B);
    let r = KeyRing::from_base64(&[a.as_str(), b_url.as_str()]).unwrap();
    let sealed = ring(&[B]).seal("s", b"x").unwrap();
    assert_eq!(r.open("s", &sealed).unwrap(), b"x");
    let none: [&str; 0] = [];
    assert_eq!(KeyRing::from_base64(&none).err(), Some(KeyError::Empty));
    assert_eq!(
        KeyRing::from_base64(&["not base64 at all!"]).err(),
        Some(KeyError::NotBase64(0))
    );
    assert_eq!(
        KeyRing::from_base64(&[a.as_str(), &STANDARD.encode([0u8; 16])]).err(),
        Some(KeyError::WrongLength { index: 1, len: 16 })
    );
    assert_eq!(
        KeyRing::from_base64(&[a.as_str(), a.as_str()]).err(),
        Some(KeyError::Duplicate(1))
    );
    let fresh = new_key().unwrap();
    assert_eq!(STANDARD.decode(&fresh).unwrap().len(), KEY_LEN);
    assert_ne!(fresh, new_key().unwrap());
    assert!(KeyRing::from_base64(&[fresh]).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_plaintext_round_trips(plaintext in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let r = ring(&[A, B]);
        let sealed = r.seal("s", &plaintext).unwrap();
        prop_assert_eq!(r.open("s", &sealed).unwrap(), plaintext);
    }

    /// Any change to a sealed value, a flipped bit anywhere or a cut at any length, is
    /// refused: never a different plaintext.
    #[test]
    fn no_change_to_a_sealed_value_opens(
        plaintext in proptest::collection::vec(any::<u8>(), 0..512),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
        cut in any::<prop::sample::Index>(),
    ) {
        let r = ring(&[A, B]);
        let sealed = r.seal("s", &plaintext).unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        prop_assert!(r.open("s", &URL_SAFE_NO_PAD.encode(&bytes)).is_err());
        let short = &sealed[..cut.index(sealed.len())];
        prop_assert!(r.open("s", short).is_err());
    }
}
