//! The data dir's format, and the move of a format-1 data dir to this one at first open.
//!
//! `<data dir>/FORMAT` names the format of everything in the dir (`pos-hub data format 2`).
//! Format 1 is every data dir written before the file existed: the state machine in a sled
//! database, and bincode 1 in the Raft log's segments, in sled's values and in the
//! snapshot's header and values. Format 2 keeps the state machine in files of our own
//! (`tree`), encodes with `codec` (postcard), and gives each WAL segment and snapshot a
//! magic that names its format. A dir whose `FORMAT` names a format this build does not know is refused by
//! name: it was written by a newer release.
//!
//! The move, in an order where a SIGKILL at any point loses nothing and the next open
//! finishes it:
//! 1. each WAL segment without a magic is rewritten into a new file, synced, and renamed
//!    over the old one (`wal::rewrite_headless`): each segment is whole in one format;
//! 2. sled's trees are written as our own state files (`tree`), every value re-encoded,
//!    each file whole and renamed into place; sled is only read, so this is done again
//!    from the same data after a crash;
//! 3. the store opens; a snapshot of format 1 is rebuilt from the state machine (it is
//!    never sent; `StateMachine::repair_current_snapshot`);
//! 4. `FORMAT` is written (temporary file, synced, renamed, dir synced): the commit point;
//! 5. sled's directory is removed (again at the next open, if a crash cut that short).
//!
//! Only this module reads bincode and sled, and only to move format 1 over.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::disk::{fsync_path, io};
use super::keys;
use super::state_machine::{Applied, KnownDevice};
use super::{StoreError, encode};
use crate::codec::FORMAT;
use crate::domain::Realm;
use crate::domain::archive::Archive;
use crate::domain::device::Revocation;
use crate::domain::format1::{Order1, Ticket1};
use crate::domain::inventory::Stock;
use crate::domain::order::Order;
use crate::domain::ticket::Ticket;
use crate::raft_types::{Entry, LogId};

const FILE: &str = "FORMAT";
const PREFIX: &str = "pos-hub data format ";
/// What a data dir of this store holds; any of them makes a dir without `FORMAT` one of
/// format 1.
const STORE_ENTRIES: &[&str] = &["db", "log", "history", "snapshots", "raft.vote", "log.mark"];
// (`state/` is format 2's own: a dir holding it has `FORMAT`.)

/// Keys and values to write.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// What `check` found in a data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// No store yet: `FORMAT` has been written, before anything else.
    Fresh,
    /// Format 2.
    Current,
    /// Format 1: `migrate_files`, `migrate_db`, then `commit` once the store is open.
    Legacy,
}

