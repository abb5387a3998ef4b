//! The Order read model and its lifecycle: created → updated/parked/reparked → paid or
//! cancelled. Money is in minor units (cents) as `i64`.
//!
//! Checks on an existing order, in this order (the first broken rule decides the code):
//! 1. a create on an existing order is `STALE_VERSION` (it can only be a late copy);
//! 2. a paid or cancelled order takes no more events at all: `ORDER_CLOSED`;
//! 3. lock: renew/release are for the holder only (`NOT_LOCK_HOLDER`, `LOCK_EXPIRED`);
//!    any other write by a device other than the holder of an unexpired lock is `LOCKED`
//!    unless forced;
//! 4. version (`STALE_VERSION`, `VERSION_GAP`) or, when forced, `SUPERSEDED`;
//! 5. the transition itself: parked orders must be recalled before edits or payment
//!    (`ORDER_PARKED`), only parked orders can be recalled (`ORDER_NOT_PARKED`),
//!    payments must add up (`PAYMENT_MISMATCH`), totals must fit (`OUT_OF_RANGE`).
//!
//! Force skips only the `LOCKED` check and the version comparison: lifecycle rules and
//! payload validation apply to forced events too.

use serde::{Deserialize, Serialize};

use super::Head;
use super::apply::Ctx;
use super::lock::{self, Lock};
use super::outcome::{RejectCode, Rejection};
use super::ticket::{TicketKind, TicketStatus};
use super::version;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OrderStatus {
    Active,
    Parked,
    Paid,
    Cancelled,
}

impl OrderStatus {
    /// Paid and cancelled orders are closed: they take no more events.
    pub fn is_closed(self) -> bool {
        matches!(self, Self::Paid | Self::Cancelled)
    }

    /// The status as messages name it: `active`, `parked`, `paid`, `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Parked => "parked",
            Self::Paid => "paid",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Modifier {
    pub id: Option<String>,
    pub name: String,
    /// Added to the unit price, per unit.
    pub price: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    pub id: String,
    pub sku: String,
    pub name: String,
    pub unit_price: i64,
    pub quantity: i64,
    pub category: Option<String>,
    pub modifiers: Vec<Modifier>,
}

impl LineItem {
    /// (unitPrice + Σ modifier prices) × quantity, or `None` on overflow.
    pub fn line_total(&self) -> Option<i64> {
        let unit = self
            .modifiers
            .iter()
            .try_fold(self.unit_price, |acc, m| acc.checked_add(m.price))?;
        unit.checked_mul(self.quantity)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub method: String,
    pub amount: i64,
}

/// A ticket as the order sees it, so front of house knows what the kitchen has done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketRef {
    pub kind: TicketKind,
    pub id: String,
    pub status: TicketStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: String,
    pub status: OrderStatus,
    pub table_number: Option<String>,
    pub guest_count: Option<i64>,
    pub currency: Option<String>,
    pub items: Vec<LineItem>,
    /// Sum over items of (unitPrice + modifier prices) × quantity.
    pub total: i64,
    /// Set when the order is paid.
    pub payments: Vec<Payment>,
    pub head: Head,
    pub lock: Option<Lock>,
    /// Tickets raised for this order, sorted by (kind, id): a kitchen and a bar ticket
    /// may share an id without overwriting each other.
    pub tickets: Vec<TicketRef>,
    /// Hub time of the `order.created` (ms since the Unix epoch; 0 for an order moved over
    /// from data format 1). When it last changed is `head.hub_time_ms`.
    pub created_ms: u64,
}

impl Order {
    /// This order's view of one of its tickets.
    pub fn ticket(&self, kind: TicketKind, id: &str) -> Option<&TicketRef> {
        self.tickets.iter().find(|t| t.kind == kind && t.id == id)
    }

