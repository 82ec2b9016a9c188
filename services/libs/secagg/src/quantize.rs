//! Clipping, stochastic quantization onto the ring Z/2^32 and back.
//!
//! A value is clamped to [−r, r] and mapped onto the levels 0 ..= L − 1 with stochastic
//! rounding (unbiased: E[q] equals the exact scaled value). The sum of n quantized
//! vectors is exact in the ring as long as n · (L − 1) < 2^32, which [`Quantizer::new`]
//! checks for the round's participant count; the dequantized sum is
//! Σq · 2r / (L − 1) − n · r.

use rand::Rng;
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum QuantizeError {
    #[error("clipping range must be a positive finite number, got {0}")]
    BadRange(f32),
    #[error("quantization needs at least 2 levels, got {0}")]
    TooFewLevels(u32),
    #[error("{parties} parties × {levels} levels overflow the 2^32 ring: lower the levels or the party count")]
    Overflow { parties: u64, levels: u32 },
    #[error("value {value} at index {index} is not finite")]
    NotFinite { index: usize, value: f32 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantizer {
    range: f32,
    levels: u32,
}

impl Quantizer {
    /// A quantizer for sums of up to `parties` vectors.
    pub fn new(range: f32, levels: u32, parties: u64) -> Result<Self, QuantizeError> {
        if !(range.is_finite() && range > 0.0) {
            return Err(QuantizeError::BadRange(range));
        }
        if levels < 2 {
            return Err(QuantizeError::TooFewLevels(levels));
        }
        if parties.saturating_mul(u64::from(levels - 1)) >= 1 << 32 {
            return Err(QuantizeError::Overflow { parties, levels });
        }
        Ok(Quantizer { range, levels })
    }

    /// Quantizes `values` into `out` (same length).
    pub fn quantize(&self, values: &[f32], out: &mut [u32], rng: &mut impl Rng) -> Result<(), QuantizeError> {
        assert_eq!(values.len(), out.len(), "quantize: output length differs from input");
        let r = f64::from(self.range);
        let scale = f64::from(self.levels - 1) / (2.0 * r);
        let top = f64::from(self.levels - 1);
        for (index, (&v, q)) in values.iter().zip(out.iter_mut()).enumerate() {
            if !v.is_finite() {
                return Err(QuantizeError::NotFinite { index, value: v });
            }
            let scaled = ((f64::from(v).clamp(-r, r) + r) * scale).min(top);
            let floor = scaled.floor();
            let up = rng.random::<f64>() < scaled - floor;
            *q = floor as u32 + u32::from(up);
        }
        Ok(())
    }

    /// Turns a ring sum of `parties` quantized vectors back into real values. The ring
    /// value is read as the integer nearest the middle of the data's range, [0, n(L−1)]:
    /// integer noise added by the parties (distributed DP) may take a sum below 0 or
    /// above the range, and it is recovered as long as it stays within 2^31 of the middle.
    pub fn dequantize_sum(&self, sum: &[u32], parties: u64) -> Vec<f64> {
        let decode = self.sum_decoder(parties);
        sum.iter().map(|&s| decode(s)).collect()
    }

    /// [`Quantizer::dequantize_sum`] one word at a time, for sums too large to expand into
    /// a second vector of f64.
    pub fn sum_decoder(&self, parties: u64) -> impl Fn(u32) -> f64 + use<> {
        let r = f64::from(self.range);
        let step = 2.0 * r / f64::from(self.levels - 1);
        let offset = parties as f64 * r;
        let middle = (parties * u64::from(self.levels - 1) / 2) as u32;
        move |s: u32| {
            let v = i64::from(s.wrapping_sub(middle) as i32) + i64::from(middle);
            v as f64 * step - offset
        }
    }
}

/// Scales `values` down so that their L2 norm is at most `max_norm`; returns the norm
/// before clipping.
pub fn clip_l2(values: &mut [f32], max_norm: f64) -> f64 {
    let norm = values.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
    if norm > max_norm && norm > 0.0 {
        let factor = (max_norm / norm) as f32;
        for v in values.iter_mut() {
            *v *= factor;
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn quantization_is_unbiased_and_bounded() {
        let q = Quantizer::new(1.0, 1 << 10, 100).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let values = vec![0.123_456f32; 20_000];
        let mut out = vec![0u32; values.len()];
        q.quantize(&values, &mut out, &mut rng).unwrap();
        let sum = out.iter().fold(0u32, |a, &b| a.wrapping_add(b));
        // One vector dequantized element by element, averaged: close to the input.
        let back = q.dequantize_sum(&out, 1);
        let mean = back.iter().sum::<f64>() / back.len() as f64;
        assert!((mean - 0.123_456).abs() < 1e-4, "mean {mean}");
        assert!(sum > 0);
        let clamp = [5.0f32, -5.0];
        let mut out = [0u32; 2];
        q.quantize(&clamp, &mut out, &mut rng).unwrap();
        assert_eq!(out, [1023, 0]);
    }

    #[test]
    fn rejects_bad_settings_and_values() {
        assert_eq!(
            Quantizer::new(1.0, 1 << 22, 1 << 11).unwrap_err(),
            QuantizeError::Overflow { parties: 1 << 11, levels: 1 << 22 }
        );
        assert!(Quantizer::new(0.0, 4, 1).is_err());
        assert!(Quantizer::new(1.0, 1, 1).is_err());
        let q = Quantizer::new(1.0, 4, 1).unwrap();
        let mut out = [0u32; 2];
        let err = q.quantize(&[0.0, f32::NAN], &mut out, &mut ChaCha20Rng::seed_from_u64(2)).unwrap_err();
        assert!(matches!(err, QuantizeError::NotFinite { index: 1, .. }));
    }

    #[test]
    fn clipping_bounds_the_norm() {
        let mut v = vec![3.0f32, 4.0];
        assert_eq!(clip_l2(&mut v, 1.0), 5.0);
        let n = (v[0] * v[0] + v[1] * v[1]).sqrt();
        assert!((n - 1.0).abs() < 1e-6);
        let mut small = vec![0.1f32, 0.1];
        clip_l2(&mut small, 1.0);
        assert_eq!(small, vec![0.1, 0.1]);
    }
}
