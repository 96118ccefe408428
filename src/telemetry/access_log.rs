//! The access-log line (one per request) and every other JSON log line, written directly.
//!
//! [`Access::push_json`] writes a request's access line without tracing's dispatch;
//! [`JsonLines`], the event formatter of `[log] format = "json"`, writes exactly the lines of
//! tracing-subscriber's `fmt().json().flatten_event(true).with_current_span(false)`
//! (timestamp, level, the event's fields in order, target), at a fraction of the cost: the
//! generic formatter goes through `tracing-serde`, a serde map serializer, an `io::Write`
//! adaptor and `fmt` for the timestamp, about 17,000 instructions per access-log line, more
//! than a third of what proxying the request costs (callgrind, bench/load.sh setup). An event
//! inside a span (tollgate opens none today) is handed to the generic formatter, which adds
//! the `spans` list.

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use time::{OffsetDateTime, PrimitiveDateTime};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON event formatter; see the module documentation.
pub struct JsonLines {
    in_span: Format<format::Json>,
}

impl Default for JsonLines {
    fn default() -> Self {
        JsonLines {
            in_span: format().json().flatten_event(true).with_current_span(false),
        }
    }
}

fn format() -> Format {
    tracing_subscriber::fmt::format()
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let in_span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current())
            .is_some();
        if in_span {
            return self.in_span.format_event(ctx, writer, event);
        }
        let meta = event.metadata();
        // The line is built in a String of its own (plain pushes, inlined) and handed to the
        // writer in one call; writing each piece through `Writer` is a dynamic call apiece.
        let mut line = String::with_capacity(256);
        line.push_str("{\"timestamp\":\"");
        push_timestamp(&mut line, SystemTime::now());
        line.push_str("\",\"level\":\"");
        line.push_str(level(meta.level()));
        line.push('"');
        event.record(&mut Fields(&mut line));
        line.push_str(",\"target\":");
        push_string(&mut line, meta.target());
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// The fields of the access-log event (`tollgate::access`), in the order it logs them.
#[derive(Debug)]
pub struct Access<'a> {
    /// Request method.
    pub method: &'a str,
    /// Normalised path.
    pub path: &'a str,
    /// Route name.
    pub route: &'a str,
    /// Response status.
    pub status: u16,
    /// The `decision` label.
    pub decision: &'a str,
    /// Time to the response head.
    pub duration_ms: f64,
    /// The upstream's status, when it answered.
    pub upstream_status: Option<u16>,
    /// The issuer of a verified token.
    pub issuer: Option<&'a str>,
    /// The error code of a response tollgate wrote itself.
    pub error: Option<&'a str>,
}

impl Access<'_> {
    /// The line [`JsonLines`] writes for this event, built without tracing's dispatch and
    /// field visitors (about 4,000 instructions of a 28,000-instruction proxied request
    /// with the access log on, callgrind). Tested to be the same line.
    pub fn push_json(&self, line: &mut String, now: SystemTime) {
        line.push_str("{\"timestamp\":\"");
        push_timestamp(line, now);
        line.push_str("\",\"level\":\"INFO\",\"method\":");
        push_string(line, self.method);
        line.push_str(",\"path\":");
        push_string(line, self.path);
        line.push_str(",\"route\":");
        push_string(line, self.route);
        line.push_str(",\"status\":");
        push_u64(line, u64::from(self.status));
        line.push_str(",\"decision\":");
        push_string(line, self.decision);
        line.push_str(",\"duration_ms\":");
        push_f64(line, self.duration_ms);
        if let Some(status) = self.upstream_status {
            line.push_str(",\"upstream_status\":");
            push_u64(line, u64::from(status));
        }
        if let Some(issuer) = self.issuer {
            line.push_str(",\"issuer\":");
            push_string(line, issuer);
        }
        if let Some(error) = self.error {
            line.push_str(",\"error\":");
            push_string(line, error);
        }
        line.push_str(",\"target\":\"tollgate::access\"}\n");
    }
}

fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::ERROR => "ERROR",
    }
}

