//! The file system's state: an in-memory tree of directories and files, each file's data
//! as reads see it and as it survives a power cut (with the writes in between), and the
//! open handles that keep an unlinked file readable.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

use fuser::{Errno, FileAttr, FileType, INodeNo};

pub(super) const ROOT: u64 = 1;

/// A change to a file's data that is not durable yet.
#[derive(Debug, Clone)]
pub(super) enum Pending {
    Write { offset: usize, data: Vec<u8> },
    Truncate(usize),
}

pub(super) fn apply(bytes: &mut Vec<u8>, op: &Pending) {
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
pub(super) enum Node {
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
pub(super) struct Inner {
    pub(super) nodes: BTreeMap<u64, Node>,
    pub(super) next: u64,
    pub(super) mtime: SystemTime,
    /// Open handles per file. A file unlinked (or renamed over) while open stays readable
    /// through its handles, as POSIX has it, until the last one is released.
    pub(super) open: BTreeMap<u64, u32>,
}

impl Inner {
    pub(super) fn attr(&self, ino: u64) -> Option<FileAttr> {
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

    pub(super) fn entries(&self, dir: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get(&dir) {
            Some(Node::Dir { entries, .. }) => Ok(entries),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    pub(super) fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
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

    /// `add`, returning the new node's attributes, which mkdir and create reply with.
    pub(super) fn add_with_attr(
        &mut self,
        parent: u64,
        name: &OsStr,
        node: Node,
    ) -> Result<FileAttr, Errno> {
        let ino = self.add(parent, name, node)?;
        self.attr(ino).ok_or(Errno::EIO)
    }

    /// Drops an inode and, for a directory, everything below it. A file that is still
    /// open is dropped when its last handle is released.
    pub(super) fn forget_tree(&mut self, ino: u64) {
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

    pub(super) fn opened(&mut self, ino: u64) {
        *self.open.entry(ino).or_default() += 1;
    }

    pub(super) fn released(&mut self, ino: u64) {
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

    pub(super) fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
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
