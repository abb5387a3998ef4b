//! `lose-unsynced`: a small in-memory FUSE file system for a node's data dir that keeps
//! written data volatile until it is fsynced, and on a simulated power cut drops everything
//! not yet fsynced — the fault that makes a store lose acknowledged writes if it
//! acknowledges before its data is durable.
//!
//! Semantics, as Jepsen's LazyFS: file *data* (writes and truncations) is buffered per file
//! until `fsync`/`fdatasync` on it; metadata (create, mkdir, rename, unlink) takes effect at
//! once. Files are opened with direct I/O and attributes are not cached, so after a cut the
//! kernel's page cache cannot hand back data the "disk" no longer has.
//!
//! This file holds `PowerFs`, the handle the harness mounts and cuts power with. Beside it:
//! - `tree`: the in-memory tree of directories and files, each file's data as reads see
//!   it and as it survives a cut, and the open handles;
//! - `fuse`: the FUSE operations on that tree.

mod fuse;
mod tree;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use fuser::{Config, MountOption};

use tree::{Inner, Node, Pending, ROOT};

/// The shared state; the harness keeps a handle to cut power.
#[derive(Clone, Debug)]
pub struct PowerFs {
    inner: Arc<Mutex<Inner>>,
}

impl Default for PowerFs {
    fn default() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            ROOT,
            Node::Dir {
                entries: BTreeMap::new(),
                mode: 0o755,
            },
        );
        PowerFs {
            inner: Arc::new(Mutex::new(Inner {
                nodes,
                next: ROOT + 1,
                mtime: SystemTime::now(),
                open: BTreeMap::new(),
            })),
        }
    }
}

impl PowerFs {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mounts a fresh file system at `dir` in a background session; dropping the session
    /// unmounts it.
    pub fn mount(dir: &Path) -> std::io::Result<(PowerFs, fuser::BackgroundSession)> {
        let fs = PowerFs::default();
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("pos-hub-powerfs".into()),
            MountOption::RW,
        ];
        let session = fuser::spawn_mount2(fs.clone(), dir, &config)?;
        Ok((fs, session))
    }

    /// The power cut: every file loses what was written since its last fsync. Returns the
    /// bytes dropped.
    pub fn cut(&self) -> u64 {
        let mut inner = self.lock();
        let mut lost = 0u64;
        for node in inner.nodes.values_mut() {
            if let Node::File {
                data,
                durable,
                pending,
                ..
            } = node
            {
                lost += pending
                    .iter()
                    .map(|op| match op {
                        Pending::Write { data, .. } => data.len() as u64,
                        Pending::Truncate(_) => 0,
                    })
                    .sum::<u64>();
                pending.clear();
                *data = durable.clone();
            }
        }
        lost
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod store_on_powerfs;
