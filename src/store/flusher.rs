//! Group commit off openraft's core: appends are written by the caller and made durable
//! here, on a thread of their own.
//!
//! `LogStore::append` writes its entries to the segment and hands the flush to this
//! thread, then returns; openraft goes on (a leader sends the entries to its followers
//! while its own disk syncs them) and learns that they are durable from the `LogFlushed`
//! callback, which only this thread calls, after the `fdatasync`. The thread takes every
//! append waiting when it wakes (and, with a commit window, those that arrive within the
//! window) and makes them durable with one `fdatasync`: one sync per group commit on the
//! acknowledgement path. The log mark rises after the callbacks, still in order, so it is
//! never above what is durable; a crash between the two leaves it behind, which is safe.
//!
//! `drain` is a barrier: truncate and purge wait on it, so no flush or mark raise of an
//! earlier append runs after they have changed the log.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::disk::LogMark;
use super::wal;
use crate::raft_types::LogFlushed;

enum Job {
    Append {
        files: Vec<Arc<File>>,
        last: Option<u64>,
        callback: LogFlushed,
    },
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// The handle to the flushing thread; the thread ends when the last handle is dropped.
pub(super) struct Flusher {
    jobs: mpsc::Sender<Job>,
}

impl Flusher {
    /// Starts the thread. `window`: how long it waits, after the first append of a group,
    /// for more before it syncs (zero: it syncs at once).
    pub(super) fn start(mark: Arc<LogMark>, dir: Arc<Path>, window: Duration) -> Flusher {
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("pos-hub-log-flush".into())
            .spawn(move || run(&rx, &mark, &dir, window));
        if let Err(err) = spawned {
            // Without the thread every append fails (its callback reports why) rather
            // than being acknowledged unsynced.
            tracing::error!(%err, "cannot start the log's flushing thread");
        }
        Flusher { jobs: tx }
    }

    fn send(&self, job: Job) -> Result<(), Job> {
        self.jobs.send(job).map_err(|mpsc::SendError(job)| job)
    }

    /// Hands over an append whose entries are written to `files`, ending at index `last`.
    pub(super) fn submit(&self, files: Vec<Arc<File>>, last: Option<u64>, callback: LogFlushed) {
        let job = Job::Append {
            files,
            last,
            callback,
        };
        if let Err(Job::Append { callback, .. }) = self.send(job) {
            callback.log_io_completed(Err(std::io::Error::other(
                "the log's flushing thread is gone",
            )));
        }
    }

    /// Waits until every append submitted before this call is flushed, its callback
    /// called and the mark raised.
    pub(super) async fn drain(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.send(Job::Barrier(tx)).is_ok() {
            // An error means the thread is gone: nothing is left to wait for.
            let _ = rx.await;
        }
    }
}

fn run(rx: &mpsc::Receiver<Job>, mark: &LogMark, dir: &Path, window: Duration) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        if !window.is_zero() {
            let until = Instant::now() + window;
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
        }
        group.extend(rx.try_iter());
        flush(group, mark, dir);
    }
}

fn flush(group: Vec<Job>, mark: &LogMark, dir: &Path) {
    let mut files: Vec<Arc<File>> = Vec::new();
    let mut last = None;
    for job in &group {
        if let Job::Append {
            files: f, last: l, ..
        } = job
        {
            for file in f {
                if !files.iter().any(|known| Arc::ptr_eq(known, file)) {
                    files.push(file.clone());
                }
            }
            last = last.max(*l);
        }
    }
    let synced = wal::sync(&files, dir);
    let mut barriers = Vec::new();
    for job in group {
        match job {
            Job::Append { callback, .. } => callback.log_io_completed(match &synced {
                Ok(()) => Ok(()),
                Err(err) => Err(std::io::Error::other(err.to_string())),
            }),
            Job::Barrier(done) => barriers.push(done),
        }
    }
    if synced.is_ok()
        && let Some(index) = last
        && let Err(err) = mark.raise(index)
    {
        // The appends are durable and acknowledged; only the check for a log that comes
        // back short lags. The next group tries again.
        tracing::error!(%err, index, "cannot raise the log mark");
    }
    for done in barriers {
        let _ = done.send(());
    }
}
