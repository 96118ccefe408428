use proptest::prelude::*;

use super::*;

const NAME: &str = "AppServiceAuthSession";

fn pairs(chunks: &[(String, String)]) -> Vec<(String, String)> {
    chunks.to_vec()
}

#[test]
fn a_short_value_is_one_cookie_with_its_count() {
    let chunks = split(NAME, "abc").unwrap();
    assert_eq!(chunks, [(NAME.to_owned(), "1.abc".to_owned())]);
    assert_eq!(join(NAME, &chunks).unwrap(), "abc");
}

#[test]
fn a_missing_a_stale_or_a_doubled_chunk() {
    let value = "x".repeat(9000);
    let chunks = split(NAME, &value).unwrap();
    let names: Vec<&str> = chunks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [NAME, "AppServiceAuthSession1", "AppServiceAuthSession2"]
    );
    // Missing: any but the first.
    for gone in 1..chunks.len() {
        let mut some = pairs(&chunks);
        some.remove(gone);
        assert_eq!(join(NAME, &some), Err(ChunkError::MissingChunk(gone)));
    }
    let mut none = pairs(&chunks);
    none.remove(0);
    assert_eq!(join(NAME, &none), Err(ChunkError::Absent));
    // A chunk left over from a longer session is ignored.
    let mut stale = pairs(&chunks);
    stale.push(("AppServiceAuthSession3".into(), "leftover".into()));
    assert_eq!(join(NAME, &stale).unwrap(), value);
    // Two cookies of one name (another path or domain): neither counts.
    let mut doubled = pairs(&chunks);
    doubled.push(("AppServiceAuthSession1".into(), "y".repeat(10)));
    assert!(matches!(
        join(NAME, &doubled),
        Err(ChunkError::Ambiguous(_))
    ));
}

#[test]
fn the_count_has_one_spelling() {
    for first in [
        "abc",
        ".abc",
        "02.abc",
        "+2.abc",
        "0.abc",
        "26.abc",
        "99999999999999999999.a",
    ] {
        let cookies = vec![(NAME.to_owned(), first.to_owned())];
        assert!(
            matches!(
                join(NAME, &cookies),
                Err(ChunkError::Malformed | ChunkError::MissingChunk(_))
            ),
            "{first}"
        );
    }
    let cookies = vec![(NAME.to_owned(), "1.".to_owned())];
    assert_eq!(join(NAME, &cookies).unwrap(), "");
}

#[test]
fn set_cookie_values_carry_the_attributes_and_clear_stale_chunks() {
    let received = vec![
        (NAME.to_owned(), "3.old".to_owned()),
        ("AppServiceAuthSession1".to_owned(), "old".to_owned()),
        ("AppServiceAuthSession2".to_owned(), "old".to_owned()),
        ("other".to_owned(), "keep".to_owned()),
        ("AppServiceAuthSessionX".to_owned(), "not ours".to_owned()),
    ];
    let attributes = Attributes {
        secure: true,
        max_age: 3600,
    };
    let set = set(NAME, "short", attributes, &received).unwrap();
    assert_eq!(set.len(), 3, "{set:?}");
    let first = Cookie::parse(set[0].clone()).unwrap();
    assert_eq!((first.name(), first.value()), (NAME, "1.short"));
    assert_eq!(first.http_only(), Some(true));
    assert_eq!(first.secure(), Some(true));
    assert_eq!(first.same_site(), Some(SameSite::Lax));
    assert_eq!(first.path(), Some("/"));
    assert_eq!(first.max_age(), Some(cookie::time::Duration::seconds(3600)));
    for stale in &set[1..] {
        let c = Cookie::parse(stale.clone()).unwrap();
        assert!(c.name().starts_with("AppServiceAuthSession"));
        assert_eq!(c.max_age(), Some(cookie::time::Duration::ZERO));
    }
    let cleared = clear(NAME, false, &received);
    assert_eq!(cleared.len(), 3);
    assert!(
        cleared
            .iter()
            .all(|c| !c.contains("Secure") && c.contains("Max-Age=0"))
    );
    assert!(
        !cleared
            .iter()
            .any(|c| c.starts_with("other=") || c.starts_with("AppServiceAuthSessionX="))
    );
}

#[test]
fn cookies_are_read_from_every_cookie_header() {
    let mut headers = HeaderMap::new();
    headers.append(COOKIE, "a=1; AppServiceAuthSession=1.x".parse().unwrap());
    headers.append(COOKIE, "b=2".parse().unwrap());
    let got = received(&headers);
    assert_eq!(got.len(), 3);
    assert_eq!(join(NAME, &got).unwrap(), "x");
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// For any value a session can be and any cookie name, every chunk fits a browser's
    /// limit, the chunks are `NAME`, `NAME1`, ..., and they join back to the value.
    #[test]
    fn chunks_fit_and_join_back(
        len in 0usize..(MAX_CHUNKS * 3900),
        name in "[A-Za-z_][A-Za-z0-9_]{0,40}",
    ) {
        let value: String = "A".repeat(len);
        let chunks = split(&name, &value).unwrap();
        for (i, (n, v)) in chunks.iter().enumerate() {
            prop_assert!(n.len() + 1 + v.len() <= MAX_PAIR_BYTES);
            prop_assert_eq!(n, &if i == 0 { name.clone() } else { format!("{name}{i}") });
        }
        prop_assert_eq!(join(&name, &chunks).unwrap(), value);
        for header in set(&name, &"A".repeat(len), Attributes { secure: true, max_age: 60 }, &[]).unwrap() {
            prop_assert!(header.len() < 4096);
        }
    }
}

#[test]
fn strip_removes_only_tollgates_cookies() {
    use http::HeaderValue;
    let strip_of = |values: &[&'static str]| {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(COOKIE, HeaderValue::from_static(v));
        }
        strip(&mut h, "S");
        h.get_all(COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(strip_of(&["a=1; S=2.x; S1=y; b=2"]), ["a=1; b=2"]);
    assert_eq!(strip_of(&["S=1.x", "TollgateLogin=z; c=3"]), ["c=3"]);
    assert!(strip_of(&["S=1.x; TollgateLogin=z"]).is_empty());
    // Untouched (byte for byte) when neither is there, or only a name that merely looks alike.
    assert_eq!(strip_of(&["a=1;b=2"]), ["a=1;b=2"]);
    assert_eq!(strip_of(&["Session=1;b=2"]), ["Session=1;b=2"]);
    assert_eq!(strip_of(&["SX=1"]), ["SX=1"]);
}
