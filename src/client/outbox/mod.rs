//! The device's durable store: one key-value file in the device's data dir (`kv`, our own
//! append-only log) holding the outbox (queued events, in the order the app appended
//! them), the dead-letter list, the committed read model with its cursor, and the Lamport
//! clock.
//!
//! Keys, in one store so that every change is one atomic `kv::Batch`:
//! - `q` + number (u64 BE) → a queued event (JSON) and, once a hub answered, its seq;
//! - `x` + number → a dead letter (JSON): the event, the hub's code, message and lock holder;
//! - `o` + order id, `t` + kind + ticket id, `s` + sku → committed aggregates (`codec`;
//!   bincode in stores without `m/format`, re-encoded at their first open);
//! - `e` + event id (16 bytes) → the seq of a committed event;
//! - `m/cursor`, `m/lamport`, `m/store-lamport`, `m/next`, `m/format` → u64 BE.
//!
//! Only queueing (and the app's own `resolve`, and a reset) is synced to disk before it
//! returns (the app was told "saved"); every other write may be lost in a crash and is then
//! redone: an unanswered event is sent again under the same eventId, committed events are
//! received again from the old cursor. The log keeps writes in order, so a crash loses only
//! a suffix of them.
//!
//! Versions before this one kept the same keys in a sled database (`device.sled`); the
//! first open moves them over (`sled_import`).

mod sled_import;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::RefusalCode;
use super::model::{Changes, Layer};
use crate::domain::Event;
use crate::domain::format1::{Order1, Ticket1};
use crate::domain::inventory::Stock;
use crate::domain::order::Order;
use crate::domain::ticket::{Ticket, TicketKind};
use crate::kv::{self, Batch, Kv, KvError};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("the device store at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A damaged file (`place` is a byte offset) or a value that does not decode
    /// (`place` is its key). Nothing is cut or skipped: the device refuses to open.
    #[error("the device store at {path} is damaged at {place}: {detail}")]
    Corrupt {
        path: String,
        place: String,
        detail: String,
    },
    #[error(
        "the device store at {path} is in use by another process (another till or client on \
         the same data dir)"
    )]
    Locked { path: String },
    #[error("the device store at {path}: {why}")]
    Broken { path: String, why: String },
    #[error("the device store of an older version at {path} cannot be read to move it: {detail}")]
    Import { path: String, detail: String },
}

impl From<KvError> for OutboxError {
    fn from(err: KvError) -> OutboxError {
        match err {
            KvError::Io { path, source } => OutboxError::Io { path, source },
            KvError::Corrupt {
                path,
                offset,
                detail,
            } => OutboxError::Corrupt {
                path,
                place: format!("byte {offset}"),
                detail,
            },
            KvError::Locked { path } => OutboxError::Locked { path },
            KvError::Broken { path, why } => OutboxError::Broken { path, why },
        }
    }
}

/// An event in the outbox: sent until a hub answers ACCEPTED or DUPLICATE (then `seq`
/// is set, and the entry is dropped once the committed model has passed that seq) or
/// REJECTED (then it becomes a dead letter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    pub number: u64,
    pub event: Event,
    /// The seq a hub reported for it; `None` while unanswered.
    pub seq: Option<u64>,
}

/// An event the hub refused for good, kept until the app resolves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub number: u64,
    pub event: Event,
    /// The hub's reject code (e.g. `STALE_VERSION`), or a gRPC code for a refused request;
    /// stored as its string.
    pub code: RefusalCode,
    pub message: String,
    /// `LOCKED` only: the device holding the order (absent in letters of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_holder: Option<String>,
}

const CURSOR: &[u8] = b"m/cursor";
const LAMPORT: &[u8] = b"m/lamport";
/// The committed layer's clock (the store's clock as of the cursor).
const STORE_LAMPORT: &[u8] = b"m/store-lamport";
const NEXT: &[u8] = b"m/next";
/// The encoding of the aggregates' values: `codec::FORMAT`. Absent in stores written
/// before it (bincode 1): `open` re-encodes them and writes it, in one atomic batch.
const FORMAT: &[u8] = b"m/format";

