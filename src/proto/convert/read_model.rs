//! Read models to their wire form (orders, tickets, stock, the menu), and the read filters
//! of the wire back to the domain's enums.

use crate::domain::inventory::Stock;
use crate::domain::order::{Order, OrderStatus};
use crate::domain::ticket::{Ticket, TicketKind, TicketStatus};
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
