//! Read models to their wire form (orders, tickets, stock, the menu), and the read filters
//! of the wire back to the domain's enums.

use crate::domain::Head;
use crate::domain::inventory::Stock;
use crate::domain::lock::Lock;
use crate::domain::order::{LineItem, Modifier, Order, OrderStatus, Payment, TicketRef};
use crate::domain::ticket::{Ticket, TicketItem, TicketKind, TicketStatus};
use crate::menu::Menu;
use crate::proto::pb;

/// A wire enum field holds a number this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value}")]
pub struct UnknownEnumValue {
    pub what: &'static str,
    pub value: i32,
}

/// A read's consistency: `true` for linearizable, `false` for a local read.
pub fn is_linearizable(consistency: i32) -> Result<bool, UnknownEnumValue> {
    match pb::Consistency::try_from(consistency) {
        Ok(pb::Consistency::Local) => Ok(false),
        Ok(pb::Consistency::Linearizable) => Ok(true),
        Err(_) => Err(UnknownEnumValue {
            what: "consistency",
            value: consistency,
        }),
    }
}

/// A GetOrder request; `linearizable` asks the node to confirm with the leader first.
pub fn get_order_request(order_id: &str, linearizable: bool) -> pb::GetOrderRequest {
    let consistency = if linearizable {
        pb::Consistency::Linearizable
    } else {
        pb::Consistency::Local
    };
    pb::GetOrderRequest {
        order_id: order_id.to_owned(),
        consistency: consistency as i32,
    }
}

/// ListOrders' status filter: `None` for every order.
pub fn order_status_filter(status: i32) -> Result<Option<OrderStatus>, UnknownEnumValue> {
    match pb::OrderStatus::try_from(status) {
        Ok(pb::OrderStatus::Unspecified) => Ok(None),
        Ok(pb::OrderStatus::Active) => Ok(Some(OrderStatus::Active)),
        Ok(pb::OrderStatus::Parked) => Ok(Some(OrderStatus::Parked)),
        Ok(pb::OrderStatus::Paid) => Ok(Some(OrderStatus::Paid)),
        Ok(pb::OrderStatus::Cancelled) => Ok(Some(OrderStatus::Cancelled)),
        Err(_) => Err(UnknownEnumValue {
            what: "order status",
            value: status,
        }),
    }
}

/// ListTickets' kind filter: `None` for both kinds.
pub fn ticket_kind_filter(kind: i32) -> Result<Option<TicketKind>, UnknownEnumValue> {
    match pb::TicketKind::try_from(kind) {
        Ok(pb::TicketKind::Unspecified) => Ok(None),
        Ok(pb::TicketKind::Kds) => Ok(Some(TicketKind::Kds)),
        Ok(pb::TicketKind::Bds) => Ok(Some(TicketKind::Bds)),
        Err(_) => Err(UnknownEnumValue {
            what: "ticket kind",
            value: kind,
        }),
    }
}

/// ListTickets' status filter: `None` for every status.
pub fn ticket_status_filter(status: i32) -> Result<Option<TicketStatus>, UnknownEnumValue> {
    match pb::TicketStatus::try_from(status) {
        Ok(pb::TicketStatus::Unspecified) => Ok(None),
        Ok(pb::TicketStatus::Created) => Ok(Some(TicketStatus::Created)),
        Ok(pb::TicketStatus::Acked) => Ok(Some(TicketStatus::Acked)),
        Ok(pb::TicketStatus::Done) => Ok(Some(TicketStatus::Done)),
        Err(_) => Err(UnknownEnumValue {
            what: "ticket status",
            value: status,
        }),
    }
}

pub fn order_status(status: OrderStatus) -> pb::OrderStatus {
    match status {
        OrderStatus::Active => pb::OrderStatus::Active,
        OrderStatus::Parked => pb::OrderStatus::Parked,
        OrderStatus::Paid => pb::OrderStatus::Paid,
        OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
    }
}

pub fn ticket_kind(kind: TicketKind) -> pb::TicketKind {
    match kind {
        TicketKind::Kds => pb::TicketKind::Kds,
        TicketKind::Bds => pb::TicketKind::Bds,
    }
}

