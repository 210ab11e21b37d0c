//! The Bluetooth Heart Rate Measurement characteristic (UUID 0x2A37) of the Heart Rate Service.
//!
//! Layout (Bluetooth SIG GATT specification, `org.bluetooth.characteristic.heart_rate_measurement`,
//! Heart Rate Service 1.0), all multi-byte fields little-endian:
//!
//! | field | size | present when |
//! |---|---|---|
//! | flags | 1 | always |
//! | heart rate (bpm) | 1 (uint8) or 2 (uint16) | flags bit 0 = 0 / 1 |
//! | energy expended (kJ) | 2 (uint16) | flags bit 3 = 1 |
//! | RR-intervals (1/1024 s) | 2 each, one or more | flags bit 4 = 1 |
//!
//! Flags bits 1–2 are the sensor contact status: 0 and 1 mean the feature is not supported,
//! 2 means supported but no skin contact, 3 means contact detected. Bits 5–7 are reserved and
//! ignored. The number of RR-intervals follows from the payload length; the oldest comes first.

use serde::{Deserialize, Serialize};

use super::HrSample;
use crate::{EmotionError, Result};

/// The 16-bit UUID of the Heart Rate Measurement characteristic.
pub const HEART_RATE_MEASUREMENT_UUID: u16 = 0x2A37;

const FLAG_VALUE_U16: u8 = 0b0000_0001;
const FLAG_ENERGY_EXPENDED: u8 = 0b0000_1000;
const FLAG_RR_INTERVALS: u8 = 0b0001_0000;

/// Sensor contact status (flags bits 1–2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorContact {
    /// The sensor does not report contact (values 0 and 1).
    NotSupported,
    /// The sensor reports that it has no skin contact (value 2): the reading is unreliable.
    NotDetected,
    /// The sensor reports skin contact (value 3).
    Detected,
}

impl SensorContact {
    fn from_flags(flags: u8) -> Self {
        match (flags >> 1) & 0b11 {
            2 => Self::NotDetected,
            3 => Self::Detected,
            _ => Self::NotSupported,
        }
    }
}

/// One decoded Heart Rate Measurement notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartRateMeasurement {
    /// Heart rate in beats per minute, as sent (not validated).
    pub bpm: u16,
    /// Sensor contact status.
    pub contact: SensorContact,
    /// Energy expended since the last reset, in kilojoules, when the sensor sends it.
    pub energy_expended_kj: Option<u16>,
    /// RR-intervals in milliseconds (converted from 1/1024 s), oldest first, as sent.
    pub rr_ms: Vec<f32>,
}

impl HeartRateMeasurement {
    /// The measurement as a sample taken at `at_ms` (ms since the Unix epoch).
    ///
    /// Contact status is not part of [`HrSample`]: feed measurements through
    /// [`HrSeries::push_measurement`](super::HrSeries::push_measurement) to keep it.
    pub fn to_sample(&self, at_ms: i64) -> HrSample {
        HrSample {
            at_ms,
            bpm: f32::from(self.bpm),
            rr_ms: self.rr_ms.clone(),
        }
    }
}

/// Decodes a Heart Rate Measurement (0x2A37) payload.
///
/// Errors: empty payload, a payload shorter than its flags announce, an RR field with an odd
/// number of bytes, or the RR flag set with no interval. The values themselves are not judged
/// here (a strap without contact may send 0 bpm): [`HrSeries`](super::HrSeries) does that.
pub fn parse_heart_rate_measurement(payload: &[u8]) -> Result<HeartRateMeasurement> {
    let (&flags, mut rest) = payload
        .split_first()
        .ok_or_else(|| truncated("empty payload, the flags byte is missing"))?;
    let bpm = if flags & FLAG_VALUE_U16 != 0 {
        take_u16(&mut rest).ok_or_else(|| truncated("uint16 heart rate value missing"))?
    } else {
        let (&value, tail) = rest
            .split_first()
            .ok_or_else(|| truncated("uint8 heart rate value missing"))?;
        rest = tail;
        u16::from(value)
    };
    let energy_expended_kj = if flags & FLAG_ENERGY_EXPENDED != 0 {
        Some(take_u16(&mut rest).ok_or_else(|| truncated("energy expended field missing"))?)
    } else {
        None
    };
    let rr_ms = if flags & FLAG_RR_INTERVALS != 0 {
        parse_rr_intervals(rest)?
    } else {
        Vec::new()
    };
    Ok(HeartRateMeasurement {
        bpm,
        contact: SensorContact::from_flags(flags),
        energy_expended_kj,
        rr_ms,
    })
}

