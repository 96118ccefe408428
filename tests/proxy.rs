//! Reverse proxying: bodies, headers, upgrades, HTTP/2, TLS, limits and upstream failures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use support::echo::{AfterReply, ScriptedUpstream, dead_upstream, silent_upstream};
use support::eventually;
use support::{Backend, TestProxy, WsEcho, get, raw, send, server};

fn anonymous(upstream: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "{}[[routes]]\nprefix = \"/\"\nallow_anonymous = true\n",
        server(upstream, extra)
    )
}

#[tokio::test]
async fn large_body_arrives_byte_identical() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous(backend.addr(), "")).await;
    let body: Vec<u8> = (0..5 * 1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let req = Request::post("/upload")
        .header("host", "x")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let reply = send(proxy.addr, req).await;
    assert_eq!(reply.status, 200);
    let seen = backend.only();
    assert_eq!(seen.body.len(), body.len());
    assert!(seen.body == body, "body changed on the way");
    assert_eq!(seen.header("content-length"), Some("5242880"));
}

#[tokio::test]
async fn chunked_upload_streams_through() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous(backend.addr(), "")).await;
    let (mut tx, body) =
        http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(4);
    let req = Request::put("/stream")
        .header("host", "x")
        .body(body)
        .unwrap();
    let sending = tokio::spawn(async move {
        for i in 0..64u8 {
            tx.send(Frame::data(Bytes::from(vec![i; 1000])))
                .await
                .unwrap();
        }
    });
    let reply = send(proxy.addr, req).await;
    sending.await.unwrap();
    assert_eq!(reply.status, 200);
    let seen = backend.only();
    let want: Vec<u8> = (0..64u8).flat_map(|i| vec![i; 1000]).collect();
    assert!(seen.body == want, "chunked body changed on the way");
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
}

#[tokio::test]
async fn query_string_is_forwarded_unchanged() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous(backend.addr(), "")).await;
    let query = "a=1&b=%2F..%2F&c=%00&d=x+y&e=%E2%9C%93&e=2";
    let reply = proxy.get(&format!("/search?{query}")).await;
    assert_eq!(reply.status, 200);
    let seen = backend.only();
    assert_eq!(seen.path, "/search");
    assert_eq!(seen.query.as_deref(), Some(query));
}

/// Requests sent back to back before any answer (in one write, so the listener's first read
/// holds both) are each forwarded and answered, in order.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous(backend.addr(), "")).await;
    let response = raw(
        proxy.addr,
        b"GET /first HTTP/1.1\r\nhost: x\r\n\r\nGET /second HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(response.matches("HTTP/1.1 200").count(), 2, "{response}");
    let paths: Vec<String> = backend.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/first", "/second"]);
}

