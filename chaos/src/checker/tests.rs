//! The checker must catch each anomaly it exists for: each test starts from a clean
//! history (no violation) and injects exactly one bug.

use std::collections::BTreeMap;

use pos_hub::domain::{Actor, Clock, Event};
use serde_json::json;

use super::{NodeState, check};
use crate::history::{Answer, Call, Entry, Phase, Reply, Sent, Status};

fn event(
    seq: u64,
    id: &str,
    order: &str,
    version: u64,
    event_type: &str,
    device: &str,
    t: u64,
) -> Event {
    let payload = match event_type {
        "order.created" | "order.updated" => json!({"items": []}),
        "order.locked" | "order.lock.renew" => json!({"ttlMs": 45_000}),
        _ => json!({}),
    };
    Event {
        event_id: id.into(),
        tenant_id: "t-demo".into(),
        store_id: "s-001".into(),
        aggregate_type: "order".into(),
        aggregate_id: order.into(),
        version,
        event_type: event_type.into(),
        at: "2026-11-25T12:00:00.000Z".into(),
        actor: Actor {
            device_id: device.into(),
            user_id: None,
        },
        clock: Clock {
            lamport: seq,
            device_id: device.into(),
        },
        payload: payload.as_object().cloned().unwrap_or_default(),
        force: false,
        seq: Some(seq),
        hub_time: Some(t),
        rules: None,
        redacted: false,
    }
}

fn id(n: u128) -> String {
    uuid::Uuid::from_u128(n).to_string()
}

/// Two devices: A creates o-1 and locks it; B creates o-2; A edits and releases o-1.
fn clean_log() -> Vec<Event> {
    vec![
        event(1, &id(1), "o-1", 1, "order.created", "till-a", 1_000),
        event(2, &id(2), "o-2", 1, "order.created", "till-b", 2_000),
        event(3, &id(3), "o-1", 2, "order.locked", "till-a", 3_000),
        event(4, &id(4), "o-1", 3, "order.updated", "till-a", 4_000),
        event(5, &id(5), "o-1", 4, "order.lock.released", "till-a", 5_000),
    ]
}

fn sent(n: u128, order: &str, version: u64, event_type: &str, device: &str) -> Sent {
    Sent {
        id: id(n),
        aggregate: format!("order/{order}"),
        version,
        event_type: event_type.into(),
        device: device.into(),
    }
}

/// Appends one at a time, each acknowledged before the next is invoked; then a
/// linearizable read of o-1 and a stream that saw everything.
fn clean_history() -> Vec<Entry> {
    let calls = [
        sent(1, "o-1", 1, "order.created", "till-a"),
        sent(2, "o-2", 1, "order.created", "till-b"),
        sent(3, "o-1", 2, "order.locked", "till-a"),
        sent(4, "o-1", 3, "order.updated", "till-a"),
        sent(5, "o-1", 4, "order.lock.released", "till-a"),
    ];
    let mut history = vec![Entry::Fault {
        t: 0.5,
        name: "kill".into(),
        phase: Phase::Start,
        detail: "node 3".into(),
        majority_up: true,
    }];
    for (i, s) in calls.into_iter().enumerate() {
        let op = i as u64 + 1;
        let t = 10.0 * op as f64;
        let eid = s.id.clone();
        history.push(Entry::Invoke {
            op,
            process: 1,
            t,
            node: 1,
            call: Call::Append { events: vec![s] },
        });
        history.push(Entry::Ok {
            op,
            t: t + 5.0,
            reply: Reply::Append {
                answers: vec![Answer {
                    id: eid,
                    status: Status::Accepted,
                    seq: op,
                    code: String::new(),
                }],
            },
        });
    }
    history.push(Entry::Invoke {
        op: 6,
        process: 2,
        t: 100.0,
        node: 2,
        call: Call::Read {
            order: "o-1".into(),
            linearizable: true,
        },
    });
    history.push(Entry::Ok {
        op: 6,
        t: 101.0,
        reply: Reply::Read {
            version: 4,
            last_seq: 5,
        },
    });
    history.push(Entry::Deliver {
        stream: 1,
        node: 2,
        t: 60.0,
        from: 0,
        events: (1..=3).map(|s| (s, id(s as u128))).collect(),
    });
    history.push(Entry::Deliver {
        stream: 1,
        node: 2,
        t: 70.0,
        from: 3,
        events: (4..=5).map(|s| (s, id(s as u128))).collect(),
    });
    history.push(Entry::Fault {
        t: 80.0,
        name: "kill".into(),
        phase: Phase::End,
        detail: "node 3".into(),
        majority_up: true,
    });
    history
}

