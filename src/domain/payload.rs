//! Payload validation: turns an event's JSON payload into a typed command, or a
//! `MALFORMED_PAYLOAD` rejection that names the offending field.
//!
//! The payload is read field by field (rather than with `serde_json::from_value`) so that
//! every message can name the exact field path (`items[1].unitPrice`) and so that the
//! rules about numbers are explicit: integers must be JSON integers that fit `i64` (money
//! is in minor units, so `12.5` is malformed), and every amount has a named bound.
//! An explicit `null` counts as an absent optional field. The bounds come from the rules
//! version deciding the event (`rules.rs`): under `V1` unknown extra fields were ignored;
//! from `V2` on they are refused by name, since the log would otherwise keep bytes no rule
//! reads (a device could park megabytes in a field nobody knows).

use serde_json::{Map, Value};

use super::archive::Mark;
use super::device::Revoke;
use super::event::Event;
use super::inventory::{Adjustment, INVENTORY_DELTA_ABS_MAX};
use super::kind::EventKind;
use super::order::{
    LineItem, Modifier, OrderCommand, OrderDraft, OrderEdit, Payment, PaymentClaim,
};
use super::outcome::{RejectCode, Rejection};
use super::rules::{Bounds, RETAIN_DAYS_MAX, RETAIN_DAYS_MIN, Rules};
use super::ticket::{TicketCommand, TicketDraft, TicketItem, TicketKind};

/// Largest absolute money amount in one field, in minor units (10^12 cents = 10^10 units).
pub const MONEY_ABS_MAX_MINOR: i64 = 1_000_000_000_000;
/// Largest quantity of one line or ticket item, in units.
pub const QUANTITY_MAX: i64 = 10_000;
/// Largest guest count of one order.
pub const GUEST_COUNT_MAX: i64 = 10_000;

/// A validated payload, ready for the rules of its aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Order(OrderCommand),
    Ticket(TicketKind, TicketCommand),
    Inventory(Adjustment),
    Revoke(Revoke),
    Archive(Mark),
}

/// Validates the payload of `event`, whose type has already been resolved to `kind`.
pub fn parse(kind: EventKind, event: &Event, rules: Rules) -> Result<Command, Rejection> {
    let b = rules.bounds();
    let p = Obj::root(&event.payload, b);
    if event.redacted {
        return redacted(kind, &event.event_type, &p);
    }
    p.known(&event.event_type, fields_of(kind))?;
    let ticket_follow_up = |p: &Obj| p.opt_str("orderId", b.id_bytes, true);
    Ok(match kind {
        EventKind::OrderCreated => Command::Order(OrderCommand::Created(OrderDraft {
            table_number: p.opt_str("tableNumber", b.name_bytes, false)?,
            guest_count: p.opt_int("guestCount", 0, GUEST_COUNT_MAX)?,
            currency: currency(&p)?,
            items: line_items(&p)?.unwrap_or_default(),
        })),
        EventKind::OrderUpdated => Command::Order(OrderCommand::Updated(OrderEdit {
            items: line_items(&p)?,
            table_number: p.opt_str("tableNumber", b.name_bytes, false)?,
            guest_count: p.opt_int("guestCount", 0, GUEST_COUNT_MAX)?,
        })),
        EventKind::OrderParked => {
            p.opt_str("reason", b.note_bytes, false)?;
            Command::Order(OrderCommand::Parked)
        }
        EventKind::OrderReparked => Command::Order(OrderCommand::Reparked),
        EventKind::OrderPaid => Command::Order(OrderCommand::Paid(Some(payment_claim(&p)?))),
        EventKind::OrderCancelled => {
            p.opt_str("reason", b.note_bytes, false)?;
            Command::Order(OrderCommand::Cancelled)
        }
        EventKind::OrderLocked => Command::Order(OrderCommand::Locked { ttl_ms: ttl(&p)? }),
        EventKind::OrderLockRenew => Command::Order(OrderCommand::LockRenew { ttl_ms: ttl(&p)? }),
        EventKind::OrderLockReleased => Command::Order(OrderCommand::LockReleased),
        EventKind::KdsTicketCreated => {
            Command::Ticket(TicketKind::Kds, TicketCommand::Created(ticket_draft(&p)?))
        }
        EventKind::BdsTicketCreated => {
            Command::Ticket(TicketKind::Bds, TicketCommand::Created(ticket_draft(&p)?))
        }
        EventKind::KdsTicketAck => Command::Ticket(
            TicketKind::Kds,
            TicketCommand::Ack {
                order_id: ticket_follow_up(&p)?,
            },
        ),
        EventKind::KdsTicketDone => Command::Ticket(
            TicketKind::Kds,
            TicketCommand::Done {
                order_id: ticket_follow_up(&p)?,
            },
        ),
        EventKind::BdsTicketDone => Command::Ticket(
            TicketKind::Bds,
            TicketCommand::Done {
                order_id: ticket_follow_up(&p)?,
            },
        ),
        EventKind::InventoryAdjusted => Command::Inventory(adjustment(&p, &event.aggregate_id)?),
        EventKind::DeviceRevoked => Command::Revoke(Revoke {
            reason: p.opt_str("reason", b.note_bytes, false)?,
        }),
        EventKind::StoreArchived => Command::Archive(Mark {
            through_seq: p.req_int("throughSeq", 1, i64::MAX)?.unsigned_abs(),
            retain_days: p
                .req_int("retainDays", RETAIN_DAYS_MIN as i64, RETAIN_DAYS_MAX as i64)?
                .unsigned_abs(),
        }),
    })
}

