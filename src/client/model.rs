//! The device's read model: the committed state (what the hub's log says, up to the
//! device's cursor) with the device's own not-yet-committed events applied on top.
//!
//! Both layers run the hub's own rules (`domain::apply`), so the device decides an event
//! the way the hub will unless something the device has not seen yet intervenes. The
//! committed layer is rebuilt from nothing but committed events, each once, in seq
//! order; the overlay is thrown away and replayed whenever the committed layer moves or
//! the outbox drops an event, so a rejected local edit disappears from the view and the
//! committed truth replaces every optimistic guess.
//!
//! A kitchen or bar screen's stream carries payment-carrying events (`order.paid`) as
//! redaction markers: the committed layer applies them like any other event (the order
//! turns paid, with no payments, and the cursor moves on); the overlay, which holds the
//! device's own edits, refuses a marked event as the hub would.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::domain::archive::Archive;
use crate::domain::device::Revocation;
use crate::domain::inventory::Stock;
use crate::domain::order::Order;
use crate::domain::rules::LAMPORT_MAX;
use crate::domain::ticket::{Ticket, TicketKind};
use crate::domain::{Event, Outcome, Realm, Rules, State};

/// One layer of state in ordered maps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layer {
    pub last_seq: u64,
    /// The highest Lamport clock of this layer's events (and, for the committed layer
    /// loaded from disk, the device's own clock then).
    pub lamport: u64,
    pub event_ids: BTreeMap<Uuid, u64>,
    pub orders: BTreeMap<String, Order>,
    pub tickets: BTreeMap<(TicketKind, String), Ticket>,
    pub stock: BTreeMap<String, Stock>,
    /// Closed orders and done tickets by the seq that closed them, for `expire_closed`:
    /// derived from the records (`index_closed`), never stored.
    pub closed: BTreeSet<(u64, ClosedRef)>,
}

/// A record in the committed layer's `closed` index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClosedRef {
    Order(String),
    Ticket(TicketKind, String),
}

impl Layer {
    /// Rebuilds the `closed` index from the records (a layer loaded from the device dir).
    pub(crate) fn index_closed(&mut self) {
        let orders = self.orders.values().filter(|o| o.status.is_closed());
        let tickets = self.tickets.values().filter(|t| t.status.is_done());
        self.closed = orders
            .map(|o| (o.head.seq, ClosedRef::Order(o.id.clone())))
            .chain(tickets.map(|t| (t.head.seq, ClosedRef::Ticket(t.kind, t.id.clone()))))
            .collect();
    }
}

/// What applying committed events changed, for the device store to persist.
#[derive(Debug, Default)]
pub struct Changes {
    pub event_ids: Vec<(Uuid, u64)>,
    /// The committed layer's clock after the changes, if an event was applied.
    pub lamport: Option<u64>,
    pub orders: Vec<Order>,
    pub tickets: Vec<Ticket>,
    pub stock: Vec<Stock>,
    /// Orders and tickets that left the live state (rules `V3`), to delete.
    pub expired_orders: Vec<String>,
    pub expired_tickets: Vec<(TicketKind, String)>,
}

/// The committed layer as `State`, recording every write for persistence.
struct Committed<'a> {
    realm: &'a Realm,
    layer: &'a mut Layer,
    changes: &'a mut Changes,
}

