//! Heart-rate records from an Apple Health export (`export.xml` of "Export All Health Data").
//!
//! The export is one `<HealthData>` document that easily reaches gigabytes, so it is read with
//! a pull parser (quick-xml) over any `BufRead`, one element at a time, in constant memory
//! apart from the kept records. Only `<Record>` elements of two types are used:
//!
//! ```xml
//! <Record type="HKQuantityTypeIdentifierHeartRate" unit="count/min" value="72"
//!         startDate="2024-01-02 08:15:00 +0100" endDate="2024-01-02 08:15:00 +0100" .../>
//! <Record type="HKQuantityTypeIdentifierHeartRateVariabilitySDNN" unit="ms" value="48.3"
//!         startDate="..." endDate="..."> <HeartRateVariabilityMetadataList>...</Record>
//! ```
//!
//! A sample is timed at its `startDate`, which carries its own UTC offset. Heart-rate values go
//! through [`HrSeries`] validation; records with another unit, an unreadable value or date, or
//! (for SDNN) a value outside `0 < sdnn < 500` ms are counted in
//! [`HealthImport::invalid_records`]. A syntax error after the `<HealthData>` root has started
//! (a truncated export, say) stops the import but keeps what was read and says so in
//! [`HealthImport::stopped_early`]; input that is not an Apple Health export is an error.

use std::io::BufRead;

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use serde::{Deserialize, Serialize};

use super::datetime::parse_timestamp_ms;
use super::{HrSample, HrSeries};
use crate::{EmotionError, Result};

const HEART_RATE_TYPE: &str = "HKQuantityTypeIdentifierHeartRate";
const SDNN_TYPE: &str = "HKQuantityTypeIdentifierHeartRateVariabilitySDNN";
const MAX_SDNN_MS: f32 = 500.0;

/// What an Apple Health import found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthImport {
    /// Heart-rate records (`HKQuantityTypeIdentifierHeartRate`), validated.
    pub heart_rate: HrSeries,
    /// HRV records (`HKQuantityTypeIdentifierHeartRateVariabilitySDNN`), oldest first.
    pub hrv_sdnn: Vec<SdnnRecord>,
    /// Heart-rate and HRV records that could not be used (unit, value or date unreadable).
    pub invalid_records: usize,
    /// Set when a syntax error ended the import early; what came before it is kept.
    pub stopped_early: Option<String>,
}

/// One heart-rate-variability record: SDNN over Apple Watch's short recording.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SdnnRecord {
    /// Start of the recording, ms since the Unix epoch.
    pub at_ms: i64,
    /// Standard deviation of normal-to-normal intervals, ms.
    pub sdnn_ms: f32,
}

/// Imports from an in-memory export.
pub fn import_apple_health_str(xml: &str) -> Result<HealthImport> {
    import_apple_health(xml.as_bytes())
}

