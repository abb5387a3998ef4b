//! Orders and tickets as data format 1 stored them (bincode 1, which writes a struct's
//! fields in order and nothing else): without the hub times that later formats record.
//! Used only to move a hub's data dir or a device's store over (`store::format`,
//! `client::outbox`); the times they lacked come over as 0, "not recorded".

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Head;
use super::lock::Lock;
use super::order::{LineItem, Order, OrderStatus, Payment, TicketRef};
use super::ticket::{Ticket, TicketItem, TicketKind, TicketStatus};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Head1 {
    pub version: u64,
    pub lamport: u64,
    pub event_id: Uuid,
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order1 {
    pub id: String,
    pub status: OrderStatus,
    pub table_number: Option<String>,
    pub guest_count: Option<i64>,
    pub currency: Option<String>,
    pub items: Vec<LineItem>,
    pub total: i64,
    pub payments: Vec<Payment>,
    pub head: Head1,
    pub lock: Option<Lock>,
    pub tickets: Vec<TicketRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ticket1 {
    pub kind: TicketKind,
    pub id: String,
    pub order_id: String,
    pub station: Option<String>,
    pub items: Vec<TicketItem>,
    pub status: TicketStatus,
    pub head: Head1,
}

impl From<Head1> for Head {
    fn from(h: Head1) -> Self {
        Head {
            version: h.version,
            lamport: h.lamport,
            event_id: h.event_id,
            seq: h.seq,
            hub_time_ms: 0,
        }
    }
}

impl From<Order1> for Order {
    fn from(o: Order1) -> Self {
        Order {
            id: o.id,
            status: o.status,
            table_number: o.table_number,
            guest_count: o.guest_count,
            currency: o.currency,
            items: o.items,
            total: o.total,
            payments: o.payments,
            head: o.head.into(),
            lock: o.lock,
            tickets: o.tickets,
            created_ms: 0,
        }
    }
}

impl From<Ticket1> for Ticket {
    fn from(t: Ticket1) -> Self {
        Ticket {
            kind: t.kind,
            id: t.id,
            order_id: t.order_id,
            station: t.station,
            items: t.items,
            status: t.status,
            head: t.head.into(),
            created_ms: 0,
        }
    }
}

/// What format 1 kept of a head: for tests that write stores of that format.
impl From<&Head> for Head1 {
    fn from(h: &Head) -> Self {
        Head1 {
            version: h.version,
            lamport: h.lamport,
            event_id: h.event_id,
            seq: h.seq,
        }
    }
}

/// What format 1 kept of an order: for tests that write stores of that format.
impl From<&Order> for Order1 {
    fn from(o: &Order) -> Self {
        Order1 {
            id: o.id.clone(),
            status: o.status,
            table_number: o.table_number.clone(),
            guest_count: o.guest_count,
            currency: o.currency.clone(),
            items: o.items.clone(),
            total: o.total,
            payments: o.payments.clone(),
            head: (&o.head).into(),
            lock: o.lock.clone(),
            tickets: o.tickets.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Order {
        Order {
            id: "o-1".into(),
            status: OrderStatus::Active,
            table_number: Some("12".into()),
            guest_count: Some(2),
            currency: Some("EUR".into()),
            items: Vec::new(),
            total: 0,
            payments: Vec::new(),
            head: Head {
                version: 3,
                lamport: 7,
                event_id: Uuid::from_u128(9),
                seq: 41,
                hub_time_ms: 1_700_000_000_000,
            },
            lock: None,
            tickets: Vec::new(),
            created_ms: 1_699_999_999_000,
        }
    }

    #[test]
    fn a_format_1_order_comes_over_whole_with_its_times_unrecorded() {
        let current = order();
        let bytes = bincode::serialize(&Order1::from(&current)).expect("encodes");
        let moved: Order = bincode::deserialize::<Order1>(&bytes)
            .expect("decodes as format 1")
            .into();
        let mut expected = current;
        expected.head.hub_time_ms = 0;
        expected.created_ms = 0;
        assert_eq!(moved, expected);
    }

    #[test]
    fn a_format_1_order_is_not_read_as_this_formats() {
        // The current layout has two more fields: format-1 bytes end early.
        let bytes = bincode::serialize(&Order1::from(&order())).expect("encodes");
        assert!(bincode::deserialize::<Order>(&bytes).is_err());
    }
}
