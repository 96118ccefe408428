//! A lean HTTP/1.1 client for the common exchange on a plain-TCP upstream: a request without a
//! body, and a response of any framing.
//!
//! hyper's client runs every connection as a task of its own and hands requests and responses
//! to it over channels; for a proxy that mostly forwards small `GET`s that machinery is most
//! of its per-request work (`bench/NOTES.md`). Here the request's own future writes the head
//! and reads the response head on the connection it checked out, and the response body reads
//! the rest. Requests with a body, upgrades and TLS upstreams stay on hyper's client
//! ([`super::pool`] decides).
//!
//! Response framing follows RFC 9112 §6.3: no body for `HEAD`, 1xx, 204 and 304; else, when there
//! is a `Transfer-Encoding` field, whatever its value, chunked if the final coding is chunked and
//! otherwise read until close, with `Content-Length` ignored (refused in an HTTP/1.0 response, and
//! when the list ends in empty elements after `chunked`, whose final coding readers differ on);
//! else `Content-Length` (repeated values must agree); else read until close. Interim 1xx responses
//! are skipped. A connection is reused only when the response was HTTP/1.1 without `Connection:
//! close`, its body was delimited, and nothing followed it. Trailers of a chunked body are read,
//! checked and dropped (HTTP/1.1 clients rarely ask for them). Hop-by-hop headers (`headers::is_hop_by_hop`,
//! and the names `Connection` lists) never reach the response.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use http::header::{
    CONNECTION, CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue, TRANSFER_ENCODING,
};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::headers::{self, Forwarded, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};

/// Most header lines in a response head (hyper's default).
const MAX_HEADERS: usize = 100;
/// Largest response head, interim responses included.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Largest trailer section of a chunked body.
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Room made in the read buffer before a read.
const READ_SIZE: usize = 8 * 1024;

