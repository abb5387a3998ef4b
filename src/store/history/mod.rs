//! The store's committed events, once each, in append-only segment files indexed by seq.
//!
//! This is the history devices catch up from (Subscribe), `log dump` reads and snapshots
//! are built from; the state machine's key-value store holds no copy of it.
//!
//! Layout: `<data dir>/history/<first seq, 20 digits>.hist`. A segment starts with
//! `MAGIC` and holds records `[u32 length][u32 CRC-32][u64 seq][payload]`, little-endian,
//! where the payload is the protobuf `pos.v1.Event` as committed (with its seq and hub
//! time) and the CRC covers the seq and the payload. Seqs are contiguous across segments.
//! A segment past `SEGMENT_BYTES` is fdatasynced and closed, its eventId index written
//! beside it (`ids.rs`), and the next begins.
//!
//! Retention (`delete_behind`) deletes the oldest segments once the store's archive mark
//! lets them go (`domain::archive`); the history then begins later (`first_seq`), and a
//! node filling its history from a peer whose history begins later starts its own there
//! (`restart_at`).
//!
//! Appends are not synced one by one: `sync` makes everything appended durable, and the
//! state machine calls it before anything may depend on it (before a snapshot is written,
//! before an install switches generations). At open every record of every segment is read back and checked. In
//! the last segment, the first bad record and everything after it are cut off: they are
//! appends a crash caught before their sync, which the state machine appends again from
//! the Raft log or a snapshot. A bad record in a closed segment, which was synced, is
//! damage: the node refuses to start and names the file.

mod ids;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use prost::Message;

use super::StoreError;
use super::disk::{fsync_path as sync_dir, io};
use crate::proto::pb;

/// A segment is closed once it holds this many bytes. The open segment's eventIds are in a
/// map (about 40 bytes each): 16 MiB of events of 250 bytes keep it near 3 MB.
pub(super) const SEGMENT_BYTES: u64 = 16 << 20;
const MAGIC: &[u8; 16] = b"pos-hub hist v1\n";
const HEADER: usize = 16;
/// A record longer than this is damage, not an event (an event is at most 64 KiB).
const RECORD_MAX: u32 = 1 << 20;
/// Every `STRIDE`th record's offset is kept in memory; a read seeks to the one before
/// its seq and scans forward. 1M events cost 128 KiB of offsets.
const STRIDE: u64 = 32;
const EXT: &str = "hist";

struct Segment {
    first: u64,
    /// The last seq held; `first - 1` while empty.
    last: u64,
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    /// `sparse[i]` is the offset of the record of seq `first + i * STRIDE`.
    sparse: Vec<u64>,
    /// The eventId index of a closed segment; the last segment's is `Inner::open_ids`.
    ids: Option<ids::ClosedIds>,
}

struct Inner {
    segments: Vec<Segment>,
    /// Segment files created (or cut) since the last sync, whose directory entry or size
    /// must be made durable too.
    dir_dirty: bool,
    /// Whether the last segment has appends not yet synced.
    unsynced: bool,
    /// The last segment's eventIds, with their seqs.
    open_ids: HashMap<u128, u64>,
}

/// Where a node that installs a snapshot of live state gets the history it lacks: the
/// other members (`raft::history`), or another store's history in tests.
pub trait HistorySource: Send + Sync {
    /// History records (as `History::read_records` gives them) of seqs after `after`, up
    /// to `upto`, from a member of `membership` other than this node: at least one record,
    /// or an error naming why none came.
    fn fetch<'a>(
        &'a self,
        membership: &'a crate::raft_types::StoredMembership,
        after: u64,
        upto: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, String>> + Send + 'a>>;
}

/// The committed events, by seq (see the module's docs).
pub struct History {
    dir: PathBuf,
    /// `SEGMENT_BYTES`, smaller in tests.
    segment_bytes: u64,
    inner: RwLock<Inner>,
    /// Serializes `sync` calls so that two do not interleave their file and dir syncs.
    syncing: Mutex<()>,
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.{EXT}")
}

fn corrupt(path: &Path, offset: u64, what: impl std::fmt::Display) -> StoreError {
    StoreError::corrupt(
        "history",
        format!("{} at byte {offset}: {what}", path.display()),
    )
}