/// Streams an export (see the module docs).
pub fn import_apple_health<R: BufRead>(input: R) -> Result<HealthImport> {
    let mut reader = Reader::from_reader(input);
    let mut buf = Vec::new();
    let mut import = HealthImport::default();
    let mut in_health_data = false;
    loop {
        let event = match reader.read_event_into(&mut buf) {
            Ok(event) => event,
            Err(error) => {
                let message = format!(
                    "export.xml: malformed XML near byte {}: {error}",
                    reader.error_position()
                );
                if !in_health_data {
                    return Err(EmotionError::InvalidInput(message));
                }
                import.stopped_early = Some(message);
                break;
            }
        };
        match event {
            Event::Start(element) | Event::Empty(element) => match element.name().as_ref() {
                "HealthData" => in_health_data = true,
                "Record" if in_health_data => import.record(&element),
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !in_health_data {
        return Err(EmotionError::InvalidInput(
            "not an Apple Health export: no <HealthData> element".to_owned(),
        ));
    }
    import.hrv_sdnn.sort_by_key(|r| r.at_ms);
    Ok(import)
}

impl HealthImport {
    fn record(&mut self, element: &BytesStart<'_>) {
        let Some(kind) = attribute(element, "type") else {
            return;
        };
        let parsed = match kind.as_str() {
            HEART_RATE_TYPE => read_quantity(element, "count/min").map(|(at_ms, bpm)| {
                self.heart_rate.push(HrSample {
                    at_ms,
                    bpm,
                    rr_ms: Vec::new(),
                });
            }),
            SDNN_TYPE => read_quantity(element, "ms").and_then(|(at_ms, sdnn_ms)| {
                let plausible = sdnn_ms.is_finite() && sdnn_ms > 0.0 && sdnn_ms < MAX_SDNN_MS;
                plausible.then(|| self.hrv_sdnn.push(SdnnRecord { at_ms, sdnn_ms }))
            }),
            _ => return,
        };
        if parsed.is_none() {
            self.invalid_records += 1;
        }
    }
}

/// `(startDate in ms, value)` of a record in the expected unit.
fn read_quantity(element: &BytesStart<'_>, unit: &str) -> Option<(i64, f32)> {
    if attribute(element, "unit")? != unit {
        return None;
    }
    let value = attribute(element, "value")?.trim().parse::<f32>().ok()?;
    let at_ms = parse_timestamp_ms(&attribute(element, "startDate")?).ok()?;
    Some((at_ms, value))
}

/// An attribute's unescaped value; `None` when missing or unreadable.
fn attribute(element: &BytesStart<'_>, key: &str) -> Option<String> {
    element
        .attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .and_then(|a| a.normalized_value(XmlVersion::Implicit1_0).ok())
        .map(|v| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPORT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE HealthData [
<!ELEMENT HealthData (ExportDate,Me,(Record|Workout)*)>
<!ATTLIST Record type CDATA #REQUIRED>
]>
<HealthData locale="en_US">
 <ExportDate value="2024-01-03 10:00:00 +0100"/>
 <Me HKCharacteristicTypeIdentifierDateOfBirth=""/>
 <Record type="HKQuantityTypeIdentifierHeartRate" sourceName="Watch" unit="count/min" creationDate="2024-01-02 08:16:00 +0100" startDate="2024-01-02 08:15:00 +0100" endDate="2024-01-02 08:15:00 +0100" value="72"/>
 <Record type="HKQuantityTypeIdentifierStepCount" unit="count" startDate="2024-01-02 08:15:00 +0100" value="120"/>
 <Record type="HKQuantityTypeIdentifierHeartRate" unit="count/min" startDate="2024-01-02 02:20:00 -0500" value="65.5">
  <MetadataEntry key="HKMetadataKeyHeartRateMotionContext" value="1"/>
 </Record>
 <Record type="HKQuantityTypeIdentifierHeartRate" unit="count/min" startDate="2024-01-02 08:25:00 +0100" value="0"/>
 <Record type="HKQuantityTypeIdentifierHeartRate" unit="count/s" startDate="2024-01-02 08:25:00 +0100" value="1.2"/>
 <Record type="HKQuantityTypeIdentifierHeartRate" unit="count/min" startDate="yesterday" value="70"/>
 <Record type="HKQuantityTypeIdentifierHeartRateVariabilitySDNN" unit="ms" startDate="2024-01-02 08:30:00 +0100" value="48.25">
  <HeartRateVariabilityMetadataList>
   <InstantaneousBeatsPerMinute bpm="70" time="8:30:01.23 AM"/>
  </HeartRateVariabilityMetadataList>
 </Record>
</HealthData>
"#;

    #[test]
    fn reads_heart_rate_and_sdnn_records() {
        let import = import_apple_health_str(EXPORT).unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<(i64, f32)> = import
            .heart_rate
            .samples()
            .iter()
            .map(|s| (s.at_ms, s.bpm))
            .collect();
        assert_eq!(
            got,
            vec![(1_704_179_700_000, 72.0), (1_704_180_000_000, 65.5)]
        );
        assert_eq!(import.heart_rate.excluded().len(), 1); // value 0
        assert_eq!(import.invalid_records, 2); // count/s unit, bad date
        assert_eq!(
            import.hrv_sdnn,
            vec![SdnnRecord {
                at_ms: 1_704_180_600_000,
                sdnn_ms: 48.25
            }]
        );
        assert_eq!(import.stopped_early, None);
    }

    #[test]
    fn truncated_export_keeps_what_was_read() {
        let cut = EXPORT.find("value=\"65.5\"").unwrap_or(0);
        let import = import_apple_health_str(&EXPORT[..cut]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(import.heart_rate.len(), 1);
        assert!(import.stopped_early.is_some());
    }

    #[test]
    fn not_an_export() {
        assert!(import_apple_health_str("").is_err());
        assert!(import_apple_health_str("<html><body/></html>").is_err());
        assert!(import_apple_health_str("<<<").is_err());
        assert!(import_apple_health(&b"\xff\xfe\x00<"[..]).is_err());
    }
}