// Two reasons for a refusal, named for the differential test, which allows them.
/// A `Transfer-Encoding` list that ends in empty elements after `chunked`.
const CHUNKED_THEN_EMPTY: &str = "Transfer-Encoding ends in an empty element after chunked";
/// An LF without a CR before it, in chunked framing.
const BARE_LF: &str = "bare LF in chunked framing";

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request could not be written: the upstream saw none of it.
    #[error("upstream connection failed before the request was written")]
    Unsent(#[source] io::Error),
    /// The connection closed or was reset after the request was written and before any byte
    /// of a response: the upstream may or may not have acted on it.
    #[error("upstream connection closed before a response")]
    Unanswered(#[source] Option<io::Error>),
    /// Reading failed, or the connection closed, part-way through a response.
    #[error("upstream connection failed mid-response")]
    Truncated(#[source] Option<io::Error>),
    /// The response head is not HTTP/1.x.
    #[error("invalid response head: {0}")]
    Parse(httparse::Error),
    /// The response head is larger than [`MAX_HEAD_BYTES`].
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// The response's length or chunked framing is invalid.
    #[error("invalid response framing: {0}")]
    Framing(&'static str),
}

impl Error {
    /// Whether sending the request again, on another connection, cannot repeat an action:
    /// always when nothing was written, and for idempotent methods when nothing came back.
    pub fn can_retry(&self, method: &Method) -> bool {
        match self {
            Error::Unsent(_) => true,
            Error::Unanswered(_) => method.is_idempotent(),
            _ => false,
        }
    }
}

/// Whether a request can go over this client: no body, and no protocol switch.
pub fn can_carry<B: hyper::body::Body>(req: &Request<B>) -> bool {
    req.body().is_end_stream()
        && req.method() != Method::CONNECT
        && !req.headers().contains_key(http::header::UPGRADE)
}

/// A keep-alive connection to a plain-HTTP upstream, between exchanges.
pub struct Conn {
    io: TcpStream,
    /// Bytes read and not yet taken: empty between exchanges.
    buf: BytesMut,
    /// The request head being written, kept for its allocation.
    head: Vec<u8>,
}

impl Conn {
    /// A connection over `io`, on which nothing has been sent yet. Boxed: it moves with
    /// every request and response, and a pointer is cheaper to move.
    pub fn new(io: TcpStream) -> Box<Self> {
        Box::new(Conn {
            io,
            buf: BytesMut::new(),
            head: Vec::new(),
        })
    }

    /// Whether an idle connection can take a request: the upstream has neither closed it nor
    /// sent anything unasked. Only reads the socket when readiness says something arrived.
    pub fn is_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable: end of stream, unasked bytes, or readiness left over from the last
            // read (then this read finds nothing and clears it).
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads what the socket has into the buffer: the number of bytes, 0 at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < want.min(READ_SIZE) {
            self.buf.reserve(want.clamp(READ_SIZE, 64 * 1024));
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx, READ_SIZE)).await
    }

    /// Writes the request line and headers of `req` (origin-form target) to `self.head`, with
    /// this hop's `X-Forwarded-*` headers if any (as [`Forwarded::apply`] would set them).
    fn encode<B>(&mut self, req: &Request<B>, forwarded: Option<&Forwarded<'_>>) {
        let head = &mut self.head;
        head.clear();
        head.extend_from_slice(req.method().as_str().as_bytes());
        head.push(b' ');
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        let mut wrote_for = false;
        for (name, value) in req.headers() {
            if let Some(forwarded) = forwarded {
                if name == X_FORWARDED_FOR {
                    // A trusted proxy's list (there may be several lines) with ours appended;
                    // from anyone else, ours alone.
                    if !wrote_for {
                        wrote_for = true;
                        head.extend_from_slice(b"x-forwarded-for: ");
                        if forwarded.trusted {
                            for earlier in req.headers().get_all(&X_FORWARDED_FOR) {
                                head.extend_from_slice(earlier.as_bytes());
                                head.extend_from_slice(b", ");
                            }
                        }
                        head.extend_from_slice(forwarded.peer_ip.as_bytes());
                        head.extend_from_slice(b"\r\n");
                    }
                    continue;
                }
                if !forwarded.trusted && (name == X_FORWARDED_PROTO || name == X_FORWARDED_HOST) {
                    continue; // replaced by this hop's below
                }
            }
            header_line(head, name.as_str().as_bytes(), value.as_bytes());
        }
        if let Some(forwarded) = forwarded {
            if !wrote_for {
                header_line(head, b"x-forwarded-for", forwarded.peer_ip.as_bytes());
            }
            let kept = |name| forwarded.trusted && req.headers().contains_key(name);
            if !kept(&X_FORWARDED_PROTO) {
                header_line(head, b"x-forwarded-proto", forwarded.scheme.as_bytes());
            }
            if let Some(host) = forwarded.host.filter(|_| !kept(&X_FORWARDED_HOST)) {
                header_line(head, b"x-forwarded-host", host.as_bytes());
            }
        }
        head.extend_from_slice(b"\r\n");
    }
}

/// `name: value` and CRLF.
fn header_line(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// Sends `req` (no body: see [`can_carry`]; origin-form target, `Host` set) on `conn`, with
/// this hop's `X-Forwarded-*` headers if any, and reads the response head. The body reads
/// the rest and owns the connection until then.
pub async fn send<B>(
    mut conn: Box<Conn>,
    req: &Request<B>,
    forwarded: Option<&Forwarded<'_>>,
) -> Result<Response<Body>, Error> {
    conn.encode(req, forwarded);
    let Conn { io, head, .. } = &mut *conn;
    io.write_all(head).await.map_err(Error::Unsent)?;
    let head_request = req.method() == Method::HEAD;
    let mut received = false;
    loop {
        if !conn.buf.is_empty() {
            received = true;
            // Parsed from an immutable view of everything read, so that the header values
            // can share its bytes.
            let input = conn.buf.split().freeze();
            match parse_head(&input, head_request)? {
                Parsed::Incomplete => {
                    // Back into the buffer to read more after it: without a copy once the
                    // empty rest of the buffer no longer shares the allocation.
                    conn.buf = BytesMut::new();
                    conn.buf = input
                        .try_into_mut()
                        .unwrap_or_else(|input| BytesMut::from(&input[..]));
                }
                // Skipped; what follows is the next head.
                Parsed::Interim(len) => {
                    conn.buf.extend_from_slice(&input[len..]);
                    continue;
                }
                Parsed::Final(mut response, len) => {
                    // The start of the body, if any, goes back in front of what is read next.
                    conn.buf.extend_from_slice(&input[len..]);
                    let body = response.body_mut();
                    body.done = matches!(body.kind, Kind::Empty | Kind::Length(0));
                    body.conn = Some(conn);
                    return Ok(response);
                }
            }
        }
        match conn.fill().await {
            Ok(0) if received => return Err(Error::Truncated(None)),
            Ok(0) => return Err(Error::Unanswered(None)),
            Ok(_) => {}
            Err(e) if received => return Err(Error::Truncated(Some(e))),
            Err(e) => return Err(Error::Unanswered(Some(e))),
        }
    }
}

/// What is at the front of the input.
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per exchange and matched at once; boxing would allocate"
)]
enum Parsed {
    /// Part of a head.
    Incomplete,
    /// An interim (1xx) response of this length, to skip.
    Interim(usize),
    /// The final response's head, of this length.
    Final(Response<Body>, usize),
}