/// Reads the data dir's format (creating `FORMAT` in a dir with no store yet).
pub(super) fn check(data_dir: &Path) -> Result<Found, StoreError> {
    let path = data_dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found = text.trim_end();
            match found.strip_prefix(PREFIX).map(str::parse::<u32>) {
                Some(Ok(FORMAT)) => Ok(Found::Current),
                _ => Err(StoreError::FormatUnknown {
                    path,
                    found: found.chars().take(64).collect(),
                }),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if STORE_ENTRIES
                .iter()
                .any(|name| data_dir.join(name).exists())
            {
                Ok(Found::Legacy)
            } else {
                commit(data_dir)?;
                Ok(Found::Fresh)
            }
        }
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

/// Writes `FORMAT` durably: the last step of a move, the first of a new store.
pub(super) fn commit(data_dir: &Path) -> Result<(), StoreError> {
    let path = data_dir.join(FILE);
    let tmp = data_dir.join("FORMAT.tmp");
    std::fs::write(&tmp, format!("{PREFIX}{FORMAT}\n")).map_err(io(&tmp))?;
    fsync_path(&tmp)?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    fsync_path(data_dir)
}

/// Step 1: the WAL's segments of format 1 rewritten.
pub(super) fn migrate_files(data_dir: &Path) -> Result<(), StoreError> {
    let rewritten = super::wal::rewrite_headless(&data_dir.join("log"), &|payload| {
        encode("log entry", &legacy::<Entry>("log entry", payload)?)
    })?;
    if rewritten > 0 {
        tracing::info!(
            segments = rewritten,
            "rewrote raft log segments of data format 1 in format {FORMAT}"
        );
    }
    Ok(())
}

/// Step 2: sled's trees (the live state machine's, its metadata's, and a Raft log kept
/// in sled by releases before the WAL) written as trees of our own in `state_dir`, every
/// value re-encoded. Each file is written whole and renamed into place.
///
/// sled is opened on a copy of its directory (`db.read`), never on `db` itself: sled
/// writes when it opens (its recovery snapshot), and a SIGKILL during that left it unable
/// to read its own files ("Read corrupted data", `tests/format_migration.rs`). So `db`
/// stays as the release before left it, and a move interrupted anywhere is done again
/// from the same data.
pub(super) fn migrate_db(data_dir: &Path, state_dir: &Path) -> Result<(), StoreError> {
    let db_path = data_dir.join("db");
    if !db_path.exists() {
        return Ok(());
    }
    let scratch = data_dir.join(SLED_COPY);
    remove_dir_if_present(&scratch)?;
    copy_dir(&db_path, &scratch)?;
    let db = open_sled(&scratch)?;
    let raft_meta = db.open_tree(keys::TREE_RAFT_META)?;
    let sm_meta = db.open_tree(keys::TREE_SM_META)?;
    let generation = match sm_meta.get(keys::KEY_GENERATION)? {
        Some(bytes) => super::state_machine::seq_from_bytes(&bytes)?,
        None => 0,
    };
    let live_name = keys::state_machine_tree(generation);
    let live = db.open_tree(&live_name)?;
    let raft_log = db.open_tree(keys::TREE_LOG)?;
    let trees = [
        (
            keys::TREE_LOG.to_owned(),
            reencode_tree(&raft_log, |_, v| {
                encode("log entry", &legacy::<Entry>("log entry", v)?)
            })?,
        ),
        (
            keys::TREE_RAFT_META.to_owned(),
            reencode_tree(&raft_meta, reencode_raft_meta)?,
        ),
        (
            keys::TREE_SM_META.to_owned(),
            reencode_tree(&sm_meta, reencode_sm_meta)?,
        ),
        (live_name, reencode_tree(&live, reencode_value)?),
    ];
    drop(db);
    let mut values = 0;
    for (name, pairs) in &trees {
        super::tree::write_tree(state_dir, name, pairs)?;
        values += pairs.len();
    }
    remove_dir_if_present(&scratch)?;
    tracing::info!(
        values,
        "moved the sled database of data format 1 into the state files"
    );
    Ok(())
}

/// After the move is committed: sled's directory goes (at every open, so a removal that a
/// crash cut short is finished).
pub(super) fn remove_sled(data_dir: &Path) -> Result<(), StoreError> {
    if !data_dir.join(FILE).exists() {
        return Ok(());
    }
    remove_dir_if_present(&data_dir.join(SLED_COPY))?;
    let db_path = data_dir.join("db");
    if remove_dir_if_present(&db_path)? {
        tracing::info!(db = %db_path.display(), "removed the sled database the move to format 2 left");
    }
    Ok(())
}

/// The copy of sled's directory the move reads (see `migrate_db`).
const SLED_COPY: &str = "db.read";

/// Removes `dir` and all in it, durably; whether it was there.
fn remove_dir_if_present(dir: &Path) -> Result<bool, StoreError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {
            if let Some(parent) = dir.parent() {
                fsync_path(parent)?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io(dir, e)),
    }
}

/// Copies a directory tree (sled's: files and a `blobs` dir).
fn copy_dir(from: &Path, to: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(io(from))?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(io(&target))?;
        }
    }
    Ok(())
}