/// A redacted event (`Event::redacted`, applied only by states that follow redacted
/// streams): a hub emptied the payload of a payment-carrying type, so there is nothing left
/// to validate and the command says only what happened.
fn redacted(kind: EventKind, event_type: &str, p: &Obj) -> Result<Command, Rejection> {
    if let Some(field) = p.map.keys().next() {
        return Err(Rejection::new(
            RejectCode::MalformedPayload,
            format!("a redacted {event_type} has an empty payload; this one has {field:?}"),
        ));
    }
    match kind {
        EventKind::OrderPaid => Ok(Command::Order(OrderCommand::Paid(None))),
        _ => Err(Rejection::new(
            RejectCode::MalformedEvent,
            format!("{event_type} carries no payment details, so no hub redacts it"),
        )),
    }
}

fn currency(p: &Obj) -> Result<Option<String>, Rejection> {
    let Some(c) = p.opt_str("currency", 3, true)? else {
        return Ok(None);
    };
    if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(p.malformed(
            "currency",
            format!("must be a 3-letter currency code, got {c:?}"),
        ));
    }
    // Stored upper-cased so that "usd" and "USD" compare equal at payment time.
    Ok(Some(c.to_ascii_uppercase()))
}

fn line_items(p: &Obj) -> Result<Option<Vec<LineItem>>, Rejection> {
    let b = p.bounds;
    let Some(rows) = p.opt_objects("items", b.line_items)? else {
        return Ok(None);
    };
    let mut items: Vec<LineItem> = Vec::with_capacity(rows.len());
    let mut modifiers_seen = 0usize;
    for row in rows {
        row.known_fields(&ITEM_FIELDS)?;
        let id = row.req_str("id", b.id_bytes, true)?;
        // Line ids address lines in later edits and on tickets, so they must be unique.
        if items.iter().any(|it| it.id == id) {
            return Err(row.malformed("id", format!("duplicates line id {id:?}")));
        }
        let modifier_rows = row
            .opt_objects("modifiers", b.modifiers_per_item)?
            .unwrap_or_default();
        modifiers_seen += modifier_rows.len();
        if modifiers_seen > b.modifiers_per_event {
            return Err(row.malformed(
                "modifiers",
                format!(
                    "brings the event's modifiers to {modifiers_seen}; at most {} are allowed \
                     over all its items",
                    b.modifiers_per_event
                ),
            ));
        }
        let modifiers = modifier_rows
            .into_iter()
            .map(|m| {
                m.known_fields(&MODIFIER_FIELDS)?;
                Ok(Modifier {
                    id: m.opt_str("id", b.id_bytes, false)?,
                    name: m.req_str("name", b.name_bytes, false)?,
                    price: m.req_int("price", 0, MONEY_ABS_MAX_MINOR)?,
                })
            })
            .collect::<Result<Vec<_>, Rejection>>()?;
        items.push(LineItem {
            id,
            sku: row.req_str("sku", b.id_bytes, true)?,
            name: row.req_str("name", b.name_bytes, false)?,
            unit_price: row.req_int("unitPrice", 0, MONEY_ABS_MAX_MINOR)?,
            quantity: row.req_int("quantity", 1, QUANTITY_MAX)?,
            category: row.opt_str("category", b.name_bytes, false)?,
            modifiers,
        });
    }
    Ok(Some(items))
}

