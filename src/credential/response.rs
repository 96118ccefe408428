//! Token and error responses, parsed with every quirk the Azure endpoints are known to emit:
//! numbers as strings, `expires_on` as an epoch (number or string) or a date string, no
//! `expires_in`, errors as OAuth bodies, nested `{"error":{"code","message"}}` envelopes or
//! App Service's `{"statusCode","message"}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;
use time::{Date, Month, OffsetDateTime};

use super::{AccessToken, CredentialError, Endpoint, ErrorDetail, UserAction};
use crate::telemetry::redact::Secret;

/// Longest error description kept, in characters: enough for an AADSTS sentence.
const MAX_DESCRIPTION: usize = 300;

#[derive(Deserialize)]
struct RawToken {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_on: Option<Value>,
    #[serde(default)]
    expires_in: Option<Value>,
    #[serde(default)]
    refresh_in: Option<Value>,
}

/// Parses a successful token response. `requested` is when the request was sent: an
/// `expires_in` counts from then (as azure-identity counts it), so a slow answer errs
/// towards refreshing early.
pub fn parse_token(
    endpoint: Endpoint,
    body: &[u8],
    requested: SystemTime,
) -> Result<AccessToken, CredentialError> {
    let invalid = |reason: &str| CredentialError::InvalidResponse {
        endpoint,
        reason: reason.to_owned(),
    };
    let raw: RawToken =
        serde_json::from_slice(body).map_err(|_| invalid("not a JSON token response"))?;
    if raw.access_token.is_empty() {
        return Err(invalid("empty access_token"));
    }
    // It goes into an Authorization header: visible ASCII only.
    if !raw.access_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("access_token has characters a header cannot carry"));
    }
    if let Some(t) = &raw.token_type
        && !t.eq_ignore_ascii_case("bearer")
    {
        return Err(invalid("token_type is not Bearer"));
    }
    // expires_on first (MSAL Go, azure-identity): it is the token's own exp.
    let expires_on = match (&raw.expires_on, &raw.expires_in) {
        (Some(on), _) if expires_on(on).is_some() => expires_on(on).and_then(epoch),
        // A time past what the clock can hold is as invalid as a missing one.
        (_, Some(secs)) => {
            seconds(secs).and_then(|s| requested.checked_add(Duration::from_secs(s)))
        }
        _ => None,
    }
    .ok_or_else(|| invalid("expires_in and expires_on are both missing or invalid"))?;
    if expires_on <= requested {
        return Err(invalid("the token has already expired"));
    }
    Ok(AccessToken {
        token: Secret::new(raw.access_token),
        expires_on,
        refresh_in: raw
            .refresh_in
            .as_ref()
            .and_then(seconds)
            .map(Duration::from_secs),
    })
}

/// Parses an error response into what can be shown: a code, a one-line description and the
/// AADSTS number. Never fails: an unreadable body gives an empty detail.
pub fn parse_error(body: &[u8]) -> ErrorDetail {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return ErrorDetail::default();
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let (code, description) = match value.get("error") {
        // Service Fabric and Cloud Shell: {"error":{"code","message"}}.
        Some(Value::Object(inner)) => (text(inner.get("code")), text(inner.get("message"))),
        Some(Value::String(code)) => (Some(code.clone()), text(value.get("error_description"))),
        // App Service: {"statusCode":400,"message":"..."}.
        _ => (None, text(value.get("message"))),
    };
    let description = description.map(|d| one_line(&d));
    let aadsts = value
        .get("error_codes")
        .and_then(Value::as_array)
        .and_then(|codes| codes.first())
        .and_then(Value::as_u64)
        .or_else(|| description.as_deref().and_then(aadsts_in));
    // A claims challenge is JSON text; kept whole (it goes back to the app base64-encoded),
    // but bounded, and only when it is JSON.
    let claims = text(value.get("claims")).filter(|c| {
        !c.is_empty()
            && c.len() <= MAX_CLAIMS
            && serde_json::from_str::<Value>(c).is_ok_and(|v| v.is_object())
    });
    ErrorDetail {
        code: code.map(|c| one_line(&c)),
        description,
        aadsts: aadsts.and_then(|c| u32::try_from(c).ok()),
        user_action: {
            let action = UserAction {
                suberror: text(value.get("suberror")).map(|c| one_line(&c)),
                claims,
            };
            (action != UserAction::default()).then(|| Box::new(action))
        },
    }
}

