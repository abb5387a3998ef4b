//! `apply`: the single entry point that decides what one event does to the state.
//!
//! Checks, in this order; the first that fails decides the outcome:
//! 1. `eventId` parses as a UUID, else `MALFORMED_EVENT`. Dedupe uses the parsed UUID, so
//!    ids differing only in letter case (or hyphenation) are the same event.
//! 2. `tenantId`/`storeId` are non-empty and equal the state's realm, else `WRONG_REALM`.
//!    This precedes dedupe so that one realm's log never answers for another's ids.
//! 3. The UUID was accepted before: `Duplicate { seq }` of that first acceptance,
//!    whatever the rest of the event says, and nothing changes.
//!    From rules `V4`, once the store has an archive mark: a UUIDv7 made at or before the
//!    retention horizon, else `EVENT_BEYOND_RETENTION` (`archive.rs` says why this is what
//!    makes deleting old history safe for dedupe).
//! 4. The rest of the envelope, else `MALFORMED_EVENT`: `redacted` unset unless the state
//!    follows redacted streams (`State::follows_redacted`), aggregateId non-empty and at most
//!    the rules' `id_bytes`, version ≥ 1, actor.deviceId and clock.deviceId non-empty and
//!    bounded, actor.userId bounded, `at` RFC 3339, `type` non-empty.
//!    From rules `V2`: the Lamport clock at most `LAMPORT_MAX` and at most
//!    `LAMPORT_AHEAD_MAX` ahead of the store's clock, else `CLOCK_OUT_OF_RANGE`.
//! 5. `aggregateType` known under the rules (`device`, the deny-list, from `V2`), else
//!    `UNKNOWN_AGGREGATE_TYPE`; `type` one of that aggregate type's own event types, else
//!    `UNKNOWN_EVENT_TYPE` (`payment` has none yet).
//! 6. The payload validates into a typed command under the rules' bounds, else
//!    `MALFORMED_PAYLOAD` (see `payload.rs`).
//! 7. The aggregate's rules: `order::decide` (which documents its own order: closed →
//!    lock → version/force → transition), `ticket::decide`, `inventory::decide`.
//!
//! Only then is the event accepted: the changed aggregates are written with `put_*`, and
//! `put_event` is called once, with the event stamped with its seq, hub time and the
//! rules version that accepted it (`rules.rs`: replay uses each entry's own version).
//! From rules `V4`, an id the retention refusal cannot cover (no time, or made too far
//! ahead of the hub) is kept for dedupe past its event's deletion (`State::keep_id`).
//! Last, from rules `V3`, `expire_closed` removes the orders and tickets closed
//! `CLOSED_KEPT_EVENTS` accepted events ago. A rejected or duplicate event makes no
//! `put_*` or `expire_closed` call at all, so a replay of the accepted events alone removes
//! the same aggregates at the same seqs.

use chrono::DateTime;
use uuid::Uuid;

use super::Head;
use super::archive::{self, Archive};
use super::device::{self, Revocation};
use super::event::{Event, Realm};
use super::inventory::{self, Stock};
use super::kind::{AggregateKind, EventKind};
use super::order::{self, Order};
use super::outcome::{Outcome, RejectCode, Rejection};
use super::payload::{self, Command};
use super::rules::{Bounds, Rules};
use super::state::State;
use super::ticket::{self, Ticket, TicketCommand};

/// Longest `at` timestamp accepted, in bytes (RFC 3339 with nanoseconds is 35).
pub const AT_BYTES_MAX: usize = 64;
/// Longest echo of a client-supplied string in a rejection message, in chars.
const ECHO_CHARS_MAX: usize = 64;

/// What the rules know about the event being applied, besides its payload.
pub struct Ctx<'a> {
    pub event: &'a Event,
    /// The parsed `eventId`.
    pub event_id: Uuid,
    /// The seq the event gets if accepted.
    pub seq: u64,
    /// The leader-stamped hub time: the only clock the rules ever consult.
    pub hub_time_ms: u64,
}

impl Ctx<'_> {
    /// The head an aggregate has after accepting this event at `version`.
    pub fn head(&self, version: u64) -> Head {
        Head {
            version,
            lamport: self.event.clock.lamport,
            event_id: self.event_id,
            seq: self.seq,
            hub_time_ms: self.hub_time_ms,
        }
    }
}

