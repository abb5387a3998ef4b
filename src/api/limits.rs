//! Per-device rate limiting of appends: a token bucket per device, refilled at
//! `events_per_s` up to `burst`. An Append costs one token per event, or one per started
//! `RATE_BYTES_PER_EVENT` of its events' encoded size if that is more (so a device sending
//! few large events is held to the same bytes as one sending many small ones); one that does not fit
//! is refused whole with RESOURCE_EXHAUSTED and the delay after which it would fit, so an
//! outbox backs off instead of hammering the hub. Other devices' buckets are unaffected.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::ApiError;

/// Default sustained rate per device, in events per second: far above a till's dinner
/// rush, low enough that one runaway device cannot starve the others.
pub const RATE_EVENTS_PER_S: u32 = 200;
/// Default burst per device, in events: an outbox flushing after an outage.
pub const RATE_BURST_EVENTS: u32 = 2_000;
/// Reads (Hello, GetOrder, the listings, GetMenu) per device per second, sustained: a
/// screen refreshing several views every second stays far below it.
pub const RATE_READS_PER_S: u32 = 50;
/// Burst of reads per device: a device starting up and loading every view.
pub const RATE_BURST_READS: u32 = 500;
/// The bytes one token pays for: the spec's largest usual event (0.5–2 KB).
pub const RATE_BYTES_PER_EVENT: usize = 2_048;
/// Devices tracked at most; the least recently seen are forgotten beyond this.
const DEVICES_MAX: usize = 10_000;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct RateLimiter {
    events_per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(events_per_s: u32, burst: u32) -> Self {
        Self {
            events_per_s: f64::from(events_per_s.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes the tokens `events` events of `bytes` encoded bytes cost from `device`'s bucket
    /// at `now`, or says how long to wait. An Append larger than the burst costs a full
    /// bucket, so it can still go through.
    pub fn take(
        &self,
        device: &str,
        events: usize,
        bytes: usize,
        now: Instant,
    ) -> Result<(), Duration> {
        let tokens = events.max(bytes.div_ceil(RATE_BYTES_PER_EVENT));
        let cost = (tokens as f64).min(self.burst);
        // A std mutex: the critical section is a few float operations, never an await.
        let mut buckets = match self.buckets.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() >= DEVICES_MAX && !buckets.contains_key(device) {
            // Forget the quietest devices; a forgotten device simply starts with a full bucket.
            let idle = Duration::from_secs_f64(self.burst / self.events_per_s);
            buckets.retain(|_, b| now.duration_since(b.updated) < idle);
        }
        let bucket = buckets.entry(device.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.events_per_s).min(self.burst);
        bucket.updated = now;
        if cost <= bucket.tokens {
            bucket.tokens -= cost;
            return Ok(());
        }
        let missing = cost - bucket.tokens;
        Err(Duration::from_secs_f64(
            (missing / self.events_per_s).max(0.001),
        ))
    }

    /// `take`, as the refusal the client sees.
    pub fn check(&self, device: &str, events: usize, bytes: usize) -> Result<(), ApiError> {
        self.take(device, events, bytes, Instant::now())
            .map_err(|retry_after| ApiError::RateLimited {
                device: device.to_owned(),
                events_per_s: self.events_per_s,
                burst: self.burst,
                retry_after,
            })
    }
}

/// The read limit: a token bucket per device like the append limit's, one token a read.
pub struct ReadLimiter(RateLimiter);

impl ReadLimiter {
    pub fn new(reads_per_s: u32, burst: u32) -> Self {
        Self(RateLimiter::new(reads_per_s, burst))
    }

    /// Takes one read from `device`'s bucket; without tokens there is no device to count
    /// by, so an open node does not limit reads.
    pub fn check(&self, device: Option<&str>) -> Result<(), ApiError> {
        let Some(device) = device else { return Ok(()) };
        self.0
            .take(device, 1, 0, Instant::now())
            .map_err(|retry_after| ApiError::ReadRateLimited {
                device: device.to_owned(),
                reads_per_s: self.0.events_per_s,
                burst: self.0.burst,
                retry_after,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refills_at_its_rate_and_each_device_has_its_own() {
        let limiter = RateLimiter::new(10, 20);
        let t0 = Instant::now();
        assert_eq!(limiter.take("till-1", 20, 0, t0), Ok(()), "a full burst");
        let wait = limiter.take("till-1", 5, 0, t0).expect_err("empty");
        assert_eq!(wait, Duration::from_millis(500), "5 events at 10/s");
        assert_eq!(
            limiter.take("till-2", 20, 0, t0),
            Ok(()),
            "another device is unaffected"
        );
        assert_eq!(
            limiter.take("till-1", 5, 0, t0 + Duration::from_millis(500)),
            Ok(()),
            "refilled"
        );
        assert!(
            limiter
                .take("till-1", 1, 0, t0 + Duration::from_millis(500))
                .is_err()
        );
        assert_eq!(
            limiter.take("till-1", 20, 0, t0 + Duration::from_secs(60)),
            Ok(()),
            "capped at the burst"
        );
        assert_eq!(
            limiter.take("till-3", 500, 0, t0),
            Ok(()),
            "larger than the burst: costs a full bucket"
        );
    }

    #[test]
    fn large_events_cost_by_their_bytes() {
        let limiter = RateLimiter::new(10, 100);
        let t0 = Instant::now();
        // One 100 KB event costs 49 tokens (100,000 / 2,048, rounded up), not one.
        assert_eq!(limiter.take("till-1", 1, 100_000, t0), Ok(()));
        assert_eq!(limiter.take("till-1", 1, 100_000, t0), Ok(()));
        let wait = limiter
            .take("till-1", 1, 100_000, t0)
            .expect_err("the bucket holds 2 tokens");
        assert_eq!(
            wait,
            Duration::from_millis(4_700),
            "47 missing tokens at 10/s"
        );
        // Small events still cost one each.
        assert_eq!(limiter.take("till-2", 100, 100 * 300, t0), Ok(()));
    }

    #[test]
    fn the_refusal_names_the_device_and_carries_the_delay() {
        let limiter = RateLimiter::new(1, 1);
        assert!(limiter.check("kds-1", 1, 0).is_ok());
        let status = tonic::Status::from(limiter.check("kds-1", 1, 0).expect_err("limited"));
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("\"kds-1\"") && status.message().contains("retry after"),
            "{status:?}"
        );
        let metadata = crate::wire::RETRY_AFTER_METADATA;
        assert!(status.metadata().get(metadata).is_some());
    }
}

/// Default cap on open Subscribe streams per device: a screen needs one, a reconnecting one
/// briefly two; beyond that it is a bug or an attack, and each stream costs a task.
pub const SUBSCRIPTIONS_PER_DEVICE_MAX: usize = 4;

/// Counts open Subscribe streams per device. A slot is held by a `SubscriptionSlot` for
/// the stream's life and given back when it drops.
pub struct SubscriptionSlots {
    max: usize,
    open: std::sync::Arc<Mutex<HashMap<String, usize>>>,
}

pub struct SubscriptionSlot {
    device: String,
    open: std::sync::Arc<Mutex<HashMap<String, usize>>>,
}

fn lock_counts(
    open: &Mutex<HashMap<String, usize>>,
) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    match open.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl SubscriptionSlots {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            open: Default::default(),
        }
    }

    /// A slot for one more stream of `device`, or a refusal naming the cap.
    pub fn acquire(&self, device: &str) -> Result<SubscriptionSlot, ApiError> {
        let mut open = lock_counts(&self.open);
        let count = open.entry(device.to_owned()).or_insert(0);
        if *count >= self.max {
            return Err(ApiError::TooManySubscriptions {
                device: device.to_owned(),
                open: *count,
                max: self.max,
            });
        }
        *count += 1;
        Ok(SubscriptionSlot {
            device: device.to_owned(),
            open: self.open.clone(),
        })
    }
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        let mut open = lock_counts(&self.open);
        if let Some(count) = open.get_mut(&self.device) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.device);
            }
        }
    }
}

#[cfg(test)]
mod slot_tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_device_and_given_back_on_drop() {
        let slots = SubscriptionSlots::new(2);
        let a = slots.acquire("kds-1").expect("first");
        let _b = slots.acquire("kds-1").expect("second");
        let refused = slots
            .acquire("kds-1")
            .err()
            .map(|e| tonic::Status::from(e).code());
        assert_eq!(refused, Some(tonic::Code::ResourceExhausted));
        assert!(
            slots.acquire("kds-2").is_ok(),
            "another device is unaffected"
        );
        drop(a);
        assert!(
            slots.acquire("kds-1").is_ok(),
            "a closed stream frees its slot"
        );
    }

    #[test]
    fn reads_have_their_own_bucket_per_device() {
        let reads = ReadLimiter::new(1, 2);
        assert!(reads.check(Some("kds-1")).is_ok());
        assert!(reads.check(Some("kds-1")).is_ok());
        let status = tonic::Status::from(reads.check(Some("kds-1")).expect_err("limited"));
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("read limit"), "{status:?}");
        assert!(
            reads.check(Some("kds-2")).is_ok(),
            "another device is unaffected"
        );
        assert!(reads.check(None).is_ok(), "no tokens, no device to count");
    }
}
