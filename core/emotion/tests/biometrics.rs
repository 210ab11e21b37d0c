//! Heart rate end to end: BLE payloads, Apple Health exports and text logs to readings, and
//! bad input of every kind.

mod support;

use nexus_emotion::biometrics::{
    Baseline, DEFAULT_WINDOW_MS, ExclusionReason, HrSeries, SensorContact, analyze_window,
    analyze_windows, import_apple_health, import_apple_health_str, parse_heart_rate_measurement,
    parse_hr_log, parse_hr_log_str,
};
use support::Lcg;

/// A 0x2A37 payload: uint8 bpm, contact detected, RR-intervals in ms.
fn payload(bpm: u8, rr_ms: &[f32]) -> Vec<u8> {
    let mut bytes = vec![0x16, bpm];
    for rr in rr_ms {
        let ticks = (rr * 1024.0 / 1000.0).round() as u16;
        bytes.extend_from_slice(&ticks.to_le_bytes());
    }
    bytes
}

#[test]
fn ble_stream_to_a_stressed_reading() {
    // Five minutes of notifications at 1 Hz: 90 bpm with little beat-to-beat variation.
    let mut series = HrSeries::new();
    for second in 0..300i64 {
        let rr = if second % 2 == 0 { 660.0 } else { 672.0 };
        let m = parse_heart_rate_measurement(&payload(90, &[rr])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.contact, SensorContact::Detected);
        series.push_measurement(second * 1000, &m);
    }
    let baseline = Baseline::new(60.0, Some(40.0)).unwrap_or_else(Baseline::population_default);
    let reading = analyze_window(&series, 0, DEFAULT_WINDOW_MS, &baseline);
    assert_eq!(reading.stats.samples, 300);
    assert_eq!(reading.stats.mean_bpm, Some(90.0));
    let rmssd = reading.stats.rmssd.value_ms.unwrap_or(0.0);
    assert!((rmssd - 11.7).abs() < 1.0, "{rmssd}"); // 12 ms steps, quantised to 1/1024 s
    // 50 % over resting -> arousal 1; RMSSD far below 40 -> stress 1.
    assert_eq!(reading.arousal, Some(1.0));
    assert_eq!(reading.stress, Some(1.0));
    assert!(reading.affect.arousal > 0.99 && reading.affect.confidence > 0.99);
}

#[test]
fn relaxed_history_then_a_calm_window() {
    let mut rng = Lcg::new(7);
    let samples = (0..3600i64).map(|s| {
        let rr = 1000.0 + 40.0 * (rng.next_f32() - 0.5);
        nexus_emotion::biometrics::HrSample {
            at_ms: s * 1000,
            bpm: 60_000.0 / rr,
            rr_ms: vec![rr],
        }
    });
    let history = HrSeries::from_samples(samples);
    let baseline = Baseline::from_history(&history).unwrap_or_else(Baseline::population_default);
    assert!(
        (baseline.resting_bpm - 59.0).abs() < 1.0,
        "{}",
        baseline.resting_bpm
    );
    let readings = analyze_windows(&history, DEFAULT_WINDOW_MS, &baseline);
    assert_eq!(readings.len(), 12);
    for r in readings {
        assert!(r.arousal.unwrap_or(1.0) < 0.1);
        assert!(r.stress.unwrap_or(1.0) < 0.3);
    }
}

#[test]
fn apple_health_export_streams_from_a_reader() {
    let mut xml = String::from("<?xml version=\"1.0\"?>\n<HealthData locale=\"en_US\">\n");
    for minute in 0..30 {
        xml.push_str(&format!(
            "<Record type=\"HKQuantityTypeIdentifierHeartRate\" unit=\"count/min\" value=\"{}\" \
             startDate=\"2024-03-10 09:{minute:02}:00 +0100\" endDate=\"2024-03-10 09:{minute:02}:00 +0100\"/>\n",
            70 + minute % 3
        ));
    }
    xml.push_str("<Record type=\"HKQuantityTypeIdentifierHeartRate\" unit=\"count/min\" value=\"400\" startDate=\"2024-03-10 09:31:00 +0100\"/>\n");
    xml.push_str("</HealthData>\n");
    // A tiny buffer forces many refills of the streaming parser.
    let reader = std::io::BufReader::with_capacity(16, xml.as_bytes());
    let import = import_apple_health(reader).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(import.heart_rate.len(), 30);
    assert_eq!(
        import.heart_rate.excluded()[0].reason,
        ExclusionReason::ImpossibleBpm
    );
    assert_eq!(import.heart_rate.samples()[0].at_ms, 1_710_057_600_000); // 08:00 UTC
    let readings = analyze_windows(
        &import.heart_rate,
        DEFAULT_WINDOW_MS,
        &Baseline::population_default(),
    );
    assert_eq!(readings.len(), 7);
    // Apple Watch samples sparsely: 5 per window gives modest confidence.
    assert!(readings[0].affect.confidence < 0.25);
}

