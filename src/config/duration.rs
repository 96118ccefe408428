//! Duration strings of the configuration file: `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"1d"`.

use std::time::Duration;

/// Parses a duration written as a whole number and a unit (`ms`, `s`, `m`, `h`, `d`).
///
/// Compound forms (`"1h30m"`) are accepted, so long as the units come in decreasing order
/// and none repeats. A bare number has no unit and is refused: `"30"` is ambiguous.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration: expected a number and a unit, such as \"30s\"".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    let mut last_unit: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration {text:?}: expected a number, such as \"30s\""
            ));
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let Some(rank) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                format!("invalid duration {text:?}: missing unit (ms, s, m, h or d)")
            } else {
                format!("invalid duration {text:?}: unknown unit {unit:?} (ms, s, m, h or d)")
            });
        };
        if last_unit.is_some_and(|last| rank <= last) {
            return Err(format!(
                "invalid duration {text:?}: units must decrease, as in \"1h30m\""
            ));
        }
        last_unit = Some(rank);
        let value: u64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
        let part = value
            .checked_mul(UNITS[rank].1)
            .ok_or_else(|| format!("invalid duration {text:?}: too large"))?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(|| format!("invalid duration {text:?}: too large"))?;
        rest = after;
    }
    Ok(total)
}

/// Units from the largest down, with their length in milliseconds.
const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Formats a duration the way the configuration file writes it (`"90s"` as `"1m30s"`).
pub fn format(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (name, len) in UNITS {
        let len = u128::from(len);
        if ms >= len {
            out.push_str(&format!("{}{name}", ms / len));
            ms %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        let cases = [
            ("500ms", Some(500)),
            ("30s", Some(30_000)),
            ("5m", Some(300_000)),
            ("1h", Some(3_600_000)),
            ("1d", Some(86_400_000)),
            ("1h30m", Some(5_400_000)),
            ("0s", Some(0)),
            (" 2s ", Some(2_000)),
            ("30", None),
            ("", None),
            ("s", None),
            ("1x", None),
            ("1.5s", None),
            ("30m1h", None),
            ("1s1s", None),
            ("-1s", None),
            ("99999999999999999999s", None),
        ];
        for (text, want) in cases {
            let got = parse(text).ok().map(|d| d.as_millis() as u64);
            assert_eq!(got, want, "parse({text:?})");
        }
    }

    #[test]
    fn formats_round_trip() {
        for text in ["500ms", "30s", "1m30s", "1h", "1d2h"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
        assert_eq!(format(Duration::ZERO), "0s");
    }
}
