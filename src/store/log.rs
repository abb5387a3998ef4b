//! The Raft log (in `wal`'s segment files) and the vote (in sled).
//!
//! Durability: an append is acknowledged to openraft (the `LogFlushed` callback) only after
//! one `fdatasync` has made the whole batch durable — one sync per batch, not per entry
//! (group commit). The vote is flushed before `save_vote` returns, because a node that
//! forgets its vote after a crash can vote twice in one term.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogId};

use super::disk::{Disk, DurableSnapshot, LogMark};
use super::flusher::Flusher;
use super::keys::{KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE, TREE_LOG, TREE_RAFT_META};
use super::vote::VoteFile;
use super::wal::{self, Wal};
use super::{StoreError, decode, encode, storage_error};
use crate::raft_types::TypeConfig;
use crate::raft_types::{Entry, LogFlushed, LogId, LogState, StorageError, Vote};

/// openraft's log storage: entries in segment files (`wal`), the vote in a file of its own
/// (`vote`), the commit index and purge point in a sled tree. Cloning shares them, which
/// is how openraft gets a concurrent reader (`get_log_reader`).
#[derive(Clone)]
pub struct LogStore {
    disk: Disk,
    /// The snapshot on disk: a purge waits for an install under way to cover it.
    snapshot: DurableSnapshot,
    wal: Arc<Mutex<Wal>>,
    wal_dir: Arc<Path>,
    meta: crate::store::tree::Tree,
    /// The last committed log index as openraft last saved it, for status reports.
    committed: Arc<AtomicU64>,
    /// `Durability::UnsafeNoFsync`: skip every flush (a deliberately broken mode).
    no_fsync: bool,
    /// The highest index acknowledged durable, kept apart from the log (see `LogMark`).
    mark: Arc<LogMark>,
    /// Makes appends durable and acknowledges them, off openraft's core (`flusher`).
    flusher: Arc<Flusher>,
    /// The vote (`raft.vote`).
    vote: Arc<VoteFile>,
}

impl LogStore {
    pub(super) fn open(
        disk: Disk,
        snapshot: DurableSnapshot,
        mark: LogMark,
        data_dir: &Path,
        durability: super::Durability,
        commit_window: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let wal_dir: Arc<Path> = data_dir.join("log").into();
        let mark = Arc::new(mark);
        let store = Self {
            flusher: Arc::new(Flusher::start(mark.clone(), wal_dir.clone(), commit_window)),
            mark,
            wal: Arc::new(Mutex::new(Wal::open(&wal_dir)?)),
            wal_dir,
            meta: disk.db().open_tree(TREE_RAFT_META)?,
            disk,
            snapshot,
            committed: Arc::new(AtomicU64::new(0)),
            no_fsync: durability == super::Durability::UnsafeNoFsync,
            vote: Arc::new(VoteFile::open(data_dir)?),
        };
        store.migrate_from_sled()?;
        store.move_vote_out_of_sled()?;
        if let Some(purged) = store.read_meta::<LogId>(KEY_LAST_PURGED)? {
            // Segments that only held purged entries, left by a crash mid-purge.
            store.wal().purge(purged.index)?;
        }
        let committed: Option<LogId> = store.read_meta(KEY_COMMITTED)?;
        store
            .committed
            .store(committed.map_or(0, |id| id.index), Ordering::Relaxed);
        Ok(store)
    }

    /// Data dirs written before the vote moved out of sled keep it in the meta tree: saved
    /// to `raft.vote` (durably) first, then removed from the tree. A crash in between
    /// leaves both, and the file is the one read.
    fn move_vote_out_of_sled(&self) -> Result<(), StoreError> {
        let Some(stored) = self.read_meta::<Vote>(KEY_VOTE)? else {
            return Ok(());
        };
        if self.vote.get().is_none() {
            self.vote.save(&stored)?;
            tracing::info!(vote = %stored, "moved the vote from sled into raft.vote");
        }
        self.meta.remove(KEY_VOTE)?;
        self.disk.flush_blocking()?;
        Ok(())
    }