fn payment_claim(p: &Obj) -> Result<PaymentClaim, Rejection> {
    let b = p.bounds;
    let rows = p.opt_objects("payments", b.payments)?.unwrap_or_default();
    if rows.is_empty() {
        return Err(p.malformed("payments", "must list at least one payment".into()));
    }
    let payments = rows
        .into_iter()
        .map(|r| {
            r.known_fields(&PAYMENT_FIELDS)?;
            Ok(Payment {
                method: r.req_str("method", b.id_bytes, true)?,
                amount: r.req_int("amount", 1, MONEY_ABS_MAX_MINOR)?,
            })
        })
        .collect::<Result<Vec<_>, Rejection>>()?;
    Ok(PaymentClaim {
        payments,
        total: p.opt_int("total", -MONEY_ABS_MAX_MINOR, MONEY_ABS_MAX_MINOR)?,
        currency: currency(p)?,
    })
}

/// A lock ttl: any non-negative integer is accepted here and clamped later by the lock
/// rules, so a device asking for too long or too short a lease still gets one.
fn ttl(p: &Obj) -> Result<Option<u64>, Rejection> {
    Ok(p.opt_int("ttlMs", 0, i64::MAX)?.map(|ms| ms.unsigned_abs()))
}

fn ticket_draft(p: &Obj) -> Result<TicketDraft, Rejection> {
    let b = p.bounds;
    let rows = p.opt_objects("items", b.ticket_items)?.unwrap_or_default();
    // A ticket with nothing on it has nothing for the station to make.
    if rows.is_empty() {
        return Err(p.malformed("items", "must list at least one item".into()));
    }
    let items = rows
        .into_iter()
        .map(|r| {
            r.known_fields(&TICKET_ITEM_FIELDS)?;
            Ok(TicketItem {
                sku: r.opt_str("sku", b.id_bytes, false)?,
                name: r.req_str("name", b.name_bytes, false)?,
                quantity: r.req_int("quantity", 1, QUANTITY_MAX)?,
                notes: r.opt_str("notes", b.note_bytes, false)?,
            })
        })
        .collect::<Result<Vec<_>, Rejection>>()?;
    Ok(TicketDraft {
        order_id: p.req_str("orderId", b.id_bytes, true)?,
        station: p.opt_str("station", b.name_bytes, false)?,
        items,
    })
}

fn adjustment(p: &Obj, aggregate_id: &str) -> Result<Adjustment, Rejection> {
    let sku = p.req_str("sku", p.bounds.id_bytes, true)?;
    if sku != aggregate_id {
        return Err(p.malformed(
            "sku",
            format!("must equal the aggregateId {aggregate_id:?}, got {sku:?}"),
        ));
    }
    let delta = p.req_int("delta", -INVENTORY_DELTA_ABS_MAX, INVENTORY_DELTA_ABS_MAX)?;
    if delta == 0 {
        return Err(p.malformed("delta", "must not be zero".into()));
    }
    p.opt_str("reason", p.bounds.note_bytes, false)?;
    Ok(Adjustment { sku, delta })
}

/// A JSON object being read, with its path from the payload root for messages.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
    bounds: &'static Bounds,
}

impl<'a> Obj<'a> {
    fn root(map: &'a Map<String, Value>, bounds: &'static Bounds) -> Self {
        Self {
            map,
            path: String::new(),
            bounds,
        }
    }

    /// The payload of a `kind` event, whose fields are `fields`: any other is refused when
    /// the rules refuse unknown fields.
    fn known(&self, event_type: &str, fields: &[&str]) -> Result<(), Rejection> {
        self.unknown_field(fields).map_or(Ok(()), |key| {
            Err(self.malformed(
                key,
                format!(
                    "is not a field of {event_type} (it has {}); unknown fields are refused",
                    list_or_none(fields)
                ),
            ))
        })
    }

    /// An object in a list (a line item, a modifier, …) whose fields are `fields`.
    fn known_fields(&self, fields: &[&str]) -> Result<(), Rejection> {
        self.unknown_field(fields).map_or(Ok(()), |key| {
            Err(self.malformed(
                key,
                format!(
                    "is not a known field here (known: {}); unknown fields are refused",
                    list_or_none(fields)
                ),
            ))
        })
    }

