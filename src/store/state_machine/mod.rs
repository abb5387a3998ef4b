//! The state machine: the store's event log (by seq), the eventId index and the read
//! models, kept in one tree (`store::tree`) per generation and changed only by `apply`.
//!
//! Each `apply` call (one or more committed Raft entries) runs the domain rules over a
//! `TreeState` — sled plus an in-memory overlay of this call's writes — and then writes
//! the overlay and the new last-applied id in one atomic `crate::kv::Batch`. A crash therefore
//! leaves the state machine at some whole entry boundary; openraft re-applies the rest
//! from the durable log.
//!
//! This file holds what the state machine records (`Applied`, `KnownDevice`), the feed of
//! accepted events, and `StateMachine` itself: opening it and applying entries. Beside it:
//! - `tree_state`: `TreeState`, the domain's `State` over sled with the write overlay;
//! - `reader`: `StateReader`, the read-only view queries use;
//! - `install`: installing a received snapshot, and finishing one a crash interrupted;
//! - `raft_impl`: openraft's `RaftStateMachine` for `StateMachine`.

mod install;
mod migrate;
mod raft_impl;
mod reader;
mod tree_state;

use std::path::PathBuf;
use std::sync::{Arc, RwLock as StdRwLock};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, RaftLogId};
use serde::{Deserialize, Serialize};
use tokio::sync::{RwLock, broadcast};

use super::disk::{Disk, DurableSnapshot};
use super::history::History;
use super::keys::{self, KEY_GENERATION, KEY_REALM, TREE_SM_META};
use super::snapshot;
use super::{StoreError, decode, encode};
use crate::clock::HubClock;
use crate::domain::Realm;
use crate::domain::rules::LAMPORT_MAX;
use crate::proto::pb;
use crate::proto::subscribe::{EventFrames, SharedFrames};
use crate::raft_types::Response;
use crate::raft_types::{Entry, LogId, StoredMembership};

pub use reader::{LiveState, StateReader};
pub(super) use tree_state::TreeState;
pub(super) use tree_state::seq_from_bytes;

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
    /// The store's clock: the highest Lamport clock among accepted events that is at most
    /// `LAMPORT_MAX` (clocks above it were accepted only before rules `V2`, and must not
    /// push every device past what a browser holds); devices bump theirs past it.
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
pub type EventBatch = Arc<FeedBatch>;

/// The events of one apply, decoded and encoded once for every subscriber: their seqs are
/// contiguous, and the `i`th of `frames` is `events[i]`.
#[derive(Debug, Default)]
pub struct FeedBatch {
    pub events: Vec<pb::Event>,
    pub frames: SharedFrames,
}

/// Default number of recent batches the feed keeps for subscribers; one behind by more
/// reads storage instead. Bounded because the feed holds them in memory.
pub const EVENT_FEED_BATCHES: usize = 256;

pub(super) fn read_applied(tree: &crate::store::tree::Tree) -> Result<Applied, StoreError> {
    match tree.get(keys::applied_key())? {
        Some(bytes) => decode("applied state", &bytes),
        None => Ok(Applied::default()),
    }
}

/// openraft's state machine over the trees (`store::tree`). Snapshots are files in `snapshot_dir`.
pub struct StateMachine {
    disk: Disk,
    /// The snapshot on disk, as the log sees it (see `disk::DurableSnapshot`).
    snapshot: DurableSnapshot,
    meta: crate::store::tree::Tree,
    generation: u64,
    tree: crate::store::tree::Tree,
    /// The committed events (`history`); the tree holds none of them.
    history: Arc<History>,
    realm: Realm,
    applied: Applied,
    snapshot_dir: PathBuf,
    /// Shared with `StateReader`s so that queries follow snapshot installs.
    shared_tree: Arc<StdRwLock<crate::store::tree::Tree>>,
    /// Held (read) by a snapshot builder for as long as it streams the tree, and taken
    /// (write) by an install before it swaps generations, so a build never reads a tree
    /// that an install is dropping.
    generation_guard: Arc<RwLock<()>>,
    /// Files handed out by `begin_receiving_snapshot`, removed once an install is done.
    receiving: Vec<PathBuf>,
    feed: broadcast::Sender<EventBatch>,
    /// The node's hub clock, told every hub time applied here (its floor; see `clock`).
    clock: HubClock,
    /// Where an install of live state fetches the history it lacks (set by the node once
    /// its peer clients exist; see `set_history_source`).
    history_source: Option<Arc<dyn super::HistorySource>>,
    /// The lowest closing seq in the live tree's `x` index, as the last apply left it
    /// (`None`: not known; read again by the next apply). Saves a read per apply.
    closed_floor: Option<Option<u64>>,
}

