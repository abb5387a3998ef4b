//! KDS (kitchen) and BDS (bar) tickets: created → acked → done (bar: created → done),
//! each linked to its order.
//!
//! A ticket is its own versioned aggregate (same version and force rules as orders), but
//! it also mirrors its status into the order's `tickets` map. That mirror write does not
//! bump the order's version or head and ignores the order's lock and lifecycle: the
//! kitchen keeps cooking while a till holds the order, and after it is paid.
//!
//! Checks on an existing ticket, in order: a create is `STALE_VERSION`; a done ticket
//! takes no more events (`TICKET_DONE`); an `orderId` in the payload must be the ticket's
//! own (`MALFORMED_PAYLOAD`: the link never changes); version or force; then the
//! transition (`TICKET_ACKED` for a second ack).

use serde::{Deserialize, Serialize};

use super::Head;
use super::apply::Ctx;
use super::order::{Order, TicketRef};
use super::outcome::{RejectCode, Rejection};
use super::version;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TicketKind {
    Kds,
    Bds,
}

impl TicketKind {
    /// How messages name a ticket of this kind.
    pub fn label(self) -> &'static str {
        match self {
            Self::Kds => "kds ticket",
            Self::Bds => "bds ticket",
        }
    }

    /// `kds` or `bds`, as in `aggregateType`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kds => "kds",
            Self::Bds => "bds",
        }
    }

    fn create_type(self) -> &'static str {
        match self {
            Self::Kds => "kds.ticket.created",
            Self::Bds => "bds.ticket.created",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TicketStatus {
    Created,
    Acked,
    Done,
}

impl TicketStatus {
    /// A done ticket takes no more events (`TICKET_DONE`).
    pub fn is_done(self) -> bool {
        self == Self::Done
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Acked => "acked",
            Self::Done => "done",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketItem {
    pub sku: Option<String>,
    pub name: String,
    pub quantity: i64,
    pub notes: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub kind: TicketKind,
    pub id: String,
    pub order_id: String,
    pub station: Option<String>,
    pub items: Vec<TicketItem>,
    pub status: TicketStatus,
    pub head: Head,
    /// Hub time of its `*.ticket.created` (ms since the Unix epoch; 0 for a ticket moved
    /// over from data format 1). When it last changed (and, done, when it was done) is
    /// `head.hub_time_ms`.
    pub created_ms: u64,
}

/// `*.ticket.created`'s validated payload.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketDraft {
    pub order_id: String,
    pub station: Option<String>,
    pub items: Vec<TicketItem>,
}

/// A ticket event with its validated payload. Ack and done may repeat the `orderId`,
/// which must then be the ticket's.
#[derive(Debug, Clone, PartialEq)]
pub enum TicketCommand {
    Created(TicketDraft),
    Ack { order_id: Option<String> },
    Done { order_id: Option<String> },
}

impl TicketCommand {
    /// The order this event names: the draft's for a create, the payload's otherwise.
    pub fn order_id(&self) -> Option<&str> {
        match self {
            Self::Created(d) => Some(&d.order_id),
            Self::Ack { order_id } | Self::Done { order_id } => order_id.as_deref(),
        }
    }
}

/// The ticket after `cmd`, plus its order with the updated ticket mirror (when the order
/// exists), or why `cmd` is rejected. `order` is the order the ticket links to: the
/// draft's `orderId` for a create, the existing ticket's otherwise.
pub(crate) fn decide(
    kind: TicketKind,
    existing: Option<Ticket>,
    order: Option<Order>,
    cmd: TicketCommand,
    ctx: &Ctx,
) -> Result<(Ticket, Option<Order>), Rejection> {
    let ev = ctx.event;
    let id = ev.aggregate_id.as_str();
    let what = kind.label();
    let ticket = match (existing, cmd) {
        (None, TicketCommand::Created(draft)) => {
            let head = version::create(ctx, what)?;
            if order.is_none() {
                return Err(Rejection::new(
                    RejectCode::OrderNotFound,
                    format!(
                        "{what} {id} names order {}, which does not exist (an order closed \
                         more than {} events ago has left the live state)",
                        draft.order_id,
                        super::rules::CLOSED_KEPT_EVENTS
                    ),
                ));
            }
            Ticket {
                kind,
                id: id.to_owned(),
                order_id: draft.order_id,
                station: draft.station,
                items: draft.items,
                status: TicketStatus::Created,
                head,
                created_ms: ctx.hub_time_ms,
            }
        }
        (None, _) => return Err(version::not_found(ctx, what, kind.create_type())),
        (Some(t), TicketCommand::Created(_)) => {
            return Err(version::already_exists(&t.head, ctx, what));
        }
        (Some(mut t), cmd) => {
            if t.status == TicketStatus::Done {
                return Err(Rejection::new(
                    RejectCode::TicketDone,
                    format!(
                        "{what} {id} is done; it takes no more events ({} refused)",
                        ev.event_type
                    ),
                ));
            }
            if let Some(named) = cmd.order_id()
                && named != t.order_id
            {
                return Err(Rejection::new(
                    RejectCode::MalformedPayload,
                    format!(
                        "payload field orderId is {named:?}, but {what} {id} belongs to order {:?}",
                        t.order_id
                    ),
                ));
            }
            t.head = version::advance(&t.head, ctx, what)?;
            t.status = match (cmd, t.status) {
                (TicketCommand::Ack { .. }, TicketStatus::Created) => TicketStatus::Acked,
                (TicketCommand::Ack { .. }, _) => {
                    return Err(Rejection::new(
                        RejectCode::TicketAcked,
                        format!("{what} {id} is already acknowledged"),
                    ));
                }
                // The bar skips ack, so a bds ticket is never Acked: Created → Done.
                (TicketCommand::Done { .. }, _) => TicketStatus::Done,
                (TicketCommand::Created(_), _) => {
                    return Err(version::already_exists(&t.head, ctx, what));
                }
            };
            t
        }
    };
    let order = order.map(|mut o| {
        o.upsert_ticket(TicketRef {
            kind,
            id: ticket.id.clone(),
            status: ticket.status,
        });
        o
    });
    Ok((ticket, order))
}