/// Keys and values to write.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + rest.len());
    key.push(prefix);
    key.extend_from_slice(rest);
    key
}

/// Removes every record of the committed model (orders, tickets, stock, eventIds) in
/// `batch`.
fn clear_committed(kv: &Kv, batch: &mut Batch) {
    for (k, _) in kv.iter() {
        if matches!(k.first(), Some(b'o' | b't' | b's' | b'e')) {
            batch.remove(k);
        }
    }
}

fn ticket_key(kind: TicketKind, id: &str) -> Vec<u8> {
    let kind = match kind {
        TicketKind::Kds => b'k',
        TicketKind::Bds => b'b',
    };
    let mut rest = vec![kind];
    rest.extend_from_slice(id.as_bytes());
    key(b't', &rest)
}

/// What the store held when it was opened.
pub struct Loaded {
    pub committed: Layer,
    pub queued: BTreeMap<u64, Queued>,
    pub dead: BTreeMap<u64, DeadLetter>,
    pub lamport: u64,
    pub next: u64,
}

pub struct Outbox {
    kv: Mutex<Kv>,
    path: PathBuf,
}

/// How long `open` waits for the store's lock: a till process that was just stopped (or
/// a handle of this process being dropped) releases it a moment later.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The store's file in the device's data dir, its lock, and where older versions kept a
/// sled database.
const FILE: &str = "device.kv";
const LOCK_FILE: &str = "device.kv.lock";
const SLED_DIR: &str = "device.sled";

