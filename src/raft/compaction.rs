//! Keeps the Raft log bounded in bytes, not only in entries. openraft's snapshot policy and
//! purge count entries; an entry carries from one event (a till's edit) to 1024 (an outbox
//! flushed after an outage), so 5,000 entries are anything from 1 to 250 MB of log. Every
//! second this task asks for a snapshot once the log behind the last one passes
//! `snapshot_bytes`, and purges the log down to `keep_bytes` behind the snapshot. A
//! snapshot is the live state (cheap), and a node behind the purge gets it plus the
//! history it lacks from a peer (`store::snapshot`), so the log need not hold much.

use std::time::{Duration, Instant};

use crate::raft_types::Raft;
use crate::store::{LogStore, StateReader};

/// Log bytes behind the last snapshot that call for the next one.
pub const SNAPSHOT_LOG_BYTES: u64 = 32 << 20;
/// Log bytes kept behind the snapshot for nodes a little behind.
pub const KEEP_LOG_BYTES: u64 = 32 << 20;
const TICK: Duration = Duration::from_secs(1);
/// A snapshot asked for and not yet seen is asked for again after this long.
const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    pub snapshot_bytes: u64,
    pub keep_bytes: u64,
}

impl Default for LogBounds {
    fn default() -> Self {
        Self {
            snapshot_bytes: SNAPSHOT_LOG_BYTES,
            keep_bytes: KEEP_LOG_BYTES,
        }
    }
}

/// How often retention looks for history files it may delete.
const RETENTION_TICK: Duration = Duration::from_secs(10);

/// Retention (`StateReader::apply_retention`): every `RETENTION_TICK`, deletes the history
/// files the store's archive mark lets go. Runs until Raft stops.
pub async fn retain(raft: Raft, reader: StateReader) {
    loop {
        tokio::time::sleep(RETENTION_TICK).await;
        if raft.metrics().borrow().running_state.is_err() {
            return;
        }
        let reader = reader.clone();
        match tokio::task::spawn_blocking(move || reader.apply_retention()).await {
            Ok(Ok(deleted)) => {
                for (first, last) in deleted {
                    tracing::info!(
                        first,
                        last,
                        "retention deleted a history file (archived, and older than the store keeps)"
                    );
                }
            }
            Ok(Err(err)) => tracing::error!(%err, "retention could not delete history files"),
            Err(err) => tracing::error!(%err, "the retention task failed"),
        }
    }
}

/// Runs until Raft stops.
pub async fn run(raft: Raft, log: LogStore, bounds: LogBounds) {
    let mut asked: Option<(Option<u64>, Instant)> = None;
    loop {
        tokio::time::sleep(TICK).await;
        let (snapshot, purged) = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            if m.running_state.is_err() {
                return;
            }
            (m.snapshot.map(|id| id.index), m.purged.map(|id| id.index))
        };
        let pending =
            asked.is_some_and(|(at, when)| at == snapshot && when.elapsed() < SNAPSHOT_PATIENCE);
        let behind = log.bytes_after(snapshot.unwrap_or(0));
        if !pending && behind >= bounds.snapshot_bytes {
            tracing::info!(
                log_bytes = behind,
                "the log behind the last snapshot passed its bound: building a snapshot"
            );
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            asked = Some((snapshot, Instant::now()));
        }
        let (Some(snapshot), Some(point)) = (snapshot, log.purge_point_keeping(bounds.keep_bytes))
        else {
            continue;
        };
        let upto = point.min(snapshot);
        if purged.is_none_or(|p| upto > p) && raft.trigger().purge_log(upto).await.is_err() {
            return;
        }
    }
}