/// Unix seconds from an `expires_on` value: a JSON number, a string of digits, or one of the
/// date forms App Service 2017 and others emit.
pub fn expires_on(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<u64>().ok().or_else(|| parse_date(s))
        }
        _ => None,
    }
}

/// Seconds from a JSON number or a numeric string (`"3599"`).
pub fn seconds(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Unix seconds from the date strings App Service 2017 writes and the SDKs' parsers accept,
/// all UTC unless an offset is given: `06/20/2019 02:57:58 +00:00`,
/// `1/16/2020 5:24:12 AM +00:00`, `01/02/2006 15:04:05`, `2006-01-02 15:04:05` and RFC 3339
/// (`2006-01-02T15:04:05Z`).
pub fn parse_date(text: &str) -> Option<u64> {
    let (date, rest) = text.split_once([' ', 'T'])?;
    let (year, month, day): (i32, u8, u8) = if date.contains('/') {
        let mut p = date.split('/');
        let (m, d, y) = (p.next()?, p.next()?, p.next()?);
        (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
    } else {
        let mut p = date.split('-');
        let (y, m, d) = (p.next()?, p.next()?, p.next()?);
        (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
    };
    let mut words = rest.split_whitespace();
    let clock = words.next()?;
    let (clock, mut offset) = split_offset(clock);
    let mut hms = clock.split(':');
    let (mut hour, minute): (u64, u64) = (hms.next()?.parse().ok()?, hms.next()?.parse().ok()?);
    let second: u64 = hms.next().map_or(Some(0.0), |s| s.parse::<f64>().ok())? as u64;
    for word in words {
        match word.to_ascii_uppercase().as_str() {
            "AM" if hour == 12 => hour = 0,
            "PM" if hour < 12 => hour += 12,
            "AM" | "PM" => {}
            other => offset = Some(offset_seconds(other)?),
        }
    }
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // Counted from the first of the month, so a day past the month's end (02/30) runs on into
    // the next month, as it always has here.
    let first = Date::from_calendar_date(year, Month::try_from(month).ok()?, 1).ok()?;
    let local = first.midnight().assume_utc().unix_timestamp()
        + i64::from(day - 1) * 86_400
        + i64::try_from(hour * 3600 + minute * 60 + second).ok()?;
    u64::try_from(local - offset.unwrap_or(0)).ok()
}

/// Splits an RFC 3339 time into the clock part and its offset (`Z`, `+01:00`).
fn split_offset(clock: &str) -> (&str, Option<i64>) {
    if let Some(c) = clock.strip_suffix(['Z', 'z']) {
        return (c, Some(0));
    }
    match clock.rfind(['+', '-']) {
        Some(i) if i > 0 => match offset_seconds(&clock[i..]) {
            Some(o) => (&clock[..i], Some(o)),
            None => (clock, None),
        },
        _ => (clock, None),
    }
}

/// `+00:00`, `-05:30`, `+0100` as seconds east of UTC.
fn offset_seconds(text: &str) -> Option<i64> {
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = text[1..].chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (i64, i64) = (digits[..2].parse().ok()?, digits[2..].parse().ok()?);
    Some(sign * (h * 3600 + m * 60))
}

/// A unix time as `2024-05-01T12:00:00Z`; a time before 1970 as the epoch, one past the year
/// 9999 as its unix seconds (`@253402300800`).
pub fn format_utc(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let Some(at) = i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
    else {
        return format!("@{secs}");
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// `secs` after the Unix epoch; `None` past what `SystemTime` can hold.
fn epoch(secs: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// The number after `AADSTS` in a description, if any.
fn aadsts_in(text: &str) -> Option<u64> {
    let at = text.find("AADSTS")? + "AADSTS".len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The first line of `text`, control characters removed, at most [`MAX_DESCRIPTION`] chars:
/// Entra appends Trace ID, Correlation ID and Timestamp lines that help no one in a 503.
/// The longest claims challenge kept from an error body.
const MAX_CLAIMS: usize = 4096;

fn one_line(text: &str) -> String {
    let first = text.split(['\r', '\n']).next().unwrap_or_default().trim();
    first
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DESCRIPTION)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// An expiry past what the clock can hold is an invalid response, never a panic.
    #[test]
    fn an_expiry_beyond_the_clock_is_invalid() {
        let now = SystemTime::now();
        for body in [
            json!({"access_token": "t", "expires_on": u64::MAX}),
            json!({"access_token": "t", "expires_in": u64::MAX}),
            json!({"access_token": "t", "expires_in": u64::MAX.to_string()}),
        ] {
            let body = body.to_string();
            let result = parse_token(Endpoint::Imds, body.as_bytes(), now);
            assert!(
                matches!(result, Err(CredentialError::InvalidResponse { .. })),
                "{body}"
            );
        }
    }

    #[test]
    fn expires_on_forms() {
        let cases: [(Value, Option<u64>); 12] = [
            (json!(1_506_484_173), Some(1_506_484_173)),
            (json!("1506484173"), Some(1_506_484_173)),
            (json!(" 1586984735 "), Some(1_586_984_735)),
            (json!("06/20/2019 02:57:58 +00:00"), Some(1_560_999_478)),
            (json!("1/16/2020 5:24:12 AM +00:00"), Some(1_579_152_252)),
            (json!("1/16/2020 5:24:12 PM +00:00"), Some(1_579_195_452)),
            (json!("1/16/2020 12:05:00 AM +00:00"), Some(1_579_133_100)),
            (json!("06/20/2019 04:57:58 +02:00"), Some(1_560_999_478)),
            (json!("2019-06-20 02:57:58"), Some(1_560_999_478)),
            (json!("2019-06-20T02:57:58Z"), Some(1_560_999_478)),
            (json!("soon"), None),
            (json!(-5), None),
        ];
        for (value, want) in cases {
            assert_eq!(expires_on(&value), want, "{value}");
        }
        assert_eq!(parse_date("13/01/2020 00:00:00"), None, "month 13");
        assert_eq!(parse_date("2020-01-01T00:00:00+0100"), Some(1_577_833_200));
    }

    /// Days since 1970-01-01 of a date: the hand-written arithmetic (Howard Hinnant's
    /// `days_from_civil`) used before `time`, kept as the reference.
    fn former_days_from_civil(year: i64, month: u32, day: u32) -> i64 {
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The former `format_utc`, on its reverse (`civil_from_days`).
    fn former_format_utc(secs: i64) -> String {
        let z = secs.div_euclid(86_400) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        let rem = secs.rem_euclid(86_400);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }

    #[test]
    fn formats_utc() {
        assert_eq!(
            format_utc(epoch(1_560_999_478).unwrap()),
            "2019-06-20T02:57:58Z"
        );
        assert_eq!(format_utc(epoch(0).unwrap()), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_utc(epoch(253_402_300_799).unwrap()),
            "9999-12-31T23:59:59Z"
        );
        // Former code: "10000-01-01T00:00:00Z".
        assert_eq!(format_utc(epoch(253_402_300_800).unwrap()), "@253402300800");
        assert_eq!(
            format_utc(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    proptest::proptest! {
        /// Every date form, 1970 to 9999, any day 1 to 31 of any month (one past the month's
        /// end runs on into the next), any offset: the seconds the former arithmetic gave.
        #[test]
        fn dates_parse_as_with_the_former_arithmetic(
            year in 1970i64..=9999,
            month in 1u32..=12,
            day in 1u32..=31,
            hour in 0u64..24,
            minute in 0u64..60,
            second in 0u64..60,
            offset_minutes in -14 * 60i64..=14 * 60,
            form in 0..4,
        ) {
            let offset = format!(
                "{}{:02}:{:02}",
                if offset_minutes < 0 { '-' } else { '+' },
                offset_minutes.abs() / 60,
                offset_minutes.abs() % 60
            );
            let (h12, half) = match hour {
                0 => (12, "AM"),
                1..=11 => (hour, "AM"),
                12 => (12, "PM"),
                _ => (hour - 12, "PM"),
            };
            let (text, offset_secs) = match form {
                0 => (format!("{month:02}/{day:02}/{year} {hour:02}:{minute:02}:{second:02} {offset}"), offset_minutes * 60),
                1 => (format!("{month}/{day}/{year} {h12}:{minute:02}:{second:02} {half} {offset}"), offset_minutes * 60),
                2 => (format!("{year}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{offset}"), offset_minutes * 60),
                _ => (format!("{year}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}"), 0),
            };
            let local = former_days_from_civil(year, month, day) * 86_400
                + i64::try_from(hour * 3600 + minute * 60 + second).unwrap();
            let former = u64::try_from(local - offset_secs).ok();
            proptest::prop_assert_eq!(parse_date(&text), former, "{}", text);
        }

        /// Any second from 1970 to the end of 9999: the former text.
        #[test]
        fn utc_text_is_the_former_text(secs in 0u64..253_402_300_800) {
            let former = former_format_utc(i64::try_from(secs).unwrap());
            proptest::prop_assert_eq!(format_utc(epoch(secs).unwrap()), former);
        }
    }

    #[test]
    fn token_shapes() {
        let now = epoch(1_000).unwrap();
        let parse = |v: Value| parse_token(Endpoint::Imds, v.to_string().as_bytes(), now);
        // IMDS: every value a string.
        let t = parse(json!({"access_token":"a","expires_in":"3599","expires_on":"5000","token_type":"Bearer","refresh_token":""})).unwrap();
        assert_eq!(t.expires_on, epoch(5000).unwrap());
        // App Service 2019: no expires_in.
        let t = parse(json!({"access_token":"a","expires_on":"4600","resource":"r"})).unwrap();
        assert_eq!(t.expires_on, epoch(4600).unwrap());
        // Entra v2: numbers, no expires_on.
        let t = parse(json!({"access_token":"a","expires_in":3599,"ext_expires_in":3599,"token_type":"Bearer","refresh_in":1800})).unwrap();
        assert_eq!(t.expires_on, epoch(4599).unwrap());
        assert_eq!(t.refresh_in, Some(Duration::from_secs(1800)));
        // An unparseable expires_on falls back to expires_in.
        let t = parse(json!({"access_token":"a","expires_on":"later","expires_in":"60"})).unwrap();
        assert_eq!(t.expires_on, epoch(1060).unwrap());
        for bad in [
            json!({"access_token":"a"}),
            json!({"access_token":"","expires_in":1}),
            json!({"access_token":"a","expires_in":1,"token_type":"pop"}),
            json!({"expires_in":1}),
            json!({"access_token":"a b","expires_in":1}),
            json!({"access_token":"a","expires_on":"999"}),
            json!({"access_token":"a","expires_in":"0"}),
        ] {
            assert!(matches!(
                parse(bad.clone()),
                Err(CredentialError::InvalidResponse { .. })
            ));
        }
    }

    #[test]
    fn error_shapes() {
        let entra = json!({"error":"invalid_request","error_description":"AADSTS70021: No matching federated identity record found for presented assertion.\r\nTrace ID: x\r\nCorrelation ID: y","error_codes":[70021]});
        let d = parse_error(entra.to_string().as_bytes());
        assert_eq!(d.code.as_deref(), Some("invalid_request"));
        assert_eq!(
            d.description.as_deref(),
            Some(
                "AADSTS70021: No matching federated identity record found for presented assertion."
            )
        );
        assert_eq!(d.aadsts, Some(70021));
        let imds = json!({"error":"invalid_request","error_description":"Identity not found"});
        let d = parse_error(imds.to_string().as_bytes());
        assert_eq!(
            (d.code.as_deref(), d.aadsts),
            (Some("invalid_request"), None)
        );
        let in_text = json!({"error":"invalid_resource","error_description":"AADSTS50001: The application named x was not found"});
        assert_eq!(
            parse_error(in_text.to_string().as_bytes()).aadsts,
            Some(50001)
        );
        let sf = json!({"error":{"code":"SecretHeaderNotFound","message":"Secret is not found in the request headers.","correlationId":"c"}});
        let d = parse_error(sf.to_string().as_bytes());
        assert_eq!(d.code.as_deref(), Some("SecretHeaderNotFound"));
        let app = json!({"statusCode":500,"message":"An unexpected error occured"});
        assert_eq!(
            parse_error(app.to_string().as_bytes())
                .description
                .as_deref(),
            Some("An unexpected error occured")
        );
        assert_eq!(parse_error(b"<html>"), ErrorDetail::default());
    }
}