#[tokio::test]
async fn hop_by_hop_and_connection_named_headers_are_removed() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous(backend.addr(), "")).await;
    let reply = get(
        proxy.addr,
        "/",
        &[
            ("connection", "keep-alive, X-Hop-Secret"),
            ("x-hop-secret", "internal"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic dXNlcjpwYXNz"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "h2c"),
            ("x-end-to-end", "kept"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = backend.only();
    for gone in [
        "connection",
        "x-hop-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert_eq!(seen.header(gone), None, "{gone} reached the backend");
    }
    assert_eq!(seen.header("x-end-to-end"), Some("kept"));
}

#[tokio::test]
async fn forwarded_headers_are_set() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous(backend.addr(), "")).await;
    // Without a body the lean client writes these headers itself; with one, hyper's client
    // sends them from the header map: the upstream must see the same either way.
    for body in ["", "with a body"] {
        backend.clear();
        let req = Request::post("/")
            .header("host", proxy.addr.to_string())
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-for", "198.51.100.1, 192.0.2.4")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "evil.example")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let reply = send(proxy.addr, req).await;
        assert_eq!(reply.status, 200);
        let seen = backend.only();
        assert_eq!(
            seen.header_all("x-forwarded-for"),
            ["127.0.0.1"],
            "a client that is not a trusted proxy cannot add addresses; body {body:?}"
        );
        assert_eq!(
            seen.header_all("x-forwarded-proto"),
            ["http"],
            "a client must not claim https"
        );
        let host = proxy.addr.to_string();
        assert_eq!(seen.header_all("x-forwarded-host"), [host.as_str()]);
        assert_eq!(
            seen.header("host"),
            Some(host.as_str()),
            "preserve_host defaults to true"
        );
    }
}

/// Every header of the forwarding class, in generated spellings (`-` or `_` at each
/// separator), over HTTP/1.1 and HTTP/2, with and without a body (the two upstream clients),
/// from a client and from a trusted proxy: only what tollgate vouches for reaches the backend.
#[test]
fn forwarding_headers_are_tollgate_s_own() {
    use proptest::prelude::*;
    use proptest::test_runner::TestRunner;
    use tollgate::header_names::FORWARDING_HEADERS;

    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(Backend::start());
    let names: Vec<&str> = FORWARDING_HEADERS
        .iter()
        .chain(&["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"])
        .copied()
        .collect();
    let sent = prop::collection::vec(
        (
            prop::sample::select(names),
            any::<bool>(),
            prop::collection::vec(any::<bool>(), 5),
        )
            .prop_map(|(name, plain, underscores)| {
                if plain {
                    return name.to_owned();
                }
                let mut dashes = underscores.iter().cycle();
                name.chars()
                    .map(|c| match c {
                        '-' if *dashes.next().unwrap_or(&false) => '_',
                        c => c,
                    })
                    .collect::<String>()
            }),
        1..8,
    );
    let case = (sent, any::<bool>(), any::<bool>());
    for trusted in [false, true] {
        let extra = if trusted {
            "trusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]"
        } else {
            "trusted_proxies = [\"10.0.0.0/8\"]"
        };
        let proxy = rt.block_on(TestProxy::start(&anonymous(backend.addr(), extra)));
        let host = proxy.addr.to_string();
        let mut runner = TestRunner::new(support::client::proptest_config(96));
        runner
            .run(&case, |(sent, http2, with_body)| {
                backend.clear();
                let version = if http2 {
                    http::Version::HTTP_2
                } else {
                    http::Version::HTTP_11
                };
                let headers: Vec<(&str, &str)> =
                    sent.iter().map(|n| (n.as_str(), "claimed")).collect();
                let body: &'static [u8] = if with_body { b"with a body" } else { b"" };
                let reply = rt.block_on(async {
                    let mut conn = support::client::Conn::open(proxy.addr, version).await;
                    conn.send_body("POST", "/f", &headers, body).await
                });
                prop_assert_eq!(reply.status, 200);
                let seen = backend.only();
                for (name, value) in &seen.headers {
                    let name = name.to_ascii_lowercase();
                    if value != "claimed" {
                        continue;
                    }
                    // What a trusted proxy says in the plain spelling goes on; nothing else.
                    let kept = trusted
                        && matches!(
                            name.as_str(),
                            "x-forwarded-proto" | "x-forwarded-host" | "x-forwarded-port"
                        );
                    prop_assert!(kept, "{} reached the backend ({:?})", name, sent);
                }
                let forwarded_for = seen.header_all("x-forwarded-for");
                let appended_to = if trusted {
                    sent.iter().filter(|s| *s == "x-forwarded-for").count()
                } else {
                    0
                };
                let want = "claimed, ".repeat(appended_to) + "127.0.0.1";
                prop_assert_eq!(forwarded_for, [want]);
                // A trusted proxy's values go on as it sent them (all of them); otherwise
                // this hop's alone.
                let said = |name: &str| sent.iter().filter(|s| *s == name).count();
                for (name, own) in [
                    ("x-forwarded-proto", "http"),
                    ("x-forwarded-host", host.as_str()),
                ] {
                    let want = if trusted && said(name) > 0 {
                        vec!["claimed"; said(name)]
                    } else {
                        vec![own]
                    };
                    prop_assert_eq!(seen.header_all(name), want, "{}", name);
                }
                Ok(())
            })
            .unwrap();
    }
}

#[tokio::test]
async fn preserve_host_false_sends_the_upstream_authority() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous(backend.addr(), "preserve_host = false")).await;
    get(proxy.addr, "/", &[]).await;
    let seen = backend.only();
    assert_eq!(
        seen.header("host"),
        Some(backend.addr().to_string().as_str())
    );
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(proxy.addr.to_string().as_str())
    );
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let ws = WsEcho::start().await;
    let proxy = TestProxy::start(&anonymous(ws.addr, "")).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut socket, response) =
        tokio_tungstenite::client_async(format!("ws://{}/chat", proxy.addr), stream)
            .await
            .expect("websocket handshake through the proxy");
    assert_eq!(response.status(), 101);
    for text in ["hello", "through", "tollgate"] {
        socket
            .send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    socket
        .send(tokio_tungstenite::tungstenite::Message::binary(vec![
            0u8, 1, 2, 255,
        ]))
        .await
        .unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap().into_data().as_ref(),
        [0u8, 1, 2, 255]
    );
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn slow_upstream_gives_504() {
    let (upstream, _stop) = silent_upstream().await;
    let proxy = TestProxy::start(&anonymous(upstream, "request_timeout = \"300ms\"")).await;
    let reply = proxy.get("/slow").await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.json()["error"], "upstream_timeout");
    assert_eq!(proxy.requests("/", "anonymous", "504"), 1);
}

