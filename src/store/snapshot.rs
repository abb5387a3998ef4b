//! Snapshots: a file per snapshot of the live state, plus the seq it covers; its cost to
//! build, send and install grows with what is live (open orders, the day's closed ones,
//! stock, devices), not with the store's history, which stays in the history files.
//!
//! File format (all integers little-endian):
//! ```text
//! MAGIC (16 bytes) | record(header) | record … record | crc32 (4 bytes)
//! record = u32 length | bytes
//! ```
//! The CRC-32 covers every byte before it. Three formats, told apart by the magic:
//! - **live state** (`pos-hub snap v3`, data format 2): the header is `LiveHeader` by
//!   `codec`; each record is one key and value of the state machine's tree
//!   (`u32 key length | key | value`), the `Applied` record among them. Installing loads
//!   them into a fresh generation. The events up to the snapshot's seq are not in it: a
//!   node whose history ends before that seq first fetches the missing events from a peer
//!   (`HistorySource`), so that its history (and with it Subscribe and the eventId index
//!   that dedupe reads) never has a hole.
//! - **live state of data format 1** (`pos-hub snap v2`): the same, with the header and
//!   the values in bincode. Installed (from a peer of the release before) with each value
//!   re-encoded (`format::reencode_value`); one found at open is rebuilt, never sent.
//! - **events** (`pos-hub snap v1`, from releases before): the header is bincode
//!   `SnapshotHeader`, the records the events 1..=last_seq as protobuf `pos.v1.Event`;
//!   installing replays them through the domain rules, each under the rules that accepted
//!   it, and checks each is accepted at its seq again. Still installed, never written.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::RaftSnapshotBuilder;
use openraft::{ErrorSubject, ErrorVerb};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedRwLockReadGuard;

use super::disk::{Disk, DurableSnapshot};
use super::format::{legacy, reencode_value};
use super::history::History;
use super::keys;
use super::state_machine::{Applied, TreeState, extend_history};
use super::{StoreError, decode, encode, storage_error};
use crate::domain::{Outcome, Realm, Rules};
use crate::proto::pb;
use crate::raft_types::TypeConfig;
use crate::raft_types::{LogId, Snapshot, SnapshotMeta, StorageError};

const MAGIC_EVENTS: &[u8; 16] = b"pos-hub snap v1\n";
const MAGIC_LIVE_V1: &[u8; 16] = b"pos-hub snap v2\n";
const MAGIC_LIVE: &[u8; 16] = b"pos-hub snap v3\n";
/// The live snapshot. Others in the directory are work in progress (`*.tmp`).
const CURRENT: &str = "current.snap";
const BUILDING: &str = "building.tmp";
const INSTALLING: &str = "installing.tmp";
/// Where a damaged current snapshot is set aside (the last one only), for an operator.
const DAMAGED: &str = "current.snap.damaged";
/// A record longer than this is corruption, not an event: refuse before allocating it.
const SNAPSHOT_RECORD_BYTES_MAX: u32 = 64 << 20;
/// Replayed events, or loaded keys, are written to the tree in batches of this many.
const INSTALL_BATCH_EVENTS: u64 = 1024;

/// The header of a snapshot of events (`MAGIC_EVENTS`, releases before issue 18).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SnapshotHeader {
    meta: SnapshotMeta,
    realm: Realm,
    last_seq: u64,
    hub_time_ms: u64,
}

/// The header of a snapshot of live state (`MAGIC_LIVE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LiveHeader {
    meta: SnapshotMeta,
    realm: Realm,
    last_seq: u64,
    hub_time_ms: u64,
    /// Key-value records that follow.
    records: u64,
}

/// What a snapshot file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// The events `1..=last_seq`: replayed to install.
    Events,
    /// The state machine's keys and values: loaded to install.
    Live,
}

/// Any format's header, as the rest of this module reads it.
#[derive(Debug, Clone)]
pub(super) struct Header {
    pub format: Format,
    /// Written in data format 1 (bincode): a live state's values are re-encoded to load.
    legacy: bool,
    meta: SnapshotMeta,
    realm: Realm,
    pub last_seq: u64,
    hub_time_ms: u64,
    /// Records between the header and the checksum.
    records: u64,
}

impl From<SnapshotHeader> for Header {
    fn from(h: SnapshotHeader) -> Self {
        Header {
            format: Format::Events,
            legacy: true,
            records: h.last_seq,
            meta: h.meta,
            realm: h.realm,
            last_seq: h.last_seq,
            hub_time_ms: h.hub_time_ms,
        }
    }
}