    /// Records a ticket's status, keeping `tickets` sorted by (kind, id).
    pub fn upsert_ticket(&mut self, ticket: TicketRef) {
        let key = |t: &TicketRef| (t.kind, t.id.clone());
        match self.tickets.binary_search_by_key(&key(&ticket), key) {
            Ok(i) => self.tickets[i] = ticket,
            Err(i) => self.tickets.insert(i, ticket),
        }
    }
}

/// `order.created`'s validated payload.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderDraft {
    pub table_number: Option<String>,
    pub guest_count: Option<i64>,
    pub currency: Option<String>,
    pub items: Vec<LineItem>,
}

/// `order.updated`'s validated payload: absent fields stay as they are; `items`, when
/// given, replaces the whole list.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderEdit {
    pub items: Option<Vec<LineItem>>,
    pub table_number: Option<String>,
    pub guest_count: Option<i64>,
}

/// `order.paid`'s validated payload.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentClaim {
    pub payments: Vec<Payment>,
    /// The total the till believes it charged, checked against the order's.
    pub total: Option<i64>,
    pub currency: Option<String>,
}

/// An order event with its validated payload.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    Created(OrderDraft),
    Updated(OrderEdit),
    Parked,
    Reparked,
    /// `None`: a redacted `order.paid` (`Event::redacted`), as a kitchen or bar screen
    /// follows it: the hub checked the payments; this reader learns only that it is paid.
    Paid(Option<PaymentClaim>),
    Cancelled,
    Locked {
        ttl_ms: Option<u64>,
    },
    LockRenew {
        ttl_ms: Option<u64>,
    },
    LockReleased,
}

/// The order after `cmd`, or why `cmd` is rejected. `existing` is the order named by the
/// event's aggregateId, if any.
pub(crate) fn decide(
    existing: Option<Order>,
    cmd: OrderCommand,
    ctx: &Ctx,
) -> Result<Order, Rejection> {
    let ev = ctx.event;
    let id = ev.aggregate_id.as_str();
    let device = ev.actor.device_id.as_str();
    let Some(mut order) = existing else {
        return match cmd {
            OrderCommand::Created(draft) => create(draft, ctx),
            _ => Err(version::not_found(ctx, "order", "order.created")),
        };
    };
    if matches!(cmd, OrderCommand::Created(_)) {
        return Err(version::already_exists(&order.head, ctx, "order"));
    }
    if order.status.is_closed() {
        return Err(Rejection::new(
            RejectCode::OrderClosed,
            format!(
                "order {id} is {}; it takes no more events ({} refused)",
                order.status.as_str(),
                ev.event_type
            ),
        ));
    }
    match cmd {
        OrderCommand::LockRenew { .. } => {
            lock::check_renew(id, order.lock.as_ref(), device, ctx.hub_time_ms)?
        }
        OrderCommand::LockReleased => lock::check_release(id, order.lock.as_ref(), device)?,
        _ if ev.force => {}
        _ => lock::check_free_for(id, order.lock.as_ref(), device, ctx.hub_time_ms)?,
    }
    order.head = version::advance(&order.head, ctx, "order")?;

    match cmd {
        // Handled above; kept so the match stays exhaustive without a wildcard.
        OrderCommand::Created(_) => return Err(version::already_exists(&order.head, ctx, "order")),
        OrderCommand::Updated(edit) => {
            require_active(&order, ctx)?;
            if let Some(items) = edit.items {
                order.total = total_of(id, &items)?;
                order.items = items;
            }
            if edit.table_number.is_some() {
                order.table_number = edit.table_number;
            }
            if edit.guest_count.is_some() {
                order.guest_count = edit.guest_count;
            }
        }
        OrderCommand::Parked => {
            require_active(&order, ctx)?;
            order.status = OrderStatus::Parked;
        }
        OrderCommand::Reparked => {
            if order.status != OrderStatus::Parked {
                return Err(Rejection::new(
                    RejectCode::OrderNotParked,
                    format!(
                        "order {id} is {}, not parked; there is nothing to recall",
                        order.status.as_str()
                    ),
                ));
            }
            order.status = OrderStatus::Active;
        }
        OrderCommand::Paid(claim) => {
            require_active(&order, ctx)?;
            order.payments = match claim {
                Some(claim) => {
                    check_payment(&order, &claim)?;
                    claim.payments
                }
                None => Vec::new(),
            };
            order.status = OrderStatus::Paid;
            // A closed order takes no lock events, so a lock left on it could never be
            // released; clear it.
            order.lock = None;
        }
        OrderCommand::Cancelled => {
            order.status = OrderStatus::Cancelled;
            order.lock = None;
        }
        // Re-locking and renewing both set the expiry from now: the holder asks for `ttl`
        // more, not for `ttl` added to what is left.
        OrderCommand::Locked { ttl_ms } => {
            order.lock = Some(Lock::lease(&ev.actor, ttl_ms, ctx.hub_time_ms));
        }
        OrderCommand::LockRenew { ttl_ms } => {
            // `check_renew` proved the caller holds this lock; only its expiry moves.
            if let Some(own) = order.lock.as_mut() {
                own.expires_at_ms = ctx.hub_time_ms.saturating_add(lock::clamp_ttl(ttl_ms));
            }
        }
        OrderCommand::LockReleased => order.lock = None,
    }
    Ok(order)
}

