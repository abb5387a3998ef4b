//! Unit tests of `apply`: shared event builders, the example flow and storage round trips
//! here; every rejection code in `rejects`; accepted paths in `flows`.

mod archive;
mod expiry;
mod flows;
mod rejects;

use serde_json::{Value, json};
use uuid::Uuid;

use super::event::{Actor, Clock, Event, Realm};
use super::inventory::Stock;
use super::order::OrderStatus;
use super::outcome::Outcome;
use super::state::MemState;
use super::ticket::{TicketKind, TicketStatus};

/// A plausible hub time (ms) to start tests at.
pub(super) const T0: u64 = 1_700_000_000_000;

pub(super) fn realm() -> Realm {
    Realm::new("t-demo", "s-001")
}

/// The eventId of test event `n`; tests number their events to keep ids distinct.
pub(crate) fn uuid(n: u128) -> String {
    Uuid::from_u128(n).to_string()
}

/// Event number `n` (its eventId and Lamport time both derive from `n`). Shared by the
/// crate's unit tests (`crate::domain::tests::ev`).
pub(crate) fn ev(
    n: u128,
    aggregate_type: &str,
    aggregate_id: &str,
    version: u64,
    event_type: &str,
    device: &str,
    payload: Value,
) -> Event {
    let Value::Object(payload) = payload else {
        panic!("test payloads are objects")
    };
    Event {
        event_id: uuid(n),
        tenant_id: "t-demo".into(),
        store_id: "s-001".into(),
        aggregate_type: aggregate_type.into(),
        aggregate_id: aggregate_id.into(),
        version,
        event_type: event_type.into(),
        at: "2026-11-24T12:00:00.000Z".into(),
        actor: Actor {
            device_id: device.into(),
            user_id: Some(format!("u-{device}")),
        },
        clock: Clock {
            lamport: n as u64,
            device_id: device.into(),
        },
        payload,
        force: false,
        seq: None,
        hub_time: None,
        rules: None,
        redacted: false,
    }
}

/// An order event on `o-1`.
pub(super) fn order_ev(
    n: u128,
    version: u64,
    event_type: &str,
    device: &str,
    payload: Value,
) -> Event {
    ev(n, "order", "o-1", version, event_type, device, payload)
}

/// `order.created` for `o-1`: 2 × 1250 in USD, total 2500.
pub(crate) fn create_o1(n: u128) -> Event {
    order_ev(
        n,
        1,
        "order.created",
        "till-1",
        json!({ "currency": "USD", "items": [burger(2)] }),
    )
}

pub(super) fn burger(quantity: i64) -> Value {
    json!({ "id": "li-1", "sku": "BURGER", "name": "Burger", "unitPrice": 1250, "quantity": quantity })
}

pub(super) fn inv_ev(n: u128, sku: &str, delta: i64, device: &str) -> Event {
    ev(
        n,
        "inventory",
        sku,
        1,
        "inventory.adjusted",
        device,
        json!({ "sku": sku, "delta": delta }),
    )
}

/// `order.paid` for `o-1` by till-1: `create_o1`'s 2500, in cash.
pub(crate) fn paid_in_cash(n: u128, version: u64) -> Event {
    order_ev(
        n,
        version,
        "order.paid",
        "till-1",
        json!({ "payments": [{ "method": "cash", "amount": 2500 }] }),
    )
}

/// A state with `events` applied at hub times `T0, T0 + 1000, …`, each required to be
/// accepted.
pub(super) fn state_with(events: &[Event]) -> MemState {
    let mut state = MemState::new(realm());
    for (i, e) in events.iter().enumerate() {
        let outcome = state.apply(e, T0 + i as u64 * 1000);
        assert!(
            matches!(outcome, Outcome::Accepted { .. }),
            "setup event {i} ({}): {outcome:?}",
            e.event_type
        );
    }
    state
}

/// `o-1` created (event 1), then `event_type` with an empty payload by `device` (event 2,
/// version 2, at T0 + 1000).
pub(super) fn o1_after(event_type: &str, device: &str) -> MemState {
    state_with(&[create_o1(1), order_ev(2, 2, event_type, device, json!({}))])
}

const ORDER_FLOW: &str = include_str!("../../examples/order-flow.jsonl");

#[test]
fn example_order_flow() {
    let events: Vec<Event> = ORDER_FLOW
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("example lines are events"))
        .collect();
    assert_eq!(events.len(), 15);
    let hub_time = |i: usize| 1_700_000_000_000 + i as u64 * 1000;
    let mut state = MemState::new(Realm::new("t-demo", "s-001"));
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            state.apply(e, hub_time(i)),
            Outcome::Accepted { seq: i as u64 + 1 },
            "line {}",
            i + 1
        );
    }

    let order = &state.orders["o-1001"];
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(order.total, 3750);
    assert_eq!(order.head.version, 8);
    assert_eq!(order.lock, None, "paying clears the lock");
    assert_eq!(state.stock["BURGER-CLASSIC"].total(), 22);
    assert_eq!(
        state.tickets[&(TicketKind::Kds, "kt-5001".to_owned())].status,
        TicketStatus::Done
    );
    assert_eq!(
        state.tickets[&(TicketKind::Bds, "bt-7001".to_owned())].status,
        TicketStatus::Done
    );
    let view = |kind, id| order.ticket(kind, id).map(|t| t.status);
    assert_eq!(view(TicketKind::Kds, "kt-5001"), Some(TicketStatus::Done));
    assert_eq!(view(TicketKind::Bds, "bt-7001"), Some(TicketStatus::Done));
    assert_eq!(order.tickets.len(), 2);
    for (i, stored) in state.events.iter().enumerate() {
        assert_eq!(stored.seq, Some(i as u64 + 1));
        assert_eq!(stored.hub_time, Some(hub_time(i)));
    }

    let before = state.clone();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            state.apply(e, hub_time(100 + i)),
            Outcome::Duplicate { seq: i as u64 + 1 }
        );
    }
    assert_eq!(state, before);
}

#[test]
fn models_round_trip_through_the_codec() {
    let mut state = state_with(&[
        create_o1(1),
        order_ev(2, 2, "order.locked", "till-1", json!({})),
        ev(
            3,
            "kds",
            "kt-1",
            1,
            "kds.ticket.created",
            "till-1",
            json!({ "orderId": "o-1", "items": [{ "name": "Burger", "quantity": 2, "notes": "rare" }] }),
        ),
        inv_ev(4, "BURGER", -3, "till-1"),
        inv_ev(5, "BURGER", 7, "till-2"),
    ]);
    let order = state.orders.remove("o-1").expect("order");
    assert!(order.lock.is_some() && !order.tickets.is_empty());
    let back: super::order::Order =
        crate::codec::from_slice(&crate::codec::to_vec(&order).expect("ser")).expect("de");
    assert_eq!(back, order);

    let ticket = state
        .tickets
        .remove(&(TicketKind::Kds, "kt-1".to_owned()))
        .expect("ticket");
    let back: super::ticket::Ticket =
        crate::codec::from_slice(&crate::codec::to_vec(&ticket).expect("ser")).expect("de");
    assert_eq!(back, ticket);

    let stock = state.stock.remove("BURGER").expect("stock");
    let back: Stock =
        crate::codec::from_slice(&crate::codec::to_vec(&stock).expect("ser")).expect("de");
    assert_eq!(back, stock);
    assert_eq!(back.total(), 4);
}