/// Decides `event` against `state` at hub time `hub_time_ms` under `rules` and, if it is
/// accepted, writes its effects and appends it. Rejections are `Ok(Outcome::Rejected)`;
/// `Err` is only the state's own failure to read or write.
pub fn apply<S: State>(
    state: &mut S,
    event: &Event,
    hub_time_ms: u64,
    rules: Rules,
) -> Result<Outcome, S::Error> {
    let event_id = match Uuid::parse_str(&event.event_id) {
        Ok(id) => id,
        Err(_) => {
            return Ok(
                malformed(format!("eventId {:?} is not a UUID", echo(&event.event_id))).into(),
            );
        }
    };
    if let Err(r) = check_realm(event, state.realm()) {
        return Ok(r.into());
    }
    if let Some(seq) = state.seq_of(&event_id)? {
        return Ok(Outcome::Duplicate { seq });
    }
    if rules >= Rules::V4
        && let Some(archive) = state.archive()?
        && let Err(r) = archive::check_age(&archive, &event_id, hub_time_ms)
    {
        return Ok(r.into());
    }
    if event.redacted && !state.follows_redacted() {
        return Ok(malformed(
            "the event is marked redacted: only a hub marks the events it streams to kitchen \
             and bar screens, and they cannot be appended"
                .into(),
        )
        .into());
    }
    let command = check_envelope(event, rules.bounds())
        .and_then(|()| rules.check_lamport(event.clock.lamport, state.lamport()))
        .and_then(|()| classify(event, rules))
        .and_then(|kind| payload::parse(kind, event, rules));
    let command = match command {
        Ok(c) => c,
        Err(r) => return Ok(r.into()),
    };
    let Some(seq) = state.last_seq().checked_add(1) else {
        return Ok(Rejection::new(
            RejectCode::OutOfRange,
            "the log is at the largest possible seq",
        )
        .into());
    };
    let ctx = Ctx {
        event,
        event_id,
        seq,
        hub_time_ms,
    };
    let change = match decide(state, command, &ctx)? {
        Ok(change) => change,
        Err(r) => return Ok(r.into()),
    };

    if let Some(order) = change.order {
        state.put_order(order)?;
    }
    if let Some(ticket) = change.ticket {
        state.put_ticket(ticket)?;
    }
    if let Some(stock) = change.stock {
        state.put_stock(stock)?;
    }
    if let Some(revocation) = change.revocation {
        state.put_revocation(revocation)?;
    }
    if let Some(archive) = change.archive {
        state.put_archive(archive)?;
    }
    let mut stamped = event.clone();
    stamped.seq = Some(seq);
    stamped.hub_time = Some(hub_time_ms);
    // V1 events stay unstamped, byte for byte what the release before versions stored.
    stamped.rules = (rules != Rules::V1).then_some(rules);
    state.put_event(event_id, stamped)?;
    if rules >= Rules::V4 && archive::outlives_its_history(&event_id, hub_time_ms) {
        state.keep_id(event_id, seq)?;
    }
    if let Some(kept) = rules.bounds().closed_kept_events
        && let Some(through) = seq.checked_sub(kept)
    {
        state.expire_closed(through)?;
    }
    Ok(Outcome::Accepted { seq })
}

/// The aggregates an accepted event rewrites.
#[derive(Default)]
struct Change {
    order: Option<Order>,
    ticket: Option<Ticket>,
    stock: Option<Stock>,
    revocation: Option<Revocation>,
    archive: Option<Archive>,
}

/// Loads what the command's rules need and runs them. The outer `Result` is the state's
/// read failure, the inner one the verdict.
fn decide<S: State>(
    state: &S,
    command: Command,
    ctx: &Ctx,
) -> Result<Result<Change, Rejection>, S::Error> {
    let id = ctx.event.aggregate_id.as_str();
    Ok(match command {
        Command::Order(cmd) => {
            let existing = state.order(id)?;
            order::decide(existing, cmd, ctx).map(|o| Change {
                order: Some(o),
                ..Change::default()
            })
        }
        Command::Ticket(kind, cmd) => {
            let existing = state.ticket(kind, id)?;
            // An existing ticket keeps the order it was created for; a create names it.
            let order_id = match (&existing, &cmd) {
                (Some(t), _) => Some(t.order_id.clone()),
                (None, TicketCommand::Created(draft)) => Some(draft.order_id.clone()),
                (None, _) => None,
            };
            let order = match order_id {
                Some(oid) => state.order(&oid)?,
                None => None,
            };
            ticket::decide(kind, existing, order, cmd, ctx).map(|(t, o)| Change {
                order: o,
                ticket: Some(t),
                ..Change::default()
            })
        }
        Command::Inventory(adj) => {
            let existing = state.stock(id)?;
            inventory::decide(existing, adj, ctx).map(|s| Change {
                stock: Some(s),
                ..Change::default()
            })
        }
        Command::Revoke(revoke) => Ok(Change {
            revocation: Some(device::decide(revoke, ctx)),
            ..Change::default()
        }),
        Command::Archive(mark) => {
            let existing = state.archive()?;
            archive::decide(mark, existing, &state.realm().store_id, ctx).map(|a| Change {
                archive: Some(a),
                ..Change::default()
            })
        }
    })
}