/// Deadlines reuse the timer registrations of earlier ones (`src/proxy/timer.rs`): every
/// request still gets its whole `request_timeout`, never less, whether the registration it
/// reuses fired already or is still armed for an earlier instant.
#[tokio::test]
async fn request_timeout_is_whole_on_every_request() {
    let (upstream, _stop) = silent_upstream().await;
    let proxy = TestProxy::start(&anonymous(upstream, "request_timeout = \"300ms\"")).await;
    // A client that gives up early leaves its deadline armed for later reuse.
    let abandoned = tokio::time::timeout(Duration::from_millis(50), proxy.get("/gone")).await;
    assert!(abandoned.is_err());
    for _ in 0..3 {
        let started = tokio::time::Instant::now();
        let reply = proxy.get("/slow").await;
        assert_eq!(reply.status, 504);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300),
            "timed out early: {took:?}"
        );
    }
    assert_eq!(proxy.requests("/", "anonymous", "504"), 3);
}

#[tokio::test]
async fn dead_upstream_gives_502() {
    let upstream = dead_upstream().await;
    let proxy = TestProxy::start(&anonymous(upstream, "")).await;
    let reply = proxy.get("/").await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json()["error"], "upstream_unreachable");
}

#[tokio::test]
async fn oversized_request_head_gives_431() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous(backend.addr(), "max_header_bytes = 16384")).await;
    let big = "x".repeat(20_000);
    let response = raw(
        proxy.addr,
        format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(support::client::raw_status(&response), 431, "{response}");
    backend.assert_nothing_received();
    // A head under the limit passes.
    let ok = get(proxy.addr, "/", &[("x-big", &"y".repeat(8000))]).await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn more_than_100_header_lines_give_431() {
    // A raw upstream: it takes any number of headers (hyper's echo backend stops at 100, and
    // tollgate adds the three X-Forwarded-* ones).
    let upstream = ScriptedUpstream::start(OK_WITH_LENGTH, AfterReply::KeepAlive).await;
    let proxy = TestProxy::start(&anonymous(upstream.addr, "")).await;
    let head = |lines: usize| {
        let mut head = String::from("GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n");
        for i in 2..lines {
            head.push_str(&format!("x-h{i}: v\r\n"));
        }
        head + "\r\n"
    };
    let response = raw(proxy.addr, head(101).as_bytes()).await;
    assert_eq!(support::client::raw_status(&response), 431, "{response}");
    assert_eq!(upstream.requests(), 0, "nothing forwarded");
    let response = raw(proxy.addr, head(100).as_bytes()).await;
    assert_eq!(support::client::raw_status(&response), 200, "{response}");
    assert_eq!(upstream.requests(), 1);
}

/// A proxy whose header read timeout is 200 ms, and a connection to it.
async fn header_deadline_proxy() -> (Backend, TestProxy, tokio::net::TcpStream) {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous(
        backend.addr(),
        "header_read_timeout = \"200ms\"",
    ))
    .await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    (backend, proxy, stream)
}

