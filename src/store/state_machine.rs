//! The state machine: the store's event log (by seq), the eventId index and the read
//! models, kept in one sled tree per generation and changed only by `apply`.
//!
//! Each `apply` call (one or more committed Raft entries) runs the domain rules over a
//! `SledState` — sled plus an in-memory overlay of this call's writes — and then writes
//! the overlay and the new last-applied id in one atomic `sled::Batch`. A crash therefore
//! leaves the state machine at some whole entry boundary; openraft re-applies the rest
//! from the durable log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock as StdRwLock};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogId};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{RwLock, broadcast};
use uuid::Uuid;

use super::disk::{Disk, DurableSnapshot};
use super::keys::{self, KEY_GENERATION, KEY_REALM, TREE_SM_META};
use super::snapshot::{self, SnapshotBuilder};
use super::{StoreError, decode, encode, storage_error};
use crate::domain::inventory::Stock;
use crate::domain::order::Order;
use crate::domain::ticket::{Ticket, TicketKind};
use crate::domain::{self, Event, Outcome, Realm, RejectCode, State};
use crate::proto::{convert, pb};
use crate::raft_types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership};
use crate::raft_types::{Response, TypeConfig};

/// What the state machine has applied, written with every apply in the same batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    /// Seq of the last accepted event (0: none yet).
    pub last_seq: u64,
    /// The latest hub time applied. Entries' hub times are clamped to never go below it,
    /// so lock expiry never runs backwards when a new leader's clock is behind.
    pub hub_time_ms: u64,
    /// The highest Lamport clock among accepted events; devices bump theirs past it.
    pub lamport: u64,
}

/// A device that has an accepted event in the log. With tokens checked, an event is
/// accepted only as the token's own device, so this proves the device was once seen with a
/// valid token; derived from the events, every node (and every snapshot replay) agrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownDevice {
    pub first_seq: u64,
    pub last_seq: u64,
    /// Hub time of its last accepted event, ms since the Unix epoch.
    pub last_hub_time_ms: u64,
}

/// What the state machine publishes after each apply: the events it just accepted, in seq
/// order. An empty batch means "the log moved in a way you could not follow" (a snapshot
/// was installed): subscribers then read from storage.
pub type EventBatch = Arc<Vec<pb::Event>>;

/// Default number of recent batches the feed keeps for subscribers; one behind by more
/// reads storage instead. Bounded because the feed holds them in memory.
pub const EVENT_FEED_BATCHES: usize = 256;

/// The domain's `State` over one state machine tree, with this apply's writes buffered in
/// `pending` (read back before the tree) until `into_batch`.
pub(super) struct SledState<'a> {
    tree: &'a sled::Tree,
    realm: &'a Realm,
    last_seq: u64,
    lamport: u64,
    pending: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The events accepted since the last `take_accepted`, for the feed.
    accepted: Vec<pb::Event>,
}

impl<'a> SledState<'a> {
    pub(super) fn new(tree: &'a sled::Tree, realm: &'a Realm, last_seq: u64, lamport: u64) -> Self {
        Self {
            tree,
            realm,
            last_seq,
            lamport,
            pending: BTreeMap::new(),
            accepted: Vec::new(),
        }
    }

    pub(super) fn lamport(&self) -> u64 {
        self.lamport
    }

    /// The events accepted since the last call, in seq order.
    pub(super) fn take_accepted(&mut self) -> Vec<pb::Event> {
        std::mem::take(&mut self.accepted)
    }

    fn get<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        if let Some(bytes) = self.pending.get(key) {
            return Ok(Some(decode(what, bytes)?));
        }
        match self.tree.get(key)? {
            Some(bytes) => Ok(Some(decode(what, &bytes)?)),
            None => Ok(None),
        }
    }

    fn put<T: Serialize>(
        &mut self,
        what: &'static str,
        key: Vec<u8>,
        value: &T,
    ) -> Result<(), StoreError> {
        self.pending.insert(key, encode(what, value)?);
        Ok(())
    }

    pub(super) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Moves the buffered writes into a batch (the caller adds `Applied` and applies it).
    pub(super) fn take_batch(&mut self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (key, value) in std::mem::take(&mut self.pending) {
            batch.insert(key, value);
        }
        batch
    }

    /// Decodes a stored event and runs the domain rules on it. An event whose payload cannot
    /// become JSON (NaN, infinity) is rejected here, identically on every node.
    pub(super) fn apply_pb(
        &mut self,
        event: &pb::Event,
        hub_time_ms: u64,
    ) -> Result<Outcome, StoreError> {
        match convert::event_from_pb(event) {
            Ok(event) => domain::apply(self, &event, hub_time_ms),
            Err(err) => Ok(Outcome::rejected(
                RejectCode::MalformedPayload,
                err.to_string(),
            )),
        }
    }
}

