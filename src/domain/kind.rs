//! The closed set of aggregate types and event types the hub understands.
//!
//! `type` strings are matched against the table of their own aggregate type only, so a
//! `bds.ticket.created` sent with `aggregateType: "kds"` is unknown rather than silently
//! rerouted to another aggregate.

use super::rules::Rules;

/// The `aggregateType` of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateKind {
    Order,
    Kds,
    Bds,
    Inventory,
    /// Reserved: payments are recorded by `order.paid` on the order for now.
    Payment,
    /// The deny-list of revoked devices (`device.rs`); admins only. From rules `V2`:
    /// under `V1` it stays unknown, as it was when those entries were decided.
    Device,
    /// The store's own records: the archive mark (`archive.rs`); admins only. From rules
    /// `V4`.
    Store,
}

/// Every `aggregateType` string of rules `V1`, for messages.
const AGGREGATE_TYPES_V1: [&str; 5] = ["order", "kds", "bds", "inventory", "payment"];
/// Every `aggregateType` string of rules `V2` and `V3`.
const AGGREGATE_TYPES_V2: [&str; 6] = ["order", "kds", "bds", "inventory", "payment", "device"];
/// Every `aggregateType` string from rules `V4` on.
const AGGREGATE_TYPES_V4: [&str; 7] = [
    "order",
    "kds",
    "bds",
    "inventory",
    "payment",
    "device",
    "store",
];

impl AggregateKind {
    /// The aggregate type named `s`, if the hub knows it under `rules` (names are
    /// case-sensitive).
    pub fn parse(s: &str, rules: Rules) -> Option<Self> {
        match s {
            "order" => Some(Self::Order),
            "kds" => Some(Self::Kds),
            "bds" => Some(Self::Bds),
            "inventory" => Some(Self::Inventory),
            "payment" => Some(Self::Payment),
            "device" if rules >= Rules::V2 => Some(Self::Device),
            "store" if rules >= Rules::V4 => Some(Self::Store),
            _ => None,
        }
    }

    /// Every `aggregateType` string `rules` knows, for messages.
    pub fn names(rules: Rules) -> &'static [&'static str] {
        if rules >= Rules::V4 {
            &AGGREGATE_TYPES_V4
        } else if rules >= Rules::V2 {
            &AGGREGATE_TYPES_V2
        } else {
            &AGGREGATE_TYPES_V1
        }
    }

    /// The event types of this aggregate type, with their parsed form.
    pub fn event_types(self) -> &'static [(&'static str, EventKind)] {
        use EventKind::*;
        match self {
            Self::Order => &[
                ("order.created", OrderCreated),
                ("order.updated", OrderUpdated),
                ("order.parked", OrderParked),
                ("order.reparked", OrderReparked),
                ("order.paid", OrderPaid),
                ("order.cancelled", OrderCancelled),
                ("order.locked", OrderLocked),
                ("order.lock.renew", OrderLockRenew),
                ("order.lock.released", OrderLockReleased),
            ],
            Self::Kds => &[
                ("kds.ticket.created", KdsTicketCreated),
                ("kds.ticket.ack", KdsTicketAck),
                ("kds.ticket.done", KdsTicketDone),
            ],
            Self::Bds => &[
                ("bds.ticket.created", BdsTicketCreated),
                ("bds.ticket.done", BdsTicketDone),
            ],
            Self::Inventory => &[("inventory.adjusted", InventoryAdjusted)],
            Self::Payment => &[],
            Self::Device => &[("device.revoked", DeviceRevoked)],
            Self::Store => &[("store.archived", StoreArchived)],
        }
    }

    /// The event kind named `event_type`, if it belongs to this aggregate type.
    pub fn event_kind(self, event_type: &str) -> Option<EventKind> {
        self.event_types()
            .iter()
            .find(|(name, _)| *name == event_type)
            .map(|(_, kind)| *kind)
    }
}

/// Whether an event of this `aggregateType` and `type` carries payment details, which
/// kitchen and bar screens do not get (hubs stream it to them redacted): `order.paid`, and
/// anything of the `payment` aggregate type, reserved for payments.
pub fn carries_payments(aggregate_type: &str, event_type: &str) -> bool {
    match AggregateKind::parse(aggregate_type, Rules::CURRENT) {
        Some(AggregateKind::Payment) => true,
        Some(aggregate) => aggregate
            .event_kind(event_type)
            .is_some_and(EventKind::carries_payments),
        None => false,
    }
}

/// A known event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    OrderCreated,
    OrderUpdated,
    OrderParked,
    OrderReparked,
    OrderPaid,
    OrderCancelled,
    OrderLocked,
    OrderLockRenew,
    OrderLockReleased,
    KdsTicketCreated,
    KdsTicketAck,
    KdsTicketDone,
    BdsTicketCreated,
    BdsTicketDone,
    InventoryAdjusted,
    DeviceRevoked,
    StoreArchived,
}

impl EventKind {
    /// Whether this type's payload holds payment details (methods, amounts, totals).
    pub fn carries_payments(self) -> bool {
        matches!(self, Self::OrderPaid)
    }
}
