//! The lean client against hyper's, on generated response byte streams: the differential
//! test the project asks of hand-written protocol code on the data plane. An upstream on
//! 127.0.0.1 reads the request head, writes the same bytes to each client and closes its
//! side. Both clients must end the response in the same place (the same status and body
//! bytes) or both refuse it, from the head or from the body; the only exceptions are in
//! [`lean_may_refuse`]. `PROPTEST_CASES` sets the number of cases (default [`CASES`]).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestRunner, contextualize_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{BARE_LF, CHUNKED_THEN_EMPTY, Chunked, Conn, Error, send};

/// Cases in a plain `cargo test`: a few seconds.
const CASES: u32 = 256;
/// Longest one exchange may take; longer is a hang, and a failure.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The status and body bytes of a response read to its end, or why it was refused.
type Outcome<E> = Result<(u16, Vec<u8>), E>;

#[test]
fn lean_client_frames_responses_as_hyper_does() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let upstream = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    // No file of failing seeds: a failure prints its shrunk case, which becomes a row in
    // `tests.rs` once fixed.
    let config = contextualize_config(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let result = TestRunner::new(config).run(&case(), |case| {
        let wire = case.wire();
        let method = if case.head_request {
            Method::HEAD
        } else {
            Method::GET
        };
        let (lean, hyper) = rt.block_on(async {
            let lean = exchange(&upstream, &wire, |io| via_lean(io, method.clone())).await;
            let hyper = exchange(&upstream, &wire, |io| via_hyper(io, method.clone())).await;
            (lean, hyper)
        });
        let agree = match (&lean, &hyper) {
            (Ok(lean), Ok(hyper)) => lean == hyper,
            (Err(_), Err(_)) => true,
            (Err(refused), Ok((_, body))) => lean_may_refuse(&case, refused, body),
            (Ok(_), Err(_)) => false,
        };
        prop_assert!(
            agree,
            "{:?}\nlean:  {}\nhyper: {}",
            String::from_utf8_lossy(&wire),
            show(&lean),
            show(&hyper)
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Whether the lean client may refuse a response that hyper's client read as `body`: only
/// where readers may take the framing differently, and hyper's client picks one reading.
/// Refusing is stricter, and safer: no reading is left for another hop to disagree with.
fn lean_may_refuse(case: &Case, refused: &Error, body: &[u8]) -> bool {
    let Error::Framing(why) = refused else {
        return false;
    };
    match *why {
        // Lean refuses, hyper accepts: allowed. `chunked,` ends in chunked once the empty
        // element is ignored (RFC 9110 §5.6.1.2); hyper's client takes the empty last element
        // for the final coding and reads until close (RFC 9112 §6.3, item 4).
        CHUNKED_THEN_EMPTY => case.ends_chunked_then_empty() && body == case.after_head,
        // Lean refuses, hyper accepts: allowed. RFC 9112 §2.2 lets a recipient take a bare LF
        // for a line end, or not; in a trailer section hyper's client does (httparse reads its
        // lines), while the lean client takes none anywhere in chunked framing.
        BARE_LF => refused_in_trailers(&case.after_head, body),
        _ => false,
    }
}

/// Whether the lean client's chunked decoder refuses `after_head` in the trailer section,
/// having decoded `body` before it.
fn refused_in_trailers(after_head: &[u8], body: &[u8]) -> bool {
    let mut state = Chunked::Size;
    let mut buf = BytesMut::from(after_head);
    let mut data = Vec::new();
    loop {
        match state.decode(&mut buf) {
            Ok(Some(bytes)) => data.extend_from_slice(&bytes),
            Ok(None) => return false,
            Err(_) => return matches!(state, Chunked::Trailers { .. }) && data == body,
        }
    }
}

/// Connects `client` to `upstream`, which reads the request head, writes `wire` and closes
/// its side; `client`'s output.
async fn exchange<F: Future>(
    upstream: &TcpListener,
    wire: &[u8],
    client: impl FnOnce(TcpStream) -> F,
) -> F::Output {
    let addr = upstream.local_addr().unwrap();
    let serve = async {
        let (mut io, _) = upstream.accept().await.unwrap();
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            if io.read_buf(&mut request).await.unwrap() == 0 {
                return;
            }
        }
        let _ = io.write_all(wire).await;
        let _ = io.shutdown().await;
        // Read until the client closes, so that closing never resets the connection.
        tokio::spawn(async move { io.read_to_end(&mut Vec::new()).await });
    };
    let client = async {
        let io = TcpStream::connect(addr).await.unwrap();
        tokio::time::timeout(TIMEOUT, client(io))
            .await
            .expect("the client hangs")
    };
    tokio::join!(serve, client).1
}

async fn via_lean(io: TcpStream, method: Method) -> Outcome<Error> {
    let request = Request::builder()
        .method(method)
        .header("host", "upstream")
        .body(())
        .unwrap();
    let mut response = send(Conn::new(io), &request, None).await?;
    let body = data(response.body_mut()).await?;
    Ok((response.status().as_u16(), body))
}

async fn via_hyper(io: TcpStream, method: Method) -> Outcome<hyper::Error> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let request = Request::builder()
        .method(method)
        .header("host", "upstream")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let mut response = sender.send_request(request).await?;
    let body = data(response.body_mut()).await?;
    Ok((response.status().as_u16(), body))
}

/// The data of `body` read to its end; trailers are left out.
async fn data<B>(body: &mut B) -> Result<Vec<u8>, B::Error>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(bytes) = frame?.into_data() {
            data.extend_from_slice(&bytes);
        }
    }
    Ok(data)
}

