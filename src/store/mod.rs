//! Durable storage for one node: the Raft log in segment files, the Raft vote in its file,
//! the committed events in history files, the state machine (live read models) in trees
//! of our own key-value files, and snapshot files.
//!
//! Layout:
//! - `keys`: tree names and key encodings (big-endian integers, so trees iterate in order);
//! - `tree`: the trees (`<data dir>/state/<tree>.kv`, each an ordered map in memory);
//! - `wal`: the log's segment files (append, truncate, purge, checked reads);
//! - `log`: `LogStore`, openraft's `RaftLogStorage` (log entries, vote, committed);
//! - `state_machine`: `StateMachine`, openraft's `RaftStateMachine`, and `TreeState`, the
//!   domain's `State` over a tree with a write overlay so one apply is one atomic batch;
//! - `snapshot`: the snapshot file format, its builder and its installer;
//! - `format`: the data dir's format, and the move of older ones (sled, bincode).
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
mod tree;
mod vote;
mod wal;

use std::path::{Path, PathBuf};

pub use history::HistorySource;
pub use log::LogStore;
pub use state_machine::{
    Applied, EVENT_FEED_BATCHES, EventBatch, FeedBatch, KnownDevice, LiveState, StateMachine,
    StateReader,
};

use crate::domain::Realm;

/// Operational failures of the store. Rejections of events are not errors: they are
/// `Outcome`s decided by the domain.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled database (data format 1): {0}")]
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
    #[error("{0} is in use by another pos-hub process (it holds the lock)")]
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
    let state_dir = data_dir.join(STATE_DIR);
    let db = tree::Db::open(&state_dir)?;
    if found == format::Found::Legacy {
        format::migrate_db(data_dir, &state_dir)?;
    }
    let snapshot = disk::DurableSnapshot::new(None);
    let disk = disk::Disk::new(db);
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
    let history_dir = data_dir.join("history");
    let history = tokio::task::spawn_blocking(move || {
        history::History::open_sized(&history_dir, history_segment_bytes)
    })
    .await
    .map_err(|e| StoreError::corrupt("history", format!("open task failed: {e}")))??;
    let state_machine = StateMachine::open(
        disk,
        std::sync::Arc::new(history),
        snapshot,
        data_dir.join("snapshots"),
        realm,
        feed_batches,
    )
    .await?;
    let mut state_machine = state_machine;
    state_machine
        .catch_up_purge_point(log.last_purged()?)
        .await?;
    log.check_raft_state(state_machine.last_applied())?;
    if found == format::Found::Legacy {
        // Everything is in this format now (the open rebuilt a snapshot of format 1).
        format::commit(data_dir)?;
        tracing::info!(data_dir = %data_dir.display(), "the data dir is in format {}", crate::codec::FORMAT);
    }
    format::remove_sled(data_dir)?;
    Ok((log, state_machine))
}

/// Where the state machine's trees live in a data dir (`tree`).
const STATE_DIR: &str = "state";

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