/// Writes a head that never completes; whether the server then closes the connection (maybe
/// after a 408) within 5 s.
async fn closed_after_partial_head(stream: &mut tokio::net::TcpStream, head: &[u8]) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(head).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .is_ok()
}

#[tokio::test]
async fn slow_client_is_disconnected() {
    let (backend, _proxy, mut stream) = header_deadline_proxy().await;
    let closed = closed_after_partial_head(&mut stream, b"GET / HTTP/1.1\r\nhost: x\r\n").await;
    assert!(closed, "the connection should have been closed");
    backend.assert_nothing_received();
}

/// The header read deadline runs again for every head on a kept-alive connection, whole.
#[tokio::test]
async fn slow_client_is_disconnected_after_a_first_request_too() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (backend, _proxy, mut stream) = header_deadline_proxy().await;
    let sent = tokio::time::Instant::now();
    stream
        .write_all(b"GET /first HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Read the whole first response (Content-Length framed), keeping the connection.
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the first response");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .expect("a Content-Length");
            if buf.len() >= end + 4 + length {
                break;
            }
        }
    }
    assert_eq!(
        support::client::raw_status(&String::from_utf8_lossy(&buf)),
        200
    );
    let closed =
        closed_after_partial_head(&mut stream, b"GET /second HTTP/1.1\r\nhost: x\r\n").await;
    assert!(closed, "the connection should have been closed");
    // The second head's deadline started after the first request was sent.
    let took = sent.elapsed();
    assert!(took >= Duration::from_millis(200), "closed early: {took:?}");
    assert_eq!(backend.only().path, "/first");
}

#[tokio::test]
async fn connection_cap_holds_new_connections_in_the_backlog() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous(backend.addr(), "max_connections = 1")).await;
    // One idle connection takes the only slot.
    let idle = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    support::eventually("the idle connection is accepted", || async {
        proxy.open_connections("inbound") == 1
    })
    .await;
    let waiting = tokio::spawn(get(proxy.addr, "/", &[]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a second connection was served past the cap"
    );
    assert_eq!(backend.count(), 0);
    drop(idle);
    let reply = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, 200);
}

/// The HTTP/2 connection preface (RFC 9113 §3.4) and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const H2_EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Whether the server closes `stream` within `within`, reading (and dropping) whatever it sends.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut rest = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut rest))
        .await
        .is_ok()
}

/// Every connection must deliver a complete first request within `header_read_timeout`,
/// whatever it speaks: connections that hold every slot and say nothing, half of the HTTP/2
/// preface, or the preface and SETTINGS, are closed, and a client waiting in the backlog is
/// then served.
#[tokio::test]
async fn connections_that_never_complete_a_request_lose_their_slot() {
    use tokio::io::AsyncWriteExt;
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous(
        backend.addr(),
        "max_connections = 6\nheader_read_timeout = \"400ms\"",
    ))
    .await;
    let whole = [H2_PREFACE, H2_EMPTY_SETTINGS].concat();
    let openings: [&[u8]; 3] = [b"", &H2_PREFACE[..12], &whole];
    let mut holders = Vec::new();
    for opening in openings {
        for _ in 0..2 {
            let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
            stream.write_all(opening).await.unwrap();
            holders.push(stream);
        }
    }
    eventually("every slot is taken", || async {
        proxy.open_connections("inbound") == 6
    })
    .await;
    let waiting = tokio::spawn(get(proxy.addr, "/legitimate", &[]));
    // Served once the slot holders are closed, a deadline after they connected.
    let reply = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting client is served")
        .unwrap();
    assert_eq!(reply.status, 200);
    for (i, stream) in holders.iter_mut().enumerate() {
        assert!(
            closed_within(stream, Duration::from_secs(5)).await,
            "slot holder {i} was not closed"
        );
    }
    assert_eq!(backend.only().path, "/legitimate");
}

