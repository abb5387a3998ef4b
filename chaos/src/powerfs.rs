//! `lose-unsynced`: a small in-memory FUSE file system for a node's data dir that keeps
//! written data volatile until it is fsynced, and on a simulated power cut drops everything
//! not yet fsynced — the fault that makes a store lose acknowledged writes if it
//! acknowledges before its data is durable.
//!
//! Semantics, as Jepsen's LazyFS: file *data* (writes and truncations) is buffered per file
//! until `fsync`/`fdatasync` on it; metadata (create, mkdir, rename, unlink) takes effect at
//! once. Files are opened with direct I/O and attributes are not cached, so after a cut the
//! kernel's page cache cannot hand back data the "disk" no longer has.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, WriteFlags,
};

/// Attributes and entries are never cached by the kernel: a cut changes them underneath.
const TTL: Duration = Duration::ZERO;
const ROOT: u64 = 1;

/// A change to a file's data that is not durable yet.
#[derive(Debug, Clone)]
enum Pending {
    Write { offset: usize, data: Vec<u8> },
    Truncate(usize),
}

fn apply(bytes: &mut Vec<u8>, op: &Pending) {
    match op {
        Pending::Write { offset, data } => {
            let end = offset + data.len();
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[*offset..end].copy_from_slice(data);
        }
        Pending::Truncate(len) => bytes.resize(*len, 0),
    }
}

#[derive(Debug)]
enum Node {
    File {
        /// What reads see.
        data: Vec<u8>,
        /// What survives a power cut.
        durable: Vec<u8>,
        pending: Vec<Pending>,
        mode: u16,
    },
    Dir {
        entries: BTreeMap<OsString, u64>,
        mode: u16,
    },
}

#[derive(Debug)]
struct Inner {
    nodes: BTreeMap<u64, Node>,
    next: u64,
    mtime: SystemTime,
    /// Open handles per file. A file unlinked (or renamed over) while open stays readable
    /// through its handles, as POSIX has it, until the last one is released.
    open: BTreeMap<u64, u32>,
}

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

