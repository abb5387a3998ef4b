//! One or more bad inputs for every `RejectCode`, each checked for its code and for
//! leaving the state exactly as it was. Envelope and payload cases are here, aggregate
//! rule cases in `rules`.

mod rules;

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::super::event::Event;
use super::super::outcome::{Outcome, RejectCode};
use super::super::state::MemState;
use super::{T0, burger, create_o1, ev, inv_ev, order_ev, realm, state_with};

/// Hub time at which the cases apply their event: 10 s after the setup started.
const T1: u64 = T0 + 10_000;

/// A prepared state, the event to apply to it, and the hub time to apply it at.
type Scenario = (MemState, Event, u64);
/// The code a scenario must produce, its name, and the scenario.
type Case = (RejectCode, &'static str, fn() -> Scenario);

/// `event` applied to `state` at `T1`.
fn on(state: MemState, event: Event) -> Scenario {
    (state, event, T1)
}

fn empty() -> MemState {
    MemState::new(realm())
}

fn created() -> MemState {
    state_with(&[create_o1(1)])
}

/// `create_o1(1)` changed by `f`.
fn o1(f: fn(&mut Event)) -> Event {
    let mut e = create_o1(1);
    f(&mut e);
    e
}

fn create_with_items(items: Value) -> Event {
    order_ev(1, 1, "order.created", "till-1", json!({ "items": items }))
}

fn paid_ev(n: u128, version: u64, payload: Value) -> Event {
    order_ev(n, version, "order.paid", "till-1", payload)
}

/// A kds event on ticket kt-1, sent by kds-1.
fn kds(n: u128, version: u64, event_type: &str, payload: Value) -> Event {
    ev(n, "kds", "kt-1", version, event_type, "kds-1", payload)
}

fn kds_created(n: u128, order_id: &str) -> Event {
    let items = json!([{ "name": "Burger", "quantity": 1 }]);
    kds(
        n,
        1,
        "kds.ticket.created",
        json!({ "orderId": order_id, "items": items }),
    )
}

fn envelope_and_payload_cases() -> Vec<Case> {
    use RejectCode::*;
    vec![
        (MalformedEvent, "eventId not a uuid", || {
            on(empty(), o1(|e| e.event_id = "x-1".into()))
        }),
        (MalformedEvent, "empty aggregateId", || {
            on(empty(), o1(|e| e.aggregate_id.clear()))
        }),
        (MalformedEvent, "long aggregateId", || {
            on(empty(), o1(|e| e.aggregate_id = "o".repeat(129)))
        }),
        (ClockOutOfRange, "lamport above 2^53 - 1", || {
            on(empty(), o1(|e| e.clock.lamport = u64::MAX))
        }),
        (
            ClockOutOfRange,
            "lamport a million and one ahead of the store",
            || on(empty(), o1(|e| e.clock.lamport = 1_000_001)),
        ),
        (MalformedPayload, "unknown payload field", || {
            on(
                empty(),
                o1(|e| {
                    e.payload.insert("discount".into(), json!(100));
                }),
            )
        }),
        (MalformedEvent, "version 0", || {
            on(empty(), o1(|e| e.version = 0))
        }),
        (MalformedEvent, "empty actor.deviceId", || {
            on(empty(), o1(|e| e.actor.device_id.clear()))
        }),
        (MalformedEvent, "empty clock.deviceId", || {
            on(empty(), o1(|e| e.clock.device_id.clear()))
        }),
        (MalformedEvent, "at not RFC 3339", || {
            on(empty(), o1(|e| e.at = "yesterday".into()))
        }),
        (MalformedEvent, "empty type", || {
            on(empty(), o1(|e| e.event_type.clear()))
        }),
        // A kitchen screen's marker sent back (or forged): its payment was never checked.
        (MalformedEvent, "redacted order.paid", || {
            let mut marker = paid_ev(2, 2, json!({}));
            marker.redacted = true;
            on(created(), marker)
        }),
        (WrongRealm, "other tenant", || {
            on(empty(), o1(|e| e.tenant_id = "t-other".into()))
        }),
        (WrongRealm, "empty storeId", || {
            on(empty(), o1(|e| e.store_id.clear()))
        }),
        (UnknownAggregateType, "table", || {
            on(empty(), o1(|e| e.aggregate_type = "table".into()))
        }),
        (UnknownEventType, "unknown order type", || {
            on(
                created(),
                order_ev(2, 2, "order.frobbed", "till-1", json!({})),
            )
        }),
        (UnknownEventType, "bds type on kds aggregate", || {
            on(
                created(),
                ev(
                    2,
                    "kds",
                    "kt-1",
                    1,
                    "bds.ticket.created",
                    "till-1",
                    json!({}),
                ),
            )
        }),
        (UnknownEventType, "payment aggregate", || {
            on(
                created(),
                ev(
                    2,
                    "payment",
                    "p-1",
                    1,
                    "payment.captured",
                    "till-1",
                    json!({}),
                ),
            )
        }),
        (MalformedPayload, "fractional unitPrice", || {
            let item =
                json!({ "id": "li-1", "sku": "X", "name": "X", "unitPrice": 12.5, "quantity": 1 });
            on(empty(), create_with_items(json!([item])))
        }),
        (MalformedPayload, "quantity 0", || {
            on(empty(), create_with_items(json!([burger(0)])))
        }),
        (MalformedPayload, "duplicate line id", || {
            on(empty(), create_with_items(json!([burger(1), burger(2)])))
        }),
        (MalformedPayload, "items not an array", || {
            on(
                created(),
                order_ev(2, 2, "order.updated", "till-1", json!({ "items": "lots" })),
            )
        }),
        (MalformedPayload, "no payments", || {
            on(created(), paid_ev(2, 2, json!({ "payments": [] })))
        }),
        (MalformedPayload, "amount beyond i64", || {
            let payments = json!([{ "method": "cash", "amount": u64::MAX }]);
            on(created(), paid_ev(2, 2, json!({ "payments": payments })))
        }),
        (
            MalformedPayload,
            "inventory sku is not the aggregateId",
            || {
                let mut e = inv_ev(1, "A", 1, "till-1");
                e.aggregate_id = "B".into();
                on(empty(), e)
            },
        ),
        (MalformedPayload, "inventory delta 0", || {
            on(empty(), inv_ev(1, "A", 0, "till-1"))
        }),
        (MalformedPayload, "ticket without orderId", || {
            let items = json!([{ "name": "Burger", "quantity": 1 }]);
            on(
                created(),
                kds(2, 1, "kds.ticket.created", json!({ "items": items })),
            )
        }),
        (MalformedPayload, "ack names another order", || {
            let state = state_with(&[create_o1(1), kds_created(2, "o-1")]);
            on(
                state,
                kds(3, 2, "kds.ticket.ack", json!({ "orderId": "o-2" })),
            )
        }),
    ]
}

fn cases() -> Vec<Case> {
    let mut all = envelope_and_payload_cases();
    all.extend(rules::cases());
    all
}

/// Plays the case `name`: its event must be rejected and leave the state as it was; returns
/// the code and the message.
fn reject(name: &str, scenario: fn() -> Scenario) -> (RejectCode, String) {
    let (mut state, event, hub_time) = scenario();
    let before = state.clone();
    let outcome = state.apply(&event, hub_time);
    assert_eq!(state, before, "{name}: state changed");
    match outcome {
        Outcome::Rejected { code, message, .. } => (code, message),
        other => panic!("{name}: expected a rejection, got {other:?}"),
    }
}

#[test]
fn every_case_rejects_with_its_code_and_changes_nothing() {
    for (code, name, scenario) in cases() {
        let (got, message) = reject(name, scenario);
        assert_eq!(got, code, "{name}: {message}");
        assert!(!message.is_empty(), "{name}: empty message");
    }
}

#[test]
fn every_reject_code_has_a_case() {
    let covered: BTreeSet<RejectCode> = cases().into_iter().map(|(code, _, _)| code).collect();
    // EVENT_TOO_LARGE is decided on the encoded bytes, before `apply` sees the event:
    // `raft::batch::tests::entries_are_bounded_in_bytes_and_the_rules_refuse_oversize_events`.
    for code in RejectCode::ALL
        .into_iter()
        .filter(|&c| c != RejectCode::EventTooLarge)
    {
        assert!(covered.contains(&code), "no test case produces {code}");
    }
}

/// The message of the case named `name`.
fn message_of(name: &str) -> String {
    let (_, _, scenario) = cases()
        .into_iter()
        .find(|(_, n, _)| *n == name)
        .unwrap_or_else(|| panic!("no case is named {name:?}"));
    reject(name, scenario).1
}

/// Messages name the problem and its figures (those of the cases above).
#[test]
fn messages_name_the_values() {
    assert_eq!(
        message_of("skipped version"),
        "order o-1 is at version 1; expected version 2, got 3"
    );
    assert_eq!(
        message_of("other device edits"),
        format!(
            "order o-1 is locked by till-2 until hub time {} ms",
            T0 + 46_000
        )
    );
    let m = message_of("amounts short");
    assert!(m.contains("2500") && m.contains("2000"), "{m}");
    let m = message_of("fractional unitPrice");
    assert!(
        m.contains("items[0].unitPrice") && m.contains("12.5"),
        "{m}"
    );
    let m = message_of("bds type on kds aggregate");
    assert!(
        m.contains("kds.ticket.created, kds.ticket.ack, kds.ticket.done"),
        "{m}"
    );
    let m = message_of("payment aggregate");
    assert!(m.contains("order.paid"), "{m}");
    let m = message_of("redacted order.paid");
    assert!(m.contains("marked redacted"), "{m}");
    let m = message_of("empty storeId");
    assert!(m.contains("storeId"), "{m}");
}