/// tollgate terminating TLS with a certificate for `first.test` from `ca` (files in the
/// returned directory), in front of `backend`, with `extra` `[server]` lines; and the
/// certificate's PEM.
async fn tls_proxy(
    backend: &Backend,
    ca: &support::tls::TestCa,
    extra: &str,
) -> (TestProxy, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.issue(&["first.test"]);
    std::fs::write(dir.path().join("tls.crt"), &cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), &key).unwrap();
    let toml = anonymous(
        backend.addr(),
        &format!(
            "{extra}\ntls = {{ cert = \"{0}/tls.crt\", key = \"{0}/tls.key\" }}",
            dir.path().display()
        ),
    );
    (TestProxy::start(&toml).await, dir, cert)
}

/// Over TLS too: a handshake and then silence hold no slot.
#[tokio::test]
async fn a_tls_connection_that_sends_no_request_loses_its_slot() {
    let backend = Backend::start().await;
    let ca = support::tls::TestCa::new();
    let (proxy, _dir, _) = tls_proxy(
        &backend,
        &ca,
        "max_connections = 1\nheader_read_timeout = \"400ms\"",
    )
    .await;
    let mut silent = support::tls::connect(proxy.addr, &ca.pem(), "first.test").await;
    let waiting = tokio::spawn({
        let pem = ca.pem();
        async move { support::tls::get_h2(proxy.addr, &pem, "first.test", "/after").await }
    });
    let (reply, _) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting client is served")
        .unwrap();
    assert_eq!(reply.status, 200);
    assert!(support::tls::closed_within(&mut silent, Duration::from_secs(5)).await);
    assert_eq!(backend.only().path, "/after");
}

/// HTTP/2 after the first request: a quiet connection is pinged, and one on which no new
/// stream starts for a deadline gets GOAWAY, its open stream still finishing. The frames are
/// read by a relay between client and proxy.
#[tokio::test]
async fn an_idle_http2_connection_is_pinged_then_sent_goaway_after_its_streams_finish() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous(
        backend.addr(),
        "header_read_timeout = \"300ms\"",
    ))
    .await;
    let relay = support::client::FrameRelay::start(proxy.addr).await;
    let stream = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let started = tokio::time::Instant::now();
    // The stream outlives two idle periods: the upstream answers after 1.5 s.
    let req = Request::get(format!("http://{}/slow", proxy.addr))
        .header("x-echo-delay-ms", "1500")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the idle connection is closed")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let frames = relay.frames_from_server();
    let ping = frames.iter().position(|f| f.kind == 6 && f.flags & 1 == 0);
    let goaway = frames.iter().position(|f| f.kind == 7);
    let data = frames.iter().position(|f| f.kind == 0);
    assert!(
        ping.is_some(),
        "no PING while the stream was quiet: {frames:?}"
    );
    let (goaway, data) = (goaway.expect("a GOAWAY"), data.expect("the response"));
    assert!(
        ping.unwrap() < goaway,
        "no keep-alive PING before GOAWAY: {frames:?}"
    );
    assert!(goaway < data, "GOAWAY came after the response: {frames:?}");
    assert_eq!(backend.only().path, "/slow");
}

