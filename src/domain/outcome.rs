//! What `apply` decided about one event. Rejections are values, not errors: they are
//! decided identically on every node and travel back to the device that sent the event.

use serde::{Deserialize, Serialize};

/// Stable reasons for a rejection. The strings (`as_str`) are part of the API: clients
/// match on them, so a code is never renamed or reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RejectCode {
    /// The event's tenantId/storeId is not this hub's realm.
    WrongRealm,
    /// The envelope is malformed: eventId not a UUID, empty ids, version 0, bad `at`, ….
    MalformedEvent,
    /// `aggregateType` is not one the hub knows.
    UnknownAggregateType,
    /// `type` is not a known event type of its aggregate type.
    UnknownEventType,
    /// The payload is missing a field, has a wrong type, or a value out of its range.
    MalformedPayload,
    /// The event edits an aggregate that does not exist (and is not a create).
    AggregateNotFound,
    /// `version` is not greater than the aggregate's current version.
    StaleVersion,
    /// `version` skips ahead of current + 1.
    VersionGap,
    /// Another device holds an unexpired lease lock on the order.
    Locked,
    /// A lock renew or release from a device that does not hold the lock.
    NotLockHolder,
    /// A renew of a lock that has already expired.
    LockExpired,
    /// A forced write whose `(lamport, eventId)` is not higher than the aggregate's last.
    Superseded,
    /// The order is paid or cancelled and takes no more edits.
    OrderClosed,
    /// The order is parked: recall it (`order.reparked`) before editing or paying it.
    OrderParked,
    /// `order.reparked` on an order that is not parked.
    OrderNotParked,
    /// A ticket event that needs an order which does not exist.
    OrderNotFound,
    /// The ticket is already acknowledged.
    TicketAcked,
    /// The ticket is done and takes no more events.
    TicketDone,
    /// The payments do not add up to the order's total (or name another currency).
    PaymentMismatch,
    /// An amount or counter would leave its representable range.
    OutOfRange,
    /// The event's Lamport clock is above 2^53 − 1 or too far ahead of the store's clock
    /// (rules `V2`): re-read the clock with Hello and re-stamp the event.
    ClockOutOfRange,
    /// The encoded event is larger than the rules allow (rules `V2`).
    EventTooLarge,
    /// The eventId (a UUIDv7) was made before the store's retention horizon, so it can no
    /// longer be deduplicated (rules `V4`, once the store has an archive mark).
    EventBeyondRetention,
}

impl RejectCode {
    pub const ALL: [RejectCode; 23] = [
        RejectCode::WrongRealm,
        RejectCode::MalformedEvent,
        RejectCode::UnknownAggregateType,
        RejectCode::UnknownEventType,
        RejectCode::MalformedPayload,
        RejectCode::AggregateNotFound,
        RejectCode::StaleVersion,
        RejectCode::VersionGap,
        RejectCode::Locked,
        RejectCode::NotLockHolder,
        RejectCode::LockExpired,
        RejectCode::Superseded,
        RejectCode::OrderClosed,
        RejectCode::OrderParked,
        RejectCode::OrderNotParked,
        RejectCode::OrderNotFound,
        RejectCode::TicketAcked,
        RejectCode::TicketDone,
        RejectCode::PaymentMismatch,
        RejectCode::OutOfRange,
        RejectCode::ClockOutOfRange,
        RejectCode::EventTooLarge,
        RejectCode::EventBeyondRetention,
    ];

    /// The code named `code` on the wire (`as_str`'s inverse); `None` for a code this build
    /// does not know (a newer hub may add codes; codes are never renamed or reused).
    pub fn parse(code: &str) -> Option<RejectCode> {
        RejectCode::ALL.into_iter().find(|c| c.as_str() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::WrongRealm => "WRONG_REALM",
            RejectCode::MalformedEvent => "MALFORMED_EVENT",
            RejectCode::UnknownAggregateType => "UNKNOWN_AGGREGATE_TYPE",
            RejectCode::UnknownEventType => "UNKNOWN_EVENT_TYPE",
            RejectCode::MalformedPayload => "MALFORMED_PAYLOAD",
            RejectCode::AggregateNotFound => "AGGREGATE_NOT_FOUND",
            RejectCode::StaleVersion => "STALE_VERSION",
            RejectCode::VersionGap => "VERSION_GAP",
            RejectCode::Locked => "LOCKED",
            RejectCode::NotLockHolder => "NOT_LOCK_HOLDER",
            RejectCode::LockExpired => "LOCK_EXPIRED",
            RejectCode::Superseded => "SUPERSEDED",
            RejectCode::OrderClosed => "ORDER_CLOSED",
            RejectCode::OrderParked => "ORDER_PARKED",
            RejectCode::OrderNotParked => "ORDER_NOT_PARKED",
            RejectCode::OrderNotFound => "ORDER_NOT_FOUND",
            RejectCode::TicketAcked => "TICKET_ACKED",
            RejectCode::TicketDone => "TICKET_DONE",
            RejectCode::PaymentMismatch => "PAYMENT_MISMATCH",
            RejectCode::OutOfRange => "OUT_OF_RANGE",
            RejectCode::ClockOutOfRange => "CLOCK_OUT_OF_RANGE",
            RejectCode::EventTooLarge => "EVENT_TOO_LARGE",
            RejectCode::EventBeyondRetention => "EVENT_BEYOND_RETENTION",
        }
    }
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Appended to the log at `seq`.
    Accepted { seq: u64 },
    /// The eventId was accepted before, at `seq`; nothing changed.
    Duplicate { seq: u64 },
    /// Not appended; nothing changed. `message` is for a person and names the problem;
    /// `lock_holder` names the device holding the order for `LOCKED`, so that a program
    /// never has to read it out of the message.
    Rejected {
        code: RejectCode,
        message: String,
        lock_holder: Option<String>,
    },
}

impl Outcome {
    pub fn rejected(code: RejectCode, message: impl Into<String>) -> Self {
        Outcome::Rejected {
            code,
            message: message.into(),
            lock_holder: None,
        }
    }

    /// `ACCEPTED`, `DUPLICATE` or `REJECTED`.
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Accepted { .. } => "ACCEPTED",
            Outcome::Duplicate { .. } => "DUPLICATE",
            Outcome::Rejected { .. } => "REJECTED",
        }
    }

    pub fn seq(&self) -> Option<u64> {
        match self {
            Outcome::Accepted { seq } | Outcome::Duplicate { seq } => Some(*seq),
            Outcome::Rejected { .. } => None,
        }
    }
}

/// A rejection on its way out of the rules: the rule functions return
/// `Result<_, Rejection>` so that `?` can stop at the first broken rule, and `apply` turns
/// it into `Outcome::Rejected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: RejectCode,
    pub message: String,
    /// `LOCKED` only: the device holding the order.
    pub lock_holder: Option<String>,
}

impl Rejection {
    /// A rejection with `code` and a message for a person.
    pub fn new(code: RejectCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            lock_holder: None,
        }
    }

    /// `LOCKED`: `holder` holds the order's lock.
    pub fn locked(holder: &str, message: impl Into<String>) -> Self {
        Self {
            lock_holder: Some(holder.to_owned()),
            ..Self::new(RejectCode::Locked, message)
        }
    }
}

impl From<Rejection> for Outcome {
    fn from(r: Rejection) -> Self {
        Outcome::Rejected {
            code: r.code,
            message: r.message,
            lock_holder: r.lock_holder,
        }
    }
}
