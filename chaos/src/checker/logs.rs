//! Checks of the log alone, with no history: every node holds the same gap-free log,
//! versions go up by one, no order is edited under another device's lock, and each node's
//! read models equal the ones a replay of the log rebuilds.

use std::collections::BTreeMap;

use pos_hub::domain::Event;

use super::{NodeState, Violation};

/// Every node holds the identical seq → eventId sequence, seqs 1..n without a gap.
/// Returns the common log.
pub(super) fn logs_agree(
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

/// Per order and ticket, accepted versions go 1, 2, 3… with no repeat (forced events
/// excepted, which may jump).
pub(super) fn versions(log: &[Event], violations: &mut Vec<Violation>) {
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
pub(super) fn locks(log: &[Event], violations: &mut Vec<Violation>) {
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
pub(super) fn read_models(
    log: &[Event],
    nodes: &BTreeMap<u64, NodeState>,
    violations: &mut Vec<Violation>,
) {
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
