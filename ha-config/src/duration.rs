//! Durations written the way people say them: `150ms`, `2s`, `5m`, `1m30s`.
//!
//! Decides: the one spelling of a duration in the configuration, both ways
//! (parsing what an operator wrote, and rendering the effective value).
//! Never: what range a duration may take (see `validate`).
//!
//! A duration is one or more `<whole number><unit>` parts, optionally
//! separated by spaces, with units `h`, `m`, `s`, `ms`, `us`, `ns`. A bare
//! number is refused, so `interval = 2` cannot silently mean 2 ms or 2 hours.

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt;
use std::time::Duration;

/// How to write a duration, quoted in every error about one.
pub const HOW: &str =
    "write a whole number and a unit (h, m, s, ms), e.g. \"150ms\", \"2s\", \"5m\" or \"1m30s\"";

const UNITS: &[(&str, u128)] = &[
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Parses a duration; the error says what is wrong with the text (the
/// caller adds the key and [`HOW`]).
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.starts_with('-') {
        return Err(format!("\"{text}\" is negative"));
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("\"{text}\" is not a duration"));
        }
        let (number, after) = rest.split_at(digits);
        let after = after.trim_start();
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(letters);
        if unit.is_empty() {
            return Err(match after.chars().next() {
                Some('.') => format!("\"{text}\" has a fraction; use a smaller unit instead"),
                _ => format!("\"{text}\" has no unit"),
            });
        }
        let Some(&(_, nanos)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(format!("\"{text}\": `{unit}` is not a unit"));
        };
        let n: u128 = number
            .parse()
            .map_err(|_| format!("\"{text}\" is too large"))?;
        total = n
            .checked_mul(nanos)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("\"{text}\" is too large"))?;
        rest = after.trim_start();
    }
    let secs =
        u64::try_from(total / 1_000_000_000).map_err(|_| format!("\"{text}\" is too large"))?;
    // The remainder is below 10^9, so it fits.
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Renders a duration in the largest units that represent it exactly:
/// `500ms`, `2s`, `1m30s`, `0s`.
pub fn format(d: Duration) -> String {
    let mut left = d.as_nanos();
    if left == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, nanos) in UNITS {
        let n = left / nanos;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
            left -= n * nanos;
        }
    }
    out
}

/// Serde `with` module: `#[serde(with = "crate::duration")]`.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// Serde `with` module: `#[serde(with = "crate::duration")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"2s\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(|m| E::custom(format!("{DURATION_MARK}{m}")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "{DURATION_MARK}the number {v} has no unit (write \"{v}s\" or \"{v}ms\")"
        )))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "{DURATION_MARK}the number {v} has no unit (write \"{v}s\" or \"{v}ms\")"
        )))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "{DURATION_MARK}the number {v} has no unit"
        )))
    }
}

/// Marks a deserialisation error as a duration error, so that the loader
/// can give the duration fix ([`HOW`]) rather than a generic one.
pub(crate) const DURATION_MARK: &str = "duration: ";

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_people_write() {
        let ms = Duration::from_millis;
        assert_eq!(parse("150ms"), Ok(ms(150)));
        assert_eq!(parse("2s"), Ok(ms(2000)));
        assert_eq!(parse("5m"), Ok(ms(300_000)));
        assert_eq!(parse("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse("1m 30s"), Ok(ms(90_000)));
        assert_eq!(parse(" 0s "), Ok(ms(0)));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
    }

    #[test]
    fn refuses_what_is_ambiguous() {
        for bad in [
            "",
            "2",
            "1.5s",
            "-1s",
            "2 seconds",
            "s",
            "2sec",
            "99999999999999999999999h",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn formats_in_the_largest_exact_units_and_round_trips() {
        let ms = Duration::from_millis;
        assert_eq!(format(ms(500)), "500ms");
        assert_eq!(format(ms(2000)), "2s");
        assert_eq!(format(ms(90_000)), "1m30s");
        assert_eq!(format(ms(0)), "0s");
        assert_eq!(format(ms(120_000)), "2m");
        for d in [ms(1), ms(1500), ms(3_600_001), Duration::from_nanos(7)] {
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
