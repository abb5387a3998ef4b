//! The checker: from the history and every node's log read back after healing, proves
//! that nothing acknowledged was lost, duplicated or reordered — or names what was.
//!
//! Each check is independent of the hub's code: the lock and version rules are
//! re-implemented here from the spec, not borrowed from `pos_hub::domain`, except for the
//! read-model comparison, which replays the log through the domain (that check is about
//! the nodes' state machines agreeing with their logs, not about the rules).
//!
//! `check` runs every check in turn; they live beside this file:
//! - `logs`: the nodes' logs alone: every node holds the same one, versions go up by one, no
//!   order is edited under another device's lock, and each node's read models match a
//!   replay of the log;
//! - `clients`: what clients were told, against the log: acknowledged appends, real-time
//!   order, linearizable reads and Subscribe streams;
//! - `stats`: not a check: counts, availability and per-fault recovery for the report.

mod clients;
mod logs;
mod stats;

use std::collections::BTreeMap;

use pos_hub::domain::Event;

use crate::history::{Call, Entry};
use clients::{acknowledged, linearizable_reads, real_time_order, streams};
use logs::{locks, logs_agree, read_models, versions};
use stats::stats;

/// What one node holds after the run, read back once the group has healed.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    /// The node's whole log, in seq order.
    pub log: Vec<Event>,
    /// The node's read model of every order: `(id, version, total, last_seq)`.
    pub orders: Vec<(String, u64, i64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub check: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub violations: Vec<Violation>,
    /// Appends: ok / definitely failed / unknown.
    pub appends: (usize, usize, usize),
    pub reads: (usize, usize, usize),
    /// Of the operations invoked while a majority was up, the share that succeeded.
    pub availability: f64,
    /// Per fault name: count, ok / fail / unknown ops invoked during it, and each device's
    /// recovery.
    pub faults: BTreeMap<String, FaultStats>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultStats {
    pub count: usize,
    pub ok: usize,
    pub fail: usize,
    pub unknown: usize,
    /// One per device per time the fault ran: ms from the fault's start to that device's
    /// next acknowledged append (the first it invoked at or after the start and got
    /// acknowledged). A device that appended nothing after the start has none.
    pub recoveries_ms: Vec<f64>,
    /// The maximum of `recoveries_ms`: the device that waited longest.
    pub worst_recovery_ms: Option<f64>,
    /// The worst, over each time the fault ran, of the first device's recovery: about
    /// how long the group took to serve appends again (a new leader elected), which no
    /// device can beat.
    pub worst_first_recovery_ms: Option<f64>,
}

impl FaultStats {
    /// The median of `recoveries_ms` (the lower middle one of an even count).
    pub fn median_recovery_ms(&self) -> Option<f64> {
        let mut sorted = self.recoveries_ms.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len().saturating_sub(1) / 2).copied()
    }
}

/// Checks the history against the nodes' final states, and any events a device's outbox
/// confirmed (which must be in the log exactly once).
pub fn check(
    history: &[Entry],
    nodes: &BTreeMap<u64, NodeState>,
    outbox_confirmed: &[String],
) -> Outcome {
    let mut out = Outcome::default();
    let Some(reference) = logs_agree(nodes, &mut out.violations) else {
        return out;
    };
    let index = LogIndex::new(&reference, &mut out.violations);
    acknowledged(history, &index, &mut out.violations);
    real_time_order(history, &mut out.violations);
    linearizable_reads(history, &mut out.violations);
    versions(&reference, &mut out.violations);
    locks(&reference, &mut out.violations);
    read_models(&reference, nodes, &mut out.violations);
    streams(history, &index, &mut out.violations);
    for id in outbox_confirmed {
        if index.seqs(id).len() != 1 {
            out.violations.push(Violation {
                check: "outbox",
                detail: format!(
                    "event {id} confirmed by the device's outbox is in the log {} times",
                    index.seqs(id).len()
                ),
            });
        }
    }
    stats(history, &mut out);
    out
}

struct LogIndex<'a> {
    by_id: BTreeMap<&'a str, Vec<u64>>,
    log: &'a [Event],
}

impl<'a> LogIndex<'a> {
    fn new(log: &'a [Event], violations: &mut Vec<Violation>) -> Self {
        let mut by_id: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for event in log {
            by_id
                .entry(event.event_id.as_str())
                .or_default()
                .push(event.seq.unwrap_or(0));
        }
        for (id, seqs) in &by_id {
            if seqs.len() > 1 {
                violations.push(Violation {
                    check: "duplicate",
                    detail: format!("event {id} is in the log at seqs {seqs:?}"),
                });
            }
        }
        LogIndex { by_id, log }
    }

    fn seqs(&self, id: &str) -> &[u64] {
        self.by_id.get(id).map(Vec::as_slice).unwrap_or(&[])
    }

    fn id_at(&self, seq: u64) -> Option<&str> {
        let i = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.log.get(i).map(|e| e.event_id.as_str())
    }
}

/// op → (invoke time, call, node).
fn invocations(history: &[Entry]) -> BTreeMap<u64, (f64, Call, u64)> {
    history
        .iter()
        .filter_map(|e| match e {
            Entry::Invoke {
                op, t, call, node, ..
            } => Some((*op, (*t, call.clone(), *node))),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