pub fn ticket_status(status: TicketStatus) -> pb::TicketStatus {
    match status {
        TicketStatus::Created => pb::TicketStatus::Created,
        TicketStatus::Acked => pb::TicketStatus::Acked,
        TicketStatus::Done => pb::TicketStatus::Done,
    }
}

pub fn order(order: Order) -> pb::Order {
    pb::Order {
        id: order.id,
        status: order_status(order.status) as i32,
        table_number: order.table_number.unwrap_or_default(),
        guest_count: order.guest_count.unwrap_or_default(),
        currency: order.currency.unwrap_or_default(),
        items: order
            .items
            .into_iter()
            .map(|item| pb::LineItem {
                id: item.id,
                sku: item.sku,
                name: item.name,
                unit_price: item.unit_price,
                quantity: item.quantity,
                category: item.category.unwrap_or_default(),
                modifiers: item
                    .modifiers
                    .into_iter()
                    .map(|m| pb::Modifier {
                        id: m.id.unwrap_or_default(),
                        name: m.name,
                        price: m.price,
                    })
                    .collect(),
            })
            .collect(),
        total: order.total,
        payments: order
            .payments
            .into_iter()
            .map(|p| pb::Payment {
                method: p.method,
                amount: p.amount,
            })
            .collect(),
        version: order.head.version,
        lamport: order.head.lamport,
        lock: order.lock.map(|l| pb::Lock {
            holder: l.holder,
            user_id: l.user_id.unwrap_or_default(),
            expires_at_ms: l.expires_at_ms,
        }),
        tickets: order
            .tickets
            .into_iter()
            .map(|t| pb::TicketRef {
                kind: ticket_kind(t.kind) as i32,
                id: t.id,
                status: ticket_status(t.status) as i32,
            })
            .collect(),
        last_seq: order.head.seq,
        head_event_id: order.head.event_id.to_string(),
        created_at_ms: order.created_ms,
        updated_at_ms: order.head.hub_time_ms,
    }
}

pub fn ticket(ticket: Ticket) -> pb::Ticket {
    pb::Ticket {
        kind: ticket_kind(ticket.kind) as i32,
        id: ticket.id,
        order_id: ticket.order_id,
        station: ticket.station.unwrap_or_default(),
        items: ticket
            .items
            .into_iter()
            .map(|i| pb::TicketItem {
                sku: i.sku.unwrap_or_default(),
                name: i.name,
                quantity: i.quantity,
                notes: i.notes.unwrap_or_default(),
            })
            .collect(),
        status: ticket_status(ticket.status) as i32,
        version: ticket.head.version,
        lamport: ticket.head.lamport,
        last_seq: ticket.head.seq,
        head_event_id: ticket.head.event_id.to_string(),
        created_at_ms: ticket.created_ms,
        updated_at_ms: ticket.head.hub_time_ms,
    }
}

pub fn stock(stock: Stock) -> pb::Stock {
    pb::Stock {
        total: stock.total(),
        sku: stock.sku,
        increments: stock.increments.into_iter().collect(),
        decrements: stock.decrements.into_iter().collect(),
    }
}

/// A read model on the wire that cannot be the hub's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireModelError {
    #[error(transparent)]
    Enum(#[from] UnknownEnumValue),
    #[error("{what} {id:?}: head_event_id {value:?} is not a UUID")]
    EventId {
        what: &'static str,
        id: String,
        value: String,
    },
}