impl From<LiveHeader> for Header {
    fn from(h: LiveHeader) -> Self {
        Header {
            format: Format::Live,
            legacy: false,
            records: h.records,
            meta: h.meta,
            realm: h.realm,
            last_seq: h.last_seq,
            hub_time_ms: h.hub_time_ms,
        }
    }
}

impl Header {
    /// Whether installing this snapshot first needs the events after `history_last_seq`:
    /// a snapshot of live state covers events it does not hold.
    pub fn needs_history_after(&self, history_last_seq: u64) -> bool {
        self.format == Format::Live && history_last_seq < self.last_seq
    }
}

/// One key and value of the tree as a live-state record: `u32 key length | key | value`.
fn live_record(key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

fn split_live_record(record: &[u8]) -> Result<(&[u8], &[u8]), StoreError> {
    let bad = || StoreError::corrupt("snapshot", "a live-state record cut short");
    let len = record.get(..4).ok_or_else(bad)?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let key = record.get(4..4 + len).ok_or_else(bad)?;
    Ok((key, &record[4 + len..]))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |e| StoreError::io(path, e)
}

/// Removes snapshot files left half-written by a crash.
pub(super) fn remove_temp_files(dir: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path.extension().is_some_and(|ext| ext == "tmp") {
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// Makes a rename or a new file in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> CrcWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.inner.write_all(bytes)
    }

    fn record(&mut self, bytes: &[u8]) -> io::Result<()> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|len| *len <= SNAPSHOT_RECORD_BYTES_MAX)
            .ok_or_else(|| {
                io::Error::other(format!(
                    "a {}-byte record is too large for a snapshot",
                    bytes.len()
                ))
            })?;
        self.write(&len.to_le_bytes())?;
        self.write(bytes)
    }
}

struct CrcReader<R: Read> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        self.inner
            .read_exact(buf)
            .map_err(|e| StoreError::corrupt("snapshot", format!("truncated: {e}")))?;
        self.crc.update(buf);
        Ok(())
    }

    fn record(&mut self) -> Result<Vec<u8>, StoreError> {
        let mut len = [0u8; 4];
        self.read(&mut len)?;
        let len = u32::from_le_bytes(len);
        if len > SNAPSHOT_RECORD_BYTES_MAX {
            return Err(StoreError::corrupt(
                "snapshot",
                format!("record of {len} bytes"),
            ));
        }
        let mut bytes = vec![0u8; len as usize];
        self.read(&mut bytes)?;
        Ok(bytes)
    }

    /// Checks the trailing CRC and that nothing follows it.
    fn finish(mut self) -> Result<(), StoreError> {
        let computed = self.crc.clone().finalize();
        let mut stored = [0u8; 4];
        self.inner
            .read_exact(&mut stored)
            .map_err(|e| StoreError::corrupt("snapshot", format!("no checksum: {e}")))?;
        if u32::from_le_bytes(stored) != computed {
            return Err(StoreError::corrupt("snapshot", "checksum mismatch"));
        }
        let mut extra = [0u8; 1];
        match self.inner.read(&mut extra) {
            Ok(0) => Ok(()),
            Ok(_) => Err(StoreError::corrupt("snapshot", "bytes after the checksum")),
            Err(e) => Err(StoreError::corrupt("snapshot", e)),
        }
    }
}

fn open_reader(path: &Path) -> Result<(CrcReader<BufReader<File>>, Header), StoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = CrcReader {
        inner: BufReader::new(file),
        crc: crc32fast::Hasher::new(),
    };
    let mut magic = [0u8; 16];
    reader.read(&mut magic)?;
    let header = if &magic == MAGIC_LIVE {
        decode::<LiveHeader>("snapshot header", &reader.record()?)?.into()
    } else if &magic == MAGIC_LIVE_V1 {
        let mut header: Header = legacy::<LiveHeader>("snapshot header", &reader.record()?)?.into();
        header.legacy = true;
        header
    } else if &magic == MAGIC_EVENTS {
        legacy::<SnapshotHeader>("snapshot header", &reader.record()?)?.into()
    } else {
        return Err(StoreError::corrupt(
            "snapshot",
            format!("{} is not a pos-hub snapshot", path.display()),
        ));
    };
    Ok((reader, header))
}

