//! `TreeState`: the domain's `State` over one state machine tree, with the writes of one
//! apply buffered in memory and read back before the tree, so that the whole apply can be
//! written as one atomic batch.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prost::Message;
use serde::Serialize;
use uuid::Uuid;

use super::KnownDevice;
use crate::domain::archive::Archive;
use crate::domain::device::Revocation;
use crate::domain::inventory::Stock;
use crate::domain::order::Order;
use crate::domain::rules::LAMPORT_MAX;
use crate::domain::ticket::{Ticket, TicketKind};
use crate::domain::{self, Event, Outcome, Realm, RejectCode, Rules, State};
use crate::proto::{convert, pb};
use crate::store::history::History;
use crate::store::keys;
use crate::store::{StoreError, decode, encode};

/// The domain's `State` over one state machine tree, with this apply's writes buffered in
/// `pending` (read back before the tree) until `take_batch`.
pub(in crate::store) struct TreeState<'a> {
    tree: &'a crate::store::tree::Tree,
    /// Holds the eventId index (`History::seq_of`).
    history: &'a History,
    realm: &'a Realm,
    last_seq: u64,
    lamport: u64,
    /// Buffered writes: `None` deletes the key.
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The events accepted since the last `take_accepted`, for the feed and the history.
    accepted: Vec<pb::Event>,
    /// Their eventIds, found here until they are in the history.
    accepted_ids: HashMap<Uuid, u64>,
    /// The lowest closing seq in the tree's `x` index, read once (`None`: not read yet),
    /// and the lowest this apply added: `expire_closed` reads the index only when one of
    /// them is due, not once per event.
    closed_floor: Option<Option<u64>>,
    pending_closed_min: Option<u64>,
    /// The archive mark, read once per apply (`None`: not read yet): rules `V4` consult it
    /// for every event.
    archive: std::cell::RefCell<Option<Option<Archive>>>,
}

impl<'a> TreeState<'a> {
    pub(in crate::store) fn new(
        tree: &'a crate::store::tree::Tree,
        history: &'a History,
        realm: &'a Realm,
        last_seq: u64,
        lamport: u64,
    ) -> Self {
        Self {
            tree,
            history,
            realm,
            last_seq,
            lamport,
            pending: BTreeMap::new(),
            accepted: Vec::new(),
            accepted_ids: HashMap::new(),
            closed_floor: None,
            pending_closed_min: None,
            archive: std::cell::RefCell::new(None),
        }
    }

    /// Starts from what an earlier apply learnt of the `x` index's lowest seq.
    pub(in crate::store) fn with_closed_floor(mut self, floor: Option<Option<u64>>) -> Self {
        self.closed_floor = floor;
        self
    }

