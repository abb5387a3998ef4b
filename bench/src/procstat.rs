//! What a node process costs, from `/proc`: CPU time, resident memory, bytes written to the
//! block device; and what the disk under a directory costs: its size and its fsync latency.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::BenchError;

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// User + system CPU time.
    pub cpu: Duration,
    pub rss_bytes: u64,
    /// Bytes this process caused to be sent to the storage layer (`write_bytes` in
    /// `/proc/<pid>/io`): what wears an SD card.
    pub disk_write_bytes: u64,
}

fn read(path: &str) -> Result<String, BenchError> {
    std::fs::read_to_string(path).map_err(|e| BenchError::io(Path::new(path), e))
}

fn field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

pub fn sample(pid: u32) -> Result<ProcSample, BenchError> {
    let stat = read(&format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields are counted after its ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| BenchError::Setup(format!("/proc/{pid}/stat is not readable")))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let status = read(&format!("/proc/{pid}/status"))?;
    let io = read(&format!("/proc/{pid}/io"))?;
    Ok(ProcSample {
        cpu: Duration::from_millis(ticks * 1000 / per_second),
        rss_bytes: field(&status, "VmRSS:").unwrap_or(0) * 1024,
        disk_write_bytes: field(&io, "write_bytes:").unwrap_or(0),
    })
}

/// Bytes allocated on disk under `dir` (blocks, not apparent sizes).
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => disk_usage(&entry.path()),
            Ok(meta) => meta.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// The machine's own price of durability: `rounds` appends of 4 KiB to a file in `dir`,
/// each followed by `fdatasync`, as a group commit does. Returns the latencies.
pub fn fsync_probe(dir: &Path, rounds: usize) -> Result<hdrhistogram::Histogram<u64>, BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).map_err(|e| BenchError::io(&path, e))?;
    let mut histogram = super::histogram();
    let block = [0x5au8; 4096];
    for _ in 0..rounds {
        let started = Instant::now();
        file.write_all(&block)
            .and_then(|()| file.sync_data())
            .map_err(|e| BenchError::io(&path, e))?;
        super::record(&mut histogram, started.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(histogram)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_memory_and_io_counters() {
        // Burn a little CPU so the counter is not zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert_ne!(x, 1);
        let s = sample(std::process::id()).expect("reads /proc");
        assert!(s.rss_bytes > 1 << 20, "{s:?}");
        assert!(s.cpu > Duration::ZERO, "{s:?}");
    }

    #[test]
    fn the_fsync_probe_counts_every_round_and_the_disk_usage_sees_files() {
        let dir = std::env::temp_dir().join(format!("pos-hub-probe-{}", std::process::id()));
        let h = fsync_probe(&dir, 20).expect("probes");
        assert_eq!(h.len(), 20);
        std::fs::write(dir.join("f"), vec![1u8; 10_000]).expect("writes");
        assert!(disk_usage(&dir) >= 10_000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