/// Writes the live state `live` (every key and value of the tree as of `header`) as a
/// snapshot and makes it the current one.
fn write_snapshot(
    dir: &Path,
    header: &LiveHeader,
    live: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), StoreError> {
    let tmp = dir.join(BUILDING);
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut out = CrcWriter {
        inner: BufWriter::new(file),
        crc: crc32fast::Hasher::new(),
    };
    out.write(MAGIC_LIVE).map_err(io_err(&tmp))?;
    out.record(&encode("snapshot header", header)?)
        .map_err(io_err(&tmp))?;
    let mut record = Vec::new();
    for (key, value) in live {
        live_record(key, value, &mut record);
        out.record(&record).map_err(io_err(&tmp))?;
    }
    let crc = out.crc.finalize();
    let mut inner = out
        .inner
        .into_inner()
        .map_err(|e| StoreError::io(&tmp, e.into_error()))?;
    inner.write_all(&crc.to_le_bytes()).map_err(io_err(&tmp))?;
    inner.sync_all().map_err(io_err(&tmp))?;
    let current = dir.join(CURRENT);
    fs::rename(&tmp, &current).map_err(io_err(&current))?;
    sync_dir(dir)
}

/// The current snapshot, opened for reading from its start.
pub(super) async fn open_current(dir: &Path) -> Result<Option<Snapshot>, StoreError> {
    let path = dir.join(CURRENT);
    if !tokio::fs::try_exists(&path).await.map_err(io_err(&path))? {
        return Ok(None);
    }
    let header_path = path.clone();
    let header =
        tokio::task::spawn_blocking(move || open_reader(&header_path).map(|(_, header)| header))
            .await
            .map_err(|e| StoreError::corrupt("snapshot", format!("reader task failed: {e}")))??;
    let file = tokio::fs::File::open(&path).await.map_err(io_err(&path))?;
    Ok(Some(Snapshot {
        meta: header.meta,
        snapshot: Box::new(file),
    }))
}

/// A fresh file for openraft to write a snapshot into as its chunks arrive.
pub(super) async fn create_receiving_file(
    dir: &Path,
) -> Result<(PathBuf, tokio::fs::File), StoreError> {
    let path = dir.join(format!("receiving-{}.tmp", uuid::Uuid::now_v7()));
    let file = tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .await
        .map_err(io_err(&path))?;
    Ok((path, file))
}

/// The result of an install: the new generation's tree and what it has applied.
pub(super) struct Installed {
    pub tree: crate::store::tree::Tree,
    pub applied: Applied,
}

/// Copies the received snapshot to `installing.tmp`, durably (file and directory), and
/// checks it whole: checksum, realm, and the leader's meta. From then on the install can be
/// finished from that file, even after a crash (`StateMachine::open` does), once the
/// history holds the events it covers (`Header::needs_history_after`).
pub(super) async fn receive(
    realm: Realm,
    dir: PathBuf,
    meta: SnapshotMeta,
    mut received: tokio::fs::File,
) -> Result<Header, StoreError> {
    use tokio::io::AsyncSeekExt;
    received
        .seek(SeekFrom::Start(0))
        .await
        .map_err(io_err(&dir))?;
    let received = received.into_std().await;
    tokio::task::spawn_blocking(move || {
        let copy = dir.join(INSTALLING);
        let checked = copy_durably(received, &copy)
            .and_then(|()| sync_dir(&dir))
            .and_then(|()| verify(&copy))
            .and_then(|header| check_header(&header, &realm, &meta).map(|()| header));
        if checked.is_err() {
            let _ = fs::remove_file(&copy);
        }
        checked
    })
    .await
    .map_err(|e| StoreError::corrupt("snapshot", format!("receive task failed: {e}")))?
}

/// Installs `installing.tmp` (see `receive`) into generation `generation`: loads a
/// snapshot of live state, replays one of events. The caller switches to that generation;
/// on error the half-filled tree is dropped and the live state machine was never touched.
pub(super) async fn install_received(
    disk: Disk,
    history: Arc<History>,
    realm: Realm,
    dir: PathBuf,
    generation: u64,
    meta: SnapshotMeta,
) -> Result<Installed, StoreError> {
    tokio::task::spawn_blocking(move || {
        let copy = dir.join(INSTALLING);
        let db = disk.db();
        let name = keys::state_machine_tree(generation);
        db.drop_tree(name.as_bytes())?;
        let tree = db.open_tree(name.as_bytes())?;
        let (reader, header) = open_reader(&copy)?;
        check_header(&header, &realm, &meta)?;
        let installed = match header.format {
            Format::Live => load(&tree, &history, &meta, reader, &header),
            Format::Events => replay(&tree, &history, &realm, &meta, reader, &header),
        };
        match installed {
            Ok(applied) => {
                // Everything replayed is durable before the caller switches to it, the
                // history first: the state machine is never durably ahead of it.
                history.sync()?;
                disk.flush_blocking()?;
                Ok(Installed { tree, applied })
            }
            Err(err) => {
                drop(tree);
                let _ = db.drop_tree(name.as_bytes());
                Err(err)
            }
        }
    })
    .await
    .map_err(|e| StoreError::corrupt("snapshot", format!("install task failed: {e}")))?
}

