//! The process's heap as the C allocator holds it, and giving its free memory back.
//!
//! glibc's malloc keeps what a burst of work freed (a snapshot built, a follower caught
//! up, a node restarted beside this one) in its arenas, one per thread that allocated.
//! Over store-days a node's resident memory therefore climbed while the memory it uses
//! did not: in a soak (docs/reliability.md) a node with 4 MB of heap in use sat in 35 MB
//! of RSS, 18 MB of it free heap. Two things give it back:
//! - `configure` fixes the thresholds glibc otherwise raises after every large free, so
//!   an arena's free top goes back to the kernel once it passes 1 MiB;
//! - `trim_every` calls `malloc_trim` on a timer, which releases the free pages inside
//!   every arena's heaps (not only at their tops).
//!
//! `heap` reports what is in use and what is held free, for `/metrics`. Only on glibc
//! (`target_env = "gnu"`); elsewhere these do nothing.

use std::time::Duration;

/// Blocks at least this big are mapped on their own and unmapped when freed, and a heap's
/// free top is given back once it is this big. glibc starts both at 128 KiB and raises
/// them, up to 32 and 64 MiB, each time a mapped block is freed: after a node once
/// encoded a large page or snapshot, every arena then keeps that much free memory at its
/// top, which `malloc_trim` does not return for any arena but the main one.
pub const THRESHOLD_BYTES: i32 = 1 << 20;

/// Sets the heap thresholds (`THRESHOLD_BYTES`), which also stops glibc moving them. Call
/// before threads start.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's parameters; called from `main` before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD_BYTES);
    }
}

/// How often the hub gives free heap pages back. A trim walks every arena under its lock,
/// well under a millisecond for a hub's heap of a few MB. Every 30 s left a node that had
/// just filled at 64 clients holding 58 MB where 44 MB were left after the trim (heap in
/// use 22–30 MB under that load): what RSS reads then depends on when it is read.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// The heap's bytes, as `mallinfo2` counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heap {
    /// Bytes in allocated chunks: what the process uses.
    pub in_use: u64,
    /// Bytes in free chunks the allocator still holds (resident unless trimmed).
    pub free_held: u64,
}

/// The heap now; `None` where the allocator cannot tell (not glibc).
pub fn heap() -> Option<Heap> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments and only reads the allocator's counters.
        let info = unsafe { libc::mallinfo2() };
        Some(Heap {
            in_use: (info.uordblks + info.hblkhd) as u64,
            free_held: info.fordblks as u64,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Gives the heap's free pages back to the kernel; whether any were.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim is thread-safe (it takes each arena's lock) and keeps no
        // pointer of ours.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Trims every `period`, for as long as the runtime runs.
pub async fn trim_every(period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let before = heap();
        let released = trim();
        tracing::trace!(?before, released, "heap trimmed");
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    #[test]
    fn freed_small_blocks_held_by_the_allocator_go_back_to_the_kernel_when_trimmed() {
        // 64 MiB in 4 KiB blocks, below mmap's threshold, so they live in the heap; keep
        // every 64th so the heap's top is not free and plain `free` cannot shrink it.
        let mut blocks: Vec<Vec<u8>> = (0..16_384).map(|i| vec![i as u8; 4096]).collect();
        let mut kept = Vec::new();
        for (i, block) in blocks.drain(..).enumerate() {
            if i % 64 == 63 {
                kept.push(block);
            }
        }
        let held = heap().expect("glibc");
        assert!(
            held.free_held > 48 << 20,
            "the allocator holds the freed blocks: {held:?}"
        );
        let before = rss_kib();
        assert!(trim(), "the trim released pages");
        let after = rss_kib();
        assert!(
            before.saturating_sub(after) > 32 << 10,
            "RSS went from {before} KiB to {after} KiB"
        );
        assert_eq!(kept.len(), 256);
    }
}