    /// The first key, in the payload's own order, that is not one of `fields`, if the
    /// rules refuse unknown fields.
    fn unknown_field(&self, fields: &[&str]) -> Option<&'a str> {
        if !self.bounds.refuse_unknown_fields {
            return None;
        }
        self.map
            .keys()
            .map(String::as_str)
            .find(|key| !fields.contains(key))
    }

    fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn malformed(&self, key: &str, problem: String) -> Rejection {
        Rejection::new(
            RejectCode::MalformedPayload,
            format!("payload field {} {problem}", self.field(key)),
        )
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn opt_str(
        &self,
        key: &str,
        max_bytes: usize,
        nonempty: bool,
    ) -> Result<Option<String>, Rejection> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let Value::String(s) = v else {
            return Err(self.malformed(key, format!("must be a string, got {}", kind_of(v))));
        };
        if nonempty && s.is_empty() {
            return Err(self.malformed(key, "must not be empty".into()));
        }
        if s.len() > max_bytes {
            return Err(self.malformed(
                key,
                format!("is {} bytes long; at most {max_bytes} are allowed", s.len()),
            ));
        }
        Ok(Some(s.clone()))
    }

    fn req_str(&self, key: &str, max_bytes: usize, nonempty: bool) -> Result<String, Rejection> {
        self.opt_str(key, max_bytes, nonempty)?
            .ok_or_else(|| self.malformed(key, "is missing".into()))
    }

    fn opt_int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, Rejection> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let Value::Number(n) = v else {
            return Err(self.malformed(key, format!("must be an integer, got {}", kind_of(v))));
        };
        let Some(i) = n.as_i64() else {
            let problem = if n.is_f64() {
                format!("must be an integer (amounts are in minor units), got {n}")
            } else {
                format!("is out of range: {n} does not fit a 64-bit signed integer")
            };
            return Err(self.malformed(key, problem));
        };
        if i < min || i > max {
            return Err(self.malformed(key, format!("must be between {min} and {max}, got {i}")));
        }
        Ok(Some(i))
    }

    fn req_int(&self, key: &str, min: i64, max: i64) -> Result<i64, Rejection> {
        self.opt_int(key, min, max)?
            .ok_or_else(|| self.malformed(key, "is missing".into()))
    }

    /// An optional array of objects, each returned with its indexed path.
    fn opt_objects(&self, key: &str, max_len: usize) -> Result<Option<Vec<Obj<'a>>>, Rejection> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let Value::Array(rows) = v else {
            return Err(self.malformed(key, format!("must be an array, got {}", kind_of(v))));
        };
        if rows.len() > max_len {
            return Err(self.malformed(
                key,
                format!("has {} entries; at most {max_len} are allowed", rows.len()),
            ));
        }
        let base = self.field(key);
        rows.iter()
            .enumerate()
            .map(|(i, row)| match row {
                Value::Object(map) => Ok(Obj {
                    map,
                    path: format!("{base}[{i}]"),
                    bounds: self.bounds,
                }),
                other => Err(Rejection::new(
                    RejectCode::MalformedPayload,
                    format!(
                        "payload field {base}[{i}] must be an object, got {}",
                        kind_of(other)
                    ),
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// The payload fields each event type defines (all optional unless its parser says so).
fn fields_of(kind: EventKind) -> &'static [&'static str] {
    match kind {
        EventKind::OrderCreated => &["tableNumber", "guestCount", "currency", "items"],
        EventKind::OrderUpdated => &["items", "tableNumber", "guestCount"],
        EventKind::OrderParked | EventKind::OrderCancelled => &["reason"],
        EventKind::OrderReparked | EventKind::OrderLockReleased => &[],
        EventKind::OrderPaid => &["payments", "total", "currency"],
        EventKind::OrderLocked | EventKind::OrderLockRenew => &["ttlMs"],
        EventKind::KdsTicketCreated | EventKind::BdsTicketCreated => {
            &["orderId", "station", "items"]
        }
        EventKind::KdsTicketAck | EventKind::KdsTicketDone | EventKind::BdsTicketDone => {
            &["orderId"]
        }
        EventKind::InventoryAdjusted => &["sku", "delta", "reason"],
        EventKind::DeviceRevoked => &["reason"],
        EventKind::StoreArchived => &["throughSeq", "retainDays"],
    }
}

const ITEM_FIELDS: [&str; 7] = [
    "id",
    "sku",
    "name",
    "unitPrice",
    "quantity",
    "category",
    "modifiers",
];
const MODIFIER_FIELDS: [&str; 3] = ["id", "name", "price"];
const PAYMENT_FIELDS: [&str; 2] = ["method", "amount"];
const TICKET_ITEM_FIELDS: [&str; 4] = ["sku", "name", "quantity", "notes"];

fn list_or_none(fields: &[&str]) -> String {
    if fields.is_empty() {
        "no fields".to_owned()
    } else {
        fields.join(", ")
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
