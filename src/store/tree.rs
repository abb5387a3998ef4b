//! The state machine's durable trees: each an ordered map of byte keys in memory, kept in
//! one of our key-value files (`crate::kv`) in `<data dir>/state/<tree>.kv`. Replaced sled
//! (see docs/decisions.md, "The state machine in files of our own, not sled").
//!
//! A write (`insert`, `remove`, `apply_batch`) is one record appended to the tree's file,
//! applied whole or, after a crash before it was synced, not at all; it is not synced
//! (the Raft log is durable, and a state machine that lost its unsynced tail is rolled
//! back to a whole earlier apply, which openraft re-applies). `Db::flush` syncs every open
//! tree at the points that need it (a snapshot, a purge, an install, a migration).
//!
//! One `flock` on `<data dir>/state/LOCK` keeps a second process out of the data dir.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::kv::{Batch, Kv, KvError, Lock};

use super::StoreError;

/// How long `Db::open` waits for the data dir's lock: a process that just exited (or a
/// handle of this one being dropped) releases it a moment later.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const LOCK_FILE: &str = "LOCK";
const SUFFIX: &str = ".kv";

/// Keys and values, in key order.
pub(super) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The trees of one data dir.
#[derive(Clone)]
pub(super) struct Db {
    dir: PathBuf,
    trees: Arc<Mutex<BTreeMap<String, Tree>>>,
    _lock: Arc<Lock>,
}

impl Db {
    /// Opens `dir` (created if absent), taking its lock.
    pub(super) fn open(dir: &Path) -> Result<Db, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let lock = Lock::acquire(&dir.join(LOCK_FILE), LOCK_WAIT).map_err(|e| match e {
            KvError::Locked { .. } => StoreError::InUse(dir.to_owned()),
            other => StoreError::from(other),
        })?;
        super::disk::fsync_path(dir)?;
        if let Some(parent) = dir.parent() {
            super::disk::fsync_path(parent)?;
        }
        Ok(Db {
            dir: dir.to_owned(),
            trees: Arc::default(),
            _lock: Arc::new(lock),
        })
    }

    fn trees(&self) -> MutexGuard<'_, BTreeMap<String, Tree>> {
        self.trees.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{SUFFIX}"))
    }

    /// The tree `name`, created empty if it does not exist.
    pub(super) fn open_tree(&self, name: impl AsRef<[u8]>) -> Result<Tree, StoreError> {
        let name = tree_name(name.as_ref())?;
        let mut trees = self.trees();
        if let Some(tree) = trees.get(&name) {
            return Ok(tree.clone());
        }
        let kv = Kv::open(&self.path_of(&name), None)?;
        let tree = Tree {
            kv: Arc::new(Mutex::new(kv)),
        };
        trees.insert(name, tree.clone());
        Ok(tree)
    }

    /// Deletes the tree `name` (its file), if it exists. Handles to it must be gone.
    pub(super) fn drop_tree(&self, name: impl AsRef<[u8]>) -> Result<(), StoreError> {
        let name = tree_name(name.as_ref())?;
        self.trees().remove(&name);
        let path = self.path_of(&name);
        match std::fs::remove_file(&path) {
            Ok(()) => super::disk::fsync_path(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// The names of the trees in the dir.
    pub(super) fn tree_names(&self) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| StoreError::io(&self.dir, e))?;
            let file = entry.file_name();
            if let Some(name) = file.to_string_lossy().strip_suffix(SUFFIX) {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Everything written to the open trees before this call is on stable storage when it
    /// returns.
    pub(super) fn flush(&self) -> Result<(), StoreError> {
        let trees: Vec<Tree> = self.trees().values().cloned().collect();
        for tree in trees {
            tree.flush()?;
        }
        Ok(())
    }
}

/// Writes a whole tree at once (a migration): a new file, synced, renamed into place.
pub(super) fn write_tree(dir: &Path, name: &str, pairs: &Pairs) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    let path = dir.join(format!("{name}{SUFFIX}"));
    crate::kv::write_fresh(
        &path,
        pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )?;
    Ok(())
}

fn tree_name(name: &[u8]) -> Result<String, StoreError> {
    let name = std::str::from_utf8(name)
        .ok()
        .filter(|n| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        })
        .ok_or_else(|| StoreError::corrupt("tree name", format!("{name:?}")))?;
    Ok(name.to_owned())
}

/// One tree: shared by the state machine, its readers and its snapshot builder.
#[derive(Clone)]
pub(super) struct Tree {
    kv: Arc<Mutex<Kv>>,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree").finish_non_exhaustive()
    }
}

