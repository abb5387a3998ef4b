//! Optimistic concurrency for versioned aggregates (orders and tickets).
//!
//! A create carries version 1; every later event carries exactly `current + 1`. A forced
//! event skips that comparison and instead wins only if its `(lamport, eventId)` is
//! higher than the aggregate's last accepted one, so that two nodes replaying the same
//! log settle the same conflicts the same way.

use super::Head;
use super::apply::Ctx;
use super::outcome::{RejectCode, Rejection};

/// The head of a newly created aggregate; creates must carry version 1.
pub fn create(ctx: &Ctx, what: &str) -> Result<Head, Rejection> {
    let ev = ctx.event;
    if ev.version != 1 {
        return Err(Rejection::new(
            RejectCode::VersionGap,
            format!(
                "{what} {} does not exist yet and creates carry version 1; got version {}",
                ev.aggregate_id, ev.version
            ),
        ));
    }
    Ok(ctx.head(1))
}

/// An edit of an aggregate that does not exist.
pub fn not_found(ctx: &Ctx, what: &str, create_type: &str) -> Rejection {
    Rejection::new(
        RejectCode::AggregateNotFound,
        format!(
            "{what} {} does not exist; {} cannot apply until {create_type} has (a {what} \
             closed more than {} events ago has left the live state; its events are in the \
             history)",
            ctx.event.aggregate_id,
            ctx.event.event_type,
            super::rules::CLOSED_KEPT_EVENTS
        ),
    )
}

/// A create of an aggregate that already exists: whatever its version, it can only be a
/// late copy of (or a clash with) the create that already happened.
pub fn already_exists(head: &Head, ctx: &Ctx, what: &str) -> Rejection {
    Rejection::new(
        RejectCode::StaleVersion,
        format!(
            "{what} {} already exists at version {}; {} (version {}) is stale",
            ctx.event.aggregate_id, head.version, ctx.event.event_type, ctx.event.version
        ),
    )
}

/// The head after accepting `ctx.event` on an aggregate at `head`: version checked (or,
/// for a forced event, `(lamport, eventId)` checked) and bumped by one.
pub fn advance(head: &Head, ctx: &Ctx, what: &str) -> Result<Head, Rejection> {
    let ev = ctx.event;
    let id = &ev.aggregate_id;
    let current = head.version;
    let Some(next) = current.checked_add(1) else {
        return Err(Rejection::new(
            RejectCode::OutOfRange,
            format!("{what} {id} is at the largest possible version {current}"),
        ));
    };
    if ev.force {
        // Tuple order: Lamport first, the eventId's bytes break ties.
        if (ev.clock.lamport, ctx.event_id) <= (head.lamport, head.event_id) {
            return Err(Rejection::new(
                RejectCode::Superseded,
                format!(
                    "forced {} on {what} {id} lost: its (lamport {}, eventId {}) is not higher \
                     than the last accepted (lamport {}, eventId {})",
                    ev.event_type, ev.clock.lamport, ctx.event_id, head.lamport, head.event_id
                ),
            ));
        }
    } else if ev.version <= current {
        return Err(Rejection::new(
            RejectCode::StaleVersion,
            format!(
                "{what} {id} is at version {current}; expected version {next}, got {}",
                ev.version
            ),
        ));
    } else if ev.version > next {
        return Err(Rejection::new(
            RejectCode::VersionGap,
            format!(
                "{what} {id} is at version {current}; expected version {next}, got {}",
                ev.version
            ),
        ));
    }
    Ok(ctx.head(next))
}
