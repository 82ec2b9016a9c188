//! Event times bound to the broker's clock: a tenant writes the event time inside its
//! record, so it may write any time at all. A record whose event time lies more than a
//! skew ahead of the record's broker timestamp is refused (dead-letter kind
//! [`FUTURE`]) before it reaches any state a time drives (windows, watermarks, trends).
//!
//! The bound is the record's own timestamp, not the consumer's clock, so a replay or a
//! mirror (which keep record timestamps) decides the same way as the first reading. The
//! timestamp a producer sets (CreateTime) is itself bounded by the broker: every topic a
//! tenant writes sets `message.timestamp.after.max.ms` (see `topics/`), so a record
//! stamped further ahead of the broker's clock is refused at the broker.

use crate::error::ProcessError;

/// The dead-letter kind of a record dated in the future.
pub const FUTURE: &str = "future";
/// Default of the services' `--max-event-skew-secs`.
pub const DEFAULT_MAX_SKEW_SECS: u64 = 300;
/// [`DEFAULT_MAX_SKEW_SECS`] in milliseconds.
pub const DEFAULT_MAX_SKEW_MS: i64 = DEFAULT_MAX_SKEW_SECS as i64 * 1000;

/// The skew in milliseconds, checked.
pub fn skew_ms(secs: u64) -> Result<i64, String> {
    i64::try_from(secs)
        .ok()
        .and_then(|s| s.checked_mul(1000))
        .ok_or_else(|| format!("an event-time skew of {secs} s is out of range"))
}

/// Checks an event time against its record's broker timestamp (`None`: the record has
/// none, and its time cannot be bounded: refused too).
pub fn check(event_ms: i64, record_ms: Option<i64>, max_skew_ms: i64) -> Result<(), ProcessError> {
    let Some(record_ms) = record_ms else {
        return Err(ProcessError::poison(FUTURE, "the record has no broker timestamp to bound its event time by"));
    };
    if event_ms > record_ms.saturating_add(max_skew_ms) {
        return Err(ProcessError::poison(
            FUTURE,
            format!(
                "event time {event_ms} is {} ms ahead of the record's timestamp {record_ms} (at most {max_skew_ms} ms \
                 allowed)",
                i128::from(event_ms) - i128::from(record_ms)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_up_to_the_skew_ahead_pass_and_later_ones_are_refused() {
        assert!(check(1_000, Some(1_000), 0).is_ok());
        assert!(check(0, Some(1_000), 0).is_ok(), "the past is fine");
        assert!(check(i64::MIN, Some(1_000), 0).is_ok());
        assert!(check(1_500, Some(1_000), 500).is_ok());
        let late = check(1_501, Some(1_000), 500).unwrap_err();
        assert!(matches!(late, ProcessError::Poison { kind: FUTURE, .. }), "{late}");
        assert!(check(i64::MAX, Some(i64::MAX - 1), 10).is_ok(), "no overflow at the ends");
        assert!(check(i64::MAX, Some(i64::MIN), i64::MAX).is_err());
        assert!(check(0, None, 1_000).is_err(), "no timestamp: no bound");
        assert_eq!(skew_ms(300), Ok(300_000));
        assert!(skew_ms(u64::MAX).is_err());
    }
}