impl StateMachine {
    /// The last log entry applied (a snapshot install counts as applying up to its end).
    pub(in crate::store) fn last_applied(&self) -> Option<crate::raft_types::LogId> {
        self.applied.last_applied
    }

    pub(super) async fn open(
        disk: Disk,
        history: Arc<History>,
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
        for name in db.tree_names()? {
            if name.starts_with("sm.") && name != TREE_SM_META && name != live {
                tracing::info!(tree = %name, "dropping a state machine generation that is not live");
                db.drop_tree(name.as_bytes())?;
            }
        }
        let tree = db.open_tree(live)?;
        migrate::events_out_of_tree(&disk, &tree, &history).await?;
        migrate::ids_out_of_tree(&disk, &tree).await?;
        migrate::index_closed(&disk, &tree).await?;
        let mut applied = read_applied(&tree)?;
        if applied.lamport > LAMPORT_MAX {
            // Written before rules V2 by an event with a clock over the bound.
            let clean = store_clock(&history, applied.last_seq)?;
            tracing::warn!(
                stored = applied.lamport,
                clean,
                "the store's clock was above 2^53 - 1; recomputed from the events within it"
            );
            applied.lamport = clean;
            // Readers (Hello) read the stored copy: correct it now, not at the next apply.
            tree.insert(keys::applied_key(), encode("applied state", &applied)?)?;
        }
        let mut sm = Self {
            disk,
            snapshot,
            meta,
            generation,
            shared_tree: Arc::new(StdRwLock::new(tree.clone())),
            tree,
            history,
            realm: realm.clone(),
            applied,
            snapshot_dir,
            generation_guard: Arc::new(RwLock::new(())),
            receiving: Vec::new(),
            feed: broadcast::channel(feed_batches.max(1)).0,
            clock: HubClock::new(),
            history_source: None,
            closed_floor: None,
        };
        // An install a crash interrupted is finished now, so that the snapshot on disk
        // covers the live state and the log's purge point.
        sm.finish_interrupted_install().await?;
        snapshot::remove_temp_files(&sm.snapshot_dir)?;
        sm.catch_up_history().await?;
        sm.repair_current_snapshot().await?;
        sm.snapshot
            .set(snapshot::current_last_log_id(&sm.snapshot_dir)?);
        sm.clock.observe(sm.applied.hub_time_ms);
        Ok(sm)
    }

    /// Checks the current snapshot whole (every record and the checksum). A damaged one
    /// (bit rot, a bad SD card sector) is set aside and a new one is built from the state
    /// machine, which holds every event it covers, so it is never sent to a follower nor
    /// trusted at open. With nothing applied there is nothing to build from: the damaged
    /// file is set aside and the node has no snapshot, as a blank node.
    ///
    /// A whole snapshot of data format 1 is rebuilt the same way (replaced, not set
    /// aside): peers of this release read only format 2.
    pub(super) async fn repair_current_snapshot(&mut self) -> Result<(), StoreError> {
        match snapshot::check_current(&self.snapshot_dir).await {
            Ok(()) => {
                if !snapshot::current_is_legacy(&self.snapshot_dir)?
                    || self.applied.last_applied.is_none()
                {
                    return Ok(());
                }
                tracing::info!(
                    "the current snapshot is of data format 1: building it again in format 2"
                );
            }
            Err(damage) => {
                let aside = snapshot::set_aside_current(&self.snapshot_dir)?;
                tracing::error!(
                    %damage,
                    aside = %aside.display(),
                    "the current snapshot is damaged: set aside; building a new one from the state machine"
                );
                self.snapshot.set(None);
                if self.applied.last_applied.is_none() {
                    return Ok(());
                }
            }
        }
        let mut builder = self.get_snapshot_builder().await;
        builder
            .build_snapshot()
            .await
            .map_err(|e| StoreError::corrupt("snapshot", format!("rebuilding it: {e}")))?;
        Ok(())
    }