/// A snapshot refused for `detail`.
pub(super) fn refusal(meta: &SnapshotMeta, detail: String) -> StoreError {
    StoreError::Snapshot {
        snapshot_id: meta.snapshot_id.clone(),
        detail,
    }
}

/// A snapshot's header must be of this node's realm and say what the leader announced.
fn check_header(header: &Header, realm: &Realm, meta: &SnapshotMeta) -> Result<(), StoreError> {
    let refuse = |detail: String| refusal(meta, detail);
    if &header.realm != realm {
        return Err(refuse(format!(
            "it belongs to realm {}, this node to {realm}",
            header.realm
        )));
    }
    if header.meta.last_log_id != meta.last_log_id
        || header.meta.last_membership != meta.last_membership
    {
        return Err(refuse(format!(
            "its header ({:?}) does not match what the leader announced",
            header.meta
        )));
    }
    Ok(())
}

fn copy_durably(mut from: File, to: &Path) -> Result<(), StoreError> {
    from.seek(SeekFrom::Start(0)).map_err(io_err(to))?;
    let mut out = File::create(to).map_err(io_err(to))?;
    io::copy(&mut BufReader::new(from), &mut out).map_err(io_err(to))?;
    out.sync_all().map_err(io_err(to))
}

/// Writes a snapshot's live state into `tree`: every key and value as it was on the node
/// that built it. The history must already hold every event the snapshot covers.
fn load(
    tree: &crate::store::tree::Tree,
    history: &History,
    meta: &SnapshotMeta,
    mut reader: CrcReader<BufReader<File>>,
    header: &Header,
) -> Result<Applied, StoreError> {
    let refuse = |detail: String| refusal(meta, detail);
    if history.last_seq() < header.last_seq {
        return Err(refuse(format!(
            "it covers the events up to seq {}, and this node's history ends at {}: the \
             history files lost events the snapshot stands on (damage); wipe this data dir \
             and add the node to its group again to rebuild it from its peers",
            header.last_seq,
            history.last_seq()
        )));
    }
    let mut applied = None;
    let mut batch = crate::kv::Batch::default();
    for n in 1..=header.records {
        let record = reader.record()?;
        let (key, value) = split_live_record(&record)?;
        let reencoded;
        let value = if header.legacy {
            reencoded = reencode_value(key, value)?;
            reencoded.as_slice()
        } else {
            value
        };
        if key == keys::applied_key() {
            applied = Some(decode::<Applied>("applied state", value)?);
        }
        batch.insert(key, value);
        if n % INSTALL_BATCH_EVENTS == 0 {
            tree.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    reader.finish()?;
    tree.apply_batch(batch)?;
    let applied = applied.ok_or_else(|| refuse("it holds no applied state".into()))?;
    if applied.last_applied != meta.last_log_id || applied.last_seq != header.last_seq {
        return Err(refuse(format!(
            "its state applied {:?} up to seq {}, its header says {:?} and seq {}",
            applied.last_applied, applied.last_seq, meta.last_log_id, header.last_seq
        )));
    }
    Ok(applied)
}

/// Replays a snapshot of events into `tree`, each under the rules that accepted it.
fn replay(
    tree: &crate::store::tree::Tree,
    history: &History,
    realm: &Realm,
    meta: &SnapshotMeta,
    mut reader: CrcReader<BufReader<File>>,
    header: &Header,
) -> Result<Applied, StoreError> {
    let refuse = |detail: String| refusal(meta, detail);
    let mut state = TreeState::new(tree, history, realm, 0, 0);
    for seq in 1..=header.last_seq {
        let event = pb::Event::decode(reader.record()?.as_slice())
            .map_err(|e| StoreError::corrupt("snapshot event", e))?;
        if event.seq != seq {
            return Err(StoreError::corrupt(
                "snapshot event",
                format!("expected seq {seq}, found {}", event.seq),
            ));
        }
        // Each event replays under the rules that accepted it.
        let rules = Rules::from_stamp(event.rules).map_err(|e| refuse(e.to_string()))?;
        let outcome = state.apply_pb(&event, event.hub_time, rules)?;
        if outcome != (Outcome::Accepted { seq }) {
            return Err(refuse(format!(
                "event {} at seq {seq} replays as {outcome:?}",
                event.event_id
            )));
        }
        if seq % INSTALL_BATCH_EVENTS == 0 {
            extend_history(history, &state.take_accepted())?;
            tree.apply_batch(state.take_batch())?;
        }
    }
    reader.finish()?;
    extend_history(history, &state.take_accepted())?;
    let applied = Applied {
        last_applied: meta.last_log_id,
        last_membership: meta.last_membership.clone(),
        last_seq: header.last_seq,
        hub_time_ms: header.hub_time_ms,
        lamport: state.lamport(),
    };
    let mut batch = state.take_batch();
    batch.insert(keys::applied_key(), encode("applied state", &applied)?);
    tree.apply_batch(batch)?;
    Ok(applied)
}

/// After the switch: the installed copy becomes the current snapshot.
pub(super) fn promote_installed(dir: &Path) -> Result<(), StoreError> {
    let current = dir.join(CURRENT);
    fs::rename(dir.join(INSTALLING), &current).map_err(io_err(&current))?;
    sync_dir(dir)
}

/// Whether the current snapshot was written in data format 1 (to be rebuilt, not sent).
pub(super) fn current_is_legacy(dir: &Path) -> Result<bool, StoreError> {
    let path = dir.join(CURRENT);
    if !path.exists() {
        return Ok(false);
    }
    Ok(open_reader(&path)?.1.legacy)
}

/// Reads the current snapshot whole and checks every record and its checksum. `Ok` when
/// it is whole, or when there is none.
pub(super) async fn check_current(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(CURRENT);
    if !tokio::fs::try_exists(&path).await.map_err(io_err(&path))? {
        return Ok(());
    }
    tokio::task::spawn_blocking(move || verify(&path).map(|_| ()))
        .await
        .map_err(|e| StoreError::corrupt("snapshot", format!("checker task failed: {e}")))?
}

/// Copies the current snapshot, checked whole, to `installing.tmp` (synced) to be replayed
/// as if received; returns its meta, or `None` when there is no snapshot.
pub(super) fn stage_current_for_replay(dir: &Path) -> Result<Option<SnapshotMeta>, StoreError> {
    let current = dir.join(CURRENT);
    if !current.exists() {
        return Ok(None);
    }
    let header = verify(&current)?;
    let installing = dir.join(INSTALLING);
    copy_durably(File::open(&current).map_err(io_err(&current))?, &installing)?;
    sync_dir(dir)?;
    Ok(Some(header.meta))
}

/// Moves the current snapshot aside (`current.snap.damaged`, replacing an older one): it
/// is never sent nor read again, and stays for an operator to look at. Returns its path.
pub(super) fn set_aside_current(dir: &Path) -> Result<PathBuf, StoreError> {
    let (from, to) = (dir.join(CURRENT), dir.join(DAMAGED));
    fs::rename(&from, &to).map_err(io_err(&from))?;
    sync_dir(dir)?;
    Ok(to)
}

/// The last log id the current snapshot covers (None: no snapshot yet).
pub(super) fn current_last_log_id(dir: &Path) -> Result<Option<LogId>, StoreError> {
    let path = dir.join(CURRENT);
    if !path.exists() {
        return Ok(None);
    }
    Ok(open_reader(&path)?.1.meta.last_log_id)
}

/// Reads a whole snapshot file and checks its checksum; returns its header.
fn verify(path: &Path) -> Result<Header, StoreError> {
    let (mut reader, header) = open_reader(path)?;
    for _ in 0..header.records {
        reader.record()?;
    }
    reader.finish()?;
    Ok(header)
}

/// What `open` finds of an install a crash interrupted.
pub(super) enum Interrupted {
    /// Nothing, or a copy that never became whole: it is removed with the other temp files.
    Nothing,
    /// A whole, verified copy ahead of the live state machine: replay it (`meta` is its own).
    Replay(SnapshotMeta),
    /// A whole copy the live state machine already switched to, not yet promoted.
    Promote,
}

/// At open: classifies `installing.tmp` against the live state machine's last applied id
/// and the history's last seq (a snapshot of live state whose events the crash kept from
/// reaching the history was never more than received: the log was not purged for it).
pub(super) fn interrupted_install(
    dir: &Path,
    live_applied: Option<LogId>,
    history_last_seq: u64,
) -> Result<Interrupted, StoreError> {
    let installing = dir.join(INSTALLING);
    if !installing.exists() {
        return Ok(Interrupted::Nothing);
    }
    let Ok(header) = verify(&installing) else {
        return Ok(Interrupted::Nothing);
    };
    if header.needs_history_after(history_last_seq) {
        return Ok(Interrupted::Nothing);
    }
    let installed = header.meta.last_log_id;
    if installed.is_none() {
        return Ok(Interrupted::Nothing);
    }
    if installed > live_applied {
        return Ok(Interrupted::Replay(header.meta));
    }
    let newer = current_last_log_id(dir)
        .ok()
        .flatten()
        .is_none_or(|current| installed.is_some_and(|i| i > current));
    Ok(if newer {
        Interrupted::Promote
    } else {
        Interrupted::Nothing
    })
}

/// Builds a snapshot of the state machine as of the moment `get_snapshot_builder` ran.
pub struct SnapshotBuilder {
    disk: Disk,
    durable: DurableSnapshot,
    history: Arc<History>,
    header: LiveHeader,
    /// The tree's keys and values, copied when the builder was made (the state machine
    /// goes on applying meanwhile); or why they could not be read.
    live: Option<Result<crate::store::tree::Pairs, StoreError>>,
    dir: PathBuf,
    _generation: OwnedRwLockReadGuard<()>,
}

/// Every key and value of `tree` now: what a snapshot of it holds. Memory and time grow
/// with the live state (closed orders leave it, rules `V3`), not with the history.
pub(super) fn copy_live_state(
    tree: &crate::store::tree::Tree,
) -> Result<crate::store::tree::Pairs, StoreError> {
    tree.iter().collect()
}

impl SnapshotBuilder {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        disk: Disk,
        durable: DurableSnapshot,
        history: Arc<History>,
        realm: Realm,
        applied: Applied,
        live: Result<crate::store::tree::Pairs, StoreError>,
        dir: PathBuf,
        generation: OwnedRwLockReadGuard<()>,
    ) -> Self {
        let snapshot_id = match &applied.last_applied {
            Some(log_id) => format!("{}-{}-{}", log_id.leader_id, log_id.index, applied.last_seq),
            None => format!("empty-{}", applied.last_seq),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.last_membership,
            snapshot_id,
        };
        let header = LiveHeader {
            meta,
            realm,
            last_seq: applied.last_seq,
            hub_time_ms: applied.hub_time_ms,
            records: live.as_ref().map_or(0, |l| l.len() as u64),
        };
        Self {
            disk,
            durable,
            history,
            header,
            live: Some(live),
            dir,
            _generation: generation,
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let subject = ErrorSubject::Snapshot(Some(self.header.meta.signature()));
        let fail = |e: StoreError| storage_error(ErrorVerb::Write, subject.clone(), &e);
        // The state machine must be durable up to this snapshot before openraft purges the
        // log entries the snapshot covers.
        // The history first, so that the state machine is never durably ahead of it.
        let history = self.history.clone();
        tokio::task::spawn_blocking(move || history.sync())
            .await
            .map_err(|e| {
                fail(StoreError::corrupt(
                    "history",
                    format!("sync task failed: {e}"),
                ))
            })?
            .map_err(fail)?;
        self.disk.flush().await.map_err(fail)?;
        let started = std::time::Instant::now();
        let live = match self.live.take() {
            Some(live) => live.map_err(fail)?,
            None => return Err(fail(StoreError::corrupt("snapshot", "built twice"))),
        };
        let (dir, header) = (self.dir.clone(), self.header.clone());
        tokio::task::spawn_blocking(move || write_snapshot(&dir, &header, &live))
            .await
            .map_err(|e| {
                fail(StoreError::corrupt(
                    "snapshot",
                    format!("builder task failed: {e}"),
                ))
            })?
            .map_err(fail)?;
        // A snapshot built here covers the log up to its last log id, so the log may be
        // purged that far. A concurrent install is excluded by the generation guard.
        self.durable.set(self.header.meta.last_log_id);
        tracing::info!(
            snapshot = %self.header.meta.snapshot_id,
            last_seq = self.header.last_seq,
            records = self.header.records,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "built snapshot"
        );
        match open_current(&self.dir).await.map_err(fail)? {
            Some(snapshot) => Ok(snapshot),
            None => Err(fail(StoreError::corrupt(
                "snapshot",
                "the snapshot just written is gone",
            ))),
        }
    }
}