fn show<E: std::fmt::Display>(outcome: &Outcome<E>) -> String {
    match outcome {
        Ok((status, body)) => format!("{status} {:?}", String::from_utf8_lossy(body)),
        Err(e) => format!("refused: {e}"),
    }
}

/// One exchange: the request's method, and what the upstream sends back.
#[derive(Clone, Debug)]
struct Case {
    head_request: bool,
    /// Interim responses, then the final response's status line.
    start: String,
    /// The final response's header field lines.
    fields: Vec<String>,
    /// The bytes after the final response's head: its body, framed or not, and what follows.
    after_head: Vec<u8>,
}

/// How a `Transfer-Encoding` field line starts.
const TRANSFER_ENCODING: &str = "Transfer-Encoding:";

impl Case {
    fn wire(&self) -> Vec<u8> {
        let head = [self.start.as_str(), &self.fields.concat(), "\r\n"].concat();
        [head.as_bytes(), &self.after_head].concat()
    }

    /// Whether the `Transfer-Encoding` list ends in empty elements after `chunked`.
    fn ends_chunked_then_empty(&self) -> bool {
        let elements: Vec<&str> = self
            .fields
            .iter()
            .filter_map(|field| field.strip_prefix(TRANSFER_ENCODING))
            .flat_map(|codings| codings.split(','))
            .map(str::trim)
            .collect();
        let last_coding = elements.iter().rev().find(|e| !e.is_empty());
        elements.last() == Some(&"")
            && last_coding.is_some_and(|c| c.eq_ignore_ascii_case("chunked"))
    }
}

fn case() -> impl Strategy<Value = Case> {
    let interim = select(vec![
        "",
        "",
        "",
        "HTTP/1.1 100 Continue\r\n\r\n",
        "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n",
        "HTTP/1.0 102 Processing\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n",
    ]);
    let version = prop_oneof![4 => Just("HTTP/1.1"), 1 => Just("HTTP/1.0")];
    let status = select(vec![200, 200, 200, 201, 204, 304, 400, 404, 500]);
    let start = (interim, version, status)
        .prop_map(|(interim, version, status)| format!("{interim}{version} {status} Final\r\n"));
    let body = prop_oneof![
        // Bytes that look like chunked framing now and then.
        1 => vec(select(b"ab0\r\n".to_vec()), 0..24),
        2 => chunked(),
    ];
    let tail = select(vec![
        "",
        "",
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        "junk\r\n",
    ]);
    let after_head = (body, tail).prop_map(|(body, tail)| [&body, tail.as_bytes()].concat());
    (prop::bool::weighted(0.2), start, after_head)
        .prop_flat_map(|(head_request, start, after_head)| {
            let fields = vec(field(after_head.len()), 0..4);
            (Just(head_request), Just(start), fields, Just(after_head))
        })
        .prop_map(|(head_request, start, fields, after_head)| Case {
            head_request,
            start,
            fields,
            after_head,
        })
}