impl Inner {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let node = self.nodes.get(&ino)?;
        let (kind, size, perm, nlink) = match node {
            Node::File { data, mode, .. } => (FileType::RegularFile, data.len() as u64, *mode, 1),
            Node::Dir { mode, .. } => (FileType::Directory, 0, *mode, 2),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.mtime,
            crtime: self.mtime,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get(&dir) {
            Some(Node::Dir { entries, .. }) => Ok(entries),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&dir) {
            Some(Node::Dir { entries, .. }) => Ok(entries),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn add(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<u64, Errno> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(ino, node);
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.mtime = SystemTime::now();
        Ok(ino)
    }

    /// Drops an inode and, for a directory, everything below it. A file that is still
    /// open is dropped when its last handle is released.
    fn forget_tree(&mut self, ino: u64) {
        if self.open.contains_key(&ino) {
            return;
        }
        if let Some(Node::Dir { entries, .. }) = self.nodes.remove(&ino) {
            for child in entries.into_values() {
                self.forget_tree(child);
            }
        }
    }

    /// Whether some directory still names `ino`.
    fn linked(&self, ino: u64) -> bool {
        ino == ROOT
            || self.nodes.values().any(|node| match node {
                Node::Dir { entries, .. } => entries.values().any(|child| *child == ino),
                Node::File { .. } => false,
            })
    }

    fn opened(&mut self, ino: u64) {
        *self.open.entry(ino).or_default() += 1;
    }

    fn released(&mut self, ino: u64) {
        let last = match self.open.get_mut(&ino) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => true,
            None => false,
        };
        if last {
            self.open.remove(&ino);
            if !self.linked(ino) {
                self.forget_tree(ino);
            }
        }
    }

    fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let ino = *self.entries(parent)?.get(name).ok_or(Errno::ENOENT)?;
        match (self.nodes.get(&ino), dir) {
            (Some(Node::Dir { entries, .. }), true) if !entries.is_empty() => {
                return Err(Errno::ENOTEMPTY);
            }
            (Some(Node::Dir { .. }), false) => return Err(Errno::EISDIR),
            (Some(Node::File { .. }), true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        self.entries_mut(parent)?.remove(name);
        self.forget_tree(ino);
        self.mtime = SystemTime::now();
        Ok(())
    }
}

fn direct() -> FopenFlags {
    FopenFlags::FOPEN_DIRECT_IO
}

impl Filesystem for PowerFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let inner = self.lock();
        let found = inner
            .entries(parent.0)
            .and_then(|e| e.get(name).copied().ok_or(Errno::ENOENT))
            .and_then(|ino| inner.attr(ino).ok_or(Errno::ENOENT));
        match found {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.lock().attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut inner = self.lock();
        match inner.nodes.get_mut(&ino.0) {
            Some(Node::File {
                data,
                pending,
                mode: m,
                ..
            }) => {
                if let Some(size) = size {
                    let op = Pending::Truncate(size as usize);
                    apply(data, &op);
                    pending.push(op);
                }
                if let Some(mode) = mode {
                    *m = (mode & 0o7777) as u16;
                }
            }
            Some(Node::Dir { mode: m, .. }) => {
                if let Some(mode) = mode {
                    *m = (mode & 0o7777) as u16;
                }
            }
            None => return reply.error(Errno::ENOENT),
        }
        inner.mtime = SystemTime::now();
        match inner.attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut inner = self.lock();
        let node = Node::Dir {
            entries: BTreeMap::new(),
            mode: (mode & 0o7777) as u16,
        };
        match inner.add(parent.0, name, node) {
            Ok(ino) => match inner.attr(ino) {
                Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
                None => reply.error(Errno::EIO),
            },
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.lock().remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.lock().remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut inner = self.lock();
        let result = (|| {
            let ino = *inner.entries(parent.0)?.get(name).ok_or(Errno::ENOENT)?;
            if let Some(old) = inner.entries(newparent.0)?.get(newname).copied()
                && old != ino
            {
                if let Some(Node::Dir { entries, .. }) = inner.nodes.get(&old)
                    && !entries.is_empty()
                {
                    return Err(Errno::ENOTEMPTY);
                }
                inner.forget_tree(old);
            }
            inner.entries_mut(parent.0)?.remove(name);
            inner
                .entries_mut(newparent.0)?
                .insert(newname.to_owned(), ino);
            inner.mtime = SystemTime::now();
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut inner = self.lock();
        if inner.nodes.contains_key(&ino.0) {
            inner.opened(ino.0);
            reply.opened(FileHandle(0), direct());
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut inner = self.lock();
        let node = Node::File {
            data: Vec::new(),
            durable: Vec::new(),
            pending: Vec::new(),
            mode: (mode & 0o7777) as u16,
        };
        match inner.add(parent.0, name, node) {
            Ok(ino) => match inner.attr(ino) {
                Some(attr) => {
                    inner.opened(ino);
                    reply.created(&TTL, &attr, Generation(0), FileHandle(0), direct());
                }
                None => reply.error(Errno::EIO),
            },
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let inner = self.lock();
        match inner.nodes.get(&ino.0) {
            Some(Node::File { data, .. }) => {
                let start = (offset as usize).min(data.len());
                let end = (start + size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Some(Node::Dir { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        bytes: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut inner = self.lock();
        match inner.nodes.get_mut(&ino.0) {
            Some(Node::File { data, pending, .. }) => {
                let op = Pending::Write {
                    offset: offset as usize,
                    data: bytes.to_vec(),
                };
                apply(data, &op);
                pending.push(op);
                inner.mtime = SystemTime::now();
                reply.written(bytes.len() as u32);
            }
            Some(Node::Dir { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) is not a sync: nothing becomes durable here.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.lock().released(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut inner = self.lock();
        if let Some(Node::File {
            durable, pending, ..
        }) = inner.nodes.get_mut(&ino.0)
        {
            for op in pending.drain(..) {
                apply(durable, &op);
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Metadata is durable at once (see the module doc).
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let inner = self.lock();
        let entries = match inner.entries(ino.0) {
            Ok(entries) => entries,
            Err(e) => return reply.error(e),
        };
        let mut all: Vec<(u64, FileType, OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        for (name, child) in entries {
            let kind = match inner.nodes.get(child) {
                Some(Node::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            all.push((*child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: fuser::ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn read(path: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut out))
            .expect("reads");
        out
    }

    /// The layer bites: unsynced writes are gone after a cut, synced ones stay.
    /// Needs root, /dev/fuse and fusermount3 (Debian's fuse3), as CI has.
    #[test]
    fn a_power_cut_drops_exactly_what_was_not_fsynced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (fs, session) = PowerFs::mount(dir.path())
            .expect("mounting the FUSE layer (needs root, /dev/fuse and fusermount3 from fuse3)");
        let kept = dir.path().join("kept");
        let lost = dir.path().join("lost");
        let mut file = std::fs::File::create(&kept).expect("creates");
        file.write_all(b"durable").expect("writes");
        file.sync_all().expect("fsyncs");
        file.write_all(b" and then some")
            .expect("writes more, unsynced");
        drop(file);
        let mut file = std::fs::File::create(&lost).expect("creates");
        file.write_all(b"never synced").expect("writes");
        drop(file);
        assert_eq!(read(&kept), b"durable and then some");
        assert_eq!(read(&lost), b"never synced");

        let dropped = fs.cut();
        assert_eq!(
            dropped,
            (" and then some".len() + "never synced".len()) as u64
        );
        assert_eq!(read(&kept), b"durable", "the synced part survives the cut");
        assert_eq!(read(&lost), b"", "nothing unsynced survives");

        // Renames are metadata: immediate, and the data goes with the file.
        std::fs::rename(&kept, dir.path().join("moved")).expect("renames");
        fs.cut();
        assert_eq!(read(&dir.path().join("moved")), b"durable");

        // A file replaced by a rename (a snapshot being read while a newer one takes its
        // name) stays readable through the handle opened before, as POSIX has it.
        let mut open = std::fs::File::open(dir.path().join("moved")).expect("opens");
        std::fs::write(&lost, b"newer").expect("writes the replacement");
        std::fs::rename(&lost, dir.path().join("moved")).expect("renames over it");
        let mut old = Vec::new();
        open.read_to_end(&mut old).expect("reads the replaced file");
        assert_eq!(old, b"durable");
        assert_eq!(read(&dir.path().join("moved")), b"newer");
        drop(open);
        drop(session);
    }
}

#[cfg(test)]
mod store_on_powerfs {
    use std::collections::BTreeSet;
    use std::io::{BufRead, BufReader};

    use super::*;

    /// Found by `lose-unsynced`: sled 0.34 "flushes" with `sync_file_range`, which makes
    /// nothing durable on a power cut (on this layer nothing at all; on a disk, not the
    /// file's size nor the drive's cache), so a one-node store lost events it had reported
    /// durable. A store appends through `pos-hub log append`; the moment it has reported
    /// 400 events it is SIGKILLed and the power is cut; every reported event must be there.
    /// Needs root, /dev/fuse and fusermount3, and a built `pos-hub` (`POS_HUB_BIN`).
    #[test]
    fn events_a_store_reported_durable_survive_a_power_cut() {
        let bin = std::env::var_os("POS_HUB_BIN").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/pos-hub"),
            std::path::PathBuf::from,
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("mkdir");
        let (fs, session) = PowerFs::mount(&data)
            .expect("mounting the FUSE layer (needs root, /dev/fuse and fusermount3 from fuse3)");
        let events: String = (0..3000)
            .map(|i| {
                format!(
                    "{{\"eventId\":\"{}\",\"tenantId\":\"t-demo\",\"storeId\":\"s-001\",\"aggregateType\":\"inventory\",\"aggregateId\":\"FRIES\",\"version\":1,\"type\":\"inventory.adjusted\",\"at\":\"2026-11-25T12:00:00.000Z\",\"actor\":{{\"deviceId\":\"till-1\"}},\"clock\":{{\"lamport\":{i},\"deviceId\":\"till-1\"}},\"payload\":{{\"sku\":\"FRIES\",\"delta\":1}}}}\n",
                    uuid::Uuid::now_v7()
                )
            })
            .collect();
        let file = dir.path().join("events.jsonl");
        std::fs::write(&file, events).expect("writes events");
        let mut child = std::process::Command::new(&bin)
            .args(["log", "--snapshot-every", "100", "--data-dir"])
            .arg(&data)
            .arg("append")
            .arg(&file)
            .args(["--batch", "10"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("runs {}: {e}", bin.display()));
        // `log append` prints a line per event once its batch is durable.
        let stdout = child.stdout.take().expect("piped stdout");
        let mut reported = BTreeSet::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("reads a line");
            if let Some(id) = line
                .strip_prefix("ACCEPTED")
                .and_then(|rest| rest.split_whitespace().nth(1))
            {
                reported.insert(id.to_owned());
            }
            if reported.len() >= 400 {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(reported.len(), 400, "the store reported 400 events");
        let lost = fs.cut();
        let dump = std::process::Command::new(&bin)
            .args(["log", "--snapshot-every", "100", "--data-dir"])
            .arg(&data)
            .args(["dump", "--json"])
            .output()
            .expect("runs log dump");
        assert!(
            dump.status.success(),
            "the store opens after the cut: {}",
            String::from_utf8_lossy(&dump.stderr)
        );
        let kept: BTreeSet<String> = String::from_utf8_lossy(&dump.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|event| event["eventId"].as_str().map(str::to_owned))
            .collect();
        drop(session);
        let missing: Vec<&String> = reported.difference(&kept).collect();
        assert!(
            missing.is_empty(),
            "{} of {} reported events were lost in the cut ({lost} unsynced bytes dropped), e.g. {:?}",
            missing.len(),
            reported.len(),
            missing.first()
        );
    }
}