fn check_realm(event: &Event, realm: &Realm) -> Result<(), Rejection> {
    let wrong = |msg: String| Err(Rejection::new(RejectCode::WrongRealm, msg));
    if event.tenant_id.is_empty() {
        return wrong(format!(
            "event has an empty tenantId; this hub serves {realm}"
        ));
    }
    if event.store_id.is_empty() {
        return wrong(format!(
            "event has an empty storeId; this hub serves {realm}"
        ));
    }
    if event.tenant_id != realm.tenant_id || event.store_id != realm.store_id {
        return wrong(format!(
            "event is for {}/{}; this hub serves {realm}",
            echo(&event.tenant_id),
            echo(&event.store_id)
        ));
    }
    Ok(())
}

fn check_envelope(event: &Event, bounds: &Bounds) -> Result<(), Rejection> {
    let id_bytes = bounds.id_bytes;
    check_id("aggregateId", &event.aggregate_id, id_bytes)?;
    if event.version == 0 {
        return Err(malformed("version must be at least 1, got 0".into()));
    }
    check_id("actor.deviceId", &event.actor.device_id, id_bytes)?;
    if let Some(user) = &event.actor.user_id
        && user.len() > id_bytes
    {
        return Err(malformed(format!(
            "actor.userId is {} bytes long; at most {id_bytes} are allowed",
            user.len()
        )));
    }
    check_id("clock.deviceId", &event.clock.device_id, id_bytes)?;
    if event.at.len() > AT_BYTES_MAX || DateTime::parse_from_rfc3339(&event.at).is_err() {
        return Err(malformed(format!(
            "at {:?} is not an RFC 3339 timestamp",
            echo(&event.at)
        )));
    }
    if event.event_type.is_empty() {
        return Err(malformed("type is empty".into()));
    }
    Ok(())
}

fn check_id(field: &str, value: &str, max: usize) -> Result<(), Rejection> {
    if value.is_empty() {
        return Err(malformed(format!("{field} is empty")));
    }
    if value.len() > max {
        return Err(malformed(format!(
            "{field} is {} bytes long; at most {max} are allowed",
            value.len()
        )));
    }
    Ok(())
}

/// Resolves `aggregateType` and `type` to a known event kind.
fn classify(event: &Event, rules: Rules) -> Result<EventKind, Rejection> {
    let Some(aggregate) = AggregateKind::parse(&event.aggregate_type, rules) else {
        return Err(Rejection::new(
            RejectCode::UnknownAggregateType,
            format!(
                "aggregateType {:?} is unknown; known: {}",
                echo(&event.aggregate_type),
                AggregateKind::names(rules).join(", ")
            ),
        ));
    };
    if aggregate == AggregateKind::Payment {
        return Err(Rejection::new(
            RejectCode::UnknownEventType,
            format!(
                "aggregateType payment has no event types yet (got {:?}); payments are \
                 recorded by order.paid on the order",
                echo(&event.event_type)
            ),
        ));
    }
    aggregate.event_kind(&event.event_type).ok_or_else(|| {
        let known: Vec<&str> = aggregate
            .event_types()
            .iter()
            .map(|(name, _)| *name)
            .collect();
        Rejection::new(
            RejectCode::UnknownEventType,
            format!(
                "type {:?} is not an event type of aggregateType {}; known: {}",
                echo(&event.event_type),
                event.aggregate_type,
                known.join(", ")
            ),
        )
    })
}

fn malformed(message: String) -> Rejection {
    Rejection::new(RejectCode::MalformedEvent, message)
}

/// A client-supplied string cut short for a message, so that a huge field cannot make a
/// huge rejection.
fn echo(s: &str) -> String {
    if s.chars().count() <= ECHO_CHARS_MAX {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(ECHO_CHARS_MAX).collect();
        cut.push('…');
        cut
    }
}