/// Parses the response head at the start of `input`.
fn parse_head(input: &Bytes, head_request: bool) -> Result<Parsed, Error> {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        input,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => {
            return Err(Error::HeadTooLarge);
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD_BYTES => {
            return Err(Error::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Incomplete),
        Err(e) => return Err(Error::Parse(e)),
    };
    let code = parsed.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| Error::Parse(httparse::Error::Status))?;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Parsed::Interim(len));
    }
    let version = if parsed.version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };

    // One pass: the headers that go on, and what the framing needs. Hop-by-hop headers are
    // dropped here (this pass has to read `Connection` anyway), so the response needs no
    // `headers::strip_hop_by_hop` later.
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    // The last element of the last `Transfer-Encoding` field, if any: chunked or not.
    let mut final_chunked = None;
    // Whether the last non-empty element of those fields is chunked.
    let mut last_coding_chunked = false;
    // What the `Content-Length` fields say, read as they go by; an invalid one is an error
    // only if the framing comes to rest on them (not for HEAD, 204, 304, or beside a
    // Transfer-Encoding), as in hyper's client.
    let mut length: Result<Option<u64>, &'static str> = Ok(None);
    let mut close = version != Version::HTTP_11;
    let mut named: Vec<HeaderName> = Vec::new();
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| Error::Parse(httparse::Error::HeaderName))?;
        let value = trim(header.value);
        if name == CONTENT_LENGTH {
            length = length.and_then(|known| fold_length(known, value));
        } else if headers::is_hop_by_hop(&name) {
            if name == TRANSFER_ENCODING {
                // Whatever its value, even empty: only the final coding matters.
                let mut elements = value.rsplit(|&b| b == b',').map(trim);
                let last = elements.next().unwrap_or_default();
                final_chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
                if let Some(coding) = std::iter::once(last)
                    .chain(elements)
                    .find(|c| !c.is_empty())
                {
                    last_coding_chunked = coding.eq_ignore_ascii_case(b"chunked");
                }
            } else if name == CONNECTION {
                for token in value.split(|&b| b == b',').map(trim) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                        // Other names listed are hop-by-hop too; rarely any.
                        named.extend(HeaderName::from_bytes(token).ok());
                    }
                }
            }
            continue;
        }
        let value = HeaderValue::from_maybe_shared(input.slice_ref(value))
            .map_err(|_| Error::Parse(httparse::Error::HeaderValue))?;
        map.append(name, value);
    }
    for name in &named {
        map.remove(name);
    }

    let no_body = head_request
        || status == StatusCode::SWITCHING_PROTOCOLS
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let kind = if no_body {
        Kind::Empty
    } else if let Some(chunked) = final_chunked {
        // RFC 9112 §6.1: the framing of an HTTP/1.0 message with a Transfer-Encoding is faulty
        // (a hop that does not know transfer codings may have passed it on undecoded).
        if version != Version::HTTP_11 {
            return Err(Error::Framing("Transfer-Encoding in an HTTP/1.0 response"));
        }
        // `chunked,` ends in chunked once the empty element is ignored (RFC 9110 §5.6.1.2), and
        // in another coding if it is not (hyper's client reads such a body until close). Two
        // readers could frame it differently: refused.
        if !chunked && last_coding_chunked {
            return Err(Error::Framing(CHUNKED_THEN_EMPTY));
        }
        // A transfer coding overrides Content-Length, which is dropped whatever it says, and
        // then the connection must not be reused (RFC 9112 §6.3, item 3).
        if map.remove(CONTENT_LENGTH).is_some() {
            close = true;
        }
        if chunked {
            Kind::Chunked(Chunked::Size)
        } else {
            Kind::UntilClose
        }
    } else if let Some(length) = length.map_err(Error::Framing)? {
        Kind::Length(length)
    } else {
        Kind::UntilClose
    };
    let reusable = !close && kind != Kind::UntilClose && status != StatusCode::SWITCHING_PROTOCOLS;

    let mut response = Response::new(Body {
        conn: None,
        kind,
        done: false,
        reusable,
    });
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = map;
    Ok(Parsed::Final(response, len))
}