impl State for Committed<'_> {
    type Error = std::convert::Infallible;

    fn realm(&self) -> &Realm {
        self.realm
    }
    fn last_seq(&self) -> u64 {
        self.layer.last_seq
    }
    fn lamport(&self) -> u64 {
        self.layer.lamport
    }
    fn seq_of(&self, event_id: &Uuid) -> Result<Option<u64>, Self::Error> {
        Ok(self.layer.event_ids.get(event_id).copied())
    }
    fn order(&self, order_id: &str) -> Result<Option<Order>, Self::Error> {
        Ok(self.layer.orders.get(order_id).cloned())
    }
    fn ticket(&self, kind: TicketKind, ticket_id: &str) -> Result<Option<Ticket>, Self::Error> {
        Ok(self
            .layer
            .tickets
            .get(&(kind, ticket_id.to_owned()))
            .cloned())
    }
    fn stock(&self, sku: &str) -> Result<Option<Stock>, Self::Error> {
        Ok(self.layer.stock.get(sku).cloned())
    }
    fn put_order(&mut self, order: Order) -> Result<(), Self::Error> {
        if order.status.is_closed() {
            let closed = (order.head.seq, ClosedRef::Order(order.id.clone()));
            self.layer.closed.insert(closed);
        }
        // An id used again after its order left: the new order is what stays.
        self.changes.expired_orders.retain(|id| *id != order.id);
        self.changes.orders.push(order.clone());
        self.layer.orders.insert(order.id.clone(), order);
        Ok(())
    }
    fn put_ticket(&mut self, ticket: Ticket) -> Result<(), Self::Error> {
        let key = (ticket.kind, ticket.id.clone());
        if ticket.status.is_done() {
            let closed = (
                ticket.head.seq,
                ClosedRef::Ticket(ticket.kind, ticket.id.clone()),
            );
            self.layer.closed.insert(closed);
        }
        self.changes.expired_tickets.retain(|k| *k != key);
        self.changes.tickets.push(ticket.clone());
        self.layer.tickets.insert(key, ticket);
        Ok(())
    }
    fn put_stock(&mut self, stock: Stock) -> Result<(), Self::Error> {
        self.changes.stock.push(stock.clone());
        self.layer.stock.insert(stock.sku.clone(), stock);
        Ok(())
    }
    fn put_revocation(&mut self, _revocation: Revocation) -> Result<(), Self::Error> {
        // Devices keep no deny-list: only hubs check tokens against it.
        Ok(())
    }
    fn archive(&self) -> Result<Option<Archive>, Self::Error> {
        // Devices keep no archive mark: they apply what a hub accepted, which passed it.
        Ok(None)
    }
    fn put_archive(&mut self, _archive: Archive) -> Result<(), Self::Error> {
        Ok(())
    }
    fn put_event(&mut self, event_id: Uuid, event: Event) -> Result<(), Self::Error> {
        if event.clock.lamport <= LAMPORT_MAX {
            self.layer.lamport = self.layer.lamport.max(event.clock.lamport);
        }
        self.changes.lamport = Some(self.layer.lamport);
        self.layer.last_seq += 1;
        self.layer.event_ids.insert(event_id, self.layer.last_seq);
        self.changes.event_ids.push((event_id, self.layer.last_seq));
        Ok(())
    }
    fn expire_closed(&mut self, through_seq: u64) -> Result<(), Self::Error> {
        let Some(after) = through_seq.checked_add(1) else {
            return Ok(());
        };
        let kept = self
            .layer
            .closed
            .split_off(&(after, ClosedRef::Order(String::new())));
        let expired = std::mem::replace(&mut self.layer.closed, kept);
        for (_, record) in expired {
            match record {
                ClosedRef::Order(id) => {
                    self.layer.orders.remove(&id);
                    self.changes.orders.retain(|o| o.id != id);
                    self.changes.expired_orders.push(id);
                }
                ClosedRef::Ticket(kind, id) => {
                    let key = (kind, id);
                    self.layer.tickets.remove(&key);
                    self.changes
                        .tickets
                        .retain(|t| (t.kind, &t.id) != (key.0, &key.1));
                    self.changes.expired_tickets.push(key);
                }
            }
        }
        Ok(())
    }
    /// A kitchen or bar screen's stream carries payment-carrying events as redaction
    /// markers (`api::view`); the hub decided them, so the committed layer applies them
    /// for what they still say (the order is paid) and moves its cursor past them.
    fn follows_redacted(&self) -> bool {
        true
    }
}

/// The overlay as `State`: reads fall through to the committed layer.
struct Stacked<'a> {
    realm: &'a Realm,
    base: &'a Layer,
    top: &'a mut Layer,
    hub_clock: u64,
}

