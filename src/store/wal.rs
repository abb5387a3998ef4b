//! The Raft log as append-only segment files, written and fdatasynced by us.
//!
//! Why not sled: every group commit flushed sled, and a sled flush writes every dirty page
//! of the whole database (the state machine's too) in its log-structured format, then
//! rewrites pages as their fragment chains grow. The bench measured 25–45 KB written to
//! the device per 179-byte event. Here an append writes the entries' own bytes plus an
//! 8-byte header each, then one `fdatasync`; the state machine stays in sled, flushed in
//! the background (a crash only makes openraft re-apply entries from this log).
//!
//! Layout: `<data dir>/log/<first index, 20 digits>.seg`. A segment begins with `MAGIC`,
//! whose last byte is the format version (`codec::FORMAT`), then records:
//! `[u32 length][u32 CRC-32 of the payload][payload: the entry, by codec]`, little-endian.
//! Segments of format 1 (bincode, no magic) are rewritten at first open
//! (`rewrite_headless`, from `store::format`).
//! Appends go to the last segment; a segment past `SEGMENT_BYTES` is closed and a new one
//! begun. A purge deletes whole segments that end at or before the purge point; a
//! truncation cuts the segment that holds the index and deletes later ones.
//!
//! At open every record is read back and checked (length, CRC, contiguous indexes). A
//! torn record at the very end of the last segment (a crash in the middle of an append
//! that was never acknowledged) is cut off. Damage anywhere else is an error: the node
//! refuses to start. A log that comes back whole but short is `LogMark`'s business.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::RaftLogId;

use super::disk::{fsync_path as sync_dir, io};
use super::{StoreError, decode, encode};
use crate::raft_types::Entry;

/// A segment is closed once it holds this many bytes. Purges delete whole segments, so
/// this is also the granularity of the log's size on disk (`raft::compaction` keeps it
/// to a few tens of MiB behind the snapshot).
pub(super) const SEGMENT_BYTES: u64 = 16 << 20;
/// A record longer than this is damage, not an entry (an entry carries at most 1024
/// events; an event is at most 64 KiB).
const RECORD_MAX: u32 = 128 << 20;
const HEADER: usize = 8;
/// The head of every segment: `POSWAL`, a zero byte, the format version. A format-1
/// segment begins with a record's length instead, which as `POSW` would be 1.4 GB: over
/// `RECORD_MAX`, so the two never pass for each other.
const MAGIC: [u8; 8] = *b"POSWAL\0\x02";
const MAGIC_ID: &[u8] = b"POSWAL\0";

/// What reading a segment's records found.
struct Scan {
    /// Each whole record's offset and payload length, in order.
    records: Vec<(usize, u32)>,
    /// Where reading stopped: the end, or the first bad record.
    end: usize,
    /// The bad record, and whether it can only be an append a crash cut short (nothing
    /// whole comes after it).
    damage: Option<(String, bool)>,
}

