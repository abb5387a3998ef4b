//! `StateReader`: the read-only view of the live state machine that queries use (the log,
//! the read models, the known devices, and the feed of accepted events).

use std::sync::{Arc, RwLock as StdRwLock};

use tokio::sync::broadcast;

use super::{Applied, EventBatch, KnownDevice, TreeState, read_applied};
use crate::clock::HubClock;
use crate::domain::archive::Archive;
use crate::domain::device::Revocation;
use crate::domain::inventory::Stock;
use crate::domain::order::Order;
use crate::domain::rules::ID_CLOCK_AHEAD_MS;
use crate::domain::ticket::{Ticket, TicketKind};
use crate::domain::{Realm, State};
use crate::proto::pb;
use crate::store::history::History;
use crate::store::keys;
use crate::store::{StoreError, decode};

/// A read-only view of the live state machine for queries (`log dump`, and later the client
/// API). It follows snapshot installs: it always reads the current generation.
#[derive(Clone)]
pub struct StateReader {
    pub(super) tree: Arc<StdRwLock<crate::store::tree::Tree>>,
    pub(super) history: Arc<History>,
    pub(super) realm: Realm,
    pub(super) feed: broadcast::Sender<EventBatch>,
    pub(super) clock: HubClock,
}

impl StateReader {
    fn tree(&self) -> crate::store::tree::Tree {
        // A poisoned lock only means a writer panicked after swapping in a valid tree handle.
        match self.tree.read() {
            Ok(tree) => tree.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn realm(&self) -> &Realm {
        &self.realm
    }

    /// The node's hub clock: never behind the hub times this state machine has applied.
    pub fn clock(&self) -> &HubClock {
        &self.clock
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

    /// Up to `limit` committed events with seq > `after_seq`, in seq order, stopping once
    /// they add up to `max_bytes` encoded (the event that crosses it is the last; the first
    /// always comes, so a page is never empty while events remain).
    pub fn events_after(
        &self,
        after_seq: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<pb::Event>, StoreError> {
        self.history.read_after(after_seq, limit, max_bytes)
    }

    /// `events_after`'s events as stored, each handed to `each` with its seq, undecoded
    /// (`History::read_encoded`).
    pub fn events_encoded_after(
        &self,
        after_seq: u64,
        limit: usize,
        max_bytes: usize,
        each: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.history.read_encoded(after_seq, limit, max_bytes, each)
    }

    /// History records of seqs `after + 1 ..= upto`, up to about `max_bytes`, as stored
    /// (`History::read_records`): what a peer installing a snapshot fetches.
    pub fn history_records(
        &self,
        after: u64,
        upto: u64,
        max_bytes: usize,
    ) -> Result<Vec<u8>, StoreError> {
        self.history.read_records(after, upto, max_bytes)
    }

    /// The first seq this node's history holds: 1, until retention deleted older files.
    pub fn history_first_seq(&self) -> u64 {
        self.history.first_seq()
    }

    /// The store's archive mark (rules `V4`), if it has one.
    pub fn archive(&self) -> Result<Option<Archive>, StoreError> {
        let tree = self.tree();
        TreeState::new(&tree, &self.history, &self.realm, 0, 0).archive()
    }

    /// Retention: deletes the history files the archive mark lets go at the applied hub
    /// time (`domain::archive`): wholly at or behind the mark, and their last event at
    /// least `ID_CLOCK_AHEAD_MS` older than the refusal's horizon. Returns the (first,
    /// last) seqs of each file deleted; nothing without a mark.
    pub fn apply_retention(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        let Some(archive) = self.archive()? else {
            return Ok(Vec::new());
        };
        let applied = self.applied()?;
        let hub_time_max = archive
            .horizon_ms(applied.hub_time_ms)
            .saturating_sub(ID_CLOCK_AHEAD_MS);
        self.history
            .delete_behind(archive.through_seq, hub_time_max)
    }

    /// The last seq this node's history holds.
    pub fn history_last_seq(&self) -> u64 {
        self.history.last_seq()
    }

    pub fn order(&self, order_id: &str) -> Result<Option<Order>, StoreError> {
        let tree = self.tree();
        TreeState::new(&tree, &self.history, &self.realm, 0, 0).order(order_id)
    }

    pub fn ticket(&self, kind: TicketKind, ticket_id: &str) -> Result<Option<Ticket>, StoreError> {
        let tree = self.tree();
        TreeState::new(&tree, &self.history, &self.realm, 0, 0).ticket(kind, ticket_id)
    }

    pub fn stock(&self, sku: &str) -> Result<Option<Stock>, StoreError> {
        let tree = self.tree();
        TreeState::new(&tree, &self.history, &self.realm, 0, 0).stock(sku)
    }

    /// The device, if it has an accepted event in the log.
    pub fn device(&self, device_id: &str) -> Result<Option<KnownDevice>, StoreError> {
        let tree = self.tree();
        let state = TreeState::new(&tree, &self.history, &self.realm, 0, 0);
        state.get(
            "device",
            &keys::prefixed(keys::PREFIX_DEVICE, device_id.as_bytes()),
        )
    }

    /// The device's deny-list entry, if an admin revoked it.
    pub fn revocation(&self, device_id: &str) -> Result<Option<Revocation>, StoreError> {
        let tree = self.tree();
        let state = TreeState::new(&tree, &self.history, &self.realm, 0, 0);
        state.get(
            "revocation",
            &keys::prefixed(keys::PREFIX_REVOKED, device_id.as_bytes()),
        )
    }

    /// The orders, tickets and stock as of one applied event (`LiveState`), read in one
    /// step: no apply falls between them.
    pub fn live_state(&self) -> Result<LiveState, StoreError> {
        let applied_key = keys::applied_key();
        let pairs = self.tree().copy_prefixes(&[
            applied_key[0],
            keys::PREFIX_ORDER,
            keys::PREFIX_TICKET,
            keys::PREFIX_STOCK,
        ]);
        let mut live = LiveState::default();
        for (key, value) in pairs {
            match key.first().copied() {
                _ if key == applied_key => live.applied = decode("applied state", &value)?,
                Some(keys::PREFIX_ORDER) => live.orders.push(decode("order", &value)?),
                Some(keys::PREFIX_TICKET) => live.tickets.push(decode("ticket", &value)?),
                Some(keys::PREFIX_STOCK) => live.stocks.push(decode("stock", &value)?),
                // Other keys under the applied prefix (none today).
                _ => {}
            }
        }
        Ok(live)
    }

    /// Every order, by id.
    pub fn orders(&self) -> Result<Vec<Order>, StoreError> {
        self.scan(keys::PREFIX_ORDER, "order")
    }

    /// Every SKU's stock, by SKU.
    pub fn stocks(&self) -> Result<Vec<Stock>, StoreError> {
        self.scan(keys::PREFIX_STOCK, "stock")
    }

    /// Orders by id, starting after the order whose cursor is `after` (its id).
    pub fn orders_after(&self, after: &str) -> Listing<Order> {
        self.listing(keys::PREFIX_ORDER, "order", after)
    }

    /// Tickets by kind then id, after the cursor `after`.
    pub fn tickets_after(&self, after: &str) -> Listing<Ticket> {
        self.listing(keys::PREFIX_TICKET, "ticket", after)
    }

    /// Stock by SKU, after the SKU `after`.
    pub fn stocks_after(&self, after: &str) -> Listing<Stock> {
        self.listing(keys::PREFIX_STOCK, "stock", after)
    }

    fn listing<T>(&self, prefix: u8, what: &'static str, after: &str) -> Listing<T> {
        let mut start = keys::prefixed(prefix, after.as_bytes());
        if !after.is_empty() {
            // The least key greater than the cursor's own: strictly after it.
            start.push(0);
        }
        Listing {
            // Up to the next prefix: only this kind's records.
            iter: self.tree().range(start..vec![prefix.saturating_add(1)]),
            prefix,
            what,
            item: std::marker::PhantomData,
        }
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

/// The live state as of `applied.last_seq`: what a device bootstraps from.
#[derive(Debug, Default)]
pub struct LiveState {
    pub applied: Applied,
    /// By id.
    pub orders: Vec<Order>,
    /// By kind, then id.
    pub tickets: Vec<Ticket>,
    /// By SKU.
    pub stocks: Vec<Stock>,
}

/// Read models of one kind in key order, each with its cursor (its key after the prefix),
/// for paged listings.
pub struct Listing<T> {
    iter: crate::store::tree::Iter,
    prefix: u8,
    what: &'static str,
    item: std::marker::PhantomData<T>,
}

impl<T: serde::de::DeserializeOwned> Iterator for Listing<T> {
    type Item = Result<(String, T), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (key, bytes) = match self.iter.next()? {
            Ok(kv) => kv,
            Err(e) => return Some(Err(e)),
        };
        if key.first() != Some(&self.prefix) {
            return None;
        }
        let cursor = String::from_utf8_lossy(&key[1..]).into_owned();
        Some(decode(self.what, &bytes).map(|item| (cursor, item)))
    }
}