fn create(draft: OrderDraft, ctx: &Ctx) -> Result<Order, Rejection> {
    let id = ctx.event.aggregate_id.clone();
    let head = version::create(ctx, "order")?;
    let total = total_of(&id, &draft.items)?;
    Ok(Order {
        id,
        status: OrderStatus::Active,
        table_number: draft.table_number,
        guest_count: draft.guest_count,
        currency: draft.currency,
        items: draft.items,
        total,
        payments: Vec::new(),
        head,
        lock: None,
        tickets: Vec::new(),
        created_ms: ctx.hub_time_ms,
    })
}

/// Edits and payment need an active order; a parked one must be recalled first.
fn require_active(order: &Order, ctx: &Ctx) -> Result<(), Rejection> {
    match order.status {
        OrderStatus::Active => Ok(()),
        OrderStatus::Parked => Err(Rejection::new(
            RejectCode::OrderParked,
            format!(
                "order {} is parked; recall it with order.reparked first ({} refused)",
                order.id, ctx.event.event_type
            ),
        )),
        closed => Err(Rejection::new(
            RejectCode::OrderClosed,
            format!(
                "order {} is {}; it takes no more events",
                order.id,
                closed.as_str()
            ),
        )),
    }
}

/// Σ line totals, checked: an overflow is `OUT_OF_RANGE`, never a wrapped total.
pub fn total_of(order_id: &str, items: &[LineItem]) -> Result<i64, Rejection> {
    items.iter().try_fold(0i64, |acc, item| {
        item.line_total()
            .and_then(|line| acc.checked_add(line))
            .ok_or_else(|| {
                Rejection::new(
                    RejectCode::OutOfRange,
                    format!(
                        "order {order_id}'s total overflows a 64-bit amount at line {} \
                     (unitPrice {} × quantity {})",
                        item.id, item.unit_price, item.quantity
                    ),
                )
            })
    })
}

fn check_payment(order: &Order, claim: &PaymentClaim) -> Result<(), Rejection> {
    let id = &order.id;
    let mismatch = |msg: String| Rejection::new(RejectCode::PaymentMismatch, msg);
    let paid = claim
        .payments
        .iter()
        .try_fold(0i64, |acc, p| acc.checked_add(p.amount))
        .ok_or_else(|| {
            Rejection::new(
                RejectCode::OutOfRange,
                format!("payments for order {id} overflow"),
            )
        })?;
    if let Some(claimed) = claim.total
        && claimed != order.total
    {
        return Err(mismatch(format!(
            "order {id} totals {}; the payment claims a total of {claimed}",
            order.total
        )));
    }
    if paid != order.total {
        return Err(mismatch(format!(
            "order {id} totals {}; the payments add up to {paid}",
            order.total
        )));
    }
    if let (Some(ours), Some(theirs)) = (&order.currency, &claim.currency)
        && ours != theirs
    {
        return Err(mismatch(format!(
            "order {id} is in {ours}; the payment is in {theirs}"
        )));
    }
    Ok(())
}