fn ticket_key(kind: TicketKind, ticket_id: &str) -> Vec<u8> {
    let kind = match kind {
        TicketKind::Kds => b'k',
        TicketKind::Bds => b'b',
    };
    let mut id = Vec::with_capacity(1 + ticket_id.len());
    id.push(kind);
    id.extend_from_slice(ticket_id.as_bytes());
    keys::prefixed(keys::PREFIX_TICKET, &id)
}

impl State for SledState<'_> {
    type Error = StoreError;

    fn realm(&self) -> &Realm {
        self.realm
    }

    fn last_seq(&self) -> u64 {
        self.last_seq
    }

    fn seq_of(&self, event_id: &Uuid) -> Result<Option<u64>, StoreError> {
        let key = keys::event_id_key(event_id);
        if let Some(bytes) = self.pending.get(key.as_slice()) {
            return seq_from_bytes(bytes).map(Some);
        }
        match self.tree.get(key)? {
            Some(bytes) => seq_from_bytes(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn order(&self, order_id: &str) -> Result<Option<Order>, StoreError> {
        self.get(
            "order",
            &keys::prefixed(keys::PREFIX_ORDER, order_id.as_bytes()),
        )
    }

    fn ticket(&self, kind: TicketKind, ticket_id: &str) -> Result<Option<Ticket>, StoreError> {
        self.get("ticket", &ticket_key(kind, ticket_id))
    }

    fn stock(&self, sku: &str) -> Result<Option<Stock>, StoreError> {
        self.get("stock", &keys::prefixed(keys::PREFIX_STOCK, sku.as_bytes()))
    }

    fn put_order(&mut self, order: Order) -> Result<(), StoreError> {
        self.put(
            "order",
            keys::prefixed(keys::PREFIX_ORDER, order.id.as_bytes()),
            &order,
        )
    }

    fn put_ticket(&mut self, ticket: Ticket) -> Result<(), StoreError> {
        self.put("ticket", ticket_key(ticket.kind, &ticket.id), &ticket)
    }

    fn put_stock(&mut self, stock: Stock) -> Result<(), StoreError> {
        self.put(
            "stock",
            keys::prefixed(keys::PREFIX_STOCK, stock.sku.as_bytes()),
            &stock,
        )
    }

    fn put_event(&mut self, event_id: Uuid, event: Event) -> Result<(), StoreError> {
        let seq = self.last_seq + 1;
        // Pair assertion with the domain: it stamps exactly the next seq.
        if event.seq != Some(seq) {
            return Err(StoreError::corrupt(
                "apply",
                format!("expected event seq {seq}, got {:?}", event.seq),
            ));
        }
        let stored = convert::event_to_pb(&event).map_err(|e| {
            StoreError::corrupt("event", format!("seq {seq} does not convert back: {e}"))
        })?;
        self.pending
            .insert(keys::event_key(seq).to_vec(), stored.encode_to_vec());
        self.pending.insert(
            keys::event_id_key(&event_id).to_vec(),
            seq.to_be_bytes().to_vec(),
        );
        self.last_seq = seq;
        self.lamport = self.lamport.max(event.clock.lamport);
        let device_key = keys::prefixed(keys::PREFIX_DEVICE, event.actor.device_id.as_bytes());
        let first_seq = self
            .get::<KnownDevice>("device", &device_key)?
            .map_or(seq, |d| d.first_seq);
        let hub_time = event.hub_time.unwrap_or(0);
        let known = KnownDevice {
            first_seq,
            last_seq: seq,
            last_hub_time_ms: hub_time,
        };
        self.put("device", device_key, &known)?;
        self.accepted.push(stored);
        Ok(())
    }
}

fn seq_from_bytes(bytes: &[u8]) -> Result<u64, StoreError> {
    let raw: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::corrupt("eventId index", format!("{bytes:?}")))?;
    Ok(u64::from_be_bytes(raw))
}

pub(super) fn read_applied(tree: &sled::Tree) -> Result<Applied, StoreError> {
    match tree.get(keys::applied_key())? {
        Some(bytes) => decode("applied state", &bytes),
        None => Ok(Applied::default()),
    }
}

/// A read-only view of the live state machine for queries (`log dump`, and later the client
/// API). It follows snapshot installs: it always reads the current generation.
#[derive(Clone)]
pub struct StateReader {
    tree: Arc<StdRwLock<sled::Tree>>,
    realm: Realm,
    feed: broadcast::Sender<EventBatch>,
}

impl StateReader {
    fn tree(&self) -> sled::Tree {
        // A poisoned lock only means a writer panicked after swapping in a valid tree handle.
        match self.tree.read() {
            Ok(tree) => tree.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn realm(&self) -> &Realm {
        &self.realm
    }

    /// Every batch of events the state machine accepts from now on (see `EventBatch`).
    pub fn subscribe(&self) -> broadcast::Receiver<EventBatch> {
        self.feed.subscribe()
    }

    /// Every ticket, by kind then id.
    pub fn tickets(&self) -> Result<Vec<Ticket>, StoreError> {
        self.scan(keys::PREFIX_TICKET, "ticket")
    }

    pub fn applied(&self) -> Result<Applied, StoreError> {
        read_applied(&self.tree())
    }

    /// Up to `limit` committed events with seq > `after_seq`, in seq order.
    pub fn events_after(&self, after_seq: u64, limit: usize) -> Result<Vec<pb::Event>, StoreError> {
        let tree = self.tree();
        let start = keys::event_key(after_seq.saturating_add(1));
        let end = keys::event_key(u64::MAX);
        let mut events = Vec::new();
        for item in tree.range(start..=end).take(limit) {
            let (key, bytes) = item?;
            let event =
                pb::Event::decode(bytes.as_ref()).map_err(|e| StoreError::corrupt("event", e))?;
            if keys::event_seq(&key) != Some(event.seq) {
                return Err(StoreError::corrupt(
                    "event",
                    format!("key {key:?} holds seq {}", event.seq),
                ));
            }
            events.push(event);
        }
        Ok(events)
    }

    pub fn order(&self, order_id: &str) -> Result<Option<Order>, StoreError> {
        let tree = self.tree();
        SledState::new(&tree, &self.realm, 0, 0).order(order_id)
    }

    pub fn ticket(&self, kind: TicketKind, ticket_id: &str) -> Result<Option<Ticket>, StoreError> {
        let tree = self.tree();
        SledState::new(&tree, &self.realm, 0, 0).ticket(kind, ticket_id)
    }

    pub fn stock(&self, sku: &str) -> Result<Option<Stock>, StoreError> {
        let tree = self.tree();
        SledState::new(&tree, &self.realm, 0, 0).stock(sku)
    }

    /// The device, if it has an accepted event in the log.
    pub fn device(&self, device_id: &str) -> Result<Option<KnownDevice>, StoreError> {
        let tree = self.tree();
        let state = SledState::new(&tree, &self.realm, 0, 0);
        state.get(
            "device",
            &keys::prefixed(keys::PREFIX_DEVICE, device_id.as_bytes()),
        )
    }

    /// Every order, by id.
    pub fn orders(&self) -> Result<Vec<Order>, StoreError> {
        self.scan(keys::PREFIX_ORDER, "order")
    }

    /// Every SKU's stock, by SKU.
    pub fn stocks(&self) -> Result<Vec<Stock>, StoreError> {
        self.scan(keys::PREFIX_STOCK, "stock")
    }

    fn scan<T: serde::de::DeserializeOwned>(
        &self,
        prefix: u8,
        what: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree().scan_prefix([prefix]) {
            let (_, bytes) = item?;
            out.push(decode(what, &bytes)?);
        }
        Ok(out)
    }
}

/// openraft's state machine over sled. Snapshots are files in `snapshot_dir`.
pub struct StateMachine {
    disk: Disk,
    /// The snapshot on disk, as the log sees it (see `disk::DurableSnapshot`).
    snapshot: DurableSnapshot,
    meta: sled::Tree,
    generation: u64,
    tree: sled::Tree,
    realm: Realm,
    applied: Applied,
    snapshot_dir: PathBuf,
    /// Shared with `StateReader`s so that queries follow snapshot installs.
    shared_tree: Arc<StdRwLock<sled::Tree>>,
    /// Held (read) by a snapshot builder for as long as it streams the tree, and taken
    /// (write) by an install before it swaps generations, so a build never reads a tree
    /// that an install is dropping.
    generation_guard: Arc<RwLock<()>>,
    /// Files handed out by `begin_receiving_snapshot`, removed once an install is done.
    receiving: Vec<PathBuf>,
    feed: broadcast::Sender<EventBatch>,
}

impl StateMachine {
    pub(super) async fn open(
        disk: Disk,
        snapshot: DurableSnapshot,
        snapshot_dir: PathBuf,
        realm: &Realm,
        feed_batches: usize,
    ) -> Result<Self, StoreError> {
        let db = disk.db().clone();
        let meta = db.open_tree(TREE_SM_META)?;
        match meta.get(KEY_REALM)? {
            Some(bytes) => {
                let stored: Realm = decode("realm", &bytes)?;
                if &stored != realm {
                    return Err(StoreError::RealmMismatch {
                        stored,
                        requested: realm.clone(),
                    });
                }
            }
            None => {
                meta.insert(KEY_REALM, encode("realm", realm)?)?;
            }
        }
        let generation = match meta.get(KEY_GENERATION)? {
            Some(bytes) => seq_from_bytes(&bytes)?,
            None => 0,
        };
        let live = keys::state_machine_tree(generation);
        // Generations other than the live one are left-overs of an install that crashed
        // before its switch (or of the old tree after it): drop them.
        for name in db.tree_names() {
            let name = String::from_utf8_lossy(&name).into_owned();
            if name.starts_with("sm.") && name != TREE_SM_META && name != live {
                tracing::info!(tree = %name, "dropping a state machine generation that is not live");
                db.drop_tree(name.as_bytes())?;
            }
        }
        let tree = db.open_tree(live)?;
        let applied = read_applied(&tree)?;
        let mut sm = Self {
            disk,
            snapshot,
            meta,
            generation,
            shared_tree: Arc::new(StdRwLock::new(tree.clone())),
            tree,
            realm: realm.clone(),
            applied,
            snapshot_dir,
            generation_guard: Arc::new(RwLock::new(())),
            receiving: Vec::new(),
            feed: broadcast::channel(feed_batches.max(1)).0,
        };
        // An install a crash interrupted is finished now, so that the snapshot on disk
        // covers the live state and the log's purge point.
        sm.finish_interrupted_install().await?;
        snapshot::remove_temp_files(&sm.snapshot_dir)?;
        sm.snapshot
            .set(snapshot::current_last_log_id(&sm.snapshot_dir)?);
        Ok(sm)
    }

    /// A reader for queries that stays valid across snapshot installs.
    pub fn reader(&self) -> StateReader {
        StateReader {
            tree: self.shared_tree.clone(),
            realm: self.realm.clone(),
            feed: self.feed.clone(),
        }
    }

    fn apply_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<Vec<Response>, StoreError> {
        let mut applied = self.applied.clone();
        let mut state = SledState::new(&self.tree, &self.realm, applied.last_seq, applied.lamport);
        let mut replies = Vec::new();
        for entry in entries {
            let log_id = *entry.get_log_id();
            applied.last_applied = Some(log_id);
            match entry.payload {
                EntryPayload::Blank => replies.push(Response::default()),
                EntryPayload::Membership(membership) => {
                    applied.last_membership = StoredMembership::new(Some(log_id), membership);
                    replies.push(Response::default());
                }
                EntryPayload::Normal(command) => {
                    let hub_time_ms = command.hub_time_ms.max(applied.hub_time_ms);
                    applied.hub_time_ms = hub_time_ms;
                    let mut outcomes = Vec::with_capacity(command.events.len());
                    for event in &command.events {
                        outcomes.push(state.apply_pb(event, hub_time_ms)?);
                    }
                    replies.push(Response { outcomes });
                }
            }
        }
        applied.last_seq = state.last_seq();
        applied.lamport = state.lamport();
        let accepted = state.take_accepted();
        let mut batch = state.take_batch();
        batch.insert(&keys::applied_key(), encode("applied state", &applied)?);
        // One atomic batch: events, eventId index, read models and last-applied together.
        // Not flushed here: the Raft log is durable, and a crash rolls this back to a whole
        // earlier entry that openraft re-applies.
        self.tree.apply_batch(batch)?;
        self.applied = applied;
        if !accepted.is_empty() {
            // No receiver is fine: nobody is subscribed.
            let _ = self.feed.send(Arc::new(accepted));
        }
        Ok(replies)
    }
}

impl StateMachine {
    async fn install(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: tokio::fs::File,
    ) -> Result<(), StorageError> {
        let snapshot_error = |e: StoreError| {
            storage_error(
                ErrorVerb::Write,
                ErrorSubject::Snapshot(Some(meta.signature())),
                &e,
            )
        };
        let _guard = self.generation_guard.clone().write_owned().await;
        let started = std::time::Instant::now();
        snapshot::receive(
            self.realm.clone(),
            self.snapshot_dir.clone(),
            meta.clone(),
            snapshot,
        )
        .await
        .map_err(snapshot_error)?;
        // The snapshot is on disk, whole: should this node crash from here on, `open`
        // finishes the install from that file. So the log may now be purged up to it, and
        // openraft's core, waiting in that purge, goes on while the events replay.
        self.snapshot.received(meta.last_log_id);
        let received = started.elapsed();
        self.replay_received(meta.clone())
            .await
            .map_err(snapshot_error)?;
        for path in self.receiving.drain(..) {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!(
            snapshot = %meta.snapshot_id,
            last_seq = self.applied.last_seq,
            receive_ms = received.as_millis() as u64,
            replay_ms = (started.elapsed() - received).as_millis() as u64,
            "installed snapshot"
        );
        Ok(())
    }

    /// Replays the received `installing.tmp` into a new generation, switches to it and
    /// makes the file the current snapshot.
    async fn replay_received(&mut self, meta: SnapshotMeta) -> Result<(), StoreError> {
        let generation = self.generation + 1;
        let installed = snapshot::replay_installing(
            self.disk.clone(),
            self.realm.clone(),
            self.snapshot_dir.clone(),
            generation,
            meta.clone(),
        )
        .await?;
        self.meta
            .insert(KEY_GENERATION, &generation.to_be_bytes())?;
        // The switch must be durable before the old generation goes away. A crash before
        // the file below is promoted is finished by `open` (`Interrupted::Promote`).
        self.disk.flush().await?;
        let old = keys::state_machine_tree(self.generation);
        self.generation = generation;
        self.tree = installed.tree.clone();
        self.applied = installed.applied;
        match self.shared_tree.write() {
            Ok(mut shared) => *shared = installed.tree,
            Err(poisoned) => *poisoned.into_inner() = installed.tree,
        }
        snapshot::promote_installed(&self.snapshot_dir)?;
        self.disk.db().drop_tree(old.as_bytes())?;
        // Subscribers cannot follow a jump: an empty batch tells them to read storage.
        let _ = self.feed.send(Arc::new(Vec::new()));
        Ok(())
    }

    /// At open: finishes an install a crash interrupted (see `snapshot::Interrupted`).
    async fn finish_interrupted_install(&mut self) -> Result<(), StoreError> {
        match snapshot::interrupted_install(&self.snapshot_dir, self.applied.last_applied)? {
            snapshot::Interrupted::Nothing => {}
            snapshot::Interrupted::Promote => {
                tracing::info!(
                    "promoting a snapshot whose install was interrupted after its switch"
                );
                snapshot::promote_installed(&self.snapshot_dir)?;
            }
            snapshot::Interrupted::Replay(meta) => {
                tracing::info!(snapshot = %meta.snapshot_id, "finishing a snapshot install a crash interrupted");
                self.replay_received(meta).await?;
            }
        }
        Ok(())
    }
}

fn sm_error(verb: ErrorVerb, err: &StoreError) -> StorageError {
    storage_error(verb, ErrorSubject::StateMachine, err)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((
            self.applied.last_applied,
            self.applied.last_membership.clone(),
        ))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.apply_entries(entries)
            .map_err(|e| sm_error(ErrorVerb::Write, &e))
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let guard = self.generation_guard.clone().read_owned().await;
        SnapshotBuilder::new(
            self.disk.clone(),
            self.snapshot.clone(),
            self.tree.clone(),
            self.realm.clone(),
            self.applied.clone(),
            self.snapshot_dir.clone(),
            guard,
        )
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let (path, file) = snapshot::create_receiving_file(&self.snapshot_dir)
            .await
            .map_err(|e| sm_error(ErrorVerb::Write, &e))?;
        self.snapshot.installing();
        self.receiving.push(path);
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        self.snapshot.installing();
        let installed = self.install(meta, *snapshot).await;
        if installed.is_err() {
            // A purge waiting for this install must not wait any longer.
            self.snapshot.install_failed();
        }
        installed
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        snapshot::open_current(&self.snapshot_dir)
            .await
            .map_err(|e| sm_error(ErrorVerb::Read, &e))
    }
}
