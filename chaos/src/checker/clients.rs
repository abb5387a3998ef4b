//! Checks of what clients were told, against the log: acknowledged appends are in it once
//! (and refused ones are not), appends keep real-time order, linearizable reads are not
//! stale, and Subscribe streams deliver the log in order without a gap.

use std::collections::{BTreeMap, BTreeSet};

use super::{LogIndex, Violation, invocations};
use crate::history::{Call, Entry, Reply, Status};

/// Acknowledged appends are in the log once, at their seq; refused ones are absent.
pub(super) fn acknowledged(history: &[Entry], index: &LogIndex, violations: &mut Vec<Violation>) {
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

/// If append A was acknowledged before append B was invoked, seq(A) < seq(B).
pub(super) fn real_time_order(history: &[Entry], violations: &mut Vec<Violation>) {
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
pub(super) fn linearizable_reads(history: &[Entry], violations: &mut Vec<Violation>) {
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

/// Every Subscribe stream delivered events in seq order, each once, without a gap, with the
/// log's event at each seq, across reconnects (each reconnect resumes from the last seq).
pub(super) fn streams(history: &[Entry], index: &LogIndex, violations: &mut Vec<Violation>) {
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