/// `bytes` without leading and trailing spaces and tabs.
fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// The length so far of the `Content-Length` fields, `known`, with one more field's value:
/// every value, and every element of a list, must be the same number (RFC 9110 §8.6).
fn fold_length(mut known: Option<u64>, value: &[u8]) -> Result<Option<u64>, &'static str> {
    for item in value.split(|&b| b == b',') {
        let n = parse_length(trim(item)).ok_or("invalid Content-Length")?;
        if known.is_some_and(|l| l != n) {
            return Err("conflicting Content-Length values");
        }
        known = Some(n);
    }
    Ok(known)
}

/// A `Content-Length` value: decimal digits only (leading zeros too, RFC 9110 §8.6), no sign, no
/// overflow.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let digit = d.is_ascii_digit().then(|| u64::from(d - b'0'))?;
        n.checked_mul(10)?.checked_add(digit)
    })
}

/// How a response body is delimited, and how much of it is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Empty,
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

/// Where a chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// In a chunk's data, with this much left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one, with this many bytes and
    /// lines seen.
    Trailers {
        bytes: usize,
        lines: usize,
    },
    Done,
}

impl Chunked {
    /// Decodes from `buf`: the next piece of data, or `None` when more input is needed or
    /// the body has ended (then the state is [`Chunked::Done`]).
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(None);
                    };
                    let size = parse_chunk_size(&line)?;
                    *self = if size == 0 {
                        Chunked::Trailers { bytes: 0, lines: 0 }
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Some(data));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Error::Framing("chunk data not followed by CRLF"));
                    }
                    let _ = buf.split_to(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers { bytes, lines } => {
                    let limit = MAX_TRAILER_BYTES.saturating_sub(bytes);
                    let Some(line) = take_line(buf, limit)? else {
                        return Ok(None);
                    };
                    let len = line.len();
                    if len == 2 {
                        *self = Chunked::Done;
                        continue;
                    }
                    // Dropped, but held to what hyper's client accepts: at most MAX_HEADERS
                    // lines, each a valid field line.
                    if lines == MAX_HEADERS || !is_field_line(line) {
                        return Err(Error::Framing("invalid trailer section"));
                    }
                    *self = Chunked::Trailers {
                        bytes: bytes + len,
                        lines: lines + 1,
                    };
                }
                Chunked::Done => return Ok(None),
            }
        }
    }
}

