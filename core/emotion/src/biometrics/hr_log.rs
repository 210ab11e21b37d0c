//! A line-based heart-rate log, for the CLI, scripts and tests.
//!
//! Each line is recognised on its own, so the shapes below can be mixed in one input:
//!
//! | line | meaning |
//! |---|---|
//! | empty, or starting with `#` | ignored |
//! | `TIMESTAMP BPM [RR_MS ...]` | whitespace-separated sample; RR-intervals in ms |
//! | `TIMESTAMP,BPM[,RR_MS,...]` | the same as CSV |
//! | `timestamp,bpm` (any first line starting with a letter) | CSV header, ignored |
//! | `16 48 02 03` | a 0x2A37 payload as space-separated byte pairs (two or more, all hex) |
//! | `0x16480203` or `0x16 0x48 0x02 0x03` | a 0x2A37 payload with `0x` |
//! | `TIMESTAMP 0x16480203` | a 0x2A37 payload with its time; after a timestamp `0x` is required |
//!
//! `TIMESTAMP` is epoch milliseconds (`1704179700000`) or ISO 8601 with a UTC offset
//! (`2024-01-02T08:15:00+01:00`, `...Z`); in CSV the Apple Health shape
//! `2024-01-02 08:15:00 +0100` works too. A payload line without a timestamp is placed 1000 ms
//! after the previous line (heart-rate straps notify about once a second), the first at 0.
//!
//! Values go through [`HrSeries`] validation (impossible bpm excluded and counted, implausible
//! RR dropped and counted). Lines that cannot be read (bad UTF-8, bad numbers, truncated
//! payloads, timestamps without offset) are reported in [`HrLog::errors`] with their line
//! number; the rest of the input is still read.

use serde::{Deserialize, Serialize};

use super::datetime::parse_timestamp_ms;
use super::gatt::{HeartRateMeasurement, parse_heart_rate_measurement};
use super::{HrSample, HrSeries};

/// Interval assumed between payload lines that carry no timestamp.
const UNTIMED_PAYLOAD_STEP_MS: i64 = 1000;

/// At most this many line errors are kept (all are counted).
const MAX_KEPT_ERRORS: usize = 100;

/// The result of reading a heart-rate log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HrLog {
    /// The validated samples.
    pub series: HrSeries,
    /// The first lines that could not be read (at most 100).
    pub errors: Vec<LineError>,
    /// How many lines could not be read in total.
    pub error_count: usize,
}

/// A line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// Reads a heart-rate log from text (see the module docs for the format).
pub fn parse_hr_log_str(input: &str) -> HrLog {
    parse_hr_log(input.as_bytes())
}

/// Reads a heart-rate log from bytes; lines that are not UTF-8 are reported, not fatal.
pub fn parse_hr_log(input: &[u8]) -> HrLog {
    let mut parser = LogParser::default();
    for (index, raw) in input.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        match std::str::from_utf8(raw) {
            Ok(line) => parser.line(line_no, line),
            Err(_) => parser.error(line_no, "not valid UTF-8".to_owned()),
        }
    }
    parser.log
}

#[derive(Default)]
struct LogParser {
    log: HrLog,
    last_at_ms: Option<i64>,
    seen_content: bool,
}

impl LogParser {
    fn line(&mut self, line_no: usize, line: &str) {
        let line = line.trim().trim_start_matches('\u{feff}');
        if line.is_empty() || line.starts_with('#') {
            return;
        }
        let first_content = !self.seen_content;
        self.seen_content = true;
        if first_content && line.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return; // CSV header such as `timestamp,bpm`
        }
        match parse_line(line, self.last_at_ms) {
            Ok(Reading::Sample(sample)) => {
                self.last_at_ms = Some(sample.at_ms);
                self.log.series.push(sample);
            }
            Ok(Reading::Payload(at_ms, measurement)) => {
                self.last_at_ms = Some(at_ms);
                self.log.series.push_measurement(at_ms, &measurement);
            }
            Err(message) => self.error(line_no, message),
        }
    }

    fn error(&mut self, line: usize, message: String) {
        self.log.error_count += 1;
        if self.log.errors.len() < MAX_KEPT_ERRORS {
            self.log.errors.push(LineError { line, message });
        }
    }
}

/// What one content line holds (not yet validated).
enum Reading {
    Sample(HrSample),
    Payload(i64, HeartRateMeasurement),
}

fn parse_line(line: &str, last_at_ms: Option<i64>) -> Result<Reading, String> {
    let fields: Vec<&str> = if line.contains(',') {
        line.split(',').map(str::trim).collect()
    } else {
        line.split_whitespace().collect()
    };
    let untimed_at = || last_at_ms.map_or(0, |t| t.saturating_add(UNTIMED_PAYLOAD_STEP_MS));
    if let Some(payload) = untimed_payload(&fields) {
        return payload_reading(&payload?, untimed_at());
    }
    let (first, rest) = fields.split_first().ok_or("empty line")?;
    let at_ms = parse_timestamp_ms(first).map_err(|e| e.to_string())?;
    if rest.first().is_some_and(|f| has_hex_prefix(f)) {
        let payload = hex_bytes(rest.iter().copied())?;
        return payload_reading(&payload, at_ms);
    }
    sample_fields(at_ms, rest).map(Reading::Sample)
}

