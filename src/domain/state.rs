//! The state `apply` reads and writes, as a trait so that the same rules run over the
//! sled state machine (`store/`), over plain maps in tests, and later in the client SDK.
//!
//! Contract: `apply` calls the `put_*` methods only after it has decided to accept an
//! event, and then calls `put_event` once, then (rules `V4`) `keep_id` if the id needs it,
//! then (rules `V3`) `expire_closed`. A rejected or
//! duplicate event performs none of these calls, so nothing is ever half-applied.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::archive::Archive;
use super::device::Revocation;
use super::event::{Event, Realm};
use super::inventory::Stock;
use super::order::Order;
use super::ticket::{Ticket, TicketKind};

pub trait State {
    /// Failure to read or buffer state (I/O in the sled store; `Infallible` in memory).
    type Error;

    /// The realm this log belongs to; events of any other realm are rejected.
    fn realm(&self) -> &Realm;
    /// The seq of the last accepted event, 0 when the log is empty.
    fn last_seq(&self) -> u64;
    /// The store's Lamport clock: the highest `clock.lamport` of any accepted event that
    /// is at most `rules::LAMPORT_MAX` (higher ones were accepted only under rules `V1`),
    /// 0 when there is none.
    fn lamport(&self) -> u64;
    /// The seq at which this eventId was accepted, if it was.
    fn seq_of(&self, event_id: &Uuid) -> Result<Option<u64>, Self::Error>;
    fn order(&self, order_id: &str) -> Result<Option<Order>, Self::Error>;
    fn ticket(&self, kind: TicketKind, ticket_id: &str) -> Result<Option<Ticket>, Self::Error>;
    fn stock(&self, sku: &str) -> Result<Option<Stock>, Self::Error>;

    fn put_order(&mut self, order: Order) -> Result<(), Self::Error>;
    fn put_ticket(&mut self, ticket: Ticket) -> Result<(), Self::Error>;
    fn put_stock(&mut self, stock: Stock) -> Result<(), Self::Error>;
    /// Puts a device on the deny-list (replacing its earlier entry). No rule reads the
    /// deny-list back: hubs read it to refuse tokens (`StateReader::revocation`).
    fn put_revocation(&mut self, revocation: Revocation) -> Result<(), Self::Error>;
    /// The store's archive mark (rules `V4`), if it has one.
    fn archive(&self) -> Result<Option<Archive>, Self::Error>;
    fn put_archive(&mut self, archive: Archive) -> Result<(), Self::Error>;
    /// Keeps `event_id` (accepted at `seq`) for `seq_of` for good, past the deletion of
    /// its event from the history (rules `V4`: ids the retention refusal cannot cover,
    /// `archive::outlives_its_history`). A state that never deletes history (it answers
    /// `seq_of` from every event it holds) has nothing to do.
    fn keep_id(&mut self, event_id: Uuid, seq: u64) -> Result<(), Self::Error> {
        let _ = (event_id, seq);
        Ok(())
    }
    /// Appends an accepted event: `event.seq` is `last_seq() + 1` and `event.hub_time`
    /// is set. Afterwards `last_seq()` is that seq and `seq_of(event_id)` finds it.
    fn put_event(&mut self, event_id: Uuid, event: Event) -> Result<(), Self::Error>;
    /// Removes from the live state every closed (paid or cancelled) order and every done
    /// ticket whose head seq, the event that closed it, is at most `through_seq`. Their
    /// events stay where events are kept; only the live copy goes. Rules `V3` call it
    /// after each accepted event (`rules::CLOSED_KEPT_EVENTS`).
    fn expire_closed(&mut self, through_seq: u64) -> Result<(), Self::Error>;

    /// Whether this state applies events a hub redacted for a kitchen or bar screen
    /// (`Event::redacted`): only a device's committed layer does, since it follows events
    /// the hub has already decided, payments checked. Every other state (a hub's, a
    /// device's own queued edits) refuses them: it would accept a payment nobody checked.
    fn follows_redacted(&self) -> bool {
        false
    }
}