#[tokio::test]
async fn http2_prior_knowledge() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous(backend.addr(), "")).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://{}/h2?x=1", proxy.addr))
        .body(Full::new(Bytes::from_static(b"over h2")))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await.unwrap();
    let seen = backend.only();
    assert_eq!(
        (seen.path.as_str(), seen.query.as_deref()),
        ("/h2", Some("x=1"))
    );
    assert_eq!(seen.body.as_ref(), b"over h2");
    assert_eq!(seen.header("host"), Some(proxy.addr.to_string().as_str()));

    // Cookies sent as separate HTTP/2 fields reach the HTTP/1.1 upstream as one header, with
    // and without a request body (the two upstream clients).
    for body in ["", "with a body"] {
        backend.clear();
        let req = Request::get(format!("http://{}/cookies", proxy.addr))
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
        assert_eq!(
            backend.only().header_all("cookie"),
            ["a=1; b=2"],
            "body {body:?}"
        );
    }
}

#[tokio::test]
async fn tls_with_h2_by_alpn_and_certificate_reload() {
    let backend = Backend::start().await;
    let ca = support::tls::TestCa::new();
    let (proxy, dir, cert_a) = tls_proxy(&backend, &ca, "").await;

    let (reply, served) =
        support::tls::get_h2(proxy.addr, &ca.pem(), "first.test", "/secure").await;
    assert_eq!(reply.version, http::Version::HTTP_2);
    assert_eq!(reply.status, 200);
    assert_eq!(served, support::tls::der(&cert_a));
    assert_eq!(backend.only().header("x-forwarded-proto"), Some("https"));

    // Replace the pair as cert-manager would; the next handshake presents the new one.
    let (cert_b, key_b) = ca.issue(&["first.test", "second.test"]);
    std::fs::write(dir.path().join("tls.key.new"), &key_b).unwrap();
    std::fs::write(dir.path().join("tls.crt.new"), &cert_b).unwrap();
    std::fs::rename(dir.path().join("tls.key.new"), dir.path().join("tls.key")).unwrap();
    std::fs::rename(dir.path().join("tls.crt.new"), dir.path().join("tls.crt")).unwrap();
    let want = support::tls::der(&cert_b);
    support::eventually("the new certificate is served", || {
        let (ca, want) = (ca.pem(), want.clone());
        async move {
            support::tls::try_get_h2(proxy.addr, &ca, "second.test", "/")
                .await
                .is_some_and(|(_, served)| served == want)
        }
    })
    .await;
}

#[tokio::test]
async fn https_upstream_is_trusted_through_ca_file() {
    let backend = Backend::start().await;
    let ca = support::tls::TestCa::new();
    let front = support::tls::tls_front(&ca, backend.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let toml = |ca_line: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nupstream = \"https://{front}\"\n{ca_line}\n[admin]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nprefix = \"/\"\nallow_anonymous = true\n"
        )
    };
    let proxy = TestProxy::start(&toml(&format!(
        "ca_file = \"{}/ca.pem\"",
        dir.path().display()
    )))
    .await;
    let reply = proxy.get("/over-tls").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(backend.only().path, "/over-tls");

    // Without the CA, the upstream's certificate is not trusted: 502, nothing delivered.
    backend.clear();
    let untrusting = TestProxy::start(&toml("")).await;
    let reply = untrusting.get("/over-tls").await;
    assert_eq!(reply.status, 502);
    backend.assert_nothing_received();
}

const OK_WITH_LENGTH: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
const OK_CHUNKED: &[u8] =
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
const NO_CONTENT: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    for (reply, status) in [(OK_WITH_LENGTH, 200), (OK_CHUNKED, 200), (NO_CONTENT, 204)] {
        let upstream = ScriptedUpstream::start(reply, AfterReply::KeepAlive).await;
        let proxy = TestProxy::start(&anonymous(upstream.addr, "")).await;
        for _ in 0..20 {
            assert_eq!(proxy.get("/").await.status, status);
        }
        let head = get(proxy.addr, "/", &[]).await;
        assert_eq!(head.status, status);
        assert_eq!(upstream.requests(), 21);
        assert_eq!(
            upstream.connections(),
            1,
            "one upstream connection for sequential requests (status {status})"
        );
    }
}