/// `BPM [RR...]` after the timestamp.
fn sample_fields(at_ms: i64, fields: &[&str]) -> Result<HrSample, String> {
    let (bpm, rr) = fields
        .split_first()
        .ok_or("expected `TIMESTAMP BPM [RR_MS ...]`: the heart rate is missing")?;
    let bpm = parse_number(bpm, "heart rate")?;
    let rr_ms = rr
        .iter()
        .filter(|f| !f.is_empty())
        .map(|f| parse_number(f, "RR-interval"))
        .collect::<Result<Vec<f32>, String>>()?;
    Ok(HrSample { at_ms, bpm, rr_ms })
}

fn parse_number(field: &str, what: &str) -> Result<f32, String> {
    field
        .parse::<f32>()
        .map_err(|_| format!("{what} {field:?} is not a number"))
}

/// A payload line without timestamp: fields starting with `0x`, or two or more hex byte pairs.
fn untimed_payload(fields: &[&str]) -> Option<Result<Vec<u8>, String>> {
    let first = fields.first()?;
    let byte_pairs = fields.len() >= 2 && fields.iter().all(|f| f.len() == 2 && is_hex_digits(f));
    (has_hex_prefix(first) || byte_pairs).then(|| hex_bytes(fields.iter().copied()))
}

fn payload_reading(payload: &[u8], at_ms: i64) -> Result<Reading, String> {
    let measurement = parse_heart_rate_measurement(payload).map_err(|e| e.to_string())?;
    Ok(Reading::Payload(at_ms, measurement))
}

/// Concatenated hex digits of all fields, each with an optional `0x`.
fn hex_bytes<'a>(fields: impl Iterator<Item = &'a str>) -> Result<Vec<u8>, String> {
    let digits: String = fields
        .map(|f| {
            f.strip_prefix("0x")
                .or_else(|| f.strip_prefix("0X"))
                .unwrap_or(f)
        })
        .collect();
    if !is_hex_digits(&digits) || digits.is_empty() {
        return Err(format!("payload {digits:?} is not hexadecimal"));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "payload {digits:?} has an odd number of hex digits"
        ));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            digits
                .get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("payload {digits:?} is not hexadecimal"))
        })
        .collect()
}

fn has_hex_prefix(field: &str) -> bool {
    field.starts_with("0x") || field.starts_with("0X")
}

fn is_hex_digits(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::biometrics::ExclusionReason;

    #[test]
    fn whitespace_csv_and_payload_lines_mix() {
        let log = parse_hr_log_str(
            "# a comment\n\
             1704179700000 72 830 845\n\
             2024-01-02T07:15:01Z,73\n\
             2024-01-02 08:15:02 +0100,74,810\n\
             16 48 02 03\n\
             0x064A\n\
             1704179710000 0x0650\n",
        );
        assert_eq!(log.errors, vec![]);
        let got: Vec<(i64, f32, usize)> = log
            .series
            .samples()
            .iter()
            .map(|s| (s.at_ms, s.bpm, s.rr_ms.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1_704_179_700_000, 72.0, 2),
                (1_704_179_701_000, 73.0, 0),
                (1_704_179_702_000, 74.0, 1),
                (1_704_179_703_000, 72.0, 1),
                (1_704_179_704_000, 74.0, 0),
                (1_704_179_710_000, 80.0, 0),
            ]
        );
    }

    #[test]
    fn csv_header_is_skipped_once() {
        let log = parse_hr_log_str("timestamp,bpm\n1000,60\nbpm,oops\n");
        assert_eq!(log.series.len(), 1);
        assert_eq!(log.error_count, 1);
        assert_eq!(log.errors[0].line, 3);
    }

    #[test]
    fn bad_lines_are_reported_and_skipped() {
        let mut input = b"1000 60\n".to_vec();
        input.extend_from_slice(b"\xff\xfe 61\n"); // not UTF-8
        input.extend_from_slice(b"2024-01-02T08:15:00 62\n"); // no offset
        input.extend_from_slice(b"3000 sixty\n");
        input.extend_from_slice(b"4000\n");
        input.extend_from_slice(b"0x10 48\n"); // RR flag, no RR
        input.extend_from_slice(b"0x1\n");
        input.extend_from_slice(b"zz 11\n");
        input.extend_from_slice(b"5000 0x0g\n");
        input.extend_from_slice(b"6000 61\r\n");
        let log = parse_hr_log(&input);
        assert_eq!(log.series.len(), 2);
        let lines: Vec<usize> = log.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(log.errors[0].message.contains("UTF-8"));
    }

    #[test]
    fn impossible_values_are_counted_not_kept() {
        let log = parse_hr_log_str("1000 0\n2000 400\n3000 70 100 900\n0x0000\n");
        assert_eq!(log.series.len(), 1);
        assert_eq!(log.series.rr_out_of_range(), 1);
        let reasons: Vec<ExclusionReason> =
            log.series.excluded().iter().map(|e| e.reason).collect();
        assert_eq!(reasons, vec![ExclusionReason::ImpossibleBpm; 3]);
    }

    #[test]
    fn payload_without_contact_is_excluded() {
        // flags 0x04: contact supported, not detected.
        let log = parse_hr_log_str("04 48\n");
        assert!(log.series.is_empty());
        assert_eq!(
            log.series.excluded()[0].reason,
            ExclusionReason::NoSensorContact
        );
    }

    #[test]
    fn empty_input() {
        assert_eq!(parse_hr_log(b""), HrLog::default());
        assert_eq!(parse_hr_log_str("\n\n# nothing\n"), HrLog::default());
    }
}