/// An empty wire string is an absent value (proto3 strings cannot tell them apart).
fn optional(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn head_from_pb(
    what: &'static str,
    id: &str,
    version: u64,
    lamport: u64,
    seq: u64,
    event_id: &str,
    hub_time_ms: u64,
) -> Result<Head, WireModelError> {
    let event_id = uuid::Uuid::parse_str(event_id).map_err(|_| WireModelError::EventId {
        what,
        id: id.to_owned(),
        value: event_id.to_owned(),
    })?;
    Ok(Head {
        version,
        lamport,
        event_id,
        seq,
        hub_time_ms,
    })
}

fn order_status_from_pb(status: i32) -> Result<OrderStatus, UnknownEnumValue> {
    order_status_filter(status)?.ok_or(UnknownEnumValue {
        what: "order status",
        value: status,
    })
}

fn ticket_kind_from_pb(kind: i32) -> Result<TicketKind, UnknownEnumValue> {
    ticket_kind_filter(kind)?.ok_or(UnknownEnumValue {
        what: "ticket kind",
        value: kind,
    })
}

fn ticket_status_from_pb(status: i32) -> Result<TicketStatus, UnknownEnumValue> {
    ticket_status_filter(status)?.ok_or(UnknownEnumValue {
        what: "ticket status",
        value: status,
    })
}

/// An order as a hub sent it (`order`'s inverse, but for strings the wire cannot tell
/// empty from absent).
pub fn order_from_pb(o: pb::Order) -> Result<Order, WireModelError> {
    let head = head_from_pb(
        "order",
        &o.id,
        o.version,
        o.lamport,
        o.last_seq,
        &o.head_event_id,
        o.updated_at_ms,
    )?;
    let tickets = o
        .tickets
        .into_iter()
        .map(|t| {
            Ok(TicketRef {
                kind: ticket_kind_from_pb(t.kind)?,
                id: t.id,
                status: ticket_status_from_pb(t.status)?,
            })
        })
        .collect::<Result<_, UnknownEnumValue>>()?;
    Ok(Order {
        status: order_status_from_pb(o.status)?,
        id: o.id,
        table_number: optional(o.table_number),
        guest_count: (o.guest_count != 0).then_some(o.guest_count),
        currency: optional(o.currency),
        items: o
            .items
            .into_iter()
            .map(|i| LineItem {
                id: i.id,
                sku: i.sku,
                name: i.name,
                unit_price: i.unit_price,
                quantity: i.quantity,
                category: optional(i.category),
                modifiers: i
                    .modifiers
                    .into_iter()
                    .map(|m| Modifier {
                        id: optional(m.id),
                        name: m.name,
                        price: m.price,
                    })
                    .collect(),
            })
            .collect(),
        total: o.total,
        payments: o
            .payments
            .into_iter()
            .map(|p| Payment {
                method: p.method,
                amount: p.amount,
            })
            .collect(),
        head,
        lock: o.lock.map(|l| Lock {
            holder: l.holder,
            user_id: optional(l.user_id),
            expires_at_ms: l.expires_at_ms,
        }),
        tickets,
        created_ms: o.created_at_ms,
    })
}

/// A ticket as a hub sent it (see `order_from_pb`).
pub fn ticket_from_pb(t: pb::Ticket) -> Result<Ticket, WireModelError> {
    let head = head_from_pb(
        "ticket",
        &t.id,
        t.version,
        t.lamport,
        t.last_seq,
        &t.head_event_id,
        t.updated_at_ms,
    )?;
    Ok(Ticket {
        kind: ticket_kind_from_pb(t.kind)?,
        status: ticket_status_from_pb(t.status)?,
        id: t.id,
        order_id: t.order_id,
        station: optional(t.station),
        items: t
            .items
            .into_iter()
            .map(|i| TicketItem {
                sku: optional(i.sku),
                name: i.name,
                quantity: i.quantity,
                notes: optional(i.notes),
            })
            .collect(),
        head,
        created_ms: t.created_at_ms,
    })
}

/// Stock as a hub sent it (its total is derived, so not read).
pub fn stock_from_pb(s: pb::Stock) -> Stock {
    Stock {
        sku: s.sku,
        increments: s.increments.into_iter().collect(),
        decrements: s.decrements.into_iter().collect(),
    }
}

pub fn menu(menu: &Menu) -> pb::GetMenuResponse {
    pb::GetMenuResponse {
        currency: menu.currency().to_owned(),
        name: menu.name().to_owned(),
        items: menu
            .items()
            .iter()
            .map(|item| pb::MenuItem {
                sku: item.sku.clone(),
                name: item.name.clone(),
                price: item.price,
                category: item.category.clone(),
                station: item.station.clone().unwrap_or_default(),
                modifiers: item
                    .modifiers
                    .iter()
                    .map(|m| pb::MenuModifier {
                        id: m.id.clone(),
                        name: m.name.clone(),
                        price: m.price,
                    })
                    .collect(),
            })
            .collect(),
    }
}