#[test]
fn text_log_with_every_line_shape() {
    let log = parse_hr_log_str(
        "timestamp,bpm\n\
         2024-01-02T08:00:00Z,62\n\
         1704182401000 63 950 955 948\n\
         # straps\n\
         16 40 00 04\n\
         0x1041000400040004\n\
         2024-01-02T08:00:10+00:00 0x0642\n",
    );
    assert_eq!(log.error_count, 0, "{:?}", log.errors);
    assert_eq!(log.series.len(), 5);
    let bpm: Vec<f32> = log.series.samples().iter().map(|s| s.bpm).collect();
    assert_eq!(bpm, vec![62.0, 63.0, 64.0, 65.0, 66.0]);
    assert_eq!(log.series.samples()[3].rr_ms.len(), 3);
}

#[test]
fn bad_input_of_every_kind_never_panics() {
    // Empty and whitespace.
    assert!(parse_hr_log(b"").series.is_empty());
    assert!(parse_hr_log(b"   \n\t\r\n").series.is_empty());
    // Non-UTF-8 text and XML.
    assert_eq!(parse_hr_log(b"\xc3\x28 60\n\xff\n").error_count, 2);
    assert!(import_apple_health(&b"\xff\xfe<HealthData>"[..]).is_err());
    assert!(import_apple_health_str("").is_err());
    // Truncated payloads.
    for truncated in [&[][..], &[0x01, 0x50], &[0x10, 0x50, 0x01], &[0x08, 0x50]] {
        assert!(parse_heart_rate_measurement(truncated).is_err());
    }
    // Impossible heart rates: 0 and 400 (uint16 payload 0x0190).
    let log = parse_hr_log_str("1000 0\n2000 400\n0x00 00\n0x019001\n");
    assert!(log.series.is_empty());
    assert_eq!(log.series.excluded().len(), 4);
    let reading = analyze_window(&log.series, 0, 10_000, &Baseline::population_default());
    assert_eq!((reading.arousal, reading.affect.confidence), (None, 0.0));
    assert_eq!(reading.stats.excluded, 4);
}

#[test]
fn extreme_timestamps_neither_overflow_nor_hang() {
    let log = parse_hr_log_str(&format!(
        "{min} 60 1000\n-1 61\n0 62\n{max} 63 1000\n06 40\n",
        min = i64::MIN,
        max = i64::MAX
    ));
    assert_eq!(log.error_count, 0, "{:?}", log.errors);
    assert_eq!(log.series.len(), 5);
    let readings = analyze_windows(
        &log.series,
        DEFAULT_WINDOW_MS,
        &Baseline::population_default(),
    );
    // i64::MIN, [-5 min, 0), [0, 5 min); samples at exactly i64::MAX fit no half-open window.
    assert_eq!(readings.len(), 3);
    let baseline = Baseline::from_history(&log.series);
    assert!(baseline.is_none()); // fewer than 20 samples
}

#[test]
fn a_large_export_streams() {
    /// Generates an export of `records` heart-rate records on the fly, never holding it whole.
    struct Export {
        records: usize,
        next: usize,
        pending: Vec<u8>,
    }
    impl std::io::Read for Export {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            if self.pending.is_empty() {
                self.pending = match self.next {
                    0 => b"<?xml version=\"1.0\"?>\n<HealthData locale=\"en_US\">\n".to_vec(),
                    n if n <= self.records => format!(
                        "<Record type=\"HKQuantityTypeIdentifierHeartRate\" sourceName=\"Watch\" \
                         unit=\"count/min\" value=\"{}\" startDate=\"2024-01-01 00:00:00 +0000\" \
                         endDate=\"2024-01-01 00:00:00 +0000\"/>\n",
                        60 + n % 40
                    )
                    .into_bytes(),
                    n if n == self.records + 1 => b"</HealthData>\n".to_vec(),
                    _ => return Ok(0),
                };
                self.next += 1;
            }
            let n = out.len().min(self.pending.len());
            out[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            Ok(n)
        }
    }
    let export = Export {
        records: 100_000,
        next: 0,
        pending: Vec::new(),
    };
    let import =
        import_apple_health(std::io::BufReader::new(export)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(import.heart_rate.len(), 100_000);
    assert_eq!(import.invalid_records, 0);
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Lcg::new(42);
    for _ in 0..2000 {
        let len = rng.below(40);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u8()).collect();
        let _ = parse_heart_rate_measurement(&bytes);
        let _ = parse_hr_log(&bytes);
        let _ = import_apple_health(&bytes[..]);
    }
    // Random text built from the formats' own alphabet hits deeper paths.
    let alphabet = b"0123456789abcdefxX:-+TZ ,.\n#";
    for _ in 0..2000 {
        let len = rng.below(60);
        let text: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let log = parse_hr_log(&text);
        let _ = analyze_windows(&log.series, 1000, &Baseline::population_default());
    }
}