fn nodes(log: &[Event]) -> BTreeMap<u64, NodeState> {
    let orders = vec![("o-1".to_owned(), 4, 0, 5), ("o-2".to_owned(), 1, 0, 2)];
    (1..=3)
        .map(|n| {
            (
                n,
                NodeState {
                    log: log.to_vec(),
                    orders: orders.clone(),
                },
            )
        })
        .collect()
}

fn checks_failing(history: &[Entry], nodes: &BTreeMap<u64, NodeState>) -> Vec<&'static str> {
    let outcome = check(history, nodes, &[]);
    for v in &outcome.violations {
        eprintln!("{}: {}", v.check, v.detail);
    }
    let mut names: Vec<&'static str> = outcome.violations.iter().map(|v| v.check).collect();
    names.dedup();
    names
}

#[test]
fn a_clean_history_has_no_violation_and_counts_every_op() {
    let outcome = check(&clean_history(), &nodes(&clean_log()), &[id(2)]);
    assert!(outcome.violations.is_empty(), "{:?}", outcome.violations);
    assert_eq!(outcome.appends, (5, 0, 0));
    assert_eq!(outcome.reads, (1, 0, 0));
    assert_eq!(outcome.availability, 1.0);
    let kill = &outcome.faults["kill"];
    assert_eq!(
        (kill.count, kill.ok),
        (1, 5),
        "the read came after the fault"
    );
    assert_eq!(kill.worst_recovery_ms, Some(15.0 - 0.5));
}

#[test]
fn a_lost_ack_is_reported() {
    let mut log = clean_log();
    log.remove(1); // o-2's creation acknowledged at seq 2 is gone
    for (i, e) in log.iter_mut().enumerate() {
        e.seq = Some(i as u64 + 1);
    }
    assert!(checks_failing(&clean_history(), &nodes(&log)).contains(&"lost-ack"));
}

#[test]
fn a_duplicate_is_reported() {
    let mut log = clean_log();
    let mut again = log[1].clone();
    again.seq = Some(6);
    log.push(again);
    assert!(checks_failing(&clean_history(), &nodes(&log)).contains(&"duplicate"));
}

#[test]
fn a_reordering_is_reported() {
    // Op 2 was invoked after op 1 was acknowledged, yet got the earlier seq.
    let mut history = clean_history();
    let mut log = clean_log();
    log.swap(0, 1);
    for (i, e) in log.iter_mut().enumerate() {
        e.seq = Some(i as u64 + 1);
    }
    for entry in &mut history {
        if let Entry::Ok {
            op,
            reply: Reply::Append { answers },
            ..
        } = entry
        {
            match op {
                1 => answers[0].seq = 2,
                2 => answers[0].seq = 1,
                _ => {}
            }
        }
    }
    let failing = checks_failing(&history, &nodes(&log));
    assert!(failing.contains(&"real-time-order"), "{failing:?}");
}

#[test]
fn a_gap_is_reported() {
    let mut log = clean_log();
    log[4].seq = Some(7);
    assert!(checks_failing(&clean_history(), &nodes(&log)).contains(&"gap"));
}

#[test]
fn nodes_that_disagree_are_reported() {
    let log = clean_log();
    let mut all = nodes(&log);
    if let Some(node) = all.get_mut(&3) {
        node.log.pop();
    }
    assert!(checks_failing(&clean_history(), &all).contains(&"nodes-agree"));
}

#[test]
fn a_stale_linearizable_read_is_reported() {
    let mut history = clean_history();
    for entry in &mut history {
        if let Entry::Ok {
            reply: Reply::Read { last_seq, .. },
            ..
        } = entry
        {
            *last_seq = 4; // misses the release acknowledged at seq 5 before the read
        }
    }
    assert!(checks_failing(&history, &nodes(&clean_log())).contains(&"stale-read"));
}