/// How long the move waits for sled's lock (released a moment after another process
/// that held it exits).
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens the sled database of a format-1 data dir, waiting a moment for its lock. sled
/// 0.34 panics on some damaged files: that is an error naming the dir, not a crash.
fn open_sled(db_path: &Path) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new().path(db_path);
    let deadline = std::time::Instant::now() + SLED_LOCK_WAIT;
    loop {
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
        match opened {
            // sled words its lock failure as an `Other` error with this text.
            Ok(Err(sled::Error::Io(e))) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::InUse(db_path.to_owned()));
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(db)) => return Ok(db),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                return Err(StoreError::corrupt(
                    "database",
                    format!(
                        "{} is damaged (sled: {why}); restore the data dir from a backup, or \
                         wipe it and add the node to its group again to rebuild it from its \
                         peers",
                        db_path.display()
                    ),
                ));
            }
        }
    }
}

/// Every key of `tree` with its value re-encoded by `reencode`.
fn reencode_tree(
    tree: &sled::Tree,
    reencode: impl Fn(&[u8], &[u8]) -> Result<Vec<u8>, StoreError>,
) -> Result<Pairs, StoreError> {
    let mut out = Vec::with_capacity(tree.len());
    for item in tree.iter() {
        let (key, value) = item?;
        let value = reencode(&key, &value)?;
        out.push((key.to_vec(), value));
    }
    Ok(out)
}

fn reencode_raft_meta(key: &[u8], value: &[u8]) -> Result<Vec<u8>, StoreError> {
    match key {
        keys::KEY_VOTE => encode("vote", &legacy::<crate::raft_types::Vote>("vote", value)?),
        keys::KEY_COMMITTED | keys::KEY_LAST_PURGED => {
            encode("raft metadata", &legacy::<LogId>("raft metadata", value)?)
        }
        _ => Err(unknown_key("raft.meta", key)),
    }
}

fn reencode_sm_meta(key: &[u8], value: &[u8]) -> Result<Vec<u8>, StoreError> {
    match key {
        keys::KEY_REALM => encode("realm", &legacy::<Realm>("realm", value)?),
        // Big-endian bytes, not bincode.
        keys::KEY_GENERATION => Ok(value.to_vec()),
        _ => Err(unknown_key("sm.meta", key)),
    }
}

/// One value of a state machine tree (or of a format-1 snapshot of live state), from
/// format 1 to this one, by what its key's prefix says it holds.
pub(super) fn reencode_value(key: &[u8], value: &[u8]) -> Result<Vec<u8>, StoreError> {
    fn again<T: serde::Serialize + DeserializeOwned>(
        what: &'static str,
        value: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        encode(what, &legacy::<T>(what, value)?)
    }
    if key == keys::KEY_ARCHIVE {
        return again::<Archive>("archive mark", value);
    }
    if key == keys::KEY_CLOSED_INDEXED {
        return Ok(value.to_vec());
    }
    match key.first().copied() {
        Some(keys::PREFIX_APPLIED) => again::<Applied>("applied state", value),
        Some(keys::PREFIX_ORDER) => {
            encode("order", &Order::from(legacy::<Order1>("order", value)?))
        }
        Some(keys::PREFIX_TICKET) => {
            encode("ticket", &Ticket::from(legacy::<Ticket1>("ticket", value)?))
        }
        Some(keys::PREFIX_STOCK) => again::<Stock>("stock", value),
        Some(keys::PREFIX_DEVICE) => again::<KnownDevice>("device", value),
        Some(keys::PREFIX_REVOKED) => again::<Revocation>("revocation", value),
        Some(keys::PREFIX_KEPT_ID) => again::<u64>("kept eventId", value),
        // Protobuf events and index entries the open moves out; the closed index's values
        // are empty.
        Some(keys::PREFIX_EVENT | keys::PREFIX_EVENT_ID | keys::PREFIX_CLOSED) => {
            Ok(value.to_vec())
        }
        _ => Err(unknown_key("state machine", key)),
    }
}

fn unknown_key(tree: &str, key: &[u8]) -> StoreError {
    StoreError::corrupt(
        "database",
        format!(
            "moving data format 1 over: the {tree} tree holds key {:?}, which this build \
             does not know; nothing was changed",
            String::from_utf8_lossy(key)
        ),
    )
}

/// Decodes a value of format 1 (bincode 1).
pub(super) fn legacy<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    bincode::deserialize(bytes)
        .map_err(|e| StoreError::corrupt(what, format!("data format 1: {e}")))
}
