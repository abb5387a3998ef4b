//! The rules version: which rules decided a log entry, and the bounds each version sets.
//!
//! The rules change over time (issue 17 bounded clocks and sizes). A change must never
//! alter what an already committed entry did: every node replays its log on restart and
//! rebuilds its state from snapshots, and must reach the state it reached the first time.
//! So the leader records the version it decides an entry under in the entry itself
//! (`raft_types::Command::rules`), `apply` takes that version, and every accepted event is
//! stamped with it, so that a snapshot's events replay under their own version too.
//!
//! A node never decides under a version it does not know: an entry naming a newer version
//! fails to decode, and the node stops rather than diverge (fleet upgrades build on this).

use serde::{Deserialize, Serialize};

use super::outcome::{RejectCode, Rejection};

/// The largest Lamport clock accepted under `V2`: 2^53 − 1, the largest integer a
/// JavaScript number (every browser till) holds exactly.
pub const LAMPORT_MAX: u64 = (1 << 53) - 1;
/// How far an event's Lamport clock may run ahead of the store's clock under `V2`. A
/// device bumps its clock by one per event it writes, so only a device that wrote a
/// million events offline (a week at more than one a second) gets this far ahead; yet one
/// accepted event can move the store's clock by at most this much, so reaching
/// `LAMPORT_MAX` would take nine billion events.
pub const LAMPORT_AHEAD_MAX: u64 = 1_000_000;
/// The largest encoded event (protobuf bytes) accepted under `V2`: 32 times the spec's
/// 0.5–2 KB per event, and above the largest event the `V2` payload bounds allow (a test
/// builds that event and appends it).
pub const EVENT_BYTES_MAX: usize = 64 << 10;
/// Under `V3`, how many accepted events a closed order or a done ticket stays in the live
/// state after the event that closed it: about a day of a busy restaurant (5–20k events a
/// day), so the day's paid orders stay on the tills for receipts and reprints, while the
/// live state stays bounded by this many events whatever the store's age. Counted in
/// events, not hub time, so that every node, a replay and a device's copy remove the same
/// aggregates at the same seq with no clock involved.
pub const CLOSED_KEPT_EVENTS: u64 = 20_000;
/// Under `V4`, the fewest days a `store.archived` mark may keep eventIds deduplicated
/// (`retainDays`): a till offline for longer than the store's retention has its queued
/// events refused (`EVENT_BEYOND_RETENTION`), so a typo must not make that hours.
pub const RETAIN_DAYS_MIN: u64 = 7;
/// Under `V4`, the most days a `store.archived` mark may name: ten years.
pub const RETAIN_DAYS_MAX: u64 = 3_650;
/// Under `V4`, how far ahead of the hub's time a device's clock may run when it makes an
/// eventId (a UUIDv7 carries its maker's time) for the retention refusal to cover its
/// resends: a history file is deleted only once every event in it is this much older than
/// the refusal's horizon. (Ids made further ahead, and ids that carry no time, are kept
/// when their events are deleted.)
pub const ID_CLOCK_AHEAD_MS: u64 = 24 * 60 * 60 * 1000;

/// A rules version. Ordered: later versions compare greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub enum Rules {
    /// The rules before versions were recorded (up to issue 16). Entries and stored
    /// events that carry no version were decided by these.
    V1,
    /// Issue 17: Lamport clocks bounded (`LAMPORT_MAX`, `LAMPORT_AHEAD_MAX`), events
    /// bounded in bytes (`EVENT_BYTES_MAX`) with lower payload bounds to match, and unknown
    /// payload fields refused.
    V2,
    /// Issue 18: closed orders and done tickets leave the live state
    /// `CLOSED_KEPT_EVENTS` accepted events after the event that closed them; their
    /// events stay in the history. An event naming one afterwards finds nothing there.
    V3,
    /// Issue 18, retention: the `store` aggregate's `store.archived` (admins only) records
    /// how far the history is archived and how many days eventIds stay deduplicated
    /// (`domain::archive`). Once a store has a mark, an event whose eventId (a UUIDv7)
    /// was made before the retention horizon is refused `EVENT_BEYOND_RETENTION`.
    V4,
}

/// A rules version this build does not know (written by a newer pos-hub).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rules version {0} is newer than this build of pos-hub knows (up to {latest})", latest = Rules::CURRENT.number())]
pub struct UnknownRules(pub u32);

impl Rules {
    /// The version this build decides new entries under.
    pub const CURRENT: Rules = Rules::V4;

    pub const fn number(self) -> u32 {
        match self {
            Rules::V1 => 1,
            Rules::V2 => 2,
            Rules::V3 => 3,
            Rules::V4 => 4,
        }
    }

    /// The version stamped on a stored event; 0 (unstamped) is an event accepted before
    /// versions were recorded, hence `V1`.
    pub fn from_stamp(stamp: u32) -> Result<Rules, UnknownRules> {
        match stamp {
            0 => Ok(Rules::V1),
            n => Rules::try_from(n),
        }
    }