    /// Data dirs written before the log moved out of sled keep their entries in a sled
    /// tree: move them into segment files once, durably, then empty the tree.
    fn migrate_from_sled(&self) -> Result<(), StoreError> {
        let tree = self.disk.db().open_tree(TREE_LOG)?;
        if tree.is_empty() {
            return Ok(());
        }
        let mut entries = Vec::with_capacity(tree.len());
        for item in tree.iter() {
            let (_, bytes) = item?;
            entries.push(decode::<Entry>("log entry", &bytes)?);
        }
        let moved = entries.len();
        let mut wal = self.wal();
        // A migration a crash interrupted left a prefix in the segments: add the rest.
        if let Some(last) = wal.last_index() {
            entries.retain(|e| e.get_log_id().index > last);
        }
        if !entries.is_empty() {
            let files = wal.append(entries)?;
            wal::sync(&files, &self.wal_dir)?;
        }
        drop(wal);
        tree.clear()?;
        self.disk.flush_blocking()?;
        tracing::info!(
            entries = moved,
            "moved the raft log from sled into segment files"
        );
        Ok(())
    }

    fn wal(&self) -> MutexGuard<'_, Wal> {
        self.wal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last log id the snapshot on disk covers, as the purge sees it.
    #[cfg(test)]
    pub(super) fn durable_snapshot(&self) -> Option<LogId> {
        self.snapshot.get()
    }

    /// Bytes of the log's records after `index` (what a snapshot at `index` leaves).
    pub fn bytes_after(&self, index: u64) -> u64 {
        self.wal().bytes_after(index)
    }

    /// The highest index up to which a purge leaves at least `keep_bytes` of log.
    pub fn purge_point_keeping(&self, keep_bytes: u64) -> Option<u64> {
        self.wal().purge_point_keeping(keep_bytes)
    }

