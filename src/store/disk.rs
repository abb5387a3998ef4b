//! Making the state machine's writes durable, and knowing which snapshot is.
//!
//! `Disk` is the handle on the data dir's trees (`tree::Db`): `flush` syncs every write
//! made to them so far (each tree's file is fdatasynced; see `crate::kv`). Before data
//! format 2 this was sled, whose own flush did not fsync (it waited with
//! `sync_file_range`), so `Disk` followed it with fsyncs of sled's files.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use super::StoreError;
use super::tree::Db;
use crate::raft_types::LogId;

/// The data dir's trees.
#[derive(Clone)]
pub(super) struct Disk {
    db: Db,
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::io(path, e)
}

/// Opens a small state file of a data dir (`log.mark`, `raft.vote`) to read and write in
/// place, creating it empty if it is not there.
pub(super) fn open_state_file(path: &Path) -> Result<File, StoreError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io(path))
}

/// fsyncs a file or a directory (a new or renamed entry in it) by path.
pub(super) fn fsync_path(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

impl Disk {
    pub(super) fn new(db: Db) -> Self {
        Self { db }
    }

    pub(super) fn db(&self) -> &Db {
        &self.db
    }

    /// Everything written to the trees before this call is on stable storage when it
    /// returns.
    pub(super) async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::corrupt("database", format!("fsync task failed: {e}")))?
    }

    /// `flush` for blocking contexts.
    pub(super) fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()
    }
}

/// The last log id covered by a snapshot file on disk that the node will stand on after a
/// crash (`current.snap`, or a received `installing.tmp` that `open` finishes), shared by
/// the state machine (which moves it) and the log (which does not purge past it while a
/// snapshot is being received).
///
/// openraft 0.9 purges a follower's log up to an incoming snapshot as soon as it decides to
/// install it, without waiting for the install. If the install then failed (a full disk)
/// or the node crashed, the log was purged past every snapshot the node had, and the node
/// could never start again. `LogStore::purge` waits here until the snapshot is on disk,
/// whole and verified (seconds), not for its replay (minutes on a Pi).
#[derive(Clone)]
pub(super) struct DurableSnapshot {
    tx: Arc<watch::Sender<SnapshotMark>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct SnapshotMark {
    last_log_id: Option<LogId>,
    /// A snapshot is being received or installed.
    installing: bool,
    /// The last install failed: a purge waiting for it must give up (the node is stopping).
    install_failed: bool,
}

/// How long a purge waits for the snapshot being received before it fails the node: far
/// above copying and checking a snapshot of millions of events on a slow SD card.
const PURGE_WAIT: Duration = Duration::from_secs(15 * 60);

impl DurableSnapshot {
    pub(super) fn new(last_log_id: Option<LogId>) -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(SnapshotMark {
                last_log_id,
                ..SnapshotMark::default()
            })),
        }
    }

    #[cfg(test)]
    pub(super) fn get(&self) -> Option<LogId> {
        self.tx.borrow().last_log_id
    }

    /// A snapshot up to `last_log_id` is now durable on disk (found at open, or built here).
    pub(super) fn set(&self, last_log_id: Option<LogId>) {
        self.tx.send_modify(|mark| mark.last_log_id = last_log_id);
    }

    /// The snapshot being installed is on disk, whole, and will be finished even after a
    /// crash: a purge up to it may go on while its events replay.
    pub(super) fn received(&self, last_log_id: Option<LogId>) {
        self.tx.send_modify(|mark| {
            mark.last_log_id = last_log_id;
            mark.installing = false;
            mark.install_failed = false;
        });
    }

    /// A snapshot from the leader is on its way.
    pub(super) fn installing(&self) {
        self.tx.send_modify(|mark| mark.installing = true);
    }

    pub(super) fn install_failed(&self) {
        self.tx.send_modify(|mark| {
            mark.installing = false;
            mark.install_failed = true;
        });
    }

    /// Returns once the log may be purged up to `index`: at once when a durable snapshot
    /// covers it or no install is under way, else when the install is done.
    pub(super) async fn purgeable(&self, index: u64) -> Result<(), StoreError> {
        let covers = |mark: &SnapshotMark| mark.last_log_id.is_some_and(|id| id.index >= index);
        let mut rx = self.tx.subscribe();
        let settled = |mark: &SnapshotMark| covers(mark) || !mark.installing;
        let refuse = |why: String| {
            StoreError::corrupt(
                "raft log",
                format!("not purging up to index {index}: {why}"),
            )
        };
        let mark = match tokio::time::timeout(PURGE_WAIT, rx.wait_for(settled)).await {
            Ok(Ok(mark)) => *mark,
            Ok(Err(_)) => return Err(refuse("the state machine is gone".into())),
            Err(_) => {
                return Err(refuse(format!(
                    "the snapshot being installed did not become durable within {} s",
                    PURGE_WAIT.as_secs()
                )));
            }
        };
        if !covers(&mark) && mark.install_failed {
            return Err(refuse(
                "the snapshot that covers it failed to install".into(),
            ));
        }
        Ok(())
    }
}