    /// The payload and envelope bounds of this version.
    pub const fn bounds(self) -> &'static Bounds {
        match self {
            Rules::V1 => &V1_BOUNDS,
            Rules::V2 => &V2_BOUNDS,
            // V4 adds an event type and a check, not bounds.
            Rules::V3 | Rules::V4 => &V3_BOUNDS,
        }
    }

    /// `EVENT_TOO_LARGE` for an event whose encoding is over this version's bound. Checked
    /// on the encoded bytes the log would store, before anything else about the event.
    pub fn check_event_bytes(self, encoded_bytes: usize) -> Result<(), Rejection> {
        match self.bounds().event_bytes_max {
            Some(max) if encoded_bytes > max => Err(Rejection::new(
                RejectCode::EventTooLarge,
                format!("the event is {encoded_bytes} bytes encoded; at most {max} are allowed"),
            )),
            _ => Ok(()),
        }
    }

    /// `CLOCK_OUT_OF_RANGE` for a Lamport clock over `LAMPORT_MAX` or more than
    /// `LAMPORT_AHEAD_MAX` ahead of the store's clock `store_lamport`; `V1` bounds neither.
    pub fn check_lamport(self, lamport: u64, store_lamport: u64) -> Result<(), Rejection> {
        if self < Rules::V2 {
            return Ok(());
        }
        if lamport > LAMPORT_MAX {
            return Err(Rejection::new(
                RejectCode::ClockOutOfRange,
                format!(
                    "clock.lamport {lamport} is above {LAMPORT_MAX} (2^53 - 1), the largest \
                     clock every client holds exactly"
                ),
            ));
        }
        if lamport > store_lamport.saturating_add(LAMPORT_AHEAD_MAX) {
            return Err(Rejection::new(
                RejectCode::ClockOutOfRange,
                format!(
                    "clock.lamport {lamport} is more than {LAMPORT_AHEAD_MAX} ahead of the \
                     store's clock {store_lamport}; read the clock with Hello and re-stamp"
                ),
            ));
        }
        Ok(())
    }
}

impl From<Rules> for u32 {
    fn from(rules: Rules) -> u32 {
        rules.number()
    }
}

impl TryFrom<u32> for Rules {
    type Error = UnknownRules;
    fn try_from(n: u32) -> Result<Rules, UnknownRules> {
        match n {
            1 => Ok(Rules::V1),
            2 => Ok(Rules::V2),
            3 => Ok(Rules::V3),
            4 => Ok(Rules::V4),
            n => Err(UnknownRules(n)),
        }
    }
}

/// What one rules version bounds. Lists are bounded by count, text by UTF-8 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    /// Identifiers: aggregate, device, user, line and modifier ids, skus.
    pub id_bytes: usize,
    /// Short text: item and modifier names, categories, table numbers, stations, payment
    /// methods.
    pub name_bytes: usize,
    /// Free text: reasons and kitchen notes.
    pub note_bytes: usize,
    pub line_items: usize,
    pub modifiers_per_item: usize,
    /// Modifiers over all the line items of one event.
    pub modifiers_per_event: usize,
    pub payments: usize,
    pub ticket_items: usize,
    /// The encoded event, in bytes; `None`: unbounded (beyond the message size).
    pub event_bytes_max: Option<usize>,
    /// Refuse payload fields the event type does not define.
    pub refuse_unknown_fields: bool,
    /// Accepted events after which a closed order or done ticket leaves the live state;
    /// `None`: it stays for good.
    pub closed_kept_events: Option<u64>,
}

const V1_BOUNDS: Bounds = Bounds {
    id_bytes: 128,
    name_bytes: 1024,
    note_bytes: 1024,
    line_items: 1_000,
    modifiers_per_item: 100,
    modifiers_per_event: 1_000 * 100,
    payments: 100,
    ticket_items: 1_000,
    event_bytes_max: None,
    refuse_unknown_fields: false,
    closed_kept_events: None,
};

/// Sized so that the largest event they allow fits `EVENT_BYTES_MAX` (see the test
/// `the_largest_valid_events_fit_the_byte_bound`): a big table's order, not a catalogue.
const V2_BOUNDS: Bounds = Bounds {
    id_bytes: 64,
    name_bytes: 64,
    note_bytes: 256,
    line_items: 100,
    modifiers_per_item: 10,
    modifiers_per_event: 100,
    payments: 20,
    ticket_items: 100,
    event_bytes_max: Some(EVENT_BYTES_MAX),
    refuse_unknown_fields: true,
    closed_kept_events: None,
};

/// `V2`'s bounds, and closed aggregates leave the live state.
const V3_BOUNDS: Bounds = Bounds {
    closed_kept_events: Some(CLOSED_KEPT_EVENTS),
    ..V2_BOUNDS
};