impl Tree {
    fn kv(&self) -> MutexGuard<'_, Kv> {
        // A panic while holding the lock cannot leave the map half-changed: it changes
        // only after the write succeeded, and a failed write marks the file broken.
        self.kv.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.kv().get(key.as_ref()).map(<[u8]>::to_vec))
    }

    pub(super) fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool, StoreError> {
        Ok(self.kv().get(key.as_ref()).is_some())
    }

    pub(super) fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.insert(key.as_ref(), value);
        self.apply_batch(batch)
    }

    pub(super) fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.remove(key.as_ref());
        self.apply_batch(batch)
    }

    /// Removes every key (one record).
    pub(super) fn clear(&self) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        for (key, _) in self.kv().iter() {
            batch.remove(key);
        }
        self.apply_batch(batch)
    }

    /// Applies `batch` whole (one record in the file), not synced.
    pub(super) fn apply_batch(&self, batch: Batch) -> Result<(), StoreError> {
        Ok(self.kv().apply(batch, false)?)
    }

    /// Syncs what was written.
    pub(super) fn flush(&self) -> Result<(), StoreError> {
        Ok(self.kv().sync()?)
    }

    pub(super) fn len(&self) -> usize {
        self.kv().len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys and values under each of `prefixes`, in that order and key order, copied
    /// under one lock: one batch is applied whole or not at all, so the copy is the tree as
    /// it was between two of them.
    pub(super) fn copy_prefixes(&self, prefixes: &[u8]) -> Pairs {
        let kv = self.kv();
        let mut out = Vec::new();
        for &prefix in prefixes {
            let start = Bound::Included(vec![prefix]);
            out.extend(
                kv.range((start, Bound::Unbounded))
                    .take_while(|(k, _)| k.first() == Some(&prefix))
                    .map(|(k, v)| (k.to_vec(), v.to_vec())),
            );
        }
        out
    }

    /// Every key and value, in key order.
    pub(super) fn iter(&self) -> Iter {
        self.range::<Vec<u8>, _>(..)
    }

    /// The keys and values whose key starts with `prefix`, in key order.
    pub(super) fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        let prefix = prefix.as_ref().to_vec();
        Iter {
            tree: self.clone(),
            next: Bound::Included(prefix.clone()),
            end: Bound::Unbounded,
            prefix: Some(prefix),
            buffer: std::collections::VecDeque::new(),
            done: false,
        }
    }

    /// The keys and values in `range`, in key order.
    pub(super) fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        let owned = |b: Bound<&K>| match b {
            Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        Iter {
            tree: self.clone(),
            next: owned(range.start_bound()),
            end: owned(range.end_bound()),
            prefix: None,
            buffer: std::collections::VecDeque::new(),
            done: false,
        }
    }
}

/// Entries an iterator copies out of the tree per lock: the iterator is lazy, as sled's
/// were (a caller that stops after the first key copies one chunk, not the tree).
const ITER_CHUNK: usize = 64;

/// Keys and values read from a tree in key order, a chunk at a time (each item a `Result`,
/// as sled's iterators gave them, though reading memory does not fail). Like sled's, it
/// sees writes made while it runs past the chunk it holds.
pub(super) struct Iter {
    tree: Tree,
    /// Where the next chunk starts.
    next: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    /// Only keys with this prefix (ends at the first key without it).
    prefix: Option<Vec<u8>>,
    buffer: std::collections::VecDeque<(Vec<u8>, Vec<u8>)>,
    done: bool,
}

impl Iter {
    pub(super) fn keys(self) -> impl Iterator<Item = Result<Vec<u8>, StoreError>> {
        self.map(|item| item.map(|(k, _)| k))
    }

    fn fill(&mut self) {
        let kv = self.tree.kv();
        let chunk: Vec<(Vec<u8>, Vec<u8>)> = kv
            .range((self.next.clone(), self.end.clone()))
            .take_while(|(k, _)| self.prefix.as_ref().is_none_or(|p| k.starts_with(p)))
            .take(ITER_CHUNK)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        drop(kv);
        if chunk.len() < ITER_CHUNK {
            self.done = true;
        }
        if let Some((last, _)) = chunk.last() {
            self.next = Bound::Excluded(last.clone());
        }
        self.buffer.extend(chunk);
    }
}

impl Iterator for Iter {
    type Item = Result<(Vec<u8>, Vec<u8>), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffer.is_empty() && !self.done {
            self.fill();
        }
        self.buffer.pop_front().map(Ok)
    }
}

impl From<KvError> for StoreError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Io { path, source } => StoreError::Io {
                path: path.into(),
                source,
            },
            other => StoreError::corrupt("state machine file", other),
        }
    }
}
