use super::*;

/// Decodes `wire` fed in pieces of `step` bytes: the data, and whether the body ended.
fn decode_in_steps(wire: &[u8], step: usize) -> Result<(Vec<u8>, bool), Error> {
    let mut state = Chunked::Size;
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    for piece in wire.chunks(step) {
        buf.extend_from_slice(piece);
        while let Some(bytes) = state.decode(&mut buf)? {
            data.extend_from_slice(&bytes);
        }
    }
    Ok((data, state == Chunked::Done && buf.is_empty()))
}

#[test]
fn chunked_bodies_decode_whatever_the_read_boundaries() {
    let wire = [
        b"5\r\nhello\r\n1;name=value\r\n \r\nA \r\n0123456789\r\n".as_slice(),
        b"00000000000000000000000000000003\r\nabc\r\n",
        b"0\r\nx-trailer: 1\r\n\r\n",
    ]
    .concat();
    for step in 1..=wire.len() {
        let (data, done) = decode_in_steps(&wire, step).unwrap();
        assert_eq!(data, b"hello 0123456789abc", "step {step}");
        assert!(done, "step {step}");
    }
}

#[test]
fn malformed_chunked_framing_is_an_error() {
    for wire in [
        &b"zz\r\nhello\r\n0\r\n\r\n"[..],
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b"11111111111111111\r\n",
        b"-5\r\nhello\r\n",
        b"5 x\r\nhello\r\n",
        b"5;a\rb\r\nhello\r\n0\r\n\r\n",
        b"0\r\nno colon\r\n\r\n",
        b"0\r\nx: 1\r\n folded\r\n\r\n",
        b"0\r\nx: \x7f\r\n\r\n",
    ] {
        assert!(
            decode_in_steps(wire, wire.len()).is_err(),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
    let long_line = [b"1;".as_slice(), &[b'x'; MAX_CHUNK_LINE], b"\r\n"].concat();
    assert!(decode_in_steps(&long_line, 100).is_err());
    let long_field = [b"t: ".as_slice(), &[b'v'; 1000], b"\r\n"].concat();
    let long_trailers = [b"0\r\n".as_slice(), &long_field.repeat(20), b"\r\n"].concat();
    assert!(decode_in_steps(&long_trailers, 1000).is_err());
    let trailers = |n| [b"0\r\n".as_slice(), &b"t: v\r\n".repeat(n), b"\r\n"].concat();
    assert!(decode_in_steps(&trailers(MAX_HEADERS), 1000).is_ok());
    assert!(decode_in_steps(&trailers(MAX_HEADERS + 1), 1000).is_err());
}

fn head(wire: &[u8], head_request: bool) -> Result<Parsed, Error> {
    parse_head(&Bytes::copy_from_slice(wire), head_request)
}

fn response(wire: &[u8], head_request: bool) -> Response<Body> {
    match head(wire, head_request) {
        Ok(Parsed::Final(response, len)) => {
            assert_eq!(len, wire.len());
            response
        }
        _ => panic!("not a complete head: {}", String::from_utf8_lossy(wire)),
    }
}

fn framing(wire: &[u8], head_request: bool) -> (Kind, bool) {
    let response = response(wire, head_request);
    (response.body().kind, response.body().reusable)
}

#[test]
fn response_framing_follows_rfc_9112() {
    let cases: &[(&[u8], bool, Kind, bool)] = &[
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
            false,
            Kind::Length(2),
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\ncontent-length: 2\r\n\r\n",
            false,
            Kind::Length(2),
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            false,
            Kind::Chunked(Chunked::Size),
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 9\r\n\r\n",
            false,
            Kind::Chunked(Chunked::Size),
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
            false,
            Kind::UntilClose,
            false,
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n", false, Kind::UntilClose, false),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 000000000000000000002\r\n\r\n",
            false,
            Kind::Length(2),
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551615\r\n\r\n",
            false,
            Kind::Length(u64::MAX),
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive, Close\r\n\r\n",
            false,
            Kind::Length(2),
            false,
        ),
        (
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n",
            false,
            Kind::Length(2),
            false,
        ),
        (
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 20\r\n\r\n",
            false,
            Kind::Empty,
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n",
            true,
            Kind::Empty,
            true,
        ),
        // A Transfer-Encoding field frames the response whatever its value, and
        // Content-Length is then ignored, even when malformed.
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\ncontent-length: 2\r\n\r\n",
            false,
            Kind::UntilClose,
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: ,\r\n\r\n",
            false,
            Kind::UntilClose,
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: \t, ,\r\n\r\n",
            false,
            Kind::UntilClose,
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: Chunked\r\n\r\n",
            false,
            Kind::Chunked(Chunked::Size),
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: gzip\r\n\r\n",
            false,
            Kind::UntilClose,
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: , chunked\r\ncontent-length: x\r\n\r\n",
            false,
            Kind::Chunked(Chunked::Size),
            false,
        ),
        // No body, whatever the framing fields say.
        (
            b"HTTP/1.0 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n",
            false,
            Kind::Empty,
            false,
        ),
        (
            b"HTTP/1.1 204 No Content\r\ncontent-length: -1\r\n\r\n",
            false,
            Kind::Empty,
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            true,
            Kind::Empty,
            true,
        ),
    ];
    for &(wire, head_request, kind, reusable) in cases {
        assert_eq!(
            framing(wire, head_request),
            (kind, reusable),
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn a_transfer_coding_drops_content_length() {
    let wire =
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\nX-A: b \r\n\r\n";
    let response = response(wire, false);
    assert!(!response.headers().contains_key("content-length"));
    assert_eq!(response.headers()["x-a"], "b");
    assert!(
        !response.headers().contains_key("transfer-encoding"),
        "hop-by-hop headers are dropped"
    );
}

#[test]
fn bad_heads_are_errors_and_interim_responses_are_skipped() {
    for wire in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551616\r\n\r\n",
        b"HTTP/1.1 099 Odd\r\n\r\n",
        b"SMTP ready\r\n\r\n",
        // chunked is the final coding if the empty element is ignored, another if not
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked,\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: \r\n\r\n",
        b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
    ] {
        assert!(
            head(wire, false).is_err(),
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
    assert!(matches!(
        head(b"HTTP/1.1 200 OK\r\ncontent-le", false),
        Ok(Parsed::Incomplete)
    ));
    let interim = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n";
    let wire = [interim.as_slice(), b"HTTP/1.1 200 OK\r\n"].concat();
    assert!(matches!(head(&wire, false), Ok(Parsed::Interim(len)) if len == interim.len()));
    let huge = [
        b"HTTP/1.1 200 OK\r\nx: ".as_slice(),
        &[b'a'; MAX_HEAD_BYTES],
    ]
    .concat();
    assert!(matches!(head(&huge, false), Err(Error::HeadTooLarge)));
}
