//! The checker: from the history and every node's log read back after healing, proves
//! that nothing acknowledged was lost, duplicated or reordered — or names what was.
//!
//! Each check is independent of the hub's code: the lock and version rules are
//! re-implemented here from the spec, not borrowed from `pos_hub::domain`, except for the
//! read-model comparison, which replays the log through the domain (that check is about
//! the nodes' state machines agreeing with their logs, not about the rules).

use std::collections::{BTreeMap, BTreeSet};

use pos_hub::domain::Event;

use crate::history::{Call, Entry, Phase, Reply, Status};

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
    /// Per fault name: (count, ok, fail, unknown ops invoked during it, worst time in ms
    /// from the fault's start to the first successful append invoked after it).
    pub faults: BTreeMap<String, FaultStats>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultStats {
    pub count: usize,
    pub ok: usize,
    pub fail: usize,
    pub unknown: usize,
    pub worst_recovery_ms: Option<f64>,
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

/// Every node holds the identical seq → eventId sequence, seqs 1..n without a gap.
/// Returns the common log.
fn logs_agree(
    nodes: &BTreeMap<u64, NodeState>,
    violations: &mut Vec<Violation>,
) -> Option<Vec<Event>> {
    let (first_id, first) = nodes.iter().next()?;
    for (i, event) in first.log.iter().enumerate() {
        if event.seq != Some(i as u64 + 1) {
            violations.push(Violation {
                check: "gap",
                detail: format!(
                    "node {first_id}: position {} holds seq {:?}",
                    i + 1,
                    event.seq
                ),
            });
            break;
        }
    }
    for (id, node) in nodes {
        let ours: Vec<(Option<u64>, &str)> = node
            .log
            .iter()
            .map(|e| (e.seq, e.event_id.as_str()))
            .collect();
        let theirs: Vec<(Option<u64>, &str)> = first
            .log
            .iter()
            .map(|e| (e.seq, e.event_id.as_str()))
            .collect();
        if ours != theirs {
            let at = ours
                .iter()
                .zip(&theirs)
                .position(|(a, b)| a != b)
                .unwrap_or(ours.len().min(theirs.len()));
            violations.push(Violation {
                check: "nodes-agree",
                detail: format!(
                    "node {id} ({} events) differs from node {first_id} ({} events) at position {}",
                    ours.len(),
                    theirs.len(),
                    at + 1
                ),
            });
        }
    }
    Some(first.log.clone())
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

/// Acknowledged appends are in the log once, at their seq; refused ones are absent.
fn acknowledged(history: &[Entry], index: &LogIndex, violations: &mut Vec<Violation>) {
    let calls = invocations(history);
    // Ids some call got ACCEPTED or DUPLICATE for: they may legitimately be present even if
    // another call with the same ids was refused.
    let mut landed = BTreeSet::new();
    for entry in history {
        if let Entry::Ok {
            reply: Reply::Append { answers },
            ..
        } = entry
        {
            for a in answers {
                if a.status != Status::Rejected {
                    landed.insert(a.id.clone());
                }
            }
        }
    }
    for entry in history {
        match entry {
            Entry::Ok {
                op,
                reply: Reply::Append { answers },
                ..
            } => {
                for a in answers {
                    let seqs = index.seqs(&a.id);
                    match a.status {
                        Status::Accepted | Status::Duplicate => {
                            if seqs != [a.seq] {
                                violations.push(Violation {
                                    check: "lost-ack",
                                    detail: format!(
                                        "op {op}: event {} acknowledged {:?} at seq {} is in the log at {seqs:?}",
                                        a.id, a.status, a.seq
                                    ),
                                });
                            }
                        }
                        Status::Rejected => {
                            if !seqs.is_empty() && !landed.contains(&a.id) {
                                violations.push(Violation {
                                    check: "rejected-present",
                                    detail: format!(
                                        "op {op}: event {} was REJECTED ({}) but is in the log at {seqs:?}",
                                        a.id, a.code
                                    ),
                                });
                            }
                        }
                    }
                }
            }
            Entry::Fail { op, .. } => {
                if let Some((_, Call::Append { events }, _)) = calls.get(op) {
                    for e in events {
                        let seqs = index.seqs(&e.id);
                        if !seqs.is_empty() && !landed.contains(&e.id) {
                            violations.push(Violation {
                                check: "failed-present",
                                detail: format!(
                                    "op {op}: event {} definitely failed but is in the log at {seqs:?}",
                                    e.id
                                ),
                            });
                        }
                    }
                }
            }
            _ => {}
        }
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

/// If append A was acknowledged before append B was invoked, seq(A) < seq(B).
fn real_time_order(history: &[Entry], violations: &mut Vec<Violation>) {
    let calls = invocations(history);
    // (completion time, min accepted seq, max accepted seq, invoke time, op)
    let mut done = Vec::new();
    for entry in history {
        if let Entry::Ok {
            op,
            t,
            reply: Reply::Append { answers },
        } = entry
        {
            let seqs: Vec<u64> = answers
                .iter()
                .filter(|a| a.status == Status::Accepted)
                .map(|a| a.seq)
                .collect();
            if let (Some(min), Some(max), Some((invoked, _, _))) =
                (seqs.iter().min(), seqs.iter().max(), calls.get(op))
            {
                done.push((*t, *min, *max, *invoked, *op));
            }
        }
    }
    let mut by_invoke = done.clone();
    by_invoke.sort_by(|a, b| a.3.total_cmp(&b.3));
    let mut by_done = done;
    by_done.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sweep: for each op in invoke order, the highest seq acknowledged before it began.
    let mut i = 0;
    let mut best: Option<(u64, u64)> = None; // (max seq, op)
    for (_, min, _, invoked, op) in by_invoke {
        while i < by_done.len() && by_done[i].0 < invoked {
            if best.is_none_or(|(s, _)| by_done[i].2 > s) {
                best = Some((by_done[i].2, by_done[i].4));
            }
            i += 1;
        }
        if let Some((seq, before)) = best
            && min <= seq
        {
            violations.push(Violation {
                check: "real-time-order",
                detail: format!(
                    "op {op} was invoked after op {before} was acknowledged at seq {seq}, yet got seq {min}"
                ),
            });
        }
    }
}

/// A LINEARIZABLE read of an order reflects every append to it acknowledged before the
/// read began.
fn linearizable_reads(history: &[Entry], violations: &mut Vec<Violation>) {
    let calls = invocations(history);
    // Per order: (ack time, seq) of accepted events on it.
    let mut acked: BTreeMap<&str, Vec<(f64, u64)>> = BTreeMap::new();
    for entry in history {
        if let Entry::Ok {
            op,
            t,
            reply: Reply::Append { answers },
        } = entry
            && let Some((_, Call::Append { events }, _)) = calls.get(op)
        {
            for (sent, a) in events.iter().zip(answers) {
                if a.status == Status::Accepted && sent.aggregate.starts_with("order/") {
                    acked
                        .entry(&sent.aggregate["order/".len()..])
                        .or_default()
                        .push((*t, a.seq));
                }
            }
        }
    }
    for entry in history {
        if let Entry::Ok {
            op,
            reply: Reply::Read { last_seq, .. },
            ..
        } = entry
            && let Some((
                invoked,
                Call::Read {
                    order,
                    linearizable: true,
                },
                node,
            )) = calls.get(op)
        {
            let must = acked
                .get(order.as_str())
                .into_iter()
                .flatten()
                .filter(|(t, _)| t < invoked)
                .map(|(_, s)| *s)
                .max();
            if let Some(must) = must
                && *last_seq < must
            {
                violations.push(Violation {
                    check: "stale-read",
                    detail: format!(
                        "op {op}: a linearizable read of {order} on node {node} saw its event at seq {last_seq}, but seq {must} was acknowledged before the read began"
                    ),
                });
            }
        }
    }
}

/// Per order and ticket, accepted versions go 1, 2, 3… with no repeat (forced events
/// excepted, which may jump).
fn versions(log: &[Event], violations: &mut Vec<Violation>) {
    let mut current: BTreeMap<(String, String), u64> = BTreeMap::new();
    for event in log {
        if !matches!(event.aggregate_type.as_str(), "order" | "kds" | "bds") {
            continue;
        }
        let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
        let previous = current.get(&key).copied().unwrap_or(0);
        let fine = if event.force {
            event.version > previous
        } else {
            event.version == previous + 1
        };
        if !fine {
            violations.push(Violation {
                check: "versions",
                detail: format!(
                    "{}/{} at seq {:?}: version {} after {previous}",
                    key.0, key.1, event.seq, event.version
                ),
            });
        }
        current.insert(key, event.version.max(previous));
    }
}

/// The spec's lease rules, re-stated: ttl clamped to 30–60 s (45 s default); while one
/// device holds an unexpired lock, no other device's unforced event on the order lands.
fn locks(log: &[Event], violations: &mut Vec<Violation>) {
    let mut held: BTreeMap<&str, (String, u64)> = BTreeMap::new();
    for event in log {
        if event.aggregate_type != "order" {
            continue;
        }
        let t = event.hub_time.unwrap_or(0);
        let device = event.actor.device_id.as_str();
        let order = event.aggregate_id.as_str();
        if let Some((holder, until)) = held.get(order)
            && holder != device
            && t < *until
            && !event.force
        {
            violations.push(Violation {
                check: "double-lock",
                detail: format!(
                    "order {order}: {} by {device} at hub time {t} (seq {:?}) while {holder} held the lock until {until}",
                    event.event_type, event.seq
                ),
            });
        }
        let ttl = event
            .payload
            .get("ttlMs")
            .and_then(|v| v.as_u64())
            .unwrap_or(45_000)
            .clamp(30_000, 60_000);
        match event.event_type.as_str() {
            "order.locked" | "order.lock.renew" => {
                held.insert(order, (device.to_owned(), t + ttl));
            }
            "order.lock.released" | "order.paid" | "order.cancelled" => {
                held.remove(order);
            }
            _ => {}
        }
    }
}

/// Each node's read models equal the ones rebuilt from the log.
fn read_models(log: &[Event], nodes: &BTreeMap<u64, NodeState>, violations: &mut Vec<Violation>) {
    let Some(first) = log.first() else { return };
    let mut state = pos_hub::domain::MemState::new(first.realm());
    for event in log {
        let mut sent = event.clone();
        sent.seq = None;
        sent.hub_time = None;
        let outcome = state.apply(&sent, event.hub_time.unwrap_or(0));
        if outcome
            != (pos_hub::domain::Outcome::Accepted {
                seq: event.seq.unwrap_or(0),
            })
        {
            violations.push(Violation {
                check: "replay",
                detail: format!(
                    "replaying the log: event {} at seq {:?} gives {outcome:?}",
                    event.event_id, event.seq
                ),
            });
            return;
        }
    }
    let rebuilt: Vec<(String, u64, i64, u64)> = state
        .orders
        .values()
        .map(|o| (o.id.clone(), o.head.version, o.total, o.head.seq))
        .collect();
    for (id, node) in nodes {
        let mut theirs = node.orders.clone();
        theirs.sort();
        if theirs != rebuilt {
            let differs = theirs
                .iter()
                .zip(&rebuilt)
                .find(|(a, b)| a != b)
                .map(|(a, b)| format!("{a:?} vs rebuilt {b:?}"))
                .unwrap_or_else(|| format!("{} orders vs {} rebuilt", theirs.len(), rebuilt.len()));
            violations.push(Violation {
                check: "read-models",
                detail: format!("node {id}: {differs}"),
            });
        }
    }
}

/// Every Subscribe stream delivered events in seq order, each once, without a gap, with the
/// log's event at each seq, across reconnects (each reconnect resumes from the last seq).
fn streams(history: &[Entry], index: &LogIndex, violations: &mut Vec<Violation>) {
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for entry in history {
        let Entry::Deliver {
            stream,
            node,
            from,
            events,
            ..
        } = entry
        else {
            continue;
        };
        let seen = last.entry(*stream).or_insert(*from);
        if *from != *seen {
            violations.push(Violation {
                check: "stream",
                detail: format!(
                    "stream {stream} (node {node}) resumed from {from} after seeing seq {seen}"
                ),
            });
            *seen = *from;
        }
        for (seq, id) in events {
            if *seq != *seen + 1 {
                violations.push(Violation {
                    check: "stream",
                    detail: format!(
                        "stream {stream} (node {node}) delivered seq {seq} after {seen}"
                    ),
                });
            }
            if index.id_at(*seq) != Some(id.as_str()) {
                violations.push(Violation {
                    check: "stream",
                    detail: format!(
                        "stream {stream} (node {node}) delivered {id} as seq {seq}; the log has {:?}",
                        index.id_at(*seq)
                    ),
                });
            }
            *seen = *seq;
        }
    }
}

/// Counts, availability while a majority was up, and per-fault recovery times.
fn stats(history: &[Entry], out: &mut Outcome) {
    let calls = invocations(history);
    // Fault windows: (name, start, end, majority_up).
    let mut open: BTreeMap<String, (f64, bool)> = BTreeMap::new();
    let mut windows = Vec::new();
    for entry in history {
        if let Entry::Fault {
            t,
            name,
            phase,
            majority_up,
            ..
        } = entry
        {
            match phase {
                Phase::Start => {
                    open.insert(name.clone(), (*t, *majority_up));
                }
                Phase::End => {
                    if let Some((start, up)) = open.remove(name) {
                        windows.push((name.clone(), start, *t, up));
                    }
                }
            }
        }
    }
    for (name, (start, up)) in open {
        windows.push((name, start, f64::INFINITY, up));
    }
    let mut results: Vec<(u64, f64, &'static str, bool)> = Vec::new(); // op, invoke t, kind, is append
    for entry in history {
        let (op, kind) = match entry {
            Entry::Ok { op, .. } => (*op, "ok"),
            Entry::Fail { op, .. } => (*op, "fail"),
            Entry::Info { op, .. } => (*op, "info"),
            _ => continue,
        };
        let Some((invoked, call, _)) = calls.get(&op) else {
            continue;
        };
        let is_append = matches!(call, Call::Append { .. });
        let tally = if is_append {
            &mut out.appends
        } else {
            &mut out.reads
        };
        match kind {
            "ok" => tally.0 += 1,
            "fail" => tally.1 += 1,
            _ => tally.2 += 1,
        }
        results.push((op, *invoked, kind, is_append));
    }
    let (mut up_ops, mut up_ok) = (0usize, 0usize);
    for (_, invoked, kind, _) in &results {
        let majority_up = windows
            .iter()
            .filter(|(_, s, e, _)| invoked >= s && invoked <= e)
            .all(|(_, _, _, up)| *up);
        if majority_up {
            up_ops += 1;
            if *kind == "ok" {
                up_ok += 1;
            }
        }
    }
    out.availability = if up_ops == 0 {
        1.0
    } else {
        up_ok as f64 / up_ops as f64
    };
    for (name, start, end, _) in &windows {
        let stats = out.faults.entry(name.clone()).or_default();
        stats.count += 1;
        for (_, invoked, kind, _) in &results {
            if invoked >= start && invoked <= end {
                match *kind {
                    "ok" => stats.ok += 1,
                    "fail" => stats.fail += 1,
                    _ => stats.unknown += 1,
                }
            }
        }
        let first_ok = history.iter().find_map(|e| match e {
            Entry::Ok {
                op,
                t,
                reply: Reply::Append { .. },
            } if calls.get(op).is_some_and(|(inv, _, _)| inv >= start) => Some(*t),
            _ => None,
        });
        if let Some(t) = first_ok {
            let recovery = t - start;
            stats.worst_recovery_ms = Some(
                stats
                    .worst_recovery_ms
                    .map_or(recovery, |w: f64| w.max(recovery)),
            );
        }
    }
}

#[cfg(test)]
mod tests;