    /// The `x` index's lowest seq once this apply's batch is written, if known.
    pub(in crate::store) fn closed_floor_after(&self) -> Option<Option<u64>> {
        let tree = self.closed_floor?;
        Some(match (tree, self.pending_closed_min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// The lowest closing seq in the tree's `x` index (cached for this apply).
    fn tree_closed_floor(&mut self) -> Result<Option<u64>, StoreError> {
        if let Some(floor) = self.closed_floor {
            return Ok(floor);
        }
        // Keys this apply already deleted are skipped (at most what it expired).
        let mut floor = None;
        for key in self.tree.scan_prefix([keys::PREFIX_CLOSED]).keys() {
            let key = key?;
            if matches!(self.pending.get(key.as_slice()), Some(None)) {
                continue;
            }
            floor = key
                .get(1..9)
                .and_then(|seq| seq.try_into().ok())
                .map(u64::from_be_bytes);
            break;
        }
        self.closed_floor = Some(floor);
        Ok(floor)
    }

    pub(in crate::store) fn lamport(&self) -> u64 {
        self.lamport
    }

    /// The events accepted since the last call, in seq order: the caller appends them to
    /// the history (`super::extend_history`) before it writes the batch.
    pub(in crate::store) fn take_accepted(&mut self) -> Vec<pb::Event> {
        self.accepted_ids.clear();
        std::mem::take(&mut self.accepted)
    }

    pub(super) fn get<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        if let Some(pending) = self.pending.get(key) {
            return pending.as_deref().map(|b| decode(what, b)).transpose();
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
        self.pending.insert(key, Some(encode(what, value)?));
        Ok(())
    }

    /// Indexes a record that reached its end at `seq` (`keys::closed_key`).
    fn put_closed(&mut self, seq: u64, record_key: &[u8]) {
        self.pending
            .insert(keys::closed_key(seq, record_key), Some(Vec::new()));
        self.pending_closed_min = Some(self.pending_closed_min.map_or(seq, |m| m.min(seq)));
    }

    pub(in crate::store) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Moves the buffered writes into a batch (the caller adds `Applied` and applies it).
    pub(in crate::store) fn take_batch(&mut self) -> crate::kv::Batch {
        let mut batch = crate::kv::Batch::default();
        for (key, value) in std::mem::take(&mut self.pending) {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        batch
    }

    /// Decodes a stored event and runs the domain rules of `rules` on it. An event over the
    /// rules' size bound, or whose payload cannot become JSON (NaN, infinity), is rejected
    /// here, identically on every node.
    pub(in crate::store) fn apply_pb(
        &mut self,
        event: &pb::Event,
        hub_time_ms: u64,
        rules: Rules,
    ) -> Result<Outcome, StoreError> {
        if let Err(rejection) = rules.check_event_bytes(event.encoded_len()) {
            return Ok(rejection.into());
        }
        match convert::event_from_pb(event) {
            Ok(event) => domain::apply(self, &event, hub_time_ms, rules),
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

impl State for TreeState<'_> {
    type Error = StoreError;

    fn realm(&self) -> &Realm {
        self.realm
    }

    fn last_seq(&self) -> u64 {
        self.last_seq
    }

    fn lamport(&self) -> u64 {
        self.lamport
    }

    fn seq_of(&self, event_id: &Uuid) -> Result<Option<u64>, StoreError> {
        if let Some(seq) = self.accepted_ids.get(event_id) {
            return Ok(Some(*seq));
        }
        // The history may hold events past this state (appended before a crash rolled the
        // state machine back): those are not applied yet, so not duplicates.
        if let Some(seq) = self
            .history
            .seq_of(event_id)?
            .filter(|seq| *seq <= self.last_seq)
        {
            return Ok(Some(seq));
        }
        // Ids kept in the live state for when their events are deleted (rules `V4`).
        self.get("kept eventId", &keys::kept_id_key(event_id))
    }

    fn keep_id(&mut self, event_id: Uuid, seq: u64) -> Result<(), StoreError> {
        self.put("kept eventId", keys::kept_id_key(&event_id), &seq)
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
        let key = keys::prefixed(keys::PREFIX_ORDER, order.id.as_bytes());
        // A closed order's head never moves again (ticket mirrors leave it), so this
        // index key is the same each time a closed order is written.
        if order.status.is_closed() {
            self.put_closed(order.head.seq, &key);
        }
        self.put("order", key, &order)
    }

    fn put_ticket(&mut self, ticket: Ticket) -> Result<(), StoreError> {
        let key = ticket_key(ticket.kind, &ticket.id);
        if ticket.status.is_done() {
            self.put_closed(ticket.head.seq, &key);
        }
        self.put("ticket", key, &ticket)
    }

    fn put_stock(&mut self, stock: Stock) -> Result<(), StoreError> {
        self.put(
            "stock",
            keys::prefixed(keys::PREFIX_STOCK, stock.sku.as_bytes()),
            &stock,
        )
    }

    fn put_revocation(&mut self, revocation: Revocation) -> Result<(), StoreError> {
        self.put(
            "revocation",
            keys::prefixed(keys::PREFIX_REVOKED, revocation.device_id.as_bytes()),
            &revocation,
        )
    }

    fn archive(&self) -> Result<Option<Archive>, StoreError> {
        if let Some(known) = self.archive.borrow().as_ref() {
            return Ok(known.clone());
        }
        let stored: Option<Archive> = self.get("archive mark", keys::KEY_ARCHIVE)?;
        *self.archive.borrow_mut() = Some(stored.clone());
        Ok(stored)
    }

    fn put_archive(&mut self, archive: Archive) -> Result<(), StoreError> {
        self.put("archive mark", keys::KEY_ARCHIVE.to_vec(), &archive)?;
        *self.archive.get_mut() = Some(Some(archive));
        Ok(())
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
        // The event and its eventId go to the history (`take_accepted`), not to the tree.
        self.accepted_ids.insert(event_id, seq);
        self.last_seq = seq;
        if event.clock.lamport <= LAMPORT_MAX {
            self.lamport = self.lamport.max(event.clock.lamport);
        }
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

    fn expire_closed(&mut self, through_seq: u64) -> Result<(), StoreError> {
        let due = |floor: Option<u64>| floor.is_some_and(|seq| seq <= through_seq);
        if !due(self.tree_closed_floor()?) && !due(self.pending_closed_min) {
            return Ok(());
        }
        let start = vec![keys::PREFIX_CLOSED];
        // Below the first key of the next seq: every record closed through `through_seq`.
        let end = match through_seq.checked_add(1) {
            Some(next) => keys::closed_key(next, &[]),
            None => vec![keys::PREFIX_CLOSED + 1],
        };
        let mut expired = BTreeSet::new();
        for item in self.tree.range(start.as_slice()..end.as_slice()) {
            let (key, _) = item?;
            if !matches!(self.pending.get(key.as_slice()), Some(None)) {
                expired.insert(key.to_vec());
            }
        }
        expired.extend(
            self.pending
                .range(start..end)
                .filter(|(_, value)| value.is_some())
                .map(|(key, _)| key.clone()),
        );
        for key in expired {
            if let Some(record) = keys::closed_record(&key) {
                self.pending.insert(record.to_vec(), None);
            }
            self.pending.insert(key, None);
        }
        // What is left below the next seq: read again when next due.
        self.closed_floor = None;
        self.pending_closed_min = self
            .pending
            .range(vec![keys::PREFIX_CLOSED]..vec![keys::PREFIX_CLOSED + 1])
            .filter(|(_, value)| value.is_some())
            .filter_map(|(key, _)| key.get(1..9)?.try_into().ok().map(u64::from_be_bytes))
            .min();
        Ok(())
    }
}

pub(in crate::store) fn seq_from_bytes(bytes: &[u8]) -> Result<u64, StoreError> {
    let raw: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::corrupt("eventId index", format!("{bytes:?}")))?;
    Ok(u64::from_be_bytes(raw))
}