#[tokio::test]
async fn an_upstream_closing_idle_connections_costs_no_request() {
    // The upstream closes every connection after one response without saying so: each
    // request must find (or make) a live connection, never fail on a dead pooled one.
    let upstream = ScriptedUpstream::start(OK_WITH_LENGTH, AfterReply::Close).await;
    let proxy = TestProxy::start(&anonymous(upstream.addr, "")).await;
    for i in 0..20 {
        let reply = proxy.get("/").await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
    }
    assert_eq!(upstream.requests(), 20, "no request sent twice");
    assert_eq!(upstream.connections(), 20);
}

#[tokio::test]
async fn an_abandoned_response_body_closes_its_upstream_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A head, then 2 of the 1,000,000 bytes it announces: the client gives up mid-body.
    const PARTIAL: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\nok";
    let upstream = ScriptedUpstream::start(PARTIAL, AfterReply::KeepAlive).await;
    let proxy = TestProxy::start(&anonymous(upstream.addr, "")).await;
    for round in 1..=2 {
        let mut client = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = client.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "round {round}");
        drop(client);
        eventually("the upstream request arrives", || async {
            upstream.requests() == round
        })
        .await;
    }
    // The first connection still owed a body: it was not reused for the second request.
    assert_eq!(upstream.connections(), 2);
}

// The lean upstream client (`src/proxy/h1.rs`) carries every request without a body to a
// plain-HTTP upstream: the responses below reach it through the scripted upstream.

#[tokio::test]
async fn every_response_framing_arrives_whole_and_only_delimited_ones_keep_the_connection() {
    // (reply, what the upstream does after it, the body the client gets, connections the
    // upstream sees for three requests in a row)
    let cases: [(&'static [u8], AfterReply, &str, usize); 7] = [
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
            AfterReply::KeepAlive,
            "hello world",
            1,
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal",
            AfterReply::KeepAlive,
            "final",
            1,
        ),
        // No length: the body ends when the upstream closes.
        (b"HTTP/1.1 200 OK\r\n\r\nuntil close", AfterReply::Close, "until close", 3),
        // A transfer coding wins over Content-Length, and the connection is not reused.
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            AfterReply::KeepAlive,
            "abc",
            3,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
            AfterReply::KeepAlive,
            "ok",
            3,
        ),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", AfterReply::KeepAlive, "ok", 3),
        // More bytes than the length announced: the body is cut there, the connection dropped.
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
            AfterReply::KeepAlive,
            "ok",
            3,
        ),
    ];
    for (reply, after, body, connections) in cases {
        let shown = String::from_utf8_lossy(reply);
        let upstream = ScriptedUpstream::start(reply, after).await;
        let proxy = TestProxy::start(&anonymous(upstream.addr, "")).await;
        for _ in 0..3 {
            let got = proxy.get("/").await;
            assert_eq!(got.status, 200, "{shown}");
            assert_eq!(got.text(), body, "{shown}");
            assert!(got.header("x-trailer").is_none() && got.header("connection").is_none());
        }
        assert_eq!(upstream.requests(), 3, "{shown}");
        assert_eq!(upstream.connections(), connections, "{shown}");
    }
}

#[tokio::test]
async fn a_response_arriving_a_byte_at_a_time_is_reassembled() {
    // An interim response, a head and a chunked body, each byte in its own segment: every
    // partial-head and partial-chunk path of the lean client.
    const REPLY: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nx-kept: yes\r\ntransfer-encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n";
    let upstream = ScriptedUpstream::start_trickled(REPLY, AfterReply::KeepAlive).await;
    let proxy = TestProxy::start(&anonymous(upstream.addr, "")).await;
    for _ in 0..2 {
        let reply = proxy.get("/").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "hello world");
        assert_eq!(reply.header("x-kept"), Some("yes"));
    }
    assert_eq!(
        upstream.connections(),
        1,
        "the connection was reused after the trickle"
    );
}