/// Writes each field as `,"name":value`, the way `tracing-serde` and `serde_json` do: numbers
/// and booleans bare, strings escaped, everything else (`Debug`, `Display`, errors, 128-bit
/// integers) as the string of its `Debug` output.
struct Fields<'a>(&'a mut String);

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.0.push(',');
        push_string(self.0, field.name());
        self.0.push(':');
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_string(self.0, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.0.push_str(if value { "true" } else { "false" });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        push_u64(self.0, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        if value < 0 {
            self.0.push('-');
        }
        push_u64(self.0, value.unsigned_abs());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        push_f64(self.0, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.0.push('"');
        // Writing to a String cannot fail; a Debug impl that fails leaves what it wrote.
        let _ = write!(Escaped(self.0), "{value:?}");
        self.0.push('"');
    }
}

/// serde_json's own rendering of a float (shortest round-trip digits, `null` when not finite),
/// with the formatter serde_json uses.
fn push_f64(out: &mut String, value: f64) {
    if value.is_finite() {
        out.push_str(zmij::Buffer::new().format_finite(value));
    } else {
        out.push_str("null");
    }
}

/// Decimal digits of `n`.
fn push_u64(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// A JSON string, quoted and escaped as `serde_json` does.
pub(crate) fn push_string(out: &mut String, s: &str) {
    out.push('"');
    escape(out, s);
    out.push('"');
}

/// For each byte: 0 when it is copied as is, else the letter of its short escape (`u` for
/// `\u00XX`), as serde_json's table.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Escapes `"`, `\` and control characters (`\n`, `\r`, `\t`, `\b`, `\f`, else `\u00XX`),
/// copying the runs between them whole.
fn escape(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let code = ESCAPE[usize::from(b)];
        if code == 0 {
            continue;
        }
        // Every byte that needs escaping is ASCII, so these slices fall on char boundaries.
        out.push_str(&s[start..i]);
        out.push('\\');
        out.push(char::from(code));
        if code == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

/// Escapes what is written through it.
struct Escaped<'a>(&'a mut String);

impl Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape(self.0, s);
        Ok(())
    }
}

/// `2026-11-22T14:39:03.948248Z`: UTC with microseconds, as tracing-subscriber's `SystemTime`.
fn push_timestamp(out: &mut String, now: SystemTime) {
    thread_local! {
        /// The text up to the seconds (`2026-11-22T14:39:03.`) and the second it is for:
        /// made once a second, not once a line.
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != secs {
            // A clock past the year 9999 (which `time` does not represent) shows that year's
            // last second.
            let at = i64::try_from(secs)
                .ok()
                .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
                .unwrap_or(PrimitiveDateTime::MAX.assume_utc());
            let mut buf = *b"0000-00-00T00:00:00.";
            put(&mut buf[0..4], at.year().unsigned_abs().into());
            put(&mut buf[5..7], u8::from(at.month()).into());
            put(&mut buf[8..10], at.day().into());
            put(&mut buf[11..13], at.hour().into());
            put(&mut buf[14..16], at.minute().into());
            put(&mut buf[17..19], at.second().into());
            // All ASCII digits and punctuation.
            text.clear();
            text.push_str(std::str::from_utf8(&buf).unwrap_or_default());
            *second = secs;
        }
        out.push_str(text);
    });
    let mut micros = itoa::Buffer::new();
    let micros = micros.format(since.subsec_micros());
    out.push_str(&"000000"[micros.len()..]);
    out.push_str(micros);
    out.push('Z');
}