/// One record as `RunReader::next_checked` finds it.
enum Record {
    /// `payload` is where the payload sits in the reader's buffer.
    Good {
        seq: u64,
        payload: std::ops::Range<usize>,
    },
    Bad(String),
    End,
}

/// The two fields of a stored event the history checks, decoded without the rest (prost
/// skips the other fields, the payload included, without parsing them).
#[derive(Clone, PartialEq, prost::Message)]
struct EventKey {
    #[prost(string, tag = "1")]
    event_id: String,
    #[prost(uint64, tag = "13")]
    seq: u64,
}

/// A stored event's hub time alone, which retention reads (`delete_behind`).
#[derive(Clone, PartialEq, prost::Message)]
struct StoredHubTime {
    #[prost(uint64, tag = "14")]
    hub_time: u64,
}

/// A stored event's seq alone, the one field `read_encoded` checks.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredSeq {
    #[prost(uint64, tag = "13")]
    seq: u64,
}

fn parse_event_id(seq: u64, event_id: &str) -> Result<u128, StoreError> {
    uuid::Uuid::parse_str(event_id)
        .map(|id| id.as_u128())
        .map_err(|err| {
            StoreError::corrupt("history", format!("seq {seq}: eventId {event_id:?}: {err}"))
        })
}

/// The seq of the last of `records` (as `History::read_records` gives them), read from the
/// headers alone without checking the records; `None` if they do not parse as records.
pub(in crate::store) fn last_record_seq(records: &[u8]) -> Option<u64> {
    let mut at = 0usize;
    let mut last = None;
    while at < records.len() {
        let header = records.get(at..at + HEADER)?;
        let size = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        last = Some(u64::from_le_bytes(header[8..16].try_into().ok()?));
        at += HEADER + size;
    }
    if at == records.len() { last } else { None }
}

/// The seq of the first of `read_records`' records, if there is a whole header.
pub(in crate::store) fn first_record_seq(records: &[u8]) -> Option<u64> {
    let header = records.get(..HEADER)?;
    Some(u64::from_le_bytes(header[8..16].try_into().ok()?))
}

