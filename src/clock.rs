//! The wall clock, read in one place. The hub reads it only where a leader stamps a log
//! entry (`hub_time_ms`), where Hello reports the hub's time, and where a token's expiry is
//! checked; `apply` never reads it (every node must reach the same state from the same
//! entries). Devices read it for their own envelopes (`at`) and their local view.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch by this machine's clock: the hub time a leader stamps
/// on the entries it proposes. A clock set before 1970 reads as 0.
pub fn now_ms() -> u64 {
    since_epoch().map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since the Unix epoch (token issue and expiry times).
pub fn now_s() -> u64 {
    since_epoch().map_or(0, |d| d.as_secs())
}

/// The time now as RFC 3339 in UTC with milliseconds: an event's `at`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn since_epoch() -> Option<std::time::Duration> {
    SystemTime::now().duration_since(UNIX_EPOCH).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_readings_agree() {
        let ms = now_ms();
        let s = now_s();
        assert!(
            ms / 1000 >= s.saturating_sub(1) && ms / 1000 <= s + 1,
            "{ms} ms vs {s} s"
        );
        let parsed = chrono::DateTime::parse_from_rfc3339(&now_rfc3339()).expect("rfc3339");
        let at = u64::try_from(parsed.timestamp_millis()).expect("after 1970");
        assert!(at.abs_diff(ms) < 5_000, "{at} vs {ms}");
    }
}
