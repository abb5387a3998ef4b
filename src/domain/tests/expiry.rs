//! Rules `V3`: closed orders and done tickets leave the live state
//! `CLOSED_KEPT_EVENTS` accepted events after the event that closed them.

use serde_json::json;

use super::super::outcome::{Outcome, RejectCode};
use super::super::rules::{CLOSED_KEPT_EVENTS, Rules};
use super::super::state::MemState;
use super::super::state::State as _;
use super::super::ticket::TicketKind;
use super::{T0, create_o1, ev, inv_ev, order_ev, paid_in_cash, realm};
use crate::domain::Event;

/// Test events here are numbered from this, clear of the handful the setups use.
const FILL_FROM: u128 = 1_000;

fn apply(state: &mut MemState, event: &Event, rules: Rules) -> Outcome {
    let hub_time = T0 + state.last_seq() * 1000;
    state.apply_under(event, hub_time, rules)
}

fn accept(state: &mut MemState, event: &Event, rules: Rules) -> u64 {
    match apply(state, event, rules) {
        Outcome::Accepted { seq } => seq,
        other => panic!(
            "{} expected to be accepted, got {other:?}",
            event.event_type
        ),
    }
}

/// Accepts stock adjustments until the log's last seq is `seq`.
fn fill_to(state: &mut MemState, seq: u64, rules: Rules) {
    while state.last_seq() < seq {
        let n = FILL_FROM + u128::from(state.last_seq());
        accept(state, &inv_ev(n, "FILL", 1, "till-9"), rules);
    }
}

fn kds(n: u128, id: &str, version: u64, event_type: &str, payload: serde_json::Value) -> Event {
    ev(n, "kds", id, version, event_type, "kds-1", payload)
}

fn kt1_created(n: u128) -> Event {
    kds(
        n,
        "kt-1",
        1,
        "kds.ticket.created",
        json!({ "orderId": "o-1", "items": [{ "name": "Burger", "quantity": 2 }] }),
    )
}

/// o-1 created (seq 1), its kitchen ticket (seq 2), o-1 paid (seq 3).
fn paid_order_with_open_ticket(rules: Rules) -> MemState {
    let mut state = MemState::new(realm());
    accept(&mut state, &create_o1(1), rules);
    accept(&mut state, &kt1_created(2), rules);
    assert_eq!(accept(&mut state, &paid_in_cash(3, 2), rules), 3);
    state
}

#[test]
fn a_paid_order_leaves_the_live_state_the_set_number_of_events_after_it_was_paid() {
    let mut state = paid_order_with_open_ticket(Rules::V3);
    fill_to(&mut state, 3 + CLOSED_KEPT_EVENTS - 1, Rules::V3);
    assert!(state.orders.contains_key("o-1"), "still within the window");
    fill_to(&mut state, 3 + CLOSED_KEPT_EVENTS, Rules::V3);
    assert!(!state.orders.contains_key("o-1"), "the window has passed");
    // The kitchen ticket is not done: it stays, and takes events without its order.
    let ticket = (TicketKind::Kds, "kt-1".to_owned());
    assert!(state.tickets.contains_key(&ticket));
    let done = kds(4, "kt-1", 2, "kds.ticket.done", json!({}));
    let done_at = accept(&mut state, &done, Rules::V3);
    fill_to(&mut state, done_at + CLOSED_KEPT_EVENTS - 1, Rules::V3);
    assert!(state.tickets.contains_key(&ticket));
    fill_to(&mut state, done_at + CLOSED_KEPT_EVENTS, Rules::V3);
    assert!(
        !state.tickets.contains_key(&ticket),
        "a done ticket leaves too"
    );
    // The counters, which are never closed, stay.
    assert_eq!(
        state.stock["FILL"].total(),
        i64::try_from(done_at + CLOSED_KEPT_EVENTS - 4).expect("fits")
    );
}

#[test]
fn open_orders_and_everything_under_earlier_rules_stay() {
    let mut state = MemState::new(realm());
    accept(&mut state, &create_o1(1), Rules::V3);
    fill_to(&mut state, 2 * CLOSED_KEPT_EVENTS, Rules::V3);
    assert!(
        state.orders.contains_key("o-1"),
        "an open order is live state"
    );

    let mut state = paid_order_with_open_ticket(Rules::V2);
    fill_to(&mut state, 3 + CLOSED_KEPT_EVENTS + 10, Rules::V2);
    assert!(
        state.orders.contains_key("o-1"),
        "rules V2 keep closed orders for good"
    );
}

#[test]
fn an_event_naming_an_order_that_left_finds_nothing_and_its_id_is_free_again() {
    let mut state = paid_order_with_open_ticket(Rules::V3);
    fill_to(&mut state, 3 + CLOSED_KEPT_EVENTS, Rules::V3);

    let late_edit = order_ev(
        5,
        3,
        "order.updated",
        "till-1",
        json!({ "tableNumber": "7" }),
    );
    match apply(&mut state, &late_edit, Rules::V3) {
        Outcome::Rejected { code, message, .. } => {
            assert_eq!(code, RejectCode::AggregateNotFound);
            assert!(
                message.contains("left the live state"),
                "the message says why: {message}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let ticket_for_it = kds(
        6,
        "kt-9",
        1,
        "kds.ticket.created",
        json!({ "orderId": "o-1", "items": [{ "name": "Pie", "quantity": 1 }] }),
    );
    assert!(matches!(
        apply(&mut state, &ticket_for_it, Rules::V3),
        Outcome::Rejected {
            code: RejectCode::OrderNotFound,
            ..
        }
    ));
    // A retry of an event accepted long ago is still a duplicate: dedupe is not live
    // state that leaves.
    assert_eq!(
        apply(&mut state, &paid_in_cash(3, 2), Rules::V3),
        Outcome::Duplicate { seq: 3 }
    );
    // A till that numbers its orders per day may use the id again.
    let seq = accept(&mut state, &create_o1(7), Rules::V3);
    assert_eq!(state.orders["o-1"].head.seq, seq);
}

/// Live apply decides rejected events too; a replay (snapshot install, a device
/// following the stream) sees only the accepted ones. Both must remove the same records
/// at the same seqs.
#[test]
fn replaying_only_the_accepted_events_removes_the_same_records() {
    let mut live = paid_order_with_open_ticket(Rules::V3);
    let mut n = 10_000u128;
    while live.last_seq() < 3 + CLOSED_KEPT_EVENTS + 5 {
        n += 1;
        // Every third event is a stale edit of o-1, rejected (ORDER_CLOSED, later
        // AGGREGATE_NOT_FOUND): it reaches the rules but never the log.
        let event = if n.is_multiple_of(3) {
            order_ev(n, 3, "order.updated", "till-1", json!({}))
        } else {
            inv_ev(n, "FILL", 1, "till-9")
        };
        let _ = apply(&mut live, &event, Rules::V3);
    }
    let mut replayed = MemState::new(realm());
    for stored in live.events.clone() {
        let rules = stored.rules.unwrap_or(Rules::V1);
        let hub_time = stored.hub_time.expect("stamped");
        let outcome = replayed.apply_under(&stored, hub_time, rules);
        assert!(matches!(outcome, Outcome::Accepted { .. }), "{outcome:?}");
    }
    assert_eq!(replayed.orders, live.orders);
    assert_eq!(replayed.tickets, live.tickets);
    assert!(!live.orders.contains_key("o-1"));
}