/// The whole state in ordered maps: used by tests and property tests, and as the
/// reference the sled store must agree with. `BTreeMap` everywhere, so that equality and
/// iteration never depend on hashing.
#[derive(Debug, Clone, PartialEq)]
pub struct MemState {
    pub realm: Realm,
    pub events: Vec<Event>,
    pub event_ids: BTreeMap<Uuid, u64>,
    pub orders: BTreeMap<String, Order>,
    pub tickets: BTreeMap<(TicketKind, String), Ticket>,
    pub stock: BTreeMap<String, Stock>,
    /// The deny-list, by device id.
    pub revoked: BTreeMap<String, Revocation>,
    pub archive: Option<Archive>,
    /// The store's clock (`State::lamport`), kept as events are put.
    pub lamport: u64,
}

impl MemState {
    pub fn new(realm: Realm) -> Self {
        Self {
            realm,
            events: Vec::new(),
            event_ids: BTreeMap::new(),
            orders: BTreeMap::new(),
            tickets: BTreeMap::new(),
            stock: BTreeMap::new(),
            revoked: BTreeMap::new(),
            archive: None,
            lamport: 0,
        }
    }

    /// Applies one event; in memory nothing can fail.
    pub fn apply(&mut self, event: &Event, hub_time_ms: u64) -> super::Outcome {
        self.apply_under(event, hub_time_ms, super::Rules::CURRENT)
    }

    /// `apply` under the given rules version.
    pub fn apply_under(
        &mut self,
        event: &Event,
        hub_time_ms: u64,
        rules: super::Rules,
    ) -> super::Outcome {
        match super::apply(self, event, hub_time_ms, rules) {
            Ok(outcome) => outcome,
            Err(never) => match never {},
        }
    }
}

impl State for MemState {
    type Error = std::convert::Infallible;

    fn realm(&self) -> &Realm {
        &self.realm
    }

    fn last_seq(&self) -> u64 {
        self.events.len() as u64
    }

    fn lamport(&self) -> u64 {
        self.lamport
    }

    fn seq_of(&self, event_id: &Uuid) -> Result<Option<u64>, Self::Error> {
        Ok(self.event_ids.get(event_id).copied())
    }

    fn order(&self, order_id: &str) -> Result<Option<Order>, Self::Error> {
        Ok(self.orders.get(order_id).cloned())
    }

    fn ticket(&self, kind: TicketKind, ticket_id: &str) -> Result<Option<Ticket>, Self::Error> {
        Ok(self.tickets.get(&(kind, ticket_id.to_owned())).cloned())
    }

    fn stock(&self, sku: &str) -> Result<Option<Stock>, Self::Error> {
        Ok(self.stock.get(sku).cloned())
    }

    fn put_order(&mut self, order: Order) -> Result<(), Self::Error> {
        self.orders.insert(order.id.clone(), order);
        Ok(())
    }

    fn put_ticket(&mut self, ticket: Ticket) -> Result<(), Self::Error> {
        self.tickets
            .insert((ticket.kind, ticket.id.clone()), ticket);
        Ok(())
    }

    fn put_stock(&mut self, stock: Stock) -> Result<(), Self::Error> {
        self.stock.insert(stock.sku.clone(), stock);
        Ok(())
    }

    fn put_revocation(&mut self, revocation: Revocation) -> Result<(), Self::Error> {
        self.revoked
            .insert(revocation.device_id.clone(), revocation);
        Ok(())
    }

    fn archive(&self) -> Result<Option<Archive>, Self::Error> {
        Ok(self.archive.clone())
    }

    fn put_archive(&mut self, archive: Archive) -> Result<(), Self::Error> {
        self.archive = Some(archive);
        Ok(())
    }

    fn put_event(&mut self, event_id: Uuid, event: Event) -> Result<(), Self::Error> {
        debug_assert_eq!(
            event.seq,
            Some(self.last_seq() + 1),
            "events are appended in seq order"
        );
        self.event_ids.insert(event_id, self.last_seq() + 1);
        if event.clock.lamport <= super::rules::LAMPORT_MAX {
            self.lamport = self.lamport.max(event.clock.lamport);
        }
        self.events.push(event);
        Ok(())
    }

    fn expire_closed(&mut self, through_seq: u64) -> Result<(), Self::Error> {
        self.orders
            .retain(|_, o| !(o.status.is_closed() && o.head.seq <= through_seq));
        self.tickets
            .retain(|_, t| !(t.status.is_done() && t.head.seq <= through_seq));
        Ok(())
    }
}