fn encode_record(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

impl History {
    /// Opens (or creates) the history in `dir`, checking every record.
    #[cfg(test)]
    pub fn open(dir: &Path) -> Result<History, StoreError> {
        Self::open_sized(dir, SEGMENT_BYTES)
    }

    /// Opens (or creates) the history in `dir`, checking every record, closing segments
    /// at `segment_bytes` (`SEGMENT_BYTES`, smaller in tests).
    pub(crate) fn open_sized(dir: &Path, segment_bytes: u64) -> Result<History, StoreError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                // An index a crash caught before its rename; rebuilt below if needed.
                std::fs::remove_file(&path).map_err(io(&path))?;
                continue;
            }
            if path.extension().is_some_and(|e| e == EXT) {
                let first = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<u64>().ok())
                    .filter(|first| *first >= 1)
                    .ok_or_else(|| corrupt(&path, 0, "not a history segment's name"))?;
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut segments: Vec<Segment> = Vec::with_capacity(firsts.len());
        let count = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            if let Some(previous) = segments.last()
                && previous.last + 1 != first
            {
                return Err(corrupt(
                    &dir.join(segment_name(first)),
                    0,
                    format!(
                        "begins at seq {first}, but the segment before it ends at {}",
                        previous.last
                    ),
                ));
            }
            segments.push(load_segment(dir, first, i + 1 == count)?);
        }
        let mut open_ids = HashMap::new();
        let last = segments.len().saturating_sub(1);
        for (i, segment) in segments.iter_mut().enumerate() {
            if i == last {
                open_ids = scan_ids(segment)?;
                continue;
            }
            let index = ids::path_for(&segment.path);
            segment.ids = Some(
                match ids::ClosedIds::open(&index, segment.first, segment.last) {
                    Ok(closed) => closed,
                    Err(why) => {
                        tracing::warn!(%why, "rebuilding a history segment's eventId index");
                        ids::ClosedIds::write(&index, &scan_ids(segment)?)?
                    }
                },
            );
        }
        sync_dir(dir)?;
        Ok(History {
            dir: dir.to_owned(),
            segment_bytes,
            inner: RwLock::new(Inner {
                segments,
                dir_dirty: false,
                unsynced: false,
                open_ids,
            }),
            syncing: Mutex::new(()),
        })
    }

    fn read_inner(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A poisoned lock means a writer panicked between whole records; the segment
        // list is still a list of whole segments.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_inner(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The last seq held, 0 if none.
    pub fn last_seq(&self) -> u64 {
        self.read_inner().segments.last().map_or(0, |s| s.last)
    }

    /// Appends committed events, whose seqs must follow the last one held. Not synced.
    /// (The state machine appends them encoded, `append_encoded`.)
    #[cfg(test)]
    pub fn append(&self, events: &[pb::Event]) -> Result<(), StoreError> {
        let encoded: Vec<Vec<u8>> = events.iter().map(Message::encode_to_vec).collect();
        let records: Vec<(u64, &str, &[u8])> = events
            .iter()
            .zip(&encoded)
            .map(|(e, bytes)| (e.seq, e.event_id.as_str(), bytes.as_slice()))
            .collect();
        self.append_encoded(&records)
    }

    /// Appends committed events, already encoded, as (seq, eventId, the protobuf
    /// `pos.v1.Event`); seqs must follow the last one held. Not synced.
    pub fn append_encoded(&self, events: &[(u64, &str, &[u8])]) -> Result<(), StoreError> {
        let records = events
            .iter()
            .map(|&(seq, event_id, encoded)| Ok((seq, parse_event_id(seq, event_id)?, encoded)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.append_payloads(&records)
    }

    /// Appends history records as another node's `read_records` gave them, whose seqs
    /// must follow the last one held: each is checked (its checksum, and that its event
    /// decodes with that seq and a UUID eventId) and written as it came. Not synced.
    /// Returns the number of records appended.
    pub fn append_records(&self, bytes: &[u8]) -> Result<usize, StoreError> {
        let bad = |offset: usize, what: String| {
            StoreError::corrupt("history records", format!("at byte {offset}: {what}"))
        };
        let mut records = Vec::new();
        let mut at = 0usize;
        while at < bytes.len() {
            let header = bytes
                .get(at..at + HEADER)
                .ok_or_else(|| bad(at, "a record header cut short".into()))?;
            let size = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let seq_bytes: [u8; 8] = header[8..16].try_into().unwrap_or_default();
            let seq = u64::from_le_bytes(seq_bytes);
            if size > RECORD_MAX {
                return Err(bad(at, format!("a record of {size} bytes")));
            }
            let payload = bytes
                .get(at + HEADER..at + HEADER + size as usize)
                .ok_or_else(|| bad(at, "a record cut short".into()))?;
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&seq_bytes);
            hasher.update(payload);
            if hasher.finalize() != crc {
                return Err(bad(at, format!("seq {seq}: checksum mismatch")));
            }
            let key = EventKey::decode(payload).map_err(|e| bad(at, format!("seq {seq}: {e}")))?;
            if key.seq != seq {
                return Err(bad(
                    at,
                    format!("record of seq {seq} holds seq {}", key.seq),
                ));
            }
            records.push((seq, parse_event_id(seq, &key.event_id)?, payload));
            at += HEADER + payload.len();
        }
        self.append_payloads(&records)?;
        Ok(records.len())
    }

    /// Appends (seq, eventId, encoded event) records; seqs must follow the last held.
    fn append_payloads(&self, records: &[(u64, u128, &[u8])]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut inner = self.write_inner();
        let mut next = inner.segments.last().map_or(1, |s| s.last + 1);
        // Checked whole first, so that a refused call writes nothing.
        if let Some((expected, (seq, _, _))) = (next..)
            .zip(records)
            .find(|(expected, (seq, _, _))| seq != expected)
        {
            return Err(StoreError::corrupt(
                "history",
                format!("appending seq {seq} after {}", expected - 1),
            ));
        }
        let mut buf = Vec::new();
        let mut i = 0;
        while i < records.len() {
            let needs_segment = inner
                .segments
                .last()
                .is_none_or(|s| s.len >= self.segment_bytes);
            if needs_segment {
                self.begin_segment(&mut inner, next)?;
            }
            let segment = inner
                .segments
                .last_mut()
                .ok_or_else(|| StoreError::corrupt("history", "no segment to append to"))?;
            buf.clear();
            let start_len = segment.len;
            while i < records.len() && segment.len + (buf.len() as u64) < self.segment_bytes {
                let (seq, _, payload) = records[i];
                if seq != next {
                    return Err(StoreError::corrupt(
                        "history",
                        format!("appending seq {seq} after {}", next - 1),
                    ));
                }
                if (next - segment.first).is_multiple_of(STRIDE) {
                    segment.sparse.push(start_len + buf.len() as u64);
                }
                encode_record(next, payload, &mut buf);
                next += 1;
                i += 1;
            }
            let ids_from = i - (next - 1 - segment.last) as usize;
            if buf.is_empty() {
                continue;
            }
            segment
                .file
                .write_all_at(&buf, start_len)
                .map_err(io(&segment.path))?;
            segment.len = start_len + buf.len() as u64;
            let first_new = segment.last + 1;
            segment.last = next - 1;
            for (offset, (_, id, _)) in records[ids_from..i].iter().enumerate() {
                inner.open_ids.insert(*id, first_new + offset as u64);
            }
            inner.unsynced = true;
        }
        Ok(())
    }

    /// Closes the last segment (synced) and begins one whose first seq is `first`.
    fn begin_segment(&self, inner: &mut Inner, first: u64) -> Result<(), StoreError> {
        let open_ids = std::mem::take(&mut inner.open_ids);
        if let Some(last) = inner.segments.last_mut() {
            last.file.sync_data().map_err(io(&last.path))?;
            last.ids = Some(ids::ClosedIds::write(
                &ids::path_for(&last.path),
                &open_ids,
            )?);
        }
        let path = self.dir.join(segment_name(first));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io(&path))?;
        file.write_all_at(MAGIC, 0).map_err(io(&path))?;
        inner.segments.push(empty_segment(first, path, file));
        inner.dir_dirty = true;
        inner.unsynced = true;
        Ok(())
    }

    /// The first seq the history holds (1 until retention deletes its oldest files).
    pub fn first_seq(&self) -> u64 {
        self.read_inner().segments.first().map_or(1, |s| s.first)
    }

    /// Retention: deletes the oldest segment files, one after the other, while each is
    /// wholly at or behind `through_seq` and its last event's hub time is at most
    /// `hub_time_max`. The segment being appended to always stays. Returns the (first,
    /// last) seqs of the segments deleted. Each goes from memory first, then its eventId
    /// index file, then its records (a crash in between leaves records whose index is
    /// rebuilt at open, and deleted again later), then the directory entry is synced.
    pub fn delete_behind(
        &self,
        through_seq: u64,
        hub_time_max: u64,
    ) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut deleted = Vec::new();
        loop {
            let (first, last, path) = {
                let inner = self.read_inner();
                match inner.segments.as_slice() {
                    [oldest, _, ..]
                        if oldest.last <= through_seq && oldest.last >= oldest.first =>
                    {
                        (oldest.first, oldest.last, oldest.path.clone())
                    }
                    _ => break,
                }
            };
            let mut hub_time = None;
            self.scan_after(last - 1, last, 1, usize::MAX, |seq, payload, at, offset| {
                let held = StoredHubTime::decode(payload)
                    .map_err(|e| corrupt(at, offset, format!("seq {seq}: {e}")))?;
                hub_time = Some(held.hub_time);
                Ok(())
            })?;
            if hub_time.is_none_or(|t| t > hub_time_max) {
                break;
            }
            {
                let mut inner = self.write_inner();
                if inner.segments.first().map(|s| s.first) != Some(first) {
                    break;
                }
                inner.segments.remove(0);
            }
            remove_if_there(&ids::path_for(&path))?;
            remove_if_there(&path)?;
            sync_dir(&self.dir)?;
            deleted.push((first, last));
        }
        Ok(deleted)
    }

    /// Empties the history and makes it begin at seq `first`: for a node that fills its
    /// history from a peer whose own begins there (retention deleted what came before,
    /// after it was archived), so what this node held before cannot be joined to it.
    pub fn restart_at(&self, first: u64) -> Result<(), StoreError> {
        let mut inner = self.write_inner();
        for segment in inner.segments.drain(..) {
            remove_if_there(&ids::path_for(&segment.path))?;
            remove_if_there(&segment.path)?;
        }
        inner.open_ids.clear();
        sync_dir(&self.dir)?;
        self.begin_segment(&mut inner, first.max(1))?;
        drop(inner);
        self.sync()
    }

    /// Makes every append so far durable: an fdatasync of the last segment, and of the
    /// directory if a segment was created or cut.
    pub fn sync(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        let (file, path, dir_dirty) = {
            let mut inner = self.write_inner();
            if !inner.unsynced && !inner.dir_dirty {
                return Ok(());
            }
            let dir_dirty = std::mem::take(&mut inner.dir_dirty);
            inner.unsynced = false;
            match inner.segments.last() {
                Some(s) => (Some(s.file.clone()), s.path.clone(), dir_dirty),
                None => (None, self.dir.clone(), dir_dirty),
            }
        };
        if let Some(file) = file {
            file.sync_data().map_err(io(&path))?;
        }
        if dir_dirty {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The seq of the event `event_id`, if the history holds it.
    pub fn seq_of(&self, event_id: &uuid::Uuid) -> Result<Option<u64>, StoreError> {
        let id = event_id.as_u128();
        let inner = self.read_inner();
        if let Some(seq) = inner.open_ids.get(&id) {
            return Ok(Some(*seq));
        }
        for segment in inner.segments.iter().rev() {
            if let Some(closed) = &segment.ids
                && let Some(seq) = closed.get(id)?
            {
                return Ok(Some(seq));
            }
        }
        Ok(None)
    }

    /// Up to `limit` events with seq > `after`, in seq order, stopping once they add up to
    /// `max_bytes` encoded (the event that crosses it is the last; the first always
    /// comes). Seqs below the first held are not there to read: the page starts at the
    /// first held.
    pub fn read_after(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<pb::Event>, StoreError> {
        let mut events = Vec::new();
        self.read_encoded(after, limit, max_bytes, |seq, encoded| {
            let event = pb::Event::decode(encoded)
                .map_err(|e| StoreError::corrupt("history", format!("seq {seq}: {e}")))?;
            events.push(event);
            Ok(())
        })?;
        Ok(events)
    }

    /// What `read_after` reads, handed to `each` as (seq, the protobuf `pos.v1.Event` as
    /// stored) without decoding it: Subscribe sends these bytes as they are. Each record's
    /// checksum is checked, and that the event in it carries the record's seq.
    pub fn read_encoded(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
        mut each: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.scan_after(
            after,
            u64::MAX,
            limit,
            max_bytes,
            |seq, payload, path, offset| {
                let held = StoredSeq::decode(payload)
                    .map_err(|e| corrupt(path, offset, format!("seq {seq}: {e}")))?;
                if held.seq != seq {
                    return Err(corrupt(
                        path,
                        offset,
                        format!("record of seq {seq} holds seq {}", held.seq),
                    ));
                }
                each(seq, payload)
            },
        )
    }

    /// The records of seqs `after + 1 ..= upto`, as they are stored (each checked on the
    /// way out, its checksum going along), until they add up to `max_bytes` (the record
    /// that crosses it is the last; the first always comes): what `append_records` takes
    /// on another node.
    pub fn read_records(
        &self,
        after: u64,
        upto: u64,
        max_bytes: usize,
    ) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        self.scan_after(after, upto, usize::MAX, max_bytes, |seq, payload, _, _| {
            encode_record(seq, payload, &mut out);
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `each` with (seq, payload, file, offset) of the records after `after`, up to
    /// `upto`, at most `limit` of them, until their payloads add up to `max_bytes`.
    fn scan_after(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
        max_bytes: usize,
        mut each: impl FnMut(u64, &[u8], &Path, u64) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // Which segments to read, with their files, outside the lock.
        let plan: Vec<(u64, u64, u64, Arc<File>, PathBuf, u64)> = {
            let inner = self.read_inner();
            inner
                .segments
                .iter()
                .filter(|s| s.last > after && s.last >= s.first)
                .map(|s| {
                    let from = (after + 1).max(s.first);
                    let slot = ((from - s.first) / STRIDE) as usize;
                    let offset = s.sparse.get(slot).copied().unwrap_or(MAGIC.len() as u64);
                    (from, s.last, offset, s.file.clone(), s.path.clone(), s.len)
                })
                .collect()
        };
        let mut count = 0usize;
        let mut total = 0usize;
        for (from, last, mut offset, file, path, len) in plan {
            let last = last.min(upto);
            if from > last {
                break;
            }
            // One buffered read per segment run; records are scanned out of it.
            let mut reader = RunReader::new(&file, &path, offset, len);
            while count < limit && total < max_bytes {
                let Some((seq, payload, past)) = reader.next_record()? else {
                    break;
                };
                let at = offset;
                offset = past;
                if seq < from {
                    continue;
                }
                if seq > last {
                    break;
                }
                total = total.saturating_add(payload.len());
                each(seq, payload, &path, at)?;
                count += 1;
                if seq == last {
                    break;
                }
            }
            if count >= limit || total >= max_bytes || last == upto {
                break;
            }
        }
        Ok(())
    }
}

/// A record `RunReader::next_record` read: its seq, its payload, the offset just past it.
type RecordAt<'a> = (u64, &'a [u8], u64);

/// Reads records from `offset` onward through a 256 KiB buffer.
struct RunReader<'a> {
    file: &'a File,
    path: &'a Path,
    offset: u64,
    len: u64,
    buf: Vec<u8>,
    /// `buf` holds the file's bytes from `buf_start`.
    buf_start: u64,
}

const READ_CHUNK: usize = 256 << 10;

impl<'a> RunReader<'a> {
    fn new(file: &'a File, path: &'a Path, offset: u64, len: u64) -> Self {
        Self {
            file,
            path,
            offset,
            len,
            buf: Vec::new(),
            buf_start: offset,
        }
    }

    /// Makes `buf` hold `[offset, offset + need)`.
    fn fill(&mut self, need: usize) -> Result<(), StoreError> {
        let have_end = self.buf_start + self.buf.len() as u64;
        if self.offset >= self.buf_start && self.offset + need as u64 <= have_end {
            return Ok(());
        }
        let want = need.max(READ_CHUNK) as u64;
        let end = (self.offset + want).min(self.len);
        let mut buf = vec![0u8; (end - self.offset) as usize];
        self.file
            .read_exact_at(&mut buf, self.offset)
            .map_err(io(self.path))?;
        self.buf = buf;
        self.buf_start = self.offset;
        Ok(())
    }

    /// The next record, checked, and the reader moved past it; a damaged one (`Bad`, with
    /// why) leaves the reader where it is. `Err` is only a failure to read the file.
    fn next_checked(&mut self) -> Result<Record, StoreError> {
        if self.offset >= self.len {
            return Ok(Record::End);
        }
        if self.len - self.offset < HEADER as u64 {
            return Ok(Record::Bad(format!(
                "{} bytes of a record header",
                self.len - self.offset
            )));
        }
        self.fill(HEADER)?;
        let at = (self.offset - self.buf_start) as usize;
        let header = &self.buf[at..at + HEADER];
        let size = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&header[8..16]);
        let seq = u64::from_le_bytes(seq_bytes);
        if size > RECORD_MAX {
            return Ok(Record::Bad(format!("a record of {size} bytes")));
        }
        if self.len - self.offset - (HEADER as u64) < u64::from(size) {
            return Ok(Record::Bad("a record cut short".into()));
        }
        self.fill(HEADER + size as usize)?;
        let at = (self.offset - self.buf_start) as usize;
        let payload = at + HEADER..at + HEADER + size as usize;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&seq_bytes);
        hasher.update(&self.buf[payload.clone()]);
        if hasher.finalize() != crc {
            return Ok(Record::Bad("checksum mismatch".into()));
        }
        self.offset += (HEADER + payload.len()) as u64;
        Ok(Record::Good { seq, payload })
    }

    /// The next record as (seq, payload, the offset just past it), or `None` at the end;
    /// a damaged record is an error naming it.
    fn next_record(&mut self) -> Result<Option<RecordAt<'_>>, StoreError> {
        match self.next_checked()? {
            Record::End => Ok(None),
            Record::Good { seq, payload } => Ok(Some((seq, &self.buf[payload], self.offset))),
            Record::Bad(why) => Err(corrupt(self.path, self.offset, why)),
        }
    }
}