#[test]
fn a_double_lock_is_reported() {
    let mut log = clean_log();
    // B writes o-1 while A holds its lock (before A's release).
    log.insert(
        3,
        event(4, &id(9), "o-1", 3, "order.locked", "till-b", 3_500),
    );
    for (i, e) in log.iter_mut().enumerate() {
        e.seq = Some(i as u64 + 1);
        if i >= 4 {
            e.version += 1;
        }
    }
    let failing = checks_failing(&[], &nodes(&log));
    assert!(failing.contains(&"double-lock"), "{failing:?}");
}

#[test]
fn a_repeated_version_is_reported() {
    let mut log = clean_log();
    log[3].version = 2;
    assert!(checks_failing(&[], &nodes(&log)).contains(&"versions"));
}

#[test]
fn a_stream_with_a_gap_or_a_repeat_is_reported() {
    let mut history = clean_history();
    for entry in &mut history {
        if let Entry::Deliver { from, events, .. } = entry
            && *from == 3
        {
            events.remove(0); // skips seq 4
        }
    }
    assert!(checks_failing(&history, &nodes(&clean_log())).contains(&"stream"));
}

#[test]
fn a_read_model_that_differs_from_its_log_is_reported() {
    let mut all = nodes(&clean_log());
    if let Some(node) = all.get_mut(&2) {
        node.orders[0].1 = 3;
    }
    assert!(checks_failing(&clean_history(), &all).contains(&"read-models"));
}

#[test]
fn a_refused_event_in_the_log_and_a_lost_outbox_event_are_reported() {
    let mut history = clean_history();
    for entry in &mut history {
        if let Entry::Ok {
            op: 2,
            reply: Reply::Append { answers },
            ..
        } = entry
        {
            answers[0].status = Status::Rejected;
            answers[0].code = "STALE_VERSION".into();
        }
    }
    let outcome = check(&history, &nodes(&clean_log()), &[id(77)]);
    let names: Vec<&str> = outcome.violations.iter().map(|v| v.check).collect();
    assert!(names.contains(&"rejected-present"), "{names:?}");
    assert!(names.contains(&"outbox"), "{names:?}");
}

#[test]
fn recovery_is_measured_per_device_and_the_worst_is_the_slowest_device() {
    // Fault at 100 ms. Device 1 is acknowledged 20 ms in. Device 2's first append after
    // the start gets no answer, its next is acknowledged 1,040 ms in. Device 3's append
    // invoked before the fault does not count; its next is acknowledged 30 ms in.
    let append = |op: u64, process: u32, t: f64| Entry::Invoke {
        op,
        process,
        t,
        node: 1,
        call: Call::Append {
            events: vec![sent(u128::from(op), "o-1", 1, "order.created", "till-a")],
        },
    };
    let ok = |op: u64, t: f64| Entry::Ok {
        op,
        t,
        reply: Reply::Append { answers: vec![] },
    };
    let history = vec![
        append(1, 3, 90.0),
        Entry::Fault {
            t: 100.0,
            name: "pause".into(),
            phase: Phase::Start,
            detail: "node 1".into(),
            majority_up: true,
        },
        append(2, 1, 101.0),
        append(3, 2, 105.0),
        ok(1, 110.0),
        ok(2, 120.0),
        append(4, 3, 120.0),
        ok(4, 130.0),
        Entry::Info {
            op: 3,
            t: 1_105.0,
            error: "no answer within 1s".into(),
        },
        append(5, 2, 1_106.0),
        ok(5, 1_140.0),
        Entry::Fault {
            t: 4_100.0,
            name: "pause".into(),
            phase: Phase::End,
            detail: "node 1".into(),
            majority_up: true,
        },
    ];
    let mut outcome = super::Outcome::default();
    super::stats::stats(&history, &mut outcome);
    let pause = &outcome.faults["pause"];
    let mut recoveries = pause.recoveries_ms.clone();
    recoveries.sort_by(f64::total_cmp);
    assert_eq!(recoveries, vec![20.0, 30.0, 1_040.0]);
    assert_eq!(pause.worst_recovery_ms, Some(1_040.0));
    assert_eq!(pause.median_recovery_ms(), Some(30.0));
    assert_eq!(pause.worst_first_recovery_ms, Some(20.0));
}
