//! Durable storage for one node: the Raft log in segment files, the Raft vote and the state
//! machine (the store's event log with its read models) in one sled database, and snapshot
//! files.
//!
//! Layout:
//! - `keys`: tree names and key encodings (big-endian integers, so sled iterates in order);
//! - `wal`: the log's segment files (append, truncate, purge, checked reads);
//! - `log`: `LogStore`, openraft's `RaftLogStorage` (log entries, vote, committed);
//! - `state_machine`: `StateMachine`, openraft's `RaftStateMachine`, and `SledState`, the
//!   domain's `State` over sled with a write overlay so one apply is one atomic batch;
//! - `snapshot`: the snapshot file format, its builder and its installer.
//!
//! See `DESIGN.md` beside this file for why it is laid out this way.

mod disk;
mod flusher;
mod format;
mod history;
pub mod keys;
mod log;
mod snapshot;
mod state_machine;
mod vote;
mod wal;

use std::path::{Path, PathBuf};

pub use history::HistorySource;
pub use log::LogStore;
pub use state_machine::{
    Applied, EVENT_FEED_BATCHES, EventBatch, FeedBatch, KnownDevice, StateMachine, StateReader,
};

use crate::domain::Realm;

/// Operational failures of the store. Rejections of events are not errors: they are
/// `Outcome`s decided by the domain.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled database: {0}")]
    Sled(#[from] sled::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: crate::codec::CodecError,
    },
    #[error(
        "{path} is in data format {found}; this build reads format {} and moves format 1 \
         over at open: run the pos-hub release that wrote it, or a newer one",
        crate::codec::FORMAT
    )]
    FormatUnknown { path: PathBuf, found: String },
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("this data dir holds the log of realm {stored}, not {requested}")]
    RealmMismatch { stored: Realm, requested: Realm },
    #[error("snapshot {snapshot_id}: {detail}")]
    Snapshot { snapshot_id: String, detail: String },
    #[error("{0} is in use by another pos-hub process (sled holds a lock on it)")]
    InUse(PathBuf),
    #[error(
        "the raft log ends at index {held}, but this node acknowledged index {acknowledged} \
         as durable: the data dir lost acknowledged writes (a damaged file, or a restore \
         from an old copy); wipe it and add the node to its group again to rebuild it from \
         its peers"
    )]
    LogLost { held: u64, acknowledged: u64 },
}

impl StoreError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn corrupt(what: &'static str, detail: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }
}

/// Opens (or creates) the storage of one node in `data_dir` for `realm`.
///
/// A data dir belongs to one realm for its whole life: opening it for another realm fails
/// rather than mixing two stores' events in one log.
pub async fn open(data_dir: &Path, realm: &Realm) -> Result<(LogStore, StateMachine), StoreError> {
    open_with_feed(data_dir, realm, EVENT_FEED_BATCHES).await
}

/// Whether the log is fsynced before openraft hears it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Group commit: one fsync per batch, before the batch is reported stored.
    #[default]
    Fsync,
    /// Never fsync the log (nor flush in the background): acknowledgements run ahead of
    /// the disk. Only for showing that the chaos harness catches lost acknowledged writes.
    UnsafeNoFsync,
}

/// `open`, keeping `feed_batches` recent batches of applied events for subscribers.
pub async fn open_with_feed(
    data_dir: &Path,
    realm: &Realm,
    feed_batches: usize,
) -> Result<(LogStore, StateMachine), StoreError> {
    open_with(
        data_dir,
        realm,
        feed_batches,
        Durability::Fsync,
        std::time::Duration::ZERO,
        HISTORY_SEGMENT_BYTES,
    )
    .await
}

/// Where history files close (`history::SEGMENT_BYTES`).
pub const HISTORY_SEGMENT_BYTES: u64 = history::SEGMENT_BYTES;