/// A header field line of the final response, whose head `n` bytes follow.
fn field(n: usize) -> impl Strategy<Value = String> {
    let length = prop_oneof![
        4 => Just(n.to_string()),
        2 => (-3..=3isize).prop_map(move |by| n.saturating_add_signed(by).to_string()),
        1 => Just(format!("{n:024}")),
        1 => Just(format!("+{n}")),
        1 => Just(format!("-{n}")),
        1 => Just(format!("{n} ,\t{n},{n}")),
        1 => Just(format!("{n}, {}", n + 1)),
        1 => select(vec![
            "",
            ",",
            "abc",
            "0x5",
            "1 2",
            "18446744073709551613",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
        ])
        .prop_map(str::to_owned),
    ];
    let codings = prop_oneof![
        3 => Just("chunked"),
        2 => select(vec![
            "Chunked",
            "CHUNKED",
            "gzip",
            "gzip, chunked",
            "gzip,chunked",
            "gzip ,\tchunked",
            "chunked, gzip",
            "identity",
            "",
            ",",
            " , ,",
            "chunked,",
            "chunked, ,",
            ", chunked",
            "chunked;q=1",
            "xchunked",
        ]),
    ];
    let connection = select(vec!["close", "keep-alive", "Keep-Alive, Close"]);
    prop_oneof![
        4 => length.prop_map(|value| format!("content-length: {value}\r\n")),
        4 => codings.prop_map(|value| format!("{TRANSFER_ENCODING} {value}\r\n")),
        1 => connection.prop_map(|value| format!("connection: {value}\r\n")),
        1 => Just("x-other: value\r\n".to_owned()),
    ]
}

/// A chunked body, right or wrong in the ways that matter.
fn chunked() -> impl Strategy<Value = Vec<u8>> {
    let last = prop::option::weighted(0.9, select(vec!["0\r\n", "0\r\n", "0;a=b\r\n"]));
    let fields = select(vec![
        "x-t: v",
        "x-t:v",
        "bad trailer",
        " folded",
        "x-t: a\x7fb",
    ]);
    let trailer = (fields, line_end()).prop_map(|(field, end)| [field.as_bytes(), end].concat());
    let trailers = prop_oneof![
        8 => vec(trailer, 0..3).prop_map(|lines| lines.concat()),
        // The most hyper's client takes, and one more.
        1 => select(vec![100, 101]).prop_map(|n| b"x-t: v\r\n".repeat(n)),
    ];
    (vec(chunk(), 0..4), last, trailers, line_end()).prop_map(|(chunks, last, trailers, end)| {
        let mut body = chunks.concat();
        if let Some(last) = last {
            body.extend([last.as_bytes(), &trailers, end].concat());
        }
        body
    })
}

/// A chunk before the last one.
fn chunk() -> impl Strategy<Value = Vec<u8>> {
    let extension = prop_oneof![
        6 => Just(""),
        1 => select(vec![
            ";a=b",
            ";a=\"x;y\"",
            " ; a",
            "\t;a",
            ";",
            ";a\rb",
            " x",
        ]),
    ];
    let data = vec(select(b"xyz\r\n".to_vec()), 1..40);
    (data, 0..11u8, extension, line_end(), line_end()).prop_map(
        |(data, size, extension, size_end, data_end)| {
            let n = data.len();
            let size = match size {
                0..=4 => format!("{n:x}"),
                5 | 6 => format!("{n:X}"),
                7 => format!("{n:020x}"),
                8 => format!("{:x}", n - 1),
                9 => format!("{:x}", n + 1),
                _ => format!("1{n:016x}"), // past u64::MAX
            };
            let line = [size.as_bytes(), extension.as_bytes(), size_end].concat();
            [line, data, data_end.to_vec()].concat()
        },
    )
}

fn line_end() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![
        12 => Just(&b"\r\n"[..]),
        1 => Just(&b"\n"[..]),
        1 => Just(&b"\r"[..]),
        1 => Just(&b""[..]),
    ]
}