/// RR-intervals: little-endian uint16 in 1/1024 s, converted to ms.
fn parse_rr_intervals(bytes: &[u8]) -> Result<Vec<f32>> {
    if bytes.is_empty() {
        return Err(truncated("RR-interval flag set but no interval present"));
    }
    if !bytes.len().is_multiple_of(2) {
        return Err(truncated("RR-interval field has an odd number of bytes"));
    }
    Ok(bytes
        .chunks_exact(2)
        .map(|pair| f32::from(u16::from_le_bytes([pair[0], pair[1]])) * 1000.0 / 1024.0)
        .collect())
}

fn take_u16(rest: &mut &[u8]) -> Option<u16> {
    let (head, tail) = rest.split_first_chunk::<2>()?;
    *rest = tail;
    Some(u16::from_le_bytes(*head))
}

fn truncated(what: &str) -> EmotionError {
    EmotionError::InvalidInput(format!("heart rate measurement (0x2A37): {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint8_value_without_options() {
        let m = parse_heart_rate_measurement(&[0x00, 72]).ok();
        assert_eq!(
            m,
            Some(HeartRateMeasurement {
                bpm: 72,
                contact: SensorContact::NotSupported,
                energy_expended_kj: None,
                rr_ms: vec![],
            })
        );
    }

    #[test]
    fn uint16_value_energy_and_rr() {
        // flags: u16 value, contact detected, energy, RR; 300 bpm (0x012C), 1000 kJ, RR 1024 & 512.
        let payload = [0x1F, 0x2C, 0x01, 0xE8, 0x03, 0x00, 0x04, 0x00, 0x02];
        let m = parse_heart_rate_measurement(&payload).ok();
        assert_eq!(
            m,
            Some(HeartRateMeasurement {
                bpm: 300,
                contact: SensorContact::Detected,
                energy_expended_kj: Some(1000),
                rr_ms: vec![1000.0, 500.0],
            })
        );
    }

    #[test]
    fn contact_bits() {
        let contact = |flags| {
            parse_heart_rate_measurement(&[flags, 60])
                .map(|m| m.contact)
                .ok()
        };
        assert_eq!(contact(0b000), Some(SensorContact::NotSupported));
        assert_eq!(contact(0b010), Some(SensorContact::NotSupported));
        assert_eq!(contact(0b100), Some(SensorContact::NotDetected));
        assert_eq!(contact(0b110), Some(SensorContact::Detected));
        // Reserved bits are ignored.
        assert_eq!(contact(0b1110_0110), Some(SensorContact::Detected));
    }

    #[test]
    fn truncated_payloads_are_errors() {
        for payload in [
            &[][..],
            &[0x00],
            &[0x01, 0x48],
            &[0x08, 0x48, 0x01],
            &[0x10, 0x48],
            &[0x10, 0x48, 0x00],
            &[0x10, 0x48, 0x00, 0x04, 0x00],
            &[0x18, 0x48, 0x00, 0x04],
        ] {
            assert!(
                parse_heart_rate_measurement(payload).is_err(),
                "{payload:02x?}"
            );
        }
    }

    #[test]
    fn the_readme_example() {
        // 16 48 02 03: contact detected, RR present, 72 bpm, one RR of 0x0302 / 1024 s.
        let m = parse_heart_rate_measurement(&[0x16, 0x48, 0x02, 0x03]).ok();
        let m = m.unwrap_or_else(|| panic!("valid payload"));
        assert_eq!(m.bpm, 72);
        assert_eq!(m.contact, SensorContact::Detected);
        assert!((m.rr_ms[0] - 770.0 * 1000.0 / 1024.0).abs() < 1e-3);
    }
}