/// Writes `n` as decimal digits right-aligned in `out`, zero-padded (truncated on the left).
fn put(out: &mut [u8], mut n: u64) {
    for d in out.iter_mut().rev() {
        // n % 10 < 10, so the cast keeps the value.
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;
    use std::time::Duration;

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Odd {
        _text: &'static str,
    }

    fn events() {
        let error = std::io::Error::other("disk \"full\"\n");
        tracing::info!(target: "tollgate::access", method = %"GET", path = "/a\"b\\c\u{1}\t", route = "all",
            status = 200u16, decision = "anonymous", duration_ms = 0.123_456_789_f64,
            upstream_status = Some(200u16), error = Option::<&str>::None);
        tracing::warn!(big = u128::MAX, neg = -5i64, min = i64::MIN, zero = 0u64, max = u64::MAX, yes = true, nan = f64::NAN, whole = 3.0f64,
            tiny = 1e-7f64, odd = ?Odd { _text: "é\u{7f}" }, %error, "message with {} and \"quotes\"", 42);
        tracing::error!("plain");
        tracing::debug!(r#type = "raw", "ünïcode ✓");
    }

    /// Drops the timestamp value, which differs between two runs.
    fn without_timestamps(text: &str) -> Vec<String> {
        text.lines()
            .map(|line| {
                let rest = line
                    .strip_prefix("{\"timestamp\":\"")
                    .expect("the line starts with the timestamp");
                assert_eq!(rest.as_bytes()[27], b'"', "timestamp shape in {line}");
                rest[28..].to_owned()
            })
            .collect()
    }

    fn access(upstream_status: Option<u16>, issuer: Option<&str>, error: Option<&str>) {
        tracing::info!(
            target: "tollgate::access",
            method = %http::Method::GET,
            path = "/a \"quoted\"\n path",
            route = "api",
            status = 200u16,
            decision = "allowed",
            duration_ms = 1.25f64,
            upstream_status,
            issuer,
            error,
        );
    }

    #[test]
    fn the_direct_access_line_is_the_traced_one() {
        let traced = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(traced.clone())
            .json()
            .event_format(JsonLines::default())
            .finish();
        let cases = [
            (Some(201), Some("https://sts.windows.net/t/"), None),
            (None, None, Some("no_route")),
        ];
        tracing::subscriber::with_default(subscriber, || {
            for (upstream_status, issuer, error) in cases {
                access(upstream_status, issuer, error);
            }
        });
        let mut direct = String::new();
        for (upstream_status, issuer, error) in cases {
            Access {
                method: "GET",
                path: "/a \"quoted\"\n path",
                route: "api",
                status: 200,
                decision: "allowed",
                duration_ms: 1.25,
                upstream_status,
                issuer,
                error,
            }
            .push_json(&mut direct, SystemTime::now());
        }
        let traced = String::from_utf8(traced.0.lock().clone()).unwrap();
        assert_eq!(without_timestamps(&direct), without_timestamps(&traced));
        assert_eq!(without_timestamps(&direct).len(), 2);
    }

    #[test]
    fn lines_are_those_of_the_generic_formatter() {
        let generic = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_writer(generic.clone())
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish();
        tracing::subscriber::with_default(subscriber, events);

        let fast = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_writer(fast.clone())
            .json()
            .event_format(JsonLines::default())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            events();
            // Inside a span the generic formatter takes over.
            let span = tracing::info_span!("request", id = 7);
            let _entered = span.enter();
            tracing::info!("in a span");
        });

        let generic = String::from_utf8(generic.0.lock().clone()).unwrap();
        let fast = String::from_utf8(fast.0.lock().clone()).unwrap();
        let (generic, fast) = (without_timestamps(&generic), without_timestamps(&fast));
        assert_eq!(fast.len(), 5);
        assert_eq!(fast[..4], generic[..]);
        assert!(fast[4].contains("\"spans\":[{\"id\":7,\"name\":\"request\"}]"));
        for line in &fast {
            let value: serde_json::Value =
                serde_json::from_str(&format!("{{\"timestamp\":\"t\"{line}")).unwrap();
            assert!(value.is_object());
        }
    }

    /// The hand-written date arithmetic the timestamp used before `time` (Howard Hinnant's
    /// `civil_from_days`), kept as the reference.
    fn former_civil_from_days(days: u64) -> (u64, u64, u64) {
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        (yoe + era * 400 + u64::from(month <= 2), month, day)
    }

    /// Every day from 1970 to the end of 9999 gives the date it gave before.
    #[test]
    fn dates_are_those_of_the_former_arithmetic() {
        let last = 2_932_896; // 9999-12-31
        for days in 0..=last {
            let (y, m, d) = former_civil_from_days(days);
            let mut s = String::new();
            push_timestamp(
                &mut s,
                UNIX_EPOCH + Duration::from_secs(days * 86_400 + 86_399),
            );
            let want = format!("{y:04}-{m:02}-{d:02}T23:59:59.000000Z");
            assert_eq!(s, want, "day {days}");
        }
    }

    proptest::proptest! {
        /// Any second and microsecond to the end of 9999: the former text.
        #[test]
        fn timestamps_are_those_of_the_former_arithmetic(
            secs in 0u64..253_402_300_800,
            micros in 0u32..1_000_000,
        ) {
            let (y, m, d) = former_civil_from_days(secs / 86_400);
            let rem = secs % 86_400;
            let want = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            );
            let mut s = String::new();
            push_timestamp(
                &mut s,
                UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros.into()),
            );
            proptest::prop_assert_eq!(s, want);
        }
    }

    #[test]
    fn timestamps() {
        let at = |secs: u64, micros: u64| {
            let mut s = String::new();
            push_timestamp(
                &mut s,
                UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros),
            );
            s
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(at(1_795_358_343, 948_248), "2026-11-22T14:39:03.948248Z");
        assert_eq!(at(4_102_444_799, 999_999), "2099-12-31T23:59:59.999999Z");
        // The text up to the seconds is kept per second: within one, across one, and back.
        assert_eq!(at(1_795_358_343, 7), "2026-11-22T14:39:03.000007Z");
        assert_eq!(at(1_795_358_343, 120_000), "2026-11-22T14:39:03.120000Z");
        assert_eq!(at(1_795_358_344, 0), "2026-11-22T14:39:04.000000Z");
        assert_eq!(at(1_795_358_343, 1), "2026-11-22T14:39:03.000001Z");
        // Past 9999 (the former code wrote the year's last four digits: 0000).
        assert_eq!(at(253_402_300_800, 5), "9999-12-31T23:59:59.000005Z");
    }
}
