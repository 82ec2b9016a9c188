//! The special functions the accountant needs, accurate far into the tails.
//!
//! `libm` (a port of musl's libm) gives erfc and lgamma to about one ulp; what it cannot
//! give is erfc past the underflow of doubles (x > 26.5), where the series expansion of
//! log erfc takes over. Everything here is pure and total: no panics, infinities where
//! the mathematics has them.

/// log(e^a + e^b) without overflow.
pub fn log_add(a: f64, b: f64) -> f64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    (lo - hi).exp().ln_1p() + hi
}

/// log Σ e^tᵢ accumulated as the largest term and the sum of the others relative to it,
/// ln = max + ln_1p(rest): each term costs one `exp` instead of the `exp` and `log1p` of
/// a [`log_add`] (the accountant adds tens of thousands per vector), and sums close to
/// the largest term lose no more precision than sequential `log_add` does.
/// A term this far below the largest adds less than 2^-86 of it: below what a double
/// holds, so it is skipped without computing its exponential.
const NEGLIGIBLE_GAP: f64 = 60.0;

#[derive(Debug, Clone, Copy)]
pub struct LogSum {
    max: f64,
    /// Σ e^(tᵢ − max) over every term but the largest.
    rest: f64,
}

impl Default for LogSum {
    fn default() -> Self {
        LogSum { max: f64::NEG_INFINITY, rest: 0.0 }
    }
}

impl LogSum {
    pub fn add(&mut self, log_term: f64) {
        if log_term > self.max {
            // The old largest term joins the rest, rescaled to the new one.
            self.rest =
                if self.max == f64::NEG_INFINITY { 0.0 } else { (self.rest + 1.0) * (self.max - log_term).exp() };
            self.max = log_term;
        } else if log_term > self.max - NEGLIGIBLE_GAP {
            self.rest += (log_term - self.max).exp();
        }
    }

    /// Whether `log_term` is more than `gap` below the sum, without a logarithm when the
    /// bounds max ≤ sum ≤ max + rest already decide it.
    pub fn is_below_by(&self, log_term: f64, gap: f64) -> bool {
        if log_term < self.max - gap {
            return true;
        }
        // ln(1 + rest) ≤ rest: the sum is at most max + rest.
        if log_term >= self.max + self.rest - gap {
            return false;
        }
        log_term < self.ln() - gap
    }

    /// log of the sum so far (−∞ when empty).
    pub fn ln(&self) -> f64 {
        if self.max == f64::NEG_INFINITY { f64::NEG_INFINITY } else { self.max + self.rest.ln_1p() }
    }
}

/// log |Γ(x)|, with C's `lgamma` meaning at negative non-integers (the generalised
/// binomial coefficients of fractional orders need it there).
pub fn ln_abs_gamma(x: f64) -> f64 {
    libm::lgamma_r(x).0
}

/// log |C(n, k)| for real n and k, through log |Γ|.
pub fn log_comb(n: f64, k: f64) -> f64 {
    ln_abs_gamma(n + 1.0) - ln_abs_gamma(k + 1.0) - ln_abs_gamma(n - k + 1.0)
}

/// Where `libm::erfc` still returns a normal double with full relative accuracy.
const ERFC_DIRECT_MAX: f64 = 26.0;

