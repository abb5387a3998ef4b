//! The wall clock, read in one place, and the hub's clock built on it.
//!
//! Devices read the wall clock (`now_ms`, `now_rfc3339`) for their own envelopes (`at`)
//! and their local view. A hub reads `HubClock` instead, where a leader stamps a log
//! entry (`hub_time_ms`, which lock leases are judged by), where Hello reports the hub's
//! time, and where a token's validity is checked; `apply` never reads a clock (every node
//! must reach the same state from the same entries).
//!
//! A Pi has no battery-backed clock: after a power cut without internet it boots with
//! whatever time it last saved, or 1970. `HubClock` never runs behind the group's last
//! committed hub time: every hub time the node applies (stamped by whichever node led,
//! with that node's clock) is a floor, and the floor advances with the monotonic clock
//! from the moment it was learnt. So a node that boots a day in the past still accepts the
//! tokens and honours the leases the group accepted before the power cut, and time keeps
//! moving for lease expiry; once its wall clock is right again (NTP), the wall clock wins.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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

/// `ms` since the Unix epoch as RFC 3339 in UTC with milliseconds (`now_rfc3339`'s form);
/// the epoch itself for a time past what a date can hold.
pub fn rfc3339_at(ms: u64) -> String {
    let at = i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_default();
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn since_epoch() -> Option<std::time::Duration> {
    SystemTime::now().duration_since(UNIX_EPOCH).ok()
}

/// A hub's clock: the wall clock, never behind the latest committed hub time it has seen
/// (plus the time elapsed since). Cheap to clone; clones share their floor.
#[derive(Debug, Clone, Default)]
pub struct HubClock {
    inner: Arc<Mutex<Floor>>,
}

#[derive(Debug, Default)]
struct Floor {
    /// A hub time known to have been reached (ms), and when (monotonic) it was learnt.
    seen: Option<(u64, Instant)>,
    /// Added to the wall clock's reading: 0 except in tests that fake a wrong clock.
    offset_ms: i64,
    /// Tests that compress days into minutes: the wall clock runs this many times as fast
    /// from this instant (ms since the Unix epoch). `None`: real time.
    rate: Option<(u64, u32)>,
}

/// The reading at wall time `now_ms` of a clock that runs `rate` times as fast as the
/// wall clock from `epoch_ms` on (and reads the wall clock before it): what every node
/// of a soak and its devices compute alike, so their clocks agree.
pub fn dilated_ms(epoch_ms: u64, rate: u32, now_ms: u64) -> u64 {
    match now_ms.checked_sub(epoch_ms) {
        Some(since) => epoch_ms.saturating_add(since.saturating_mul(u64::from(rate))),
        None => now_ms,
    }
}

impl Floor {
    fn wall_ms(&self) -> u64 {
        let wall = match self.rate {
            Some((epoch_ms, rate)) => dilated_ms(epoch_ms, rate, now_ms()),
            None => now_ms(),
        };
        wall.saturating_add_signed(self.offset_ms)
    }

    fn floor_ms(&self) -> u64 {
        self.seen.map_or(0, |(ms, at)| {
            ms.saturating_add(u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX))
        })
    }
}

impl HubClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Shifts this clock's wall-clock reading by `offset_ms`: for tests that start a node
    /// with its clock set wrong (`serve --clock-offset-ms`, hidden). Never in a shop.
    pub fn set_wall_offset_ms(&self, offset_ms: i64) {
        self.lock().offset_ms = offset_ms;
    }

    /// Makes this clock's wall-clock reading run `rate` times as fast from `epoch_ms` on
    /// (`dilated_ms`): for soaks that put days of a store through in minutes
    /// (`serve --clock-rate`, hidden). Never in a shop.
    pub fn set_wall_rate(&self, epoch_ms: u64, rate: u32) {
        self.lock().rate = (rate > 1).then_some((epoch_ms, rate));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Floor> {
        // The floor is two plain numbers: a panic elsewhere cannot leave it inconsistent.
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Learns that the group's hub time has reached `hub_time_ms` (an applied entry's).
    pub fn observe(&self, hub_time_ms: u64) {
        let mut floor = self.lock();
        if hub_time_ms > floor.floor_ms() {
            floor.seen = Some((hub_time_ms, Instant::now()));
        }
    }

    /// Milliseconds since the Unix epoch: the wall clock, or the floor when the wall clock
    /// is behind it.
    pub fn now_ms(&self) -> u64 {
        let floor = self.lock();
        floor.wall_ms().max(floor.floor_ms())
    }

    /// Seconds since the Unix epoch (token checks).
    pub fn now_s(&self) -> u64 {
        self.now_ms() / 1_000
    }

    /// How far the wall clock is behind the floor, in ms (0 when it is not): for logs and
    /// status.
    pub fn behind_ms(&self) -> u64 {
        let floor = self.lock();
        floor.floor_ms().saturating_sub(floor.wall_ms())
    }
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

    const DAY_MS: i64 = 86_400_000;

    #[test]
    fn a_dilated_clock_reads_the_wall_clock_before_its_epoch_and_runs_faster_after() {
        assert_eq!(dilated_ms(1_000, 288, 400), 400);
        assert_eq!(dilated_ms(1_000, 288, 1_000), 1_000);
        assert_eq!(dilated_ms(1_000, 288, 1_300), 1_000 + 300 * 288);
        // 5 minutes of wall time are a day at 288 times.
        assert_eq!(dilated_ms(0, 288, 300_000), DAY_MS as u64);
        let clock = HubClock::new();
        let epoch = now_ms();
        clock.set_wall_rate(epoch, 1_000);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let read = clock.now_ms();
        let wall = now_ms();
        assert!(
            read >= epoch + 20 * 1_000 && read > wall,
            "{read} vs wall {wall}"
        );
        clock.set_wall_rate(epoch, 1);
        assert!(
            clock.now_ms().abs_diff(now_ms()) < 5_000,
            "rate 1 is the wall clock"
        );
    }

    #[test]
    fn a_hub_clock_set_a_day_back_never_runs_behind_the_hub_time_it_has_seen() {
        let clock = HubClock::new();
        let seen = now_ms();
        clock.set_wall_offset_ms(-DAY_MS);
        assert!(
            clock.now_ms() < seen,
            "without a floor it reads its wrong wall clock"
        );
        clock.observe(seen);
        let first = clock.now_ms();
        assert!(first >= seen, "{first} < {seen}");
        assert!(clock.behind_ms() > 0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = clock.now_ms();
        assert!(second > first, "the floor advances with elapsed time");
        // An older hub time lowers nothing.
        clock.observe(seen - 1_000);
        assert!(clock.now_ms() >= second);
        // Clones share the floor.
        assert!(clock.clone().now_ms() >= second);
    }

    #[test]
    fn a_right_wall_clock_wins_over_an_old_floor() {
        let clock = HubClock::new();
        clock.observe(1_000);
        let now = now_ms();
        assert!(clock.now_ms() >= now);
        assert_eq!(clock.behind_ms(), 0);
    }
}