impl State for Stacked<'_> {
    type Error = std::convert::Infallible;

    fn realm(&self) -> &Realm {
        self.realm
    }
    fn last_seq(&self) -> u64 {
        self.top.last_seq
    }
    fn lamport(&self) -> u64 {
        self.top.lamport.max(self.base.lamport).max(self.hub_clock)
    }
    fn seq_of(&self, event_id: &Uuid) -> Result<Option<u64>, Self::Error> {
        Ok(self
            .top
            .event_ids
            .get(event_id)
            .or_else(|| self.base.event_ids.get(event_id))
            .copied())
    }
    fn order(&self, order_id: &str) -> Result<Option<Order>, Self::Error> {
        Ok(self
            .top
            .orders
            .get(order_id)
            .or_else(|| self.base.orders.get(order_id))
            .cloned())
    }
    fn ticket(&self, kind: TicketKind, ticket_id: &str) -> Result<Option<Ticket>, Self::Error> {
        let key = (kind, ticket_id.to_owned());
        Ok(self
            .top
            .tickets
            .get(&key)
            .or_else(|| self.base.tickets.get(&key))
            .cloned())
    }
    fn stock(&self, sku: &str) -> Result<Option<Stock>, Self::Error> {
        Ok(self
            .top
            .stock
            .get(sku)
            .or_else(|| self.base.stock.get(sku))
            .cloned())
    }
    fn put_order(&mut self, order: Order) -> Result<(), Self::Error> {
        self.top.orders.insert(order.id.clone(), order);
        Ok(())
    }
    fn put_ticket(&mut self, ticket: Ticket) -> Result<(), Self::Error> {
        self.top
            .tickets
            .insert((ticket.kind, ticket.id.clone()), ticket);
        Ok(())
    }
    fn put_stock(&mut self, stock: Stock) -> Result<(), Self::Error> {
        self.top.stock.insert(stock.sku.clone(), stock);
        Ok(())
    }
    fn put_revocation(&mut self, _revocation: Revocation) -> Result<(), Self::Error> {
        // Devices keep no deny-list: only hubs check tokens against it.
        Ok(())
    }
    fn archive(&self) -> Result<Option<Archive>, Self::Error> {
        // Devices keep no archive mark: they apply what a hub accepted, which passed it.
        Ok(None)
    }
    fn put_archive(&mut self, _archive: Archive) -> Result<(), Self::Error> {
        Ok(())
    }
    fn put_event(&mut self, event_id: Uuid, event: Event) -> Result<(), Self::Error> {
        if event.clock.lamport <= LAMPORT_MAX {
            self.top.lamport = self.top.lamport.max(event.clock.lamport);
        }
        self.top.last_seq += 1;
        self.top.event_ids.insert(event_id, self.top.last_seq);
        Ok(())
    }
    /// The overlay holds the device's own edits for the moments before they commit; the
    /// committed layer removes closed records as the hub does, when their events arrive.
    fn expire_closed(&mut self, _through_seq: u64) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A committed event that does not follow from the committed layer: the device's copy
/// is not a prefix of this log (another store's log, or a hub reset). The caller resets
/// the model and resubscribes from 0.
#[derive(Debug, thiserror::Error)]
#[error("committed event {event_id} at seq {seq} does not follow the device's copy: {detail}")]
pub struct Diverged {
    pub event_id: String,
    pub seq: u64,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct ReadModel {
    realm: Realm,
    committed: Layer,
    overlay: Layer,
    /// The overlay no longer matches committed + queued events and is rebuilt on the
    /// next read or append.
    stale: bool,
    /// The store's clock as a hub reported it in Hello: the device stamps past it, so its
    /// own check of an event's clock must count it even before the committed events that
    /// carry it have arrived.
    hub_clock: u64,
}

impl ReadModel {
    pub fn new(realm: Realm, mut committed: Layer) -> Self {
        committed.index_closed();
        let overlay = Layer {
            last_seq: committed.last_seq,
            ..Layer::default()
        };
        ReadModel {
            realm,
            committed,
            overlay,
            stale: true,
            hub_clock: 0,
        }
    }

    /// Raises the store's clock as a hub reported it (see `hub_clock`).
    pub fn observe_hub_clock(&mut self, lamport: u64) {
        self.hub_clock = self.hub_clock.max(lamport);
    }

    pub fn realm(&self) -> &Realm {
        &self.realm
    }

    /// The seq of the last committed event applied: the device's subscription cursor.
    pub fn cursor(&self) -> u64 {
        self.committed.last_seq
    }