/// log(erfc(x)) for every real x, with relative accuracy near machine precision, also
/// where erfc(x) itself underflows (x up to and beyond 2000).
pub fn log_erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < -6.5 {
        // erfc(-x)/2 < 2e-20, far below half an ulp of ln 2: the sum below rounds to ln 2.
        return std::f64::consts::LN_2;
    }
    if x < 0.0 {
        // erfc(x) = 2 - erfc(-x), in (1, 2].
        return std::f64::consts::LN_2 + (-0.5 * libm::erfc(-x)).ln_1p();
    }
    if x <= ERFC_DIRECT_MAX {
        return libm::erfc(x).ln();
    }
    if x.is_infinite() {
        return f64::NEG_INFINITY;
    }
    // erfc(x) = exp(-x²) / (x √π) · Σ_k (-1)^k (2k-1)!! / (2x²)^k, asymptotic; at x > 26
    // the terms fall below 1e-17 long before they start to grow.
    let inv = 1.0 / (2.0 * x * x);
    let mut term = 1.0;
    let mut sum = 1.0;
    let mut k = 1.0;
    loop {
        term *= -(2.0 * k - 1.0) * inv;
        sum += term;
        if term.abs() < 1e-17 * sum.abs() || k > 60.0 {
            break;
        }
        k += 1.0;
    }
    -x * x - (x * std::f64::consts::PI.sqrt()).ln() + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn log_erfc_matches_reference_values() {
        // erfc(0) = 1, erfc(1) = 0.15729920705028513066, erfc(-1) = 1.8427007929497148693,
        // erfc(5) = 1.5374597944280348502e-12, erfc(10) = 2.0884875837625447570e-45.
        assert_eq!(log_erfc(0.0), 0.0);
        assert!(close(log_erfc(1.0), 0.157_299_207_050_285_1_f64.ln(), 1e-15));
        assert!(close(log_erfc(-1.0), 1.842_700_792_949_715_f64.ln(), 1e-15));
        assert!(close(log_erfc(5.0), 1.537_459_794_428_035e-12_f64.ln(), 1e-14));
        assert!(close(log_erfc(10.0), 2.088_487_583_762_545e-45_f64.ln(), 1e-14));
    }

    #[test]
    fn the_series_continues_the_direct_branch() {
        // Both ways of computing agree where both work.
        for x in [20.0, 24.0, 26.0] {
            let direct = libm::erfc(x).ln();
            let inv = 1.0 / (2.0 * x * x);
            let (mut term, mut sum) = (1.0, 1.0);
            for k in 1..40 {
                term *= -(2.0 * k as f64 - 1.0) * inv;
                sum += term;
            }
            let series = -x * x - (x * std::f64::consts::PI.sqrt()).ln() + f64::ln(sum);
            assert!(close(series, direct, 1e-15), "x = {x}: {series} vs {direct}");
        }
        // Deep tail: log erfc(x) ~ -x² - ln(x√π).
        let x = 2000.0;
        assert!(close(log_erfc(x), -x * x - (x * std::f64::consts::PI.sqrt()).ln(), 1e-12));
        assert_eq!(log_erfc(f64::INFINITY), f64::NEG_INFINITY);
        assert!(close(log_erfc(f64::NEG_INFINITY), std::f64::consts::LN_2, 1e-16));
        // The shortcut below -6.5 is exactly what the full formula rounds to.
        for x in [-6.5f64, -7.0, -10.0, -40.0] {
            assert_eq!(log_erfc(x), std::f64::consts::LN_2 + (-0.5 * libm::erfc(-x)).ln_1p(), "x = {x}");
        }
    }

    #[test]
    fn log_comb_of_integers_and_fractions() {
        assert!(close(log_comb(10.0, 3.0), 120f64.ln(), 1e-14));
        // C(2.5, 4) = 2.5·1.5·0.5·(-0.5)/24 = -0.0390625: the magnitude is kept.
        assert!(close(log_comb(2.5, 4.0), 0.039_062_5f64.ln(), 1e-13));
    }

    #[test]
    fn log_sum_agrees_with_log_add() {
        let terms = [-3.0, 2.5, f64::NEG_INFINITY, 10.0, -700.0, 9.999, 0.0, 10.0];
        let mut by_log_add = f64::NEG_INFINITY;
        let mut sum = LogSum::default();
        for t in terms {
            by_log_add = log_add(by_log_add, t);
            sum.add(t);
        }
        assert!(close(sum.ln(), by_log_add, 1e-15), "{} vs {by_log_add}", sum.ln());
        assert_eq!(LogSum::default().ln(), f64::NEG_INFINITY);
        // A sum barely above its largest term keeps its small part exactly.
        let mut near_one = LogSum::default();
        near_one.add(0.0);
        near_one.add(-40.0);
        assert!(close(near_one.ln(), (-40.0f64).exp().ln_1p(), 1e-15));
    }

    #[test]
    fn log_add_handles_zero_and_large_gaps() {
        assert_eq!(log_add(f64::NEG_INFINITY, 3.0), 3.0);
        assert!(close(log_add(0.0, 0.0), std::f64::consts::LN_2, 1e-16));
        assert_eq!(log_add(1000.0, 0.0), 1000.0);
    }
}
