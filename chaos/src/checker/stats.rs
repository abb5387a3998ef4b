//! Not a check: the run's counts, availability while a majority was up, and per-fault
//! recovery times per device, for the report.

use std::collections::BTreeMap;

use super::{Outcome, invocations};
use crate::history::{Call, Entry, Phase, Reply};

/// Counts, availability while a majority was up, and per-fault recovery times: for each
/// device, from the fault's start to its next acknowledged append.
pub(super) fn stats(history: &[Entry], out: &mut Outcome) {
    let calls = invocations(history);
    // Appends: op → (invoked at, by which device).
    let appends: BTreeMap<u64, (f64, u32)> = history
        .iter()
        .filter_map(|e| match e {
            Entry::Invoke {
                op,
                process,
                t,
                call: Call::Append { .. },
                ..
            } => Some((*op, (*t, *process))),
            _ => None,
        })
        .collect();
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
        // Per device: its first append invoked at or after the start that was acknowledged.
        let mut recovered: BTreeMap<u32, f64> = BTreeMap::new();
        for entry in history {
            if let Entry::Ok {
                op,
                t,
                reply: Reply::Append { .. },
            } = entry
                && let Some((invoked, process)) = appends.get(op)
                && invoked >= start
            {
                let first = recovered.entry(*process).or_insert(*t);
                *first = first.min(*t);
            }
        }
        if let Some(first) = recovered.values().copied().reduce(f64::min) {
            let first = first - start;
            stats.worst_first_recovery_ms = Some(
                stats
                    .worst_first_recovery_ms
                    .map_or(first, |w: f64| w.max(first)),
            );
        }
        for t in recovered.into_values() {
            let recovery = t - start;
            stats.recoveries_ms.push(recovery);
            stats.worst_recovery_ms = Some(
                stats
                    .worst_recovery_ms
                    .map_or(recovery, |w: f64| w.max(recovery)),
            );
        }
    }
}
