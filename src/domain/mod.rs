//! The domain: pure, synchronous rules that decide what each event does.
//!
//! Layout:
//! - `event`: the envelope (`Event`, `Realm`, `Actor`, `Clock`);
//! - `outcome`: `Outcome` and the stable `RejectCode`s;
//! - `state`: the `State` trait `apply` works on, and `MemState`;
//! - `order`, `ticket`, `inventory`, `lock`: one read model and its rules per file;
//! - `device`, `archive`: the admins' records (the deny-list, the archive mark);
//! - `apply`: the single entry point, dispatching on the event type;
//! - `kind`, `payload`, `version`: the known event types, payload validation, and the
//!   version/force rules shared by orders and tickets;
//! - `rules`: the rules version each log entry is decided under, and its bounds.
//!
//! Nothing here does I/O, reads a clock, draws a random number or iterates a hash map:
//! every node replays the same log through `apply` and must reach the same state. The only
//! time `apply` knows is the leader-stamped `hub_time_ms` passed in with the event.

mod apply;
pub mod archive;
pub mod device;
pub mod event;
pub mod format1;
pub mod inventory;
pub mod kind;
pub mod lock;
pub mod order;
pub mod outcome;
pub mod payload;
pub mod rules;
pub mod state;
pub mod ticket;
mod version;

#[cfg(test)]
mod proptests;
/// The rules' tests, and the event builder the crate's other unit tests share.
#[cfg(test)]
pub(crate) mod tests;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use apply::apply;
pub use event::{Actor, Clock, Event, Realm};
pub use outcome::{Outcome, RejectCode};
pub use rules::Rules;
pub use state::{MemState, State};

/// What every versioned aggregate (order, ticket) remembers of its last accepted event:
/// its version for optimistic concurrency, and `(lamport, eventId)` for forced writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Head {
    pub version: u64,
    pub lamport: u64,
    pub event_id: Uuid,
    /// Seq of the last accepted event on this aggregate.
    pub seq: u64,
    /// Its hub time (ms since the Unix epoch): when the aggregate last changed. 0 for an
    /// aggregate moved over from data format 1, which did not record it.
    pub hub_time_ms: u64,
}
