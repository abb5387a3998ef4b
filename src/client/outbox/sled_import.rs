//! Moves a device store of an older version (a sled database with the same keys as
//! today's, see `super`) into the new file. Used only at the first open of such a dir;
//! nothing here writes to sled.

use std::path::Path;

use super::OutboxError;
use super::kv;

/// How long to wait for sled's own lock (held a moment by a process just stopped).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads every key of the sled database at `sled_dir` and writes them as the new store
/// at `path` (a temporary file, synced, then renamed: the rename is the commit point).
pub(super) fn import(sled_dir: &Path, path: &Path) -> Result<(), OutboxError> {
    let failed = |detail: String| OutboxError::Import {
        path: sled_dir.display().to_string(),
        detail,
    };
    // sled panics on some damaged files instead of returning an error.
    let read = std::panic::catch_unwind(|| read_all(sled_dir)).map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "sled panicked".into());
        failed(why)
    })?;
    let entries = read.map_err(|e| failed(e.to_string()))?;
    let written = kv::write_fresh(
        path,
        entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )?;
    tracing::info!(
        from = %sled_dir.display(),
        to = %path.display(),
        keys = entries.len(),
        bytes = written,
        "device store: moved the sled store of an older version into its own file"
    );
    Ok(())
}

/// Every key and value of a store.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

fn read_all(sled_dir: &Path) -> Result<Entries, sled::Error> {
    let started = std::time::Instant::now();
    let db = loop {
        match sled::open(sled_dir) {
            Err(sled::Error::Io(err))
                if err.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other?,
        }
    };
    let mut entries = Vec::new();
    for item in db.iter() {
        let (k, v) = item?;
        entries.push((k.to_vec(), v.to_vec()));
    }
    Ok(entries)
}