    /// Where an install of a live-state snapshot fetches the events this node's history
    /// lacks up to the snapshot's seq. Without one, such an install fails.
    pub fn set_history_source(&mut self, source: Arc<dyn super::HistorySource>) {
        self.history_source = Some(source);
    }

    /// A reader for queries that stays valid across snapshot installs.
    pub fn reader(&self) -> StateReader {
        StateReader {
            tree: self.shared_tree.clone(),
            history: self.history.clone(),
            realm: self.realm.clone(),
            feed: self.feed.clone(),
            clock: self.clock.clone(),
        }
    }

    fn apply_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<Vec<Response>, StoreError> {
        let mut applied = self.applied.clone();
        let mut state = TreeState::new(
            &self.tree,
            &self.history,
            &self.realm,
            applied.last_seq,
            applied.lamport,
        )
        .with_closed_floor(self.closed_floor.take());
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
                        outcomes.push(state.apply_pb(event, hub_time_ms, command.rules)?);
                    }
                    replies.push(Response { outcomes });
                }
            }
        }
        applied.last_seq = state.last_seq();
        applied.lamport = state.lamport();
        let accepted = state.take_accepted();
        // The events first: should a crash come between the two, the history is ahead of
        // the state machine, which re-applies (and checks) them.
        let frames = extend_history(&self.history, &accepted)?;
        let mut batch = state.take_batch();
        batch.insert(keys::applied_key(), encode("applied state", &applied)?);
        // One atomic batch: events, eventId index, read models and last-applied together.
        // Not flushed here: the Raft log is durable, and a crash rolls this back to a whole
        // earlier entry that openraft re-applies.
        self.tree.apply_batch(batch)?;
        self.closed_floor = state.closed_floor_after();
        self.clock.observe(applied.hub_time_ms);
        self.applied = applied;
        if !accepted.is_empty() {
            // No receiver is fine: nobody is subscribed.
            let _ = self.feed.send(Arc::new(FeedBatch {
                events: accepted,
                frames: frames.share(),
            }));
        }
        Ok(replies)
    }
}

/// The store's clock recomputed from the events up to `last_seq`: the highest Lamport
/// clock at most `LAMPORT_MAX`.
fn store_clock(history: &History, last_seq: u64) -> Result<u64, StoreError> {
    let mut clock = 0;
    let mut after = 0;
    while after < last_seq {
        let page = history.read_after(after, 4096, usize::MAX)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for event in page.iter().filter(|e| e.seq <= last_seq) {
            let lamport = event.clock.as_ref().map_or(0, |c| c.lamport);
            if lamport <= LAMPORT_MAX {
                clock = clock.max(lamport);
            }
        }
    }
    Ok(clock)
}

/// Appends the events an apply accepted to the history. Those it already holds (appended
/// before a crash rolled the state machine back, which then re-applies them) must be the
/// very same events: anything else is damage. Returns all of `accepted` encoded, the
/// bytes the history stored, for the feed to send.
pub(in crate::store) fn extend_history(
    history: &History,
    accepted: &[pb::Event],
) -> Result<EventFrames, StoreError> {
    let held = history.last_seq();
    let split = accepted.partition_point(|e| e.seq <= held);
    let (again, new) = accepted.split_at(split);
    if let Some(first) = again.first() {
        let stored = history.read_after(first.seq - 1, again.len(), usize::MAX)?;
        for (i, event) in again.iter().enumerate() {
            let held_id = stored
                .get(i)
                .filter(|s| s.seq == event.seq)
                .map(|s| s.event_id.as_str());
            if held_id != Some(event.event_id.as_str()) {
                return Err(StoreError::corrupt(
                    "history",
                    format!(
                        "seq {} is event {held_id:?} in the history, but the log applies {} \
                         there",
                        event.seq, event.event_id
                    ),
                ));
            }
        }
    }
    let mut frames = EventFrames::default();
    for event in accepted {
        frames.push(event);
    }
    let records = new
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let encoded = frames.event(split + i).ok_or_else(|| {
                StoreError::corrupt("history", format!("seq {}: not encoded", event.seq))
            })?;
            Ok((event.seq, event.event_id.as_str(), encoded))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    history.append_encoded(&records)?;
    Ok(frames)
}