#[tokio::test]
async fn a_head_response_has_no_body_and_keeps_its_connection() {
    const HEAD_REPLY: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n";
    let upstream = ScriptedUpstream::start(HEAD_REPLY, AfterReply::KeepAlive).await;
    let proxy = TestProxy::start(&anonymous(upstream.addr, "")).await;
    for _ in 0..3 {
        let req = Request::head("/").header("host", "x");
        let reply = send(
            proxy.addr,
            req.body(http_body_util::Empty::<Bytes>::new()).unwrap(),
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-length"), Some("20"));
        assert!(reply.body.is_empty());
    }
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn a_large_chunked_response_streams_through_byte_identical() {
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut reply = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for chunk in data.chunks(1000) {
        reply.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        reply.extend_from_slice(chunk);
        reply.extend_from_slice(b"\r\n");
    }
    reply.extend_from_slice(b"0\r\n\r\n");
    let upstream = ScriptedUpstream::start(reply.leak(), AfterReply::KeepAlive).await;
    let proxy = TestProxy::start(&anonymous(upstream.addr, "")).await;
    for _ in 0..2 {
        let got = proxy.get("/big").await;
        assert_eq!(got.status, 200);
        assert!(
            got.body == data,
            "body changed on the way ({} bytes)",
            got.body.len()
        );
    }
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn a_malformed_upstream_response_is_a_502() {
    for reply in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: -2\r\n\r\nok",
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
    ] {
        let shown = String::from_utf8_lossy(reply);
        let upstream = ScriptedUpstream::start(reply, AfterReply::KeepAlive).await;
        let proxy = TestProxy::start(&anonymous(upstream.addr, "")).await;
        let got = proxy.get("/").await;
        assert_eq!(got.status, 502, "{shown}");
        assert_eq!(got.json()["error"], "upstream_failed", "{shown}");
    }
}

#[tokio::test]
async fn a_reused_connection_closed_unanswered_is_retried_only_for_idempotent_methods() {
    let upstream = ScriptedUpstream::start(OK_WITH_LENGTH, AfterReply::CloseOnNext).await;
    let proxy = TestProxy::start(&anonymous(upstream.addr, "")).await;
    assert_eq!(proxy.get("/").await.status, 200);
    // The second GET goes on the first connection, which the upstream closes unanswered: it
    // is sent again on a new connection.
    let reply = proxy.get("/").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!((upstream.requests(), upstream.connections()), (3, 2));
    // A POST meets the same fate on the second connection: the upstream may have acted on
    // it, so it is not repeated.
    let post = Request::post("/").header("host", "x");
    let reply = send(
        proxy.addr,
        post.body(http_body_util::Empty::<Bytes>::new()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, 502);
    assert_eq!((upstream.requests(), upstream.connections()), (4, 2));
}

#[tokio::test]
async fn hop_by_hop_response_headers_do_not_reach_the_client() {
    const REPLY: &[u8] = b"HTTP/1.1 200 OK\r\nconnection: keep-alive, x-private\r\nx-private: secret\r\nkeep-alive: timeout=5\r\nupgrade: h2c\r\nx-kept: yes\r\ncontent-length: 2\r\n\r\nok";
    let upstream = ScriptedUpstream::start(REPLY, AfterReply::KeepAlive).await;
    let proxy = TestProxy::start(&anonymous(upstream.addr, "")).await;
    let reply = proxy.get("/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-kept"), Some("yes"));
    for name in ["x-private", "keep-alive", "upgrade"] {
        assert!(reply.header(name).is_none(), "{name} reached the client");
    }
    assert!(
        reply
            .header("connection")
            .is_none_or(|v| !v.contains("x-private"))
    );
}
