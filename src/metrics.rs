//! Counters and the append latency histogram of one node, rendered by `/metrics`.
//! Plain atomics: the append path only increments them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the append latency buckets, in microseconds (a LAN commit is a few ms).
const LATENCY_BUCKETS_US: [u64; 12] = [
    500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000,
    5_000_000,
];

#[derive(Default)]
pub struct Metrics {
    /// Append calls served by this node (its own and forwarded ones).
    pub append_requests: AtomicU64,
    /// Events this node's appends got accepted (not duplicates or rejections).
    pub appended_events: AtomicU64,
    /// Appends this node handed to the leader.
    pub forwarded_appends: AtomicU64,
    /// Open Subscribe streams on this node.
    pub subscribers: AtomicI64,
    latency_counts: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
}

impl Metrics {
    /// Records how long one append took from request to committed-and-applied.
    pub fn observe_append(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The histogram in Prometheus text format, cumulative as Prometheus expects.
    pub fn render_latency(&self, name: &str, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP {name} Time from Append request to committed and applied."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
            cumulative += self.latency_counts[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e6
            );
        }
        cumulative += self.latency_counts[LATENCY_BUCKETS_US.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_and_counts_every_observation() {
        let metrics = Metrics::default();
        metrics.observe_append(Duration::from_micros(700));
        metrics.observe_append(Duration::from_millis(3));
        metrics.observe_append(Duration::from_secs(9));
        let mut out = String::new();
        metrics.render_latency("lat", &mut out);
        assert!(out.contains("lat_bucket{le=\"0.0005\"} 0\n"), "{out}");
        assert!(out.contains("lat_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("lat_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("lat_bucket{le=\"5\"} 2\n"), "{out}");
        assert!(out.contains("lat_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("lat_count 3\n"), "{out}");
    }
}
