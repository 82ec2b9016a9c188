//! Wall-clock and civil-date helpers, written once.
//!
//! [`now_ms`] is for timestamps a record carries (`issued_at`, `occurred_at`) and for
//! operational decisions (timeouts, retention horizons); no result that must replay
//! bit for bit may depend on it. Dates are proleptic Gregorian, UTC, through Howard
//! Hinnant's days-from-civil algorithms; every function here is total (no panic, no
//! overflow) over the inputs it accepts.

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Midnight UTC of the civil date `y-m-d`, in epoch milliseconds, or None when the
/// month or day is out of range or the year is beyond ±1,000,000.
pub fn civil_ms(y: i64, m: i64, d: i64) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y.abs() > 1_000_000 {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * DAY_MS)
}

/// `YYYY-MM-DD` as midnight UTC in epoch milliseconds.
pub fn parse_day(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not a YYYY-MM-DD date");
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else { return Err(bad()) };
    match (y.parse(), m.parse(), d.parse()) {
        (Ok(y), Ok(m), Ok(d)) => civil_ms(y, m, d).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// `YYYY-MM-DD` (midnight UTC) or epoch milliseconds, as epoch milliseconds.
pub fn parse_instant(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    parse_day(s).map_err(|_| format!("expected YYYY-MM-DD or epoch milliseconds, got {s:?}"))
}

/// The UTC date of an epoch-milliseconds instant, as `YYYY-MM-DD`.
pub fn day_label(ms: i64) -> String {
    let z = ms.div_euclid(DAY_MS) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_labels_are_utc_dates() {
        assert_eq!(day_label(0), "1970-01-01");
        assert_eq!(day_label(1_764_115_200_000), "2025-11-26");
        assert_eq!(day_label(951_782_400_000), "2000-02-29");
    }

    #[test]
    fn parsed_days_round_trip_through_labels() {
        for ms in [0, 951_782_400_000, 1_764_115_200_000, -86_400_000] {
            assert_eq!(parse_day(&day_label(ms)), Ok(ms));
        }
        assert!(parse_day("2025-13-01").is_err());
        assert!(parse_day("2025-11").is_err());
        assert!(parse_day("x-1-1").is_err());
        assert_eq!(parse_instant("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_instant("2000-02-29"), Ok(951_782_400_000));
        assert!(parse_instant("soon").is_err());
    }
}
