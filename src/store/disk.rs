//! Making sled's writes durable, and knowing which snapshot is.
//!
//! sled 0.34's `flush` writes its buffers with `pwrite` and then calls `sync_file_range`.
//! On Linux that starts and waits for the page writeback of the range, but it neither
//! commits the file's metadata (its size, when the log grew) nor flushes the drive's
//! volatile cache. sled never fsyncs the blob files it writes for large values either, nor
//! the directory entries of the files it creates. After a power cut, a write that sled
//! reported flushed can be gone. The chaos harness's `lose-unsynced` fault found that as
//! lost acknowledged events (see `docs/reliability.md`).
//!
//! `Disk::flush` therefore follows every sled flush with an `fdatasync` of sled's data
//! file, an fsync of each blob file that appeared since the last flush, and an fsync of a
//! directory whose entries changed.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::StoreError;
use crate::raft_types::LogId;

/// sled's database handle plus what it takes to make its writes survive a power cut.
#[derive(Clone)]
pub(super) struct Disk {
    db: sled::Db,
    files: Arc<Files>,
}

struct Files {
    /// sled's single data file (`<db>/db`).
    data: File,
    db_dir: PathBuf,
    blobs_dir: PathBuf,
    /// The entries of `db_dir` and `blobs_dir` as of the last flush.
    listed: Mutex<(BTreeSet<OsString>, BTreeSet<OsString>)>,
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

fn list(dir: &Path) -> Result<BTreeSet<OsString>, StoreError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.file_name()).map_err(io(dir)))
            .collect(),
        // sled creates `blobs/` lazily on some paths; nothing there is nothing to sync.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(StoreError::io(dir, e)),
    }
}

impl Disk {
    /// Wraps the database opened at `db_dir`, and makes what sled created on opening it
    /// (its config file, its directories) durable.
    pub(super) fn open(db: sled::Db, db_dir: &Path) -> Result<Self, StoreError> {
        let data_path = db_dir.join("db");
        let data = File::open(&data_path).map_err(io(&data_path))?;
        let blobs_dir = db_dir.join("blobs");
        let conf = db_dir.join("conf");
        if conf.exists() {
            fsync_path(&conf)?;
        }
        data.sync_all().map_err(io(&data_path))?;
        if blobs_dir.exists() {
            fsync_path(&blobs_dir)?;
        }
        fsync_path(db_dir)?;
        if let Some(parent) = db_dir.parent() {
            fsync_path(parent)?;
        }
        let listed = (list(db_dir)?, list(&blobs_dir)?);
        Ok(Self {
            db,
            files: Arc::new(Files {
                data,
                db_dir: db_dir.to_owned(),
                blobs_dir,
                listed: Mutex::new(listed),
            }),
        })
    }

    pub(super) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Everything written to the database before this call is on stable storage when it
    /// returns.
    pub(super) async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || files.sync())
            .await
            .map_err(|e| StoreError::corrupt("database", format!("fsync task failed: {e}")))?
    }

    /// `flush` for blocking contexts.
    pub(super) fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.files.sync()
    }
}

impl Files {
    fn sync(&self) -> Result<(), StoreError> {
        // One sync at a time keeps the listings consistent; concurrent flushes are rare
        // (the log's group commit, a snapshot build) and each is one fdatasync.
        let mut listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
        self.data.sync_data().map_err(io(&self.db_dir.join("db")))?;
        let blobs = list(&self.blobs_dir)?;
        let new_blobs: Vec<&OsString> = blobs.difference(&listed.1).collect();
        for name in &new_blobs {
            let path = self.blobs_dir.join(name);
            match File::open(&path) {
                Ok(file) => file.sync_all().map_err(io(&path))?,
                // Collected by sled since we listed it: nothing left to make durable.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
        if blobs != listed.1 {
            fsync_path(&self.blobs_dir)?;
        }
        let entries = list(&self.db_dir)?;
        if entries != listed.0 {
            fsync_path(&self.db_dir)?;
        }
        *listed = (entries, blobs);
        Ok(())
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
