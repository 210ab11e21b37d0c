//! Timestamps with explicit UTC offsets, to milliseconds since the Unix epoch.
//!
//! A small parser rather than a date crate: the two shapes wearables produce are fixed, and the
//! only calendar arithmetic needed is days-from-civil (proleptic Gregorian calendar), the
//! algorithm of Howard Hinnant's "chrono-Compatible Low-Level Date Algorithms".
//!
//! Accepted:
//! - Apple Health: `2024-01-02 08:15:00 +0100` (offset `±HHMM` after a space).
//! - ISO 8601 / RFC 3339: `2024-01-02T08:15:00Z`, `2024-01-02T08:15:00.250+01:00`, `...+0100`,
//!   `...+01`; a space may stand for the `T`; seconds are optional (`08:15Z`).
//! - Epoch milliseconds: an optionally signed integer (`1704179700000`).
//!
//! A date-time without an offset is rejected: it names a local time the parser cannot place.

use crate::{EmotionError, Result};

const MS_PER_DAY: i64 = 86_400_000;

/// Parses any accepted shape (see the module docs) into ms since the Unix epoch (UTC).
pub(crate) fn parse_timestamp_ms(text: &str) -> Result<i64> {
    let text = text.trim();
    if is_epoch_ms(text) {
        return text
            .parse::<i64>()
            .map_err(|_| invalid(text, "epoch milliseconds out of range"));
    }
    parse_date_time(text)
}

/// Whether `text` is an optionally signed run of ASCII digits.
pub(crate) fn is_epoch_ms(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Parses `YYYY-MM-DD[T ]HH:MM[:SS[.fff]]<offset>`.
fn parse_date_time(text: &str) -> Result<i64> {
    let mut cursor = Cursor::new(text);
    let year = cursor
        .digits(4)
        .ok_or_else(|| invalid(text, "expected a 4-digit year"))?;
    cursor
        .eat(b'-')
        .ok_or_else(|| invalid(text, "expected '-' after the year"))?;
    let month = cursor
        .digits(2)
        .ok_or_else(|| invalid(text, "expected a 2-digit month"))?;
    cursor
        .eat(b'-')
        .ok_or_else(|| invalid(text, "expected '-' after the month"))?;
    let day = cursor
        .digits(2)
        .ok_or_else(|| invalid(text, "expected a 2-digit day"))?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(invalid(text, "no such calendar date"));
    }
    if cursor.eat(b'T').is_none() && cursor.eat(b't').is_none() {
        cursor
            .eat(b' ')
            .ok_or_else(|| invalid(text, "expected 'T' or ' ' after the date"))?;
    }
    let time_ms = parse_time_of_day(&mut cursor).ok_or_else(|| invalid(text, "bad time of day"))?;
    cursor.skip_spaces();
    let offset_ms = parse_offset(&mut cursor)
        .ok_or_else(|| invalid(text, "expected a UTC offset (Z, +HH:MM or +HHMM)"))?;
    if !cursor.at_end() {
        return Err(invalid(text, "unexpected characters after the UTC offset"));
    }
    let days = days_from_civil(year, month, day);
    Ok(days * MS_PER_DAY + time_ms - offset_ms)
}