/// Reads a segment back whole. In the last segment (`tail`), the first bad record and all
/// after it are cut off; in any other, a bad record is an error.
fn load_segment(dir: &Path, first: u64, tail: bool) -> Result<Segment, StoreError> {
    let path = dir.join(segment_name(first));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    let len = file.metadata().map_err(io(&path))?.len();
    let mut magic = [0u8; 16];
    let magic_ok =
        len >= MAGIC.len() as u64 && (&file).read_exact(&mut magic).is_ok() && &magic == MAGIC;
    if !magic_ok {
        if tail && len < MAGIC.len() as u64 {
            // Created, then a crash before its first bytes were durable.
            file.set_len(0).map_err(io(&path))?;
            file.write_all_at(MAGIC, 0).map_err(io(&path))?;
            file.sync_data().map_err(io(&path))?;
            return Ok(empty_segment(first, path, file));
        }
        return Err(corrupt(&path, 0, "not a pos-hub history segment"));
    }
    let mut segment = empty_segment(first, path, file);
    let mut reader = RunReader::new(&segment.file, &segment.path, MAGIC.len() as u64, len);
    let mut next = first;
    let mut sparse = Vec::new();
    let cut = loop {
        let offset = reader.offset;
        let bad = match reader.next_checked()? {
            Record::End => break None,
            Record::Good { seq, .. } if seq == next => {
                if (seq - first).is_multiple_of(STRIDE) {
                    sparse.push(offset);
                }
                next += 1;
                continue;
            }
            Record::Good { seq, .. } => format!("seq {seq} where {next} was due"),
            Record::Bad(why) => why,
        };
        break Some((offset, bad));
    };
    let end = reader.offset;
    drop(reader);
    segment.sparse = sparse;
    segment.len = end;
    segment.last = next - 1;
    if let Some((offset, bad)) = cut {
        if !tail {
            return Err(corrupt(&segment.path, offset, bad));
        }
        tracing::warn!(
            segment = %segment.path.display(),
            offset,
            from_seq = next,
            why = %bad,
            "cutting the history's unsynced tail; those events are appended again from the Raft log"
        );
        segment.file.set_len(offset).map_err(io(&segment.path))?;
        segment.file.sync_data().map_err(io(&segment.path))?;
        segment.len = offset;
    }
    Ok(segment)
}

fn remove_if_there(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

fn empty_segment(first: u64, path: PathBuf, file: File) -> Segment {
    Segment {
        first,
        last: first - 1,
        path,
        file: Arc::new(file),
        len: MAGIC.len() as u64,
        sparse: Vec::new(),
        ids: None,
    }
}

/// A segment's eventIds with their seqs, read from its records.
fn scan_ids(segment: &Segment) -> Result<HashMap<u128, u64>, StoreError> {
    let mut found = HashMap::with_capacity((segment.last + 1 - segment.first) as usize);
    let mut reader = RunReader::new(
        &segment.file,
        &segment.path,
        MAGIC.len() as u64,
        segment.len,
    );
    while let Some((seq, payload, at)) = reader.next_record()? {
        // The eventId alone: the rest of the event (its payload) is skipped, not parsed.
        let key = EventKey::decode(payload)
            .map_err(|e| corrupt(&segment.path, at, format!("seq {seq}: {e}")))?;
        found.insert(parse_event_id(seq, &key.event_id)?, seq);
    }
    Ok(found)
}

#[cfg(test)]
mod tests;
