//! Band-limited sample-rate conversion (windowed sinc), for shells that capture at 44.1 or
//! 48 kHz while the analysis runs at 16 kHz.
//!
//! Each output sample is the input convolved with a Blackman-windowed sinc low-pass whose
//! cut-off is 92 % of the lower Nyquist frequency (7.36 kHz for 48 → 16 kHz), 16 zero crossings
//! on each side; weights are normalised per output sample, so the DC gain is exactly 1 also at
//! the edges. Quality is far beyond what pitch and energy need; cost is about
//! `35 × max(1, from / to)` multiply-adds per output sample from a precomputed polyphase table.

use std::f64::consts::PI;

use crate::{EmotionError, Result};

/// Cut-off as a fraction of the lower Nyquist frequency.
const CUTOFF: f64 = 0.92;
/// Zero crossings of the sinc on each side of the centre.
const ZERO_CROSSINGS: f64 = 16.0;

/// Converts `input` sampled at `from_hz` to `to_hz`. Identical rates return a copy.
///
/// Errors when a rate is 0 or the ratio exceeds 1:64 either way.
pub fn resample(input: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>> {
    if from_hz == 0 || to_hz == 0 {
        return Err(EmotionError::InvalidInput(
            "sample rate must be positive".to_owned(),
        ));
    }
    let ratio = f64::from(from_hz) / f64::from(to_hz);
    if !(1.0 / 64.0..=64.0).contains(&ratio) {
        return Err(EmotionError::InvalidInput(format!(
            "resampling {from_hz} Hz to {to_hz} Hz is out of range (1:64 at most)"
        )));
    }
    if from_hz == to_hz {
        return Ok(input.to_vec());
    }
    let filter = Filter::new(from_hz, to_hz);
    let out_len = (input.len() as u64 * u64::from(filter.to) / u64::from(filter.from)) as usize;
    Ok((0..out_len)
        .map(|n| filter.output(input, n as u64))
        .collect())
}

/// The low-pass as a polyphase table: output `n` sits at input position `n · from / to`
/// (rates reduced by their gcd), whose fractional part takes one of `to` phases.
struct Filter {
    from: u32,
    to: u32,
    /// Taps on each side of the integer position.
    reach: usize,
    /// `to` phases × `2 · reach + 1` taps, for input offsets `−reach..=reach` from the integer
    /// position; empty when there are too many phases to tabulate.
    table: Vec<f32>,
    cutoff: f64,
    half_width: f64,
}

/// Phase tables up to this many entries are precomputed.
const MAX_TABLE: usize = 1 << 20;

impl Filter {
    fn new(from_hz: u32, to_hz: u32) -> Self {
        let g = gcd(from_hz, to_hz);
        let (from, to) = (from_hz / g, to_hz / g);
        // Cut-off in cycles per input sample, and the kernel half-width in input samples.
        let cutoff = 0.5 * CUTOFF * (f64::from(to) / f64::from(from)).min(1.0);
        let half_width = ZERO_CROSSINGS / (2.0 * cutoff);
        let reach = half_width.ceil() as usize + 1;
        let taps = 2 * reach + 1;
        let mut filter = Self {
            from,
            to,
            reach,
            table: Vec::new(),
            cutoff,
            half_width,
        };
        if (to as usize).saturating_mul(taps) <= MAX_TABLE {
            filter.table = (0..to)
                .flat_map(|phase| {
                    let frac = f64::from(phase) / f64::from(to);
                    (0..taps).map(move |k| {
                        kernel(k as f64 - reach as f64 - frac, cutoff, half_width) as f32
                    })
                })
                .collect();
        }
        filter
    }

    fn output(&self, input: &[f32], n: u64) -> f32 {
        let position = n * u64::from(self.from);
        let base = (position / u64::from(self.to)) as usize;
        let phase = (position % u64::from(self.to)) as usize;
        let taps = 2 * self.reach + 1;
        let mut sum = 0.0f32;
        let mut weights = 0.0f32;
        for k in 0..taps {
            let Some(index) = (base + k).checked_sub(self.reach) else {
                continue;
            };
            let Some(&x) = input.get(index) else {
                break;
            };
            let w = match self.table.get(phase * taps + k) {
                Some(&w) => w,
                None => {
                    let frac = phase as f64 / f64::from(self.to);
                    kernel(
                        k as f64 - self.reach as f64 - frac,
                        self.cutoff,
                        self.half_width,
                    ) as f32
                }
            };
            sum += w * x;
            weights += w;
        }
        if weights.abs() < 1e-9 {
            0.0
        } else {
            sum / weights
        }
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// Blackman-windowed sinc low-pass at `distance` input samples from the centre.
fn kernel(distance: f64, cutoff: f64, half_width: f64) -> f64 {
    if distance.abs() >= half_width {
        return 0.0;
    }
    let x = 2.0 * cutoff * distance;
    let sinc = if x.abs() < 1e-9 {
        1.0
    } else {
        (PI * x).sin() / (PI * x)
    };
    let phase = PI * (distance / half_width + 1.0); // 0..2π across the window
    let window = 0.42 - 0.5 * phase.cos() + 0.08 * (2.0 * phase).cos();
    sinc * window
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, rate: u32, seconds: f64) -> Vec<f32> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .map(|i| (2.0 * PI * hz * i as f64 / f64::from(rate)).sin() as f32 * 0.5)
            .collect()
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
    }

    #[test]
    fn passband_tone_keeps_its_level_and_stopband_tone_vanishes() {
        let pass = resample(&tone(1000.0, 48_000, 0.5), 48_000, 16_000).unwrap_or_default();
        assert_eq!(pass.len(), 8000);
        let middle = &pass[1000..7000];
        assert!((rms(middle) - 0.5 / 2f32.sqrt()).abs() < 0.01);
        // 12 kHz cannot exist at 16 kHz: it must be removed, not aliased to 4 kHz.
        let stop = resample(&tone(12_000.0, 48_000, 0.5), 48_000, 16_000).unwrap_or_default();
        assert!(rms(&stop[1000..7000]) < 0.005, "{}", rms(&stop[1000..7000]));
    }

    #[test]
    fn odd_ratios_and_edges() {
        let up = resample(&tone(440.0, 16_000, 0.1), 16_000, 44_100).unwrap_or_default();
        assert_eq!(up.len(), 4410);
        let down = resample(&tone(440.0, 44_100, 0.1), 44_100, 16_000).unwrap_or_default();
        assert_eq!(down.len(), 1600);
        assert!(resample(&[], 48_000, 16_000).is_ok_and(|v| v.is_empty()));
        assert!(resample(&[0.5], 48_000, 16_000).is_ok_and(|v| v.is_empty()));
        assert!(resample(&[1.0; 3], 48_000, 16_000).is_ok_and(|v| v == vec![1.0]));
        assert!(resample(&[1.0], 0, 16_000).is_err());
        assert!(resample(&[1.0], 16_000_000, 16_000).is_err());
    }
}