/// `HH:MM[:SS[.fraction]]` in ms since midnight. A leap second (`:60`) is accepted.
fn parse_time_of_day(cursor: &mut Cursor<'_>) -> Option<i64> {
    let hour = cursor.digits(2)?;
    cursor.eat(b':')?;
    let minute = cursor.digits(2)?;
    let mut second = 0;
    let mut millis = 0;
    if cursor.eat(b':').is_some() {
        second = cursor.digits(2)?;
        if cursor.eat(b'.').is_some() || cursor.eat(b',').is_some() {
            millis = cursor.fraction_ms()?;
        }
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(((hour * 60 + minute) * 60 + second) * 1000 + millis)
}

/// `Z`, `±HH`, `±HHMM` or `±HH:MM`, in ms east of UTC.
fn parse_offset(cursor: &mut Cursor<'_>) -> Option<i64> {
    if cursor.eat(b'Z').is_some() || cursor.eat(b'z').is_some() {
        return Some(0);
    }
    let sign = if cursor.eat(b'+').is_some() {
        1
    } else if cursor.eat(b'-').is_some() {
        -1
    } else {
        return None;
    };
    let hours = cursor.digits(2)?;
    let minutes = if cursor.at_end() {
        0
    } else {
        let _ = cursor.eat(b':');
        cursor.digits(2)?
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 60 + minutes) * 60_000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 31,
    }
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn invalid(text: &str, why: &str) -> EmotionError {
    let shown: String = text.chars().take(40).collect();
    EmotionError::InvalidInput(format!("timestamp {shown:?}: {why}"))
}

/// A byte cursor over ASCII text.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            bytes: text.as_bytes(),
            pos: 0,
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        if self.bytes.get(self.pos) == Some(&byte) {
            self.pos += 1;
            Some(())
        } else {
            None
        }
    }

    fn skip_spaces(&mut self) {
        while self.bytes.get(self.pos) == Some(&b' ') {
            self.pos += 1;
        }
    }

    /// Exactly `count` ASCII digits as a number.
    fn digits(&mut self, count: usize) -> Option<i64> {
        let slice = self.bytes.get(self.pos..self.pos + count)?;
        if !slice.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.pos += count;
        Some(
            slice
                .iter()
                .fold(0, |acc, b| acc * 10 + i64::from(b - b'0')),
        )
    }

    /// One or more digits of a decimal fraction of a second, in ms (digits past ms truncated).
    fn fraction_ms(&mut self) -> Option<i64> {
        let start = self.pos;
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        let digits = self.bytes.get(start..self.pos)?;
        if digits.is_empty() {
            return None;
        }
        let ms = digits
            .iter()
            .chain(std::iter::repeat(&b'0'))
            .take(3)
            .fold(0, |acc, b| acc * 10 + i64::from(b - b'0'));
        Some(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apple_health_dates_use_their_offset() {
        // 08:15 at +01:00 is 07:15 UTC.
        assert_eq!(
            parse_timestamp_ms("2024-01-02 08:15:00 +0100").ok(),
            Some(1_704_179_700_000)
        );
        assert_eq!(
            parse_timestamp_ms("2024-01-02 02:15:00 -0500").ok(),
            Some(1_704_179_700_000)
        );
    }

    #[test]
    fn iso_8601_shapes() {
        let utc = 1_704_179_700_000;
        assert_eq!(parse_timestamp_ms("2024-01-02T07:15:00Z").ok(), Some(utc));
        assert_eq!(
            parse_timestamp_ms("2024-01-02T08:15:00+01:00").ok(),
            Some(utc)
        );
        assert_eq!(parse_timestamp_ms("2024-01-02T08:15+01").ok(), Some(utc));
        assert_eq!(
            parse_timestamp_ms("2024-01-02T07:15:00.25Z").ok(),
            Some(utc + 250)
        );
        assert_eq!(
            parse_timestamp_ms("2024-01-02T07:15:00.123456Z").ok(),
            Some(utc + 123)
        );
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:00Z").ok(), Some(0));
        assert_eq!(parse_timestamp_ms("1969-12-31T23:59:59Z").ok(), Some(-1000));
        assert_eq!(
            parse_timestamp_ms("2000-02-29T00:00:00Z").ok(),
            Some(951_782_400_000)
        );
    }

    #[test]
    fn epoch_ms() {
        assert_eq!(
            parse_timestamp_ms("1704179700000").ok(),
            Some(1_704_179_700_000)
        );
        assert_eq!(parse_timestamp_ms("-5").ok(), Some(-5));
        assert!(parse_timestamp_ms("99999999999999999999999").is_err());
    }

    #[test]
    fn rejects_bad_dates() {
        for bad in [
            "",
            "2024-01-02T08:15:00",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-02T24:00:00Z",
            "2024-01-02T08:15:00+25:00",
            "2024-01-02T08:15:00Zjunk",
            "2024-1-2T08:15:00Z",
            "2024-01-02T08:15:00.Z",
            "tomorrow",
            "2024-01-02 08:15:00 +01:0",
        ] {
            assert!(
                parse_timestamp_ms(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
