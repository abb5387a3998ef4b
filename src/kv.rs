//! A small key-value store of our own: one append-only file, replayed into a `BTreeMap` at
//! open. The device's outbox lives in it (`client::outbox` names its keys), and so does
//! the hub's state machine (`store::tree`: one file per tree).
//!
//! The file: an 8-byte header (`MAGIC`, whose last byte is the format version), then
//! records. A record is one atomic batch of puts and deletes:
//!
//! ```text
//! len u32 | synced u64 | payload crc32 u32 | header crc32 u32 | payload (len bytes)
//! payload: ( 1 u8 | key len u32 | key | value len u32 | value )   a put
//!        | ( 2 u8 | key len u32 | key )                           a delete
//! ```
//!
//! All integers little-endian. The header checksum covers the 16 bytes before it.
//! `synced` is how much of the file was known to be on disk (fdatasynced) when the record
//! was written.
//!
//! A crash can leave the records written since the last fdatasync torn in any way: cut
//! short, or with some of their pages written and others not. Such records are the
//! tail of the file, and losing them is allowed (only a synced write was promised). So at
//! open the first bad record at offset X ends the log, and the file is cut there, unless a
//! valid record after X says the file was synced past X: then X was on disk and has been
//! damaged since, and open fails naming the file and the offset, cutting nothing. (A bad
//! record that was synced but has no record after it cannot be told from a torn one; it
//! is cut like one.)
//!
//! Compaction writes the live entries to a new file, fdatasyncs it, renames it over the
//! log and fsyncs the dir. A lock file (`flock`) keeps a second process out: one per
//! file on a device, one per data dir on a hub (`Kv::open` takes it, or `None` when the
//! caller holds the dir's).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `POSKV`, two zero bytes, format version 1.
const MAGIC: [u8; 8] = *b"POSKV\0\0\x01";
const HEADER: usize = 20;
const PUT: u8 = 1;
const DELETE: u8 = 2;
/// Compaction runs once the log is this large and `COMPACT_RATIO` times the live data.
const COMPACT_MIN: u64 = 1 << 20;
const COMPACT_RATIO: u64 = 4;
/// Live entries per record in a compacted file (each record is then a bounded read).
const CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is damaged at byte {offset}: {detail}")]
    Corrupt {
        path: String,
        offset: u64,
        detail: String,
    },
    #[error("{path} is locked by another process using the same data dir")]
    Locked { path: String },
    #[error("{path}: an earlier write failed ({why}); reopen the store")]
    Broken { path: String, why: String },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> KvError + '_ {
    move |source| KvError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// An exclusive `flock` on a file, released when dropped (the file is closed).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock, waiting up to `wait` while another holder has it.
    pub fn acquire(path: &Path, wait: Duration) -> Result<Lock, KvError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io(path))?;
        let started = Instant::now();
        loop {
            // SAFETY: flock on a file descriptor this function owns; no memory is passed.
            let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if result == 0 {
                return Ok(Lock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::WouldBlock {
                return Err(io(path)(err));
            }
            if started.elapsed() >= wait {
                return Err(KvError::Locked {
                    path: path.display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One atomic change: applied whole or (after a crash before it was synced) not at all.
#[derive(Debug, Default)]
pub struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (key, value) in &self.ops {
            out.push(if value.is_some() { PUT } else { DELETE });
            put_bytes(&mut out, key);
            if let Some(value) = value {
                put_bytes(&mut out, value);
            }
        }
        out
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Keys and values are far below 4 GiB (events are capped at 64 KiB by the hub).
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The bytes an entry counts for in the live size (its encoded put).
fn entry_size(key: &[u8], value: &[u8]) -> u64 {
    (9 + key.len() + value.len()) as u64
}

fn record(payload: &[u8], synced: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&synced.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let header_crc = crc32fast::hash(&out[..16]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut raw = [0; 4];
    raw.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(raw)
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut raw = [0; 8];
    raw.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(raw)
}

/// A record that checks out: its `synced` field and its payload.
struct Parsed<'a> {
    synced: u64,
    payload: &'a [u8],
}

/// The record at `offset`, or why it is not a whole, intact record.
fn parse(bytes: &[u8], offset: usize) -> Result<Parsed<'_>, String> {
    let rest = &bytes[offset..];
    if rest.len() < HEADER {
        return Err(format!("a record header cut short ({} bytes)", rest.len()));
    }
    if crc32fast::hash(&rest[..16]) != le_u32(&rest[16..]) {
        return Err("the record header's checksum does not match".into());
    }
    let len = le_u32(rest) as usize;
    let Some(payload) = rest.get(HEADER..HEADER + len) else {
        return Err(format!(
            "a record cut short ({} of {len} bytes)",
            rest.len() - HEADER
        ));
    };
    if crc32fast::hash(payload) != le_u32(&rest[12..]) {
        return Err("the record's checksum does not match".into());
    }
    Ok(Parsed {
        synced: le_u64(&rest[4..]),
        payload,
    })
}

/// Applies a record's payload to the map; `None` when it does not decode.
fn replay(payload: &[u8], map: &mut BTreeMap<Vec<u8>, Vec<u8>>, live: &mut u64) -> Option<()> {
    fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = le_u32(rest.get(..4)?) as usize;
        let bytes = rest.get(4..4 + len)?;
        *rest = &rest[4 + len..];
        Some(bytes)
    }
    let mut rest = payload;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let key = take(&mut rest)?;
        let old = match op {
            PUT => {
                let value = take(&mut rest)?;
                *live += entry_size(key, value);
                map.insert(key.to_vec(), value.to_vec())
            }
            DELETE => map.remove(key),
            _ => return None,
        };
        if let Some(old) = old {
            *live -= entry_size(key, &old);
        }
    }
    Some(())
}

/// fsyncs a directory, so that a file created or renamed in it stays.
fn sync_dir(dir: &Path) -> Result<(), KvError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Writes `entries` as a new log at `path` through a temporary file: written, fdatasynced,
/// renamed over `path`, the dir fsynced. A crash leaves either the old file or the new one.
pub fn write_fresh<'a>(
    path: &Path,
    entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<u64, KvError> {
    let tmp = path.with_extension("tmp");
    let mut out = MAGIC.to_vec();
    let mut chunk = Batch::default();
    let mut chunk_bytes = 0;
    for (key, value) in entries {
        chunk_bytes += key.len() + value.len();
        chunk.insert(key, value);
        if chunk_bytes >= CHUNK_BYTES {
            out.extend_from_slice(&record(&chunk.encode(), 0));
            chunk = Batch::default();
            chunk_bytes = 0;
        }
    }
    if !chunk.ops.is_empty() {
        out.extend_from_slice(&record(&chunk.encode(), 0));
    }
    // An empty seal: the file is synced as a whole before it gets its name, so a damaged
    // record anywhere before the seal is refused at open rather than cut as a torn tail.
    let sealed = out.len() as u64;
    out.extend_from_slice(&record(&[], sealed));
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(&out).map_err(io(&tmp))?;
    file.sync_data().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok(out.len() as u64)
}

/// The store: the file, its replayed contents and the lock that keeps others out.
#[derive(Debug)]
pub struct Kv {
    path: PathBuf,
    file: File,
    /// The file's length: the end of the last record.
    len: u64,
    /// How much of the file is known to be on disk.
    synced: u64,
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The encoded size of the live entries.
    live: u64,
    /// Set when a write failed in a way that leaves the file's end unknown.
    broken: Option<String>,
    _lock: Option<Lock>,
}

impl Kv {
    /// Opens the log at `path` (created empty if absent) under `lock`, replaying it; a
    /// torn tail is cut off, damage before it is an error. `None`: the caller holds a
    /// lock that covers the file (the hub's data dir lock).
    pub fn open(path: &Path, lock: Option<Lock>) -> Result<Kv, KvError> {
        if !path.exists() {
            write_fresh(path, std::iter::empty())?;
        }
        let bytes = std::fs::read(path).map_err(io(path))?;
        let corrupt = |offset: usize, detail: String| KvError::Corrupt {
            path: path.display().to_string(),
            offset: offset as u64,
            detail,
        };
        if bytes.get(..MAGIC.len()) != Some(&MAGIC[..]) {
            let detail = match bytes.get(..MAGIC.len() - 1) {
                Some(head) if head == &MAGIC[..MAGIC.len() - 1] => format!(
                    "format version {}; this build reads version {}",
                    bytes[MAGIC.len() - 1],
                    MAGIC[MAGIC.len() - 1]
                ),
                _ => "not a pos-hub key-value file (no POSKV header)".into(),
            };
            return Err(corrupt(0, detail));
        }
        let mut map = BTreeMap::new();
        let mut live = 0;
        let mut offset = MAGIC.len();
        while offset < bytes.len() {
            match parse(&bytes, offset) {
                Ok(parsed) => {
                    replay(parsed.payload, &mut map, &mut live).ok_or_else(|| {
                        corrupt(
                            offset,
                            "the record's checksum matches but its batch does not decode".into(),
                        )
                    })?;
                    offset += HEADER + parsed.payload.len();
                }
                Err(why) => {
                    if let Some(proof) = synced_past(&bytes, offset) {
                        return Err(corrupt(
                            offset,
                            format!(
                                "{why}, and the record at byte {proof} was written after this one was on disk"
                            ),
                        ));
                    }
                    tracing::warn!(
                        path = %path.display(),
                        offset,
                        dropped = bytes.len() - offset,
                        %why,
                        "key-value file: cutting a torn tail (a crash before it was synced)"
                    );
                    break;
                }
            }
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io(path))?;
        let len = offset as u64;
        if len < bytes.len() as u64 {
            file.set_len(len).map_err(io(path))?;
            file.sync_data().map_err(io(path))?;
        }
        let mut kv = Kv {
            path: path.to_owned(),
            file,
            len,
            synced: len,
            map,
            live,
            broken: None,
            _lock: lock,
        };
        kv.compact_if_due()?;
        Ok(kv)
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.map.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// The entries with keys in `range`, in key order.
    pub fn range<R: std::ops::RangeBounds<Vec<u8>>>(
        &self,
        range: R,
    ) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.map
            .range(range)
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The log file's length and the encoded size of the live entries.
    pub fn sizes(&self) -> (u64, u64) {
        (self.len, self.live)
    }

    fn check(&self) -> Result<(), KvError> {
        match &self.broken {
            Some(why) => Err(KvError::Broken {
                path: self.path.display().to_string(),
                why: why.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Appends `batch` as one record; with `sync`, waits until it is on disk. The
    /// in-memory view changes only once the write succeeded.
    pub fn apply(&mut self, batch: Batch, sync: bool) -> Result<(), KvError> {
        self.check()?;
        let bytes = record(&batch.encode(), self.synced);
        if let Err(err) = self.file.write_all(&bytes) {
            // Take back whatever part of the record reached the file, so that the next
            // record does not follow a torn one.
            if let Err(undo) = self.file.set_len(self.len) {
                self.broken = Some(format!("{err}; cutting the torn record: {undo}"));
            }
            return Err(io(&self.path)(err));
        }
        self.len += bytes.len() as u64;
        if sync {
            self.sync()?;
        }
        for (key, value) in batch.ops {
            let old = match value {
                Some(value) => {
                    self.live += entry_size(&key, &value);
                    self.map.insert(key.clone(), value)
                }
                None => self.map.remove(&key),
            };
            if let Some(old) = old {
                self.live -= entry_size(&key, &old);
            }
        }
        self.compact_if_due()
    }

    /// Waits until everything written so far is on disk.
    pub fn sync(&mut self) -> Result<(), KvError> {
        self.check()?;
        if self.synced == self.len {
            return Ok(());
        }
        if let Err(err) = self.file.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty pages: what is on
            // disk is unknown until the file is read again.
            self.broken = Some(format!("fdatasync: {err}"));
            return Err(io(&self.path)(err));
        }
        self.synced = self.len;
        Ok(())
    }

    fn compact_if_due(&mut self) -> Result<(), KvError> {
        if self.len >= COMPACT_MIN && self.len > COMPACT_RATIO * self.live.max(1) {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the log with only the live entries.
    pub fn compact(&mut self) -> Result<(), KvError> {
        self.check()?;
        let before = self.len;
        let len = write_fresh(&self.path, self.iter())?;
        // The old handle points at the replaced file; from here on only the new one counts.
        self.file = match OpenOptions::new().append(true).open(&self.path) {
            Ok(file) => file,
            Err(err) => {
                self.broken = Some(format!("reopening after compaction: {err}"));
                return Err(io(&self.path)(err));
            }
        };
        self.len = len;
        self.synced = len;
        tracing::debug!(path = %self.path.display(), before, after = len, "key-value file compacted");
        Ok(())
    }
}

/// The first valid record after `from` whose `synced` field is above `from`: proof that
/// the bytes at `from` had been on disk, so their damage is not a torn write.
fn synced_past(bytes: &[u8], from: usize) -> Option<usize> {
    (from + 1..bytes.len().saturating_sub(HEADER - 1))
        .find(|&at| parse(bytes, at).is_ok_and(|parsed| parsed.synced > from as u64))
}

#[cfg(test)]
#[path = "kv_tests.rs"]
mod tests;