    pub fn committed(&self) -> &Layer {
        &self.committed
    }

    /// Applies one committed event (its `seq` and `hub_time` set by the hub) to the
    /// committed layer, recording what changed.
    pub fn apply_committed(
        &mut self,
        event: &Event,
        changes: &mut Changes,
    ) -> Result<(), Diverged> {
        let seq = event.seq.unwrap_or(0);
        let diverged = |detail: String| Diverged {
            event_id: event.event_id.clone(),
            seq,
            detail,
        };
        if seq != self.committed.last_seq + 1 {
            return Err(diverged(format!(
                "expected seq {}",
                self.committed.last_seq + 1
            )));
        }
        let mut as_sent = event.clone();
        as_sent.seq = None;
        as_sent.hub_time = None;
        // The rules that accepted it (unstamped: accepted before versions, rules 1).
        let rules = as_sent.rules.take().unwrap_or(Rules::V1);
        let mut state = Committed {
            realm: &self.realm,
            layer: &mut self.committed,
            changes,
        };
        let outcome =
            match crate::domain::apply(&mut state, &as_sent, event.hub_time.unwrap_or(0), rules) {
                Ok(outcome) => outcome,
                Err(never) => match never {},
            };
        self.stale = true;
        match outcome {
            Outcome::Accepted { seq: got } if got == seq => Ok(()),
            other => Err(diverged(format!("the device's rules say {other:?}"))),
        }
    }

    /// Applies a queued event on top of the committed state at device time `now_ms`.
    /// A rejection leaves the view unchanged.
    pub fn apply_local(&mut self, event: &Event, now_ms: u64) -> Outcome {
        let mut state = Stacked {
            realm: &self.realm,
            base: &self.committed,
            top: &mut self.overlay,
            hub_clock: self.hub_clock,
        };
        match crate::domain::apply(&mut state, event, now_ms, Rules::CURRENT) {
            Ok(outcome) => outcome,
            Err(never) => match never {},
        }
    }

    /// Marks the overlay for a replay before the next read or append.
    pub fn rebuild_needed(&mut self) {
        self.stale = true;
    }

    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// Replays the queued events, in outbox order, on a fresh overlay.
    pub fn rebuild<'e>(&mut self, queued: impl IntoIterator<Item = &'e Event>, now_ms: u64) {
        self.overlay = Layer {
            last_seq: self.committed.last_seq,
            ..Layer::default()
        };
        for event in queued {
            self.apply_local(event, now_ms);
        }
        self.stale = false;
    }

    /// An order as the device sees it: committed, with its own queued edits on top.
    pub fn order(&self, order_id: &str) -> Option<&Order> {
        self.overlay
            .orders
            .get(order_id)
            .or_else(|| self.committed.orders.get(order_id))
    }

    pub fn orders(&self) -> Vec<&Order> {
        let mut all: BTreeMap<&str, &Order> = self
            .committed
            .orders
            .iter()
            .map(|(id, o)| (id.as_str(), o))
            .collect();
        for (id, order) in &self.overlay.orders {
            all.insert(id.as_str(), order);
        }
        all.into_values().collect()
    }

    pub fn ticket(&self, kind: TicketKind, ticket_id: &str) -> Option<&Ticket> {
        let key = (kind, ticket_id.to_owned());
        self.overlay
            .tickets
            .get(&key)
            .or_else(|| self.committed.tickets.get(&key))
    }

    pub fn stock(&self, sku: &str) -> Option<&Stock> {
        self.overlay
            .stock
            .get(sku)
            .or_else(|| self.committed.stock.get(sku))
    }

    /// Takes `committed` (a hub's live state, `Hub/Bootstrap`) as the committed layer; the
    /// queued events are replayed on it at the next read.
    pub fn replace_committed(&mut self, committed: Layer) {
        let hub_clock = self.hub_clock;
        *self = ReadModel::new(self.realm.clone(), committed);
        self.hub_clock = hub_clock;
    }

    /// Forgets everything committed (a diverged copy): the next subscription starts at 0.
    pub fn reset(&mut self) {
        *self = ReadModel::new(self.realm.clone(), Layer::default());
    }
}