    /// A live view of the committed log index (0 before anything is committed).
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &'static [u8],
    ) -> Result<Option<T>, StoreError> {
        match self.meta.get(key)? {
            Some(bytes) => Ok(Some(decode("raft metadata", &bytes)?)),
            None => Ok(None),
        }
    }

    fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, StoreError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        self.wal().read(start..end)
    }

    /// At open: the log must reach every index this node acknowledged as durable. A log
    /// that comes back shorter lost acknowledged entries (sled recovered a damaged file to
    /// an earlier state, or the data dir was restored from an old copy): this node must not
    /// vote or serve with it.
    pub(super) fn check_mark(&self) -> Result<(), StoreError> {
        let acknowledged = self.mark.get();
        let purged: Option<LogId> = self.read_meta(KEY_LAST_PURGED)?;
        let held = self
            .last_log_id()?
            .map_or(0, |id| id.index)
            .max(purged.map_or(0, |id| id.index));
        if held < acknowledged {
            return Err(StoreError::LogLost { held, acknowledged });
        }
        Ok(())
    }

    /// The log's purge point: the entries up to it are gone.
    pub(super) fn last_purged(&self) -> Result<Option<LogId>, StoreError> {
        self.read_meta(KEY_LAST_PURGED)
    }

    /// At open, against what the state machine applied (`applied`): the stored Raft state
    /// must not be older than the log and the state it describes. sled, finding a damaged
    /// page, can hand back an earlier copy of a value without a word (the five-node chaos
    /// run of 2026-11-28 met one: openraft then panicked at start, "snapshot_last_log_id
    /// <= committed").
    /// - A commit index behind `applied` is raised to it: whatever was applied was
    ///   committed, so this only restores what the lost write said.
    /// - A vote older than the last log entry's term, or than the applied entry's, is
    ///   damage that cannot be repaired here (an older vote could let this node vote twice
    ///   in a term): the start is refused, naming what to do.
    pub(super) fn check_raft_state(&self, applied: Option<LogId>) -> Result<(), StoreError> {
        let vote = self.vote.get();
        let newest = self.last_log_id()?.max(applied);
        // (No vote at all is not told apart from a store that never voted: tools and
        // tests write logs without one.)
        if let (Some(vote), Some(newest)) = (vote, newest) {
            let voted_term = vote.leader_id().term;
            if voted_term < newest.leader_id.term {
                return Err(StoreError::corrupt(
                    "raft state",
                    format!(
                        "the stored vote is for term {voted_term}, older than the log's entry \
                         {newest} (the vote was rolled back: damage); wipe this data dir and \
                         add the node to its group again to rebuild it from its peers"
                    ),
                ));
            }
        }
        let committed: Option<LogId> = self.read_meta(KEY_COMMITTED)?;
        if applied > committed {
            tracing::warn!(
                stored = ?committed,
                applied = ?applied,
                "the stored commit index is behind what the state machine applied; raising it"
            );
            if let Some(applied) = applied {
                self.meta
                    .insert(KEY_COMMITTED, encode("committed", &applied)?)?;
                self.committed.store(applied.index, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn last_log_id(&self) -> Result<Option<LogId>, StoreError> {
        Ok(self.wal().last_entry()?.map(|e| *e.get_log_id()))
    }

    async fn flush(&self) -> Result<(), StoreError> {
        if self.no_fsync {
            return Ok(());
        }
        self.disk.flush().await
    }
}

fn read_logs_error(err: StoreError) -> StorageError {
    storage_error(ErrorVerb::Read, ErrorSubject::Logs, &err)
}

fn write_logs_error(err: StoreError) -> StorageError {
    storage_error(ErrorVerb::Write, ErrorSubject::Logs, &err)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.entries(range).map_err(read_logs_error)
    }

    /// Replication reads: entries from `start` until they add up to the most one
    /// AppendEntries carries (`REPLICATION_BYTES_MAX`; always the first). openraft asks for
    /// up to `max_payload_entries` at a time and the network would send only what fits,
    /// so reading (and decoding) the rest was wasted: with 50-event entries it was 59 of
    /// every 64, and a learner caught up at 3 MB/s.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let end = self
            .wal()
            .end_within(start, end, crate::raft::network::REPLICATION_BYTES_MAX);
        self.entries(start..end).map_err(read_logs_error)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        let last_purged_log_id: Option<LogId> =
            self.read_meta(KEY_LAST_PURGED).map_err(read_logs_error)?;
        let last_log_id = self
            .last_log_id()
            .map_err(read_logs_error)?
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        // Synced before we answer: forgetting a vote could mean voting twice in a term.
        let file = self.vote.clone();
        let vote = *vote;
        tokio::task::spawn_blocking(move || file.save(&vote))
            .await
            .map_err(|e| StoreError::corrupt("vote", format!("save task failed: {e}")))
            .and_then(|saved| saved)
            .map_err(|e| storage_error(ErrorVerb::Write, ErrorSubject::Vote, &e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.vote.get())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed: losing it in a crash only means learning it again from the leader
        // (or, alone, re-committing); it lets a restarted node re-apply without waiting.
        let write = || -> Result<(), StoreError> {
            match committed {
                Some(log_id) => self
                    .meta
                    .insert(KEY_COMMITTED, encode("committed", &log_id)?)?,
                None => self.meta.remove(KEY_COMMITTED)?,
            };
            self.committed
                .store(committed.map_or(0, |id| id.index), Ordering::Relaxed);
            Ok(())
        };
        write().map_err(|e| storage_error(ErrorVerb::Write, ErrorSubject::Store, &e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.read_meta(KEY_COMMITTED)
            .map_err(|e| storage_error(ErrorVerb::Read, ErrorSubject::Store, &e))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let last = entries.last().map(|e| e.get_log_id().index);
        let files = match self.wal().append(entries) {
            Ok(files) => files,
            Err(err) => {
                callback.log_io_completed(Err(std::io::Error::other(err.to_string())));
                return Err(write_logs_error(err));
            }
        };
        if self.no_fsync {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        // Written; the flusher makes it durable with whatever else is waiting (group
        // commit) and only then tells openraft, through the callback.
        self.flusher.submit(files, last, callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // No flush or mark raise of an earlier append may land after the cut.
        self.flusher.drain().await;
        let write = async {
            // The mark comes down first: a crash between the two leaves it below the log,
            // which is harmless, never above it. The truncation is durable before later
            // appends reuse these indexes: a conflicting entry must not come back.
            let (wal, mark, no_fsync) = (self.wal.clone(), self.mark.clone(), self.no_fsync);
            tokio::task::spawn_blocking(move || {
                if !no_fsync {
                    mark.lower(log_id.index.saturating_sub(1))?;
                }
                wal.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .truncate(log_id.index)
            })
            .await
            .map_err(|e| StoreError::corrupt("raft log", format!("truncate task failed: {e}")))?
        };
        write.await.map_err(write_logs_error)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.flusher.drain().await;
        let write = async {
            // A follower is told to purge up to a snapshot it is still installing: if the
            // install failed or the node crashed first, the log would be gone with no
            // snapshot to stand in for it.
            self.snapshot.purgeable(log_id.index).await?;
            // Record the purge point first: if we crash half-way, `get_log_state` still
            // reports it, and the left-over entries are merely removed again next time.
            self.meta
                .insert(KEY_LAST_PURGED, encode("last purged", &log_id)?)?;
            // The purge point is durable before any segment goes, so the log never
            // appears to start later than the purge point says.
            self.flush().await?;
            let wal = self.wal.clone();
            tokio::task::spawn_blocking(move || {
                wal.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .purge(log_id.index)
            })
            .await
            .map_err(|e| StoreError::corrupt("raft log", format!("purge task failed: {e}")))?
        };
        write.await.map_err(write_logs_error)
    }
}