/// Removes an imported sled dir. sled's background threads may still be closing its
/// files a moment after its last handle was dropped, so a dir that is not yet empty is
/// retried for `LOCK_WAIT`.
fn remove_sled(sled_dir: &Path) -> std::io::Result<()> {
    let started = std::time::Instant::now();
    loop {
        match std::fs::remove_dir_all(sled_dir) {
            Err(err)
                if err.kind() == std::io::ErrorKind::DirectoryNotEmpty
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl Outbox {
    /// Opens (or creates) the store in `dir`. A store of an older version (a sled
    /// database) is moved into the new file first; see `sled_import`.
    pub fn open(dir: &Path) -> Result<(Outbox, Loaded), OutboxError> {
        let path = dir.join(FILE);
        let io = |source| OutboxError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = kv::Lock::acquire(&dir.join(LOCK_FILE), LOCK_WAIT)?;
        let sled_dir = dir.join(SLED_DIR);
        if sled_dir.is_dir() {
            // The rename of the new file is the import's commit point: while the file is
            // absent the sled store is the truth; once it exists the sled store is a
            // leftover of an import interrupted before it was removed.
            if !path.exists() {
                sled_import::import(&sled_dir, &path)?;
            }
            remove_sled(&sled_dir).map_err(io)?;
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        let kv = Kv::open(&path, Some(lock))?;
        let outbox = Outbox {
            kv: Mutex::new(kv),
            path,
        };
        let (loaded, reencoded) = outbox.load()?;
        if let Some(reencoded) = reencoded {
            // One synced batch: the values and the marker change together or not at all.
            let mut batch = Batch::default();
            for (k, v) in reencoded {
                batch.insert(k, v);
            }
            batch.insert(FORMAT, u64::from(crate::codec::FORMAT).to_be_bytes());
            outbox.kv().apply(batch, true)?;
        }
        Ok((outbox, loaded))
    }

    fn kv(&self) -> std::sync::MutexGuard<'_, Kv> {
        // A panic while holding the lock cannot leave the map half-changed: it changes
        // only after the write succeeded, and a failed write marks the store broken.
        self.kv
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn corrupt(&self, key: &[u8], detail: impl ToString) -> OutboxError {
        OutboxError::Corrupt {
            path: self.path.display().to_string(),
            place: format!("key {}", String::from_utf8_lossy(key)),
            detail: detail.to_string(),
        }
    }

    fn u64_at(&self, kv: &Kv, key: &[u8]) -> Result<u64, OutboxError> {
        match kv.get(key) {
            None => Ok(0),
            Some(bytes) => {
                let raw: [u8; 8] = bytes
                    .try_into()
                    .map_err(|_| self.corrupt(key, "not a u64"))?;
                Ok(u64::from_be_bytes(raw))
            }
        }
    }

    fn number(&self, key: &[u8]) -> Result<u64, OutboxError> {
        let raw: [u8; 8] = key
            .get(1..)
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| self.corrupt(key, "not a numbered key"))?;
        Ok(u64::from_be_bytes(raw))
    }

    /// What the store holds; and, in a store of format 1 (or a new one), its aggregates
    /// re-encoded, for `open` to write back with the format.
    fn load(&self) -> Result<(Loaded, Option<Pairs>), OutboxError> {
        let kv = self.kv();
        // A device dir written before the store's clock was kept: the device's own clock
        // is at least the store's as of the cursor, which is all the rules ask of it (they
        // bound how far ahead of it an event may be).
        let store_lamport = match kv.get(STORE_LAMPORT) {
            Some(_) => self.u64_at(&kv, STORE_LAMPORT)?,
            None => self.u64_at(&kv, LAMPORT)?,
        };
        let mut committed = Layer {
            last_seq: self.u64_at(&kv, CURSOR)?,
            lamport: store_lamport,
            ..Layer::default()
        };
        let mut queued = BTreeMap::new();
        let mut dead = BTreeMap::new();
        let format = self.u64_at(&kv, FORMAT)?;
        let legacy = match format {
            0 => true,
            f if f == u64::from(crate::codec::FORMAT) => false,
            f => {
                return Err(self.corrupt(
                    FORMAT,
                    format!(
                        "format {f}; this build reads format {} (and moves bincode over)",
                        crate::codec::FORMAT
                    ),
                ));
            }
        };
        // In a store of format 1, every aggregate re-encoded, for `open` to write back.
        let mut reencoded = legacy.then(Vec::new);
        let mut aggregate = |k: &[u8], v: &[u8]| -> Result<Vec<u8>, OutboxError> {
            if !legacy {
                return Ok(v.to_vec());
            }
            let again = match k.first() {
                Some(b'o') => self.reencode::<Order1, Order>(k, v)?,
                Some(b't') => self.reencode::<Ticket1, Ticket>(k, v)?,
                _ => self.reencode::<Stock, Stock>(k, v)?,
            };
            if let Some(out) = reencoded.as_mut() {
                out.push((k.to_vec(), again.clone()));
            }
            Ok(again)
        };
        for (k, v) in kv.iter() {
            match k.first() {
                Some(b'q') => {
                    let entry: Queued =
                        serde_json::from_slice(v).map_err(|e| self.corrupt(k, e))?;
                    queued.insert(self.number(k)?, entry);
                }
                Some(b'x') => {
                    let entry: DeadLetter =
                        serde_json::from_slice(v).map_err(|e| self.corrupt(k, e))?;
                    dead.insert(self.number(k)?, entry);
                }
                Some(b'o') => {
                    let order: crate::domain::order::Order = self.decode(k, &aggregate(k, v)?)?;
                    committed.orders.insert(order.id.clone(), order);
                }
                Some(b't') => {
                    let ticket: crate::domain::ticket::Ticket =
                        self.decode(k, &aggregate(k, v)?)?;
                    committed
                        .tickets
                        .insert((ticket.kind, ticket.id.clone()), ticket);
                }
                Some(b's') => {
                    let stock: crate::domain::inventory::Stock =
                        self.decode(k, &aggregate(k, v)?)?;
                    committed.stock.insert(stock.sku.clone(), stock);
                }
                Some(b'e') => {
                    let id = k
                        .get(1..)
                        .and_then(|r| Uuid::from_slice(r).ok())
                        .ok_or_else(|| self.corrupt(k, "not an event id"))?;
                    let raw: [u8; 8] = v.try_into().map_err(|_| self.corrupt(k, "not a seq"))?;
                    committed.event_ids.insert(id, u64::from_be_bytes(raw));
                }
                _ => {}
            }
        }
        committed.index_closed();
        let loaded = Loaded {
            committed,
            queued,
            dead,
            lamport: self.u64_at(&kv, LAMPORT)?,
            next: self.u64_at(&kv, NEXT)?.max(1),
        };
        Ok((loaded, reencoded))
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        bytes: &[u8],
    ) -> Result<T, OutboxError> {
        crate::codec::from_slice(bytes).map_err(|e| self.corrupt(key, e))
    }

    /// A value of format 1 (bincode 1, laid out as `Old`) in this build's encoding.
    fn reencode<Old: serde::de::DeserializeOwned, T: serde::Serialize + From<Old>>(
        &self,
        key: &[u8],
        bytes: &[u8],
    ) -> Result<Vec<u8>, OutboxError> {
        let value: Old =
            bincode::deserialize(bytes).map_err(|e| self.corrupt(key, format!("format 1: {e}")))?;
        crate::codec::to_vec(&T::from(value)).map_err(|e| self.corrupt(key, e))
    }

    fn json<T: Serialize>(&self, key: &[u8], value: &T) -> Result<Vec<u8>, OutboxError> {
        serde_json::to_vec(value).map_err(|e| self.corrupt(key, e))
    }

    /// Queues events and records the clock and the next number, then waits until it is
    /// on disk: after this returns, a crash loses none of them.
    pub fn queue(&self, entries: &[Queued], lamport: u64, next: u64) -> Result<(), OutboxError> {
        let mut batch = Batch::default();
        for entry in entries {
            let k = key(b'q', &entry.number.to_be_bytes());
            batch.insert(k.clone(), self.json(&k, entry)?);
        }
        batch.insert(LAMPORT, lamport.to_be_bytes());
        batch.insert(NEXT, next.to_be_bytes());
        Ok(self.kv().apply(batch, true)?)
    }

    /// Records the hub's answers: seqs of answered events, and events moved to the
    /// dead-letter list, in one atomic write.
    pub fn answered(&self, acked: &[Queued], dead: &[DeadLetter]) -> Result<(), OutboxError> {
        let mut batch = Batch::default();
        for entry in acked {
            let k = key(b'q', &entry.number.to_be_bytes());
            batch.insert(k.clone(), self.json(&k, entry)?);
        }
        for letter in dead {
            batch.remove(key(b'q', &letter.number.to_be_bytes()));
            let k = key(b'x', &letter.number.to_be_bytes());
            batch.insert(k.clone(), self.json(&k, letter)?);
        }
        Ok(self.kv().apply(batch, false)?)
    }

    /// Records committed events: the aggregates they changed, their ids, the new cursor
    /// and clock, and the queued entries they settle, in one atomic write.
    pub fn committed(
        &self,
        changes: &Changes,
        cursor: u64,
        lamport: u64,
        settled: &[u64],
    ) -> Result<(), OutboxError> {
        let mut batch = Batch::default();
        self.put_records(
            &mut batch,
            &changes.orders,
            &changes.tickets,
            &changes.stock,
        )?;
        for id in &changes.expired_orders {
            batch.remove(key(b'o', id.as_bytes()));
        }
        for (kind, id) in &changes.expired_tickets {
            batch.remove(ticket_key(*kind, id));
        }
        for (id, seq) in &changes.event_ids {
            batch.insert(key(b'e', id.as_bytes()), seq.to_be_bytes());
        }
        for number in settled {
            batch.remove(key(b'q', &number.to_be_bytes()));
        }
        batch.insert(CURSOR, cursor.to_be_bytes());
        batch.insert(LAMPORT, lamport.to_be_bytes());
        if let Some(store_lamport) = changes.lamport {
            batch.insert(STORE_LAMPORT, store_lamport.to_be_bytes());
        }
        Ok(self.kv().apply(batch, false)?)
    }

    /// Replaces the committed model with `layer` (a hub's live state as of
    /// `layer.last_seq`, `Hub/Bootstrap`): its records, its seq as the cursor, its clock as
    /// the store's, `lamport` as the device's own, and the queued entries in `settled`
    /// dropped, in one synced write. The eventIds of events before it are not known.
    pub fn replace_committed(
        &self,
        layer: &Layer,
        lamport: u64,
        settled: &[u64],
    ) -> Result<(), OutboxError> {
        let mut kv = self.kv();
        let mut batch = Batch::default();
        clear_committed(&kv, &mut batch);
        self.put_records(
            &mut batch,
            layer.orders.values(),
            layer.tickets.values(),
            layer.stock.values(),
        )?;
        for number in settled {
            batch.remove(key(b'q', &number.to_be_bytes()));
        }
        batch.insert(CURSOR, layer.last_seq.to_be_bytes());
        batch.insert(LAMPORT, lamport.to_be_bytes());
        batch.insert(STORE_LAMPORT, layer.lamport.to_be_bytes());
        Ok(kv.apply(batch, true)?)
    }

    /// Writes orders, tickets and stock records into `batch`.
    fn put_records<'a>(
        &self,
        batch: &mut Batch,
        orders: impl IntoIterator<Item = &'a Order>,
        tickets: impl IntoIterator<Item = &'a Ticket>,
        stock: impl IntoIterator<Item = &'a Stock>,
    ) -> Result<(), OutboxError> {
        for order in orders {
            let k = key(b'o', order.id.as_bytes());
            let v = crate::codec::to_vec(order).map_err(|e| self.corrupt(&k, e))?;
            batch.insert(k, v);
        }
        for ticket in tickets {
            let k = ticket_key(ticket.kind, &ticket.id);
            let v = crate::codec::to_vec(ticket).map_err(|e| self.corrupt(&k, e))?;
            batch.insert(k, v);
        }
        for stock in stock {
            let k = key(b's', stock.sku.as_bytes());
            let v = crate::codec::to_vec(stock).map_err(|e| self.corrupt(&k, e))?;
            batch.insert(k, v);
        }
        Ok(())
    }

    /// Forgets the committed model (the device's copy diverged from the hub's log).
    pub fn reset_committed(&self) -> Result<(), OutboxError> {
        let mut kv = self.kv();
        let mut batch = Batch::default();
        clear_committed(&kv, &mut batch);
        batch.insert(CURSOR, 0u64.to_be_bytes());
        batch.insert(STORE_LAMPORT, 0u64.to_be_bytes());
        Ok(kv.apply(batch, true)?)
    }

    /// Drops a dead letter the app has dealt with.
    pub fn resolve(&self, number: u64) -> Result<bool, OutboxError> {
        let k = key(b'x', &number.to_be_bytes());
        let mut kv = self.kv();
        if kv.get(&k).is_none() {
            return Ok(false);
        }
        let mut batch = Batch::default();
        batch.remove(k);
        kv.apply(batch, true)?;
        Ok(true)
    }

    /// Waits until everything written so far is on disk.
    pub fn flush(&self) -> Result<(), OutboxError> {
        Ok(self.kv().sync()?)
    }

    /// The store file's length and the encoded size of its live entries.
    pub fn sizes(&self) -> (u64, u64) {
        self.kv().sizes()
    }
}

#[cfg(test)]
mod tests;