/// `open_with_feed` with a chosen durability and commit window (how long the log waits,
/// after an append, for more to share its fsync; see `flusher`).
pub async fn open_with(
    data_dir: &Path,
    realm: &Realm,
    feed_batches: usize,
    durability: Durability,
    commit_window: std::time::Duration,
    history_segment_bytes: u64,
) -> Result<(LogStore, StateMachine), StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|e| StoreError::io(data_dir, e))?;
    let found = format::check(data_dir)?;
    if found == format::Found::Legacy {
        tracing::info!(data_dir = %data_dir.display(), "moving a data dir of format 1 to format {}", crate::codec::FORMAT);
        format::migrate_files(data_dir)?;
    }
    let db_path = data_dir.join("db");
    let config = sled::Config::new()
        .path(&db_path)
        // Durability comes from explicit flushes at the points that need them (see log.rs);
        // the background flush only bounds how much un-acknowledged work a crash can lose.
        .flush_every_ms((durability == Durability::Fsync).then_some(500))
        // sled caches up to 1 GiB of pages by default: a node holding a million events sat
        // at 525 MB resident. A Pi shares its memory with the till's browser.
        .cache_capacity(SLED_CACHE_BYTES);
    // sled 0.34 panics on some damaged files instead of returning an error; a node must
    // refuse to start with an error that says what is wrong, not die with a stack trace.
    let damaged = |panic: Box<dyn std::any::Any + Send>| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        StoreError::corrupt(
            "database",
            format!(
                "{} is damaged (sled: {why}); restore the data dir from a backup, or wipe it \
                 and add the node to its group again to rebuild it from its peers",
                db_path.display()
            ),
        )
    };
    let snapshot = disk::DurableSnapshot::new(None);
    let db = open_db(&config, &db_path).await?.map_err(damaged)?;
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let disk = disk::Disk::open(db, &db_path)?;
        if found == format::Found::Legacy {
            format::migrate_db(&disk)?;
        }
        let mark = disk::LogMark::open(data_dir)?;
        let log = LogStore::open(
            disk.clone(),
            snapshot.clone(),
            mark,
            data_dir,
            durability,
            commit_window,
        )?;
        log.check_mark()?;
        Ok::<_, StoreError>((disk, log))
    }));
    let (disk, log) = opened.map_err(damaged)??;
    let history_dir = data_dir.join("history");
    let history = tokio::task::spawn_blocking(move || {
        history::History::open_sized(&history_dir, history_segment_bytes)
    })
    .await
    .map_err(|e| StoreError::corrupt("history", format!("open task failed: {e}")))??;
    let state_machine =
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(StateMachine::open(
            disk,
            std::sync::Arc::new(history),
            snapshot,
            data_dir.join("snapshots"),
            realm,
            feed_batches,
        )))
        .await
        .map_err(damaged)??;
    log.check_raft_state(state_machine.last_applied())?;
    if found == format::Found::Legacy {
        // Everything is in this format now (the open rebuilt a snapshot of format 1).
        format::commit(data_dir)?;
        tracing::info!(data_dir = %data_dir.display(), "the data dir is in format {}", crate::codec::FORMAT);
    }
    Ok((log, state_machine))
}

/// sled's page cache, at most. Reads of recent events and live read models stay hot; a
/// Subscribe from cursor 0 over a long log reads through it.
pub const SLED_CACHE_BYTES: u64 = 64 << 20;

/// How long `open` waits for the lock on a database: sled releases it from background
/// threads a moment after the last handle of the same process is dropped.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens the sled database, waiting a moment for its lock. A panic of sled's on a damaged
/// file is returned inside `Ok` for the caller to turn into an error.
async fn open_db(
    config: &sled::Config,
    db_path: &Path,
) -> Result<std::thread::Result<sled::Db>, StoreError> {
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    loop {
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
        match opened {
            // sled words its lock failure as an `Other` error with this text.
            Ok(Err(sled::Error::Io(e))) if e.to_string().contains("could not acquire lock") => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(StoreError::InUse(db_path.to_owned()));
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(db)) => return Ok(Ok(db)),
            Err(panic) => return Ok(Err(panic)),
        }
    }
}

/// Encodes a record for a tree or a file (`codec`, the data dir's format).
fn encode<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    crate::codec::to_vec(value).map_err(|source| StoreError::Encode { what, source })
}

/// Decodes a record read from a tree or a file; a failure means the bytes on disk are bad.
fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    crate::codec::from_slice(bytes).map_err(|e| StoreError::corrupt(what, e))
}

/// Turns a store failure into the error type openraft's storage traits return.
fn storage_error(
    verb: openraft::ErrorVerb,
    subject: openraft::ErrorSubject<u64>,
    err: &StoreError,
) -> crate::raft_types::StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(err)).into()
}

#[cfg(test)]
mod tests;