/// Takes a CRLF-terminated line (CRLF included) off the front of `buf`; `None` when the line
/// is not complete yet. Lines longer than `limit` are an error.
fn take_line(buf: &mut BytesMut, limit: usize) -> Result<Option<BytesMut>, Error> {
    match buf.iter().take(limit).position(|&b| b == b'\n') {
        Some(lf) if lf > 0 && buf[lf - 1] == b'\r' => Ok(Some(buf.split_to(lf + 1))),
        Some(_) => Err(Error::Framing(BARE_LF)),
        None if buf.len() >= limit => Err(Error::Framing("chunk-size line or trailers too long")),
        None => Ok(None),
    }
}

/// Whether a CRLF-terminated line is one field line (`name: value`), as httparse reads it.
fn is_field_line(mut line: BytesMut) -> bool {
    line.extend_from_slice(b"\r\n");
    let mut field = [httparse::EMPTY_HEADER; 1];
    matches!(
        httparse::parse_headers(&line, &mut field),
        Ok(httparse::Status::Complete((_, [_])))
    )
}

/// The size of a chunk-size line (`1a;ext=v\r\n`): hexadecimal digits (leading zeros too), no
/// overflow. A CR before the line's end is refused: another reader could end the line there.
fn parse_chunk_size(line: &[u8]) -> Result<u64, Error> {
    let line = &line[..line.len() - 2];
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = trim(&line[digits..]);
    if digits == 0 || !(rest.is_empty() || rest[0] == b';') || rest.contains(&b'\r') {
        return Err(Error::Framing("invalid chunk size"));
    }
    line[..digits]
        .iter()
        .try_fold(0u64, |n, &d| {
            let digit = char::from(d).to_digit(16)?;
            n.checked_mul(16)?.checked_add(digit.into())
        })
        .ok_or(Error::Framing("invalid chunk size"))
}

/// A response body read from its connection. Once read to the end, [`Body::into_reusable`]
/// gives the connection back if it can take another request.
pub struct Body {
    conn: Option<Box<Conn>>,
    kind: Kind,
    done: bool,
    reusable: bool,
}

impl Body {
    /// The connection, if the body was read to its end and the connection can be reused.
    pub fn into_reusable(&mut self) -> Option<Box<Conn>> {
        let conn = self.conn.take()?;
        (self.done && self.reusable && conn.buf.is_empty()).then_some(conn)
    }

    fn conn(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("an unfinished body has its connection")
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let want = match this.kind {
                Kind::Empty => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Kind::Length(left) => {
                    let buf = &mut this.conn().buf;
                    if !buf.is_empty() {
                        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                        let data = buf.split_to(n).freeze();
                        let left = left - n as u64;
                        this.kind = Kind::Length(left);
                        this.done = left == 0;
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    usize::try_from(left).unwrap_or(usize::MAX)
                }
                Kind::Chunked(mut state) => {
                    let decoded = state.decode(&mut this.conn().buf);
                    this.kind = Kind::Chunked(state);
                    match decoded {
                        Err(e) => {
                            this.done = true;
                            this.reusable = false;
                            return Poll::Ready(Some(Err(e)));
                        }
                        Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        Ok(None) if state == Chunked::Done => {
                            this.done = true;
                            return Poll::Ready(None);
                        }
                        Ok(None) => READ_SIZE,
                    }
                }
                Kind::UntilClose => {
                    let buf = &mut this.conn().buf;
                    if !buf.is_empty() {
                        let data = buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    READ_SIZE
                }
            };
            match ready!(this.conn().poll_fill(cx, want)) {
                Ok(0) if this.kind == Kind::UntilClose => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.done = true;
                    this.reusable = false;
                    return Poll::Ready(Some(Err(Error::Truncated(None))));
                }
                Ok(_) => {}
                Err(e) => {
                    this.done = true;
                    this.reusable = false;
                    return Poll::Ready(Some(Err(Error::Truncated(Some(e)))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || matches!(self.kind, Kind::Empty | Kind::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Length(left) => SizeHint::with_exact(left),
            Kind::Chunked(_) | Kind::UntilClose => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod differential;
#[cfg(test)]
mod tests;