/// Reads the records of a segment's bytes from `offset` until the end or the first bad
/// one, checking lengths and checksums (not what the payloads hold).
fn scan(bytes: &[u8], mut offset: usize) -> Scan {
    let mut records = Vec::new();
    let damage = loop {
        if offset == bytes.len() {
            break None;
        }
        let rest = &bytes[offset..];
        let zeros = rest.iter().all(|b| *b == 0);
        let Some(header) = rest.get(..HEADER) else {
            break Some(("a record header cut short".to_owned(), true));
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || len > RECORD_MAX {
            // A file that grew before its data reached the disk reads as zeros.
            break Some((format!("a record length of {len} bytes"), zeros));
        }
        let end = HEADER + len as usize;
        let Some(payload) = rest.get(HEADER..end) else {
            break Some(("a record cut short".to_owned(), true));
        };
        if crc32fast::hash(payload) != crc {
            let last = end == rest.len();
            break Some((
                "a record whose checksum does not match".to_owned(),
                last || zeros,
            ));
        }
        records.push((offset, len));
        offset += end;
    };
    Scan {
        records,
        end: offset,
        damage,
    }
}

/// The error for damage found in a segment where a crash cannot have put it.
fn damaged(path: &Path, what: &str, offset: usize) -> StoreError {
    StoreError::corrupt(
        "raft log",
        format!(
            "{} has {what} at byte {offset}; restore the data dir from a backup, or wipe it \
             and add the node to its group again",
            path.display()
        ),
    )
}

/// The segment files in `dir`, by first index.
fn segment_firsts(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut firsts = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(first) = name
            .strip_suffix(".seg")
            .and_then(|n| n.parse::<u64>().ok())
        {
            firsts.push(first);
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

/// Turns a record's payload of format 1 into this format's.
pub(super) type Convert = dyn Fn(&[u8]) -> Result<Vec<u8>, StoreError>;

/// Rewrites every segment in `dir` that has no `MAGIC` (format 1) in this format: each
/// record's payload through `convert`, into a new file that is synced and then renamed
/// over the old one, so a crash leaves each segment whole in one format or the other and
/// the next call finishes the rest. A torn record at the end of the last segment is left
/// out, as an open cuts it; damage anywhere else is an error and nothing is rewritten.
pub(super) fn rewrite_headless(dir: &Path, convert: &Convert) -> Result<usize, StoreError> {
    if !dir.exists() {
        return Ok(0);
    }
    let firsts = segment_firsts(dir)?;
    let count = firsts.len();
    let mut rewritten = 0;
    for (i, first) in firsts.into_iter().enumerate() {
        let path = dir.join(segment_name(first));
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        if bytes.starts_with(MAGIC_ID) {
            continue;
        }
        let found = scan(&bytes, 0);
        if let Some((what, torn)) = &found.damage
            && !(i + 1 == count && *torn)
        {
            return Err(damaged(&path, what, found.end));
        }
        let mut out = Vec::with_capacity(bytes.len() + MAGIC.len());
        out.extend_from_slice(&MAGIC);
        for (offset, len) in found.records {
            let payload = &bytes[offset + HEADER..offset + HEADER + len as usize];
            let converted = convert(payload)?;
            let len = u32::try_from(converted.len())
                .ok()
                .filter(|l| *l <= RECORD_MAX)
                .ok_or_else(|| {
                    StoreError::corrupt("log entry", format!("{} bytes", converted.len()))
                })?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(&converted).to_le_bytes());
            out.extend_from_slice(&converted);
        }
        let tmp = dir.join(format!("{}.tmp", segment_name(first)));
        std::fs::write(&tmp, &out).map_err(io(&tmp))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        sync_dir(dir)?;
        rewritten += 1;
    }
    Ok(rewritten)
}

struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    len: u64,
}

/// Where one entry's record is.
#[derive(Clone, Copy)]
struct Loc {
    /// Position of the segment in `Wal::segments`'s order, as its first index.
    segment: u64,
    offset: u64,
    len: u32,
}

impl Loc {
    /// The record's bytes on disk, header included.
    fn record_bytes(&self) -> u64 {
        u64::from(self.len) + HEADER as u64
    }
}

pub(super) struct Wal {
    dir: PathBuf,
    segments: Vec<Segment>,
    /// `locs[i]` is the record of index `first + i`.
    first: u64,
    locs: VecDeque<Loc>,
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

impl Wal {
    /// Opens (or creates) the log in `dir`, reading every record back.
    pub(super) fn open(dir: &Path) -> Result<Wal, StoreError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let firsts = segment_firsts(dir)?;
        // The directory itself must survive a crash once segments count on it.
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        let mut wal = Wal {
            dir: dir.to_owned(),
            segments: Vec::new(),
            first: firsts.first().copied().unwrap_or(0),
            locs: VecDeque::new(),
        };
        let count = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            wal.load_segment(first, i + 1 == count)?;
        }
        sync_dir(dir)?;
        Ok(wal)
    }

    fn load_segment(&mut self, first: u64, last_segment: bool) -> Result<(), StoreError> {
        let path = self.dir.join(segment_name(first));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes).map_err(io(&path))?;
        if self.locs.is_empty() {
            self.first = first;
        } else if first != self.next_index() {
            return Err(StoreError::corrupt(
                "raft log",
                format!(
                    "{} starts at index {first}, but the log before it ends at {}",
                    path.display(),
                    self.next_index() - 1
                ),
            ));
        }
        if !bytes.starts_with(&MAGIC) {
            if last_segment && bytes.len() < MAGIC.len() && MAGIC.starts_with(&bytes) {
                // Created by a crash before its head reached the disk: nothing in it counts.
                tracing::warn!(segment = %path.display(), "rewriting the head of a raft log segment a crash cut short");
                write_magic(&file, &path)?;
                bytes = MAGIC.to_vec();
            } else if let Some(version) = bytes.strip_prefix(MAGIC_ID).and_then(|v| v.first()) {
                return Err(StoreError::FormatUnknown {
                    path,
                    found: version.to_string(),
                });
            } else {
                return Err(StoreError::corrupt(
                    "raft log",
                    format!(
                        "{} does not begin as a raft log segment of format {} does (a \
                         segment of format 1 is rewritten before the log opens)",
                        path.display(),
                        crate::codec::FORMAT
                    ),
                ));
            }
        }
        let found = scan(&bytes, MAGIC.len());
        for (expected, &(offset, len)) in (first..).zip(&found.records) {
            let payload = &bytes[offset + HEADER..offset + HEADER + len as usize];
            let entry: Entry = decode("log entry", payload)?;
            if entry.get_log_id().index != expected {
                return Err(StoreError::corrupt(
                    "raft log",
                    format!(
                        "{} holds index {} where {expected} was due",
                        path.display(),
                        entry.get_log_id().index
                    ),
                ));
            }
            self.locs.push_back(Loc {
                segment: first,
                offset: offset as u64,
                len,
            });
        }
        let offset = found.end;
        if let Some((what, torn)) = found.damage {
            if !(last_segment && torn) {
                return Err(damaged(&path, &what, offset));
            }
            // The tail of the last segment: an append cut off by a crash, never
            // acknowledged (it is synced before it is). Cut it away.
            tracing::warn!(segment = %path.display(), offset, what, "cutting off a torn record at the end of the raft log");
            file.set_len(offset as u64).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        self.segments.push(Segment {
            first,
            path,
            file: Arc::new(file),
            len: offset as u64,
        });
        Ok(())
    }

    /// The index the next appended entry must have (the first index when empty).
    fn next_index(&self) -> u64 {
        self.first + self.locs.len() as u64
    }

    /// The last entry's index, if any.
    pub(super) fn last_index(&self) -> Option<u64> {
        (!self.locs.is_empty()).then(|| self.next_index() - 1)
    }

    /// Bytes of the records of the entries after `index`.
    pub(super) fn bytes_after(&self, index: u64) -> u64 {
        let skip =
            (index.saturating_add(1).saturating_sub(self.first) as usize).min(self.locs.len());
        self.locs.range(skip..).map(Loc::record_bytes).sum()
    }

    /// The end (exclusive) of the entries from `start` before `end` whose records add up to
    /// at most `max_bytes`: at least one entry when there is one.
    pub(super) fn end_within(&self, start: u64, end: u64, max_bytes: u64) -> u64 {
        // `range`, not `iter().skip()`: this runs for every AppendEntries, and skipping
        // walks every entry before `start`.
        let skip = (start.saturating_sub(self.first) as usize).min(self.locs.len());
        let mut total = 0u64;
        let mut index = start;
        for loc in self.locs.range(skip..) {
            if index >= end {
                break;
            }
            total += loc.record_bytes();
            if total > max_bytes && index > start {
                break;
            }
            index += 1;
        }
        index.max(start.saturating_add(1)).min(end)
    }

    /// The highest index whose purge keeps at least `keep_bytes` of records after it
    /// (`None`: the whole log is less than that).
    pub(super) fn purge_point_keeping(&self, keep_bytes: u64) -> Option<u64> {
        let mut kept = 0u64;
        for (i, loc) in self.locs.iter().enumerate().rev() {
            kept += loc.record_bytes();
            if kept >= keep_bytes {
                return (self.first + i as u64).checked_sub(1);
            }
        }
        None
    }

    pub(super) fn last_entry(&self) -> Result<Option<Entry>, StoreError> {
        match self.last_index() {
            Some(index) => Ok(self.read(index..index + 1)?.pop()),
            None => Ok(None),
        }
    }

    /// Writes the entries after the last one (not yet durable: see `sync_handle`). Returns
    /// the file to fdatasync for them.
    pub(super) fn append(&mut self, entries: Vec<Entry>) -> Result<Vec<Arc<File>>, StoreError> {
        let mut touched: Vec<Arc<File>> = Vec::new();
        let mut buffer = Vec::new();
        for entry in entries {
            let index = entry.get_log_id().index;
            if !self.locs.is_empty() && index != self.next_index() {
                return Err(StoreError::corrupt(
                    "raft log",
                    format!("append of index {index} after {}", self.next_index() - 1),
                ));
            }
            if self.locs.is_empty() {
                // Nothing live anywhere (a new log, or all of it purged or truncated):
                // start clean at this index, so segment names keep telling first indexes.
                self.clear()?;
                self.first = index;
            }
            let need_segment = match self.segments.last() {
                None => true,
                Some(s) => s.len >= SEGMENT_BYTES,
            };
            if need_segment {
                self.write_out(&mut buffer, &mut touched)?;
                self.begin_segment(index)?;
            }
            let payload = encode("log entry", &entry)?;
            let len = u32::try_from(payload.len())
                .ok()
                .filter(|l| *l <= RECORD_MAX)
                .ok_or_else(|| {
                    StoreError::corrupt(
                        "log entry",
                        format!("{} bytes is too large", payload.len()),
                    )
                })?;
            let segment = self.segments.last_mut().ok_or_else(|| {
                StoreError::corrupt("raft log", "no segment to append to".to_owned())
            })?;
            let offset = segment.len + buffer.len() as u64;
            buffer.extend_from_slice(&len.to_le_bytes());
            buffer.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buffer.extend_from_slice(&payload);
            self.locs.push_back(Loc {
                segment: segment.first,
                offset,
                len,
            });
        }
        self.write_out(&mut buffer, &mut touched)?;
        Ok(touched)
    }

    /// Deletes every segment; only when no live entry is left in them.
    fn clear(&mut self) -> Result<(), StoreError> {
        if self.segments.is_empty() {
            return Ok(());
        }
        for gone in self.segments.drain(..) {
            std::fs::remove_file(&gone.path).map_err(io(&gone.path))?;
        }
        sync_dir(&self.dir)
    }

    /// Writes `buffer` at the end of the last segment.
    fn write_out(
        &mut self,
        buffer: &mut Vec<u8>,
        touched: &mut Vec<Arc<File>>,
    ) -> Result<(), StoreError> {
        if buffer.is_empty() {
            return Ok(());
        }
        let segment = self
            .segments
            .last_mut()
            .ok_or_else(|| StoreError::corrupt("raft log", "no segment to append to".to_owned()))?;
        segment
            .file
            .write_all_at(buffer, segment.len)
            .map_err(io(&segment.path))?;
        segment.len += buffer.len() as u64;
        buffer.clear();
        if !touched.iter().any(|f| Arc::ptr_eq(f, &segment.file)) {
            touched.push(segment.file.clone());
        }
        Ok(())
    }

    fn begin_segment(&mut self, first: u64) -> Result<(), StoreError> {
        let path = self.dir.join(segment_name(first));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io(&path))?;
        write_magic(&file, &path)?;
        // The new file's name must survive a crash before anything in it counts.
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            first,
            path,
            file: Arc::new(file),
            len: MAGIC.len() as u64,
        });
        Ok(())
    }

    /// The entries with index in `[from, to)` that the log holds, in order.
    pub(super) fn read(&self, range: std::ops::Range<u64>) -> Result<Vec<Entry>, StoreError> {
        let from = range.start.max(self.first);
        let to = range.end.min(self.next_index());
        let mut entries = Vec::with_capacity(to.saturating_sub(from) as usize);
        for index in from..to {
            let loc = self.locs[(index - self.first) as usize];
            let segment = self
                .segments
                .iter()
                .find(|s| s.first == loc.segment)
                .ok_or_else(|| {
                    StoreError::corrupt("raft log", format!("no segment for index {index}"))
                })?;
            let mut bytes = vec![0u8; HEADER + loc.len as usize];
            segment
                .file
                .read_exact_at(&mut bytes, loc.offset)
                .map_err(io(&segment.path))?;
            let payload = &bytes[HEADER..];
            let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            if crc32fast::hash(payload) != crc {
                return Err(StoreError::corrupt(
                    "raft log",
                    format!(
                        "the record of index {index} in {} no longer matches its checksum",
                        segment.path.display()
                    ),
                ));
            }
            let entry: Entry = decode("log entry", payload)?;
            if entry.get_log_id().index != index {
                return Err(StoreError::corrupt(
                    "log entry",
                    format!("index {index} holds {}", entry.get_log_id()),
                ));
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Removes the entries from `index` on, durably.
    pub(super) fn truncate(&mut self, index: u64) -> Result<(), StoreError> {
        if index >= self.next_index() {
            return Ok(());
        }
        let index = index.max(self.first);
        let loc = self.locs[(index - self.first) as usize];
        self.locs.truncate((index - self.first) as usize);
        let mut removed = false;
        while let Some(last) = self.segments.last() {
            if last.first > loc.segment {
                std::fs::remove_file(&last.path).map_err(io(&last.path))?;
                self.segments.pop();
                removed = true;
            } else {
                break;
            }
        }
        if let Some(last) = self.segments.last_mut() {
            last.file.set_len(loc.offset).map_err(io(&last.path))?;
            last.file.sync_all().map_err(io(&last.path))?;
            last.len = loc.offset;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Forgets the entries up to `index` and deletes the segments that hold nothing else.
    /// The caller records the purge point durably first.
    pub(super) fn purge(&mut self, index: u64) -> Result<(), StoreError> {
        let drop_count =
            (index.saturating_add(1).saturating_sub(self.first) as usize).min(self.locs.len());
        self.locs.drain(..drop_count);
        self.first = self.first.max(index.saturating_add(1));
        // A segment can go when the next one begins at or before the first index kept.
        let mut removed = false;
        while self.segments.len() > 1 && self.segments[1].first <= self.first {
            let gone = self.segments.remove(0);
            std::fs::remove_file(&gone.path).map_err(io(&gone.path))?;
            removed = true;
        }
        if self.locs.is_empty() {
            // Everything purged: the next append starts a fresh segment.
            return self.clear();
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// Writes a segment's head, durably, over whatever the file held.
fn write_magic(file: &File, path: &Path) -> Result<(), StoreError> {
    file.set_len(0).map_err(io(path))?;
    file.write_all_at(&MAGIC, 0).map_err(io(path))?;
    file.sync_data().map_err(io(path))
}

/// Makes the written records durable.
pub(super) fn sync(files: &[Arc<File>], dir: &Path) -> Result<(), StoreError> {
    for file in files {
        file.sync_data().map_err(io(dir))?;
    }
    Ok(())
}

/// Appends raw bytes to a segment file, as a crash or a damaged disk would leave them.
#[cfg(test)]
pub(super) fn write_raw(segment: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    OpenOptions::new()
        .append(true)
        .open(segment)?
        .write_all(bytes)
}