/// The highest log index this node has acknowledged as durable, kept outside sled in
/// `<data dir>/log.mark` (the index, little-endian, then its CRC-32), so that a log that
/// comes back shorter than what was acknowledged is noticed at start.
///
/// sled recovers some damaged files without an error, as of an earlier state (the chaos
/// harness's `corrupt` fault found it): the node then holds fewer entries than it
/// acknowledged, which Raft assumes never happens. openraft's leader panicked on seeing the
/// follower's log go back ("follower log reversion is not allowed"), so one damaged
/// follower took the leader down with it.
///
/// Raised after an append is durable; lowered, durably, before a truncation.
pub(super) struct LogMark {
    file: File,
    path: PathBuf,
    value: Mutex<u64>,
}

const MARK_BYTES: usize = 12;

impl LogMark {
    pub(super) fn open(data_dir: &Path) -> Result<LogMark, StoreError> {
        use std::io::Read;
        let path = data_dir.join("log.mark");
        let mut file = open_state_file(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&path))?;
        let value = match bytes.len() {
            0 => 0,
            MARK_BYTES => {
                let (index, crc) = bytes.split_at(8);
                let index: [u8; 8] = index.try_into().unwrap_or_default();
                let crc: [u8; 4] = crc.try_into().unwrap_or_default();
                if crc32fast::hash(&index) != u32::from_le_bytes(crc) {
                    return Err(StoreError::corrupt(
                        "log mark",
                        format!("{} fails its checksum", path.display()),
                    ));
                }
                u64::from_le_bytes(index)
            }
            n => {
                return Err(StoreError::corrupt(
                    "log mark",
                    format!("{} holds {n} bytes, not {MARK_BYTES}", path.display()),
                ));
            }
        };
        fsync_path(data_dir)?;
        Ok(LogMark {
            file,
            path,
            value: Mutex::new(value),
        })
    }

    pub(super) fn get(&self) -> u64 {
        *self.value.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, value: &mut u64, index: u64) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        let mut bytes = [0u8; MARK_BYTES];
        bytes[..8].copy_from_slice(&index.to_le_bytes());
        bytes[8..].copy_from_slice(&crc32fast::hash(&index.to_le_bytes()).to_le_bytes());
        self.file
            .write_all_at(&bytes, 0)
            .and_then(|()| self.file.sync_data())
            .map_err(io(&self.path))?;
        *value = index;
        Ok(())
    }

    /// Entries up to `index` are durable and acknowledged.
    pub(super) fn raise(&self, index: u64) -> Result<(), StoreError> {
        let mut value = self.value.lock().unwrap_or_else(|p| p.into_inner());
        if index <= *value {
            return Ok(());
        }
        self.write(&mut value, index)
    }

    /// Entries after `index` are about to be removed (a conflicting suffix).
    pub(super) fn lower(&self, index: u64) -> Result<(), StoreError> {
        let mut value = self.value.lock().unwrap_or_else(|p| p.into_inner());
        if index >= *value {
            return Ok(());
        }
        self.write(&mut value, index)
    }
}
