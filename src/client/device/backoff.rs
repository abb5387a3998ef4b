//! Exponential backoff with full jitter, for failed sends and subscriptions.

use std::time::Duration;

use super::{BACKOFF_FIRST, BACKOFF_MAX};

/// Exponential backoff with full jitter.
pub(super) struct Backoff {
    bound: Duration,
}

impl Backoff {
    pub(super) fn new() -> Self {
        Backoff {
            bound: BACKOFF_FIRST,
        }
    }

    pub(super) fn reset(&mut self) {
        self.bound = BACKOFF_FIRST;
    }

    pub(super) fn next(&mut self) -> Duration {
        let bound_ms = self.bound.as_millis().max(1) as u64;
        let delay = Duration::from_millis(rand_below(bound_ms).max(10));
        self.bound = (self.bound * 2).min(BACKOFF_MAX);
        delay
    }
}

fn rand_below(bound: u64) -> u64 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u64() % bound.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_below_the_bound_and_resets() {
        let mut backoff = Backoff::new();
        let mut bounds = Vec::new();
        for _ in 0..12 {
            let bound = backoff.bound;
            let delay = backoff.next();
            assert!(
                delay <= bound.max(Duration::from_millis(10)),
                "{delay:?} > {bound:?}"
            );
            bounds.push(bound);
        }
        assert_eq!(bounds[0], BACKOFF_FIRST);
        assert_eq!(bounds[1], BACKOFF_FIRST * 2);
        assert_eq!(*bounds.last().expect("bounds"), BACKOFF_MAX);
        backoff.reset();
        assert_eq!(backoff.bound, BACKOFF_FIRST);
    }
}
