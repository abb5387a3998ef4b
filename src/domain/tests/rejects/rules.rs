//! Rejections by the aggregate rules: versions, locks, lifecycles, tickets, payments and
//! ranges.

use serde_json::json;

use super::super::super::archive::DAY_MS;
use super::super::super::outcome::{Outcome, RejectCode};
use super::super::super::rules::Rules;
use super::super::super::state::MemState;
use super::super::{archive, o1_after, paid_in_cash};
use super::{
    Case, T0, T1, create_o1, create_with_items, created, empty, ev, inv_ev, kds, kds_created, on,
    order_ev, paid_ev, state_with,
};

/// o-1 at version 2, locked by till-2 from T0 + 1000 until T0 + 46_000.
fn locked_by_till2() -> MemState {
    o1_after("order.locked", "till-2")
}

fn parked() -> MemState {
    o1_after("order.parked", "till-1")
}

fn paid() -> MemState {
    state_with(&[create_o1(1), paid_in_cash(2, 2)])
}

fn cancelled() -> MemState {
    o1_after("order.cancelled", "till-1")
}

/// o-1 with kds ticket kt-1 at version 2 after `then` (`kds.ticket.ack` or `.done`).
fn kds_after(then: &str) -> MemState {
    state_with(&[
        create_o1(1),
        kds_created(2, "o-1"),
        kds(3, 2, then, json!({})),
    ])
}

fn bds(n: u128, version: u64, event_type: &str) -> super::Event {
    let items = json!([{ "name": "Beer", "quantity": 1 }]);
    let payload = if version == 1 {
        json!({ "orderId": "o-1", "items": items })
    } else {
        json!({})
    };
    ev(n, "bds", "bt-1", version, event_type, "bds-1", payload)
}

fn pay(amount: i64) -> serde_json::Value {
    json!([{ "method": "cash", "amount": amount }])
}

pub(super) fn cases() -> Vec<Case> {
    use super::RejectCode::*;
    vec![
        (
            EventBeyondRetention,
            "made before the retention horizon",
            || {
                let mut state = state_with(&[create_o1(1)]);
                state.apply(&archive::mark(2, 1, 7), T0);
                on(state, archive::made_at(3, T1 - 8 * DAY_MS))
            },
        ),
        (AggregateNotFound, "update of absent order", || {
            on(
                empty(),
                order_ev(1, 2, "order.updated", "till-1", json!({})),
            )
        }),
        (AggregateNotFound, "ack of absent ticket", || {
            on(created(), kds(2, 1, "kds.ticket.ack", json!({})))
        }),
        (StaleVersion, "old version", || {
            on(
                locked_by_till2(),
                order_ev(3, 2, "order.lock.renew", "till-2", json!({})),
            )
        }),
        (StaleVersion, "second create", || {
            on(created(), create_o1(2))
        }),
        (VersionGap, "skipped version", || {
            on(
                created(),
                order_ev(2, 3, "order.updated", "till-1", json!({})),
            )
        }),
        (VersionGap, "create with version 2", || {
            let mut e = create_o1(1);
            e.version = 2;
            on(empty(), e)
        }),
        (Locked, "other device edits", || {
            on(
                locked_by_till2(),
                order_ev(3, 3, "order.updated", "till-1", json!({})),
            )
        }),
        (Locked, "other device locks", || {
            on(
                locked_by_till2(),
                order_ev(3, 3, "order.locked", "till-1", json!({})),
            )
        }),
        (Locked, "other device cancels a parked order", || {
            let park = order_ev(3, 3, "order.parked", "till-2", json!({}));
            let state = state_with(&[
                create_o1(1),
                order_ev(2, 2, "order.locked", "till-2", json!({})),
                park,
            ]);
            on(
                state,
                order_ev(4, 4, "order.cancelled", "till-1", json!({})),
            )
        }),
        (NotLockHolder, "renew without a lock", || {
            on(
                created(),
                order_ev(2, 2, "order.lock.renew", "till-1", json!({})),
            )
        }),
        (NotLockHolder, "release of another's lock", || {
            on(
                locked_by_till2(),
                order_ev(3, 3, "order.lock.released", "till-1", json!({})),
            )
        }),
        (LockExpired, "renew after expiry", || {
            let e = order_ev(3, 3, "order.lock.renew", "till-2", json!({}));
            (locked_by_till2(), e, T0 + 46_000)
        }),
        (Superseded, "forced write with lower lamport", || {
            let mut e = order_ev(3, 2, "order.updated", "till-1", json!({}));
            e.force = true;
            e.clock.lamport = 1;
            on(locked_by_till2(), e)
        }),
        (OrderClosed, "edit after payment", || {
            on(paid(), order_ev(3, 3, "order.updated", "till-1", json!({})))
        }),
        (OrderClosed, "lock on cancelled order", || {
            on(
                cancelled(),
                order_ev(3, 3, "order.locked", "till-1", json!({})),
            )
        }),
        (OrderClosed, "forced edit after payment", || {
            let mut e = order_ev(9, 3, "order.updated", "till-1", json!({}));
            e.force = true;
            on(paid(), e)
        }),
        (OrderParked, "edit while parked", || {
            on(
                parked(),
                order_ev(3, 3, "order.updated", "till-1", json!({})),
            )
        }),
        (OrderParked, "payment while parked", || {
            on(parked(), paid_in_cash(3, 3))
        }),
        (OrderParked, "park twice", || {
            on(
                parked(),
                order_ev(3, 3, "order.parked", "till-1", json!({})),
            )
        }),
        (OrderNotParked, "recall an active order", || {
            on(
                created(),
                order_ev(2, 2, "order.reparked", "till-1", json!({})),
            )
        }),
        (OrderNotFound, "ticket for absent order", || {
            on(empty(), kds_created(1, "o-9"))
        }),
        (TicketAcked, "ack twice", || {
            on(
                kds_after("kds.ticket.ack"),
                kds(4, 3, "kds.ticket.ack", json!({})),
            )
        }),
        (TicketDone, "ack after done", || {
            on(
                kds_after("kds.ticket.done"),
                kds(4, 3, "kds.ticket.ack", json!({})),
            )
        }),
        (TicketDone, "bds done twice", || {
            let state = state_with(&[
                create_o1(1),
                bds(2, 1, "bds.ticket.created"),
                bds(3, 2, "bds.ticket.done"),
            ]);
            on(state, bds(4, 3, "bds.ticket.done"))
        }),
        (PaymentMismatch, "amounts short", || {
            on(created(), paid_ev(2, 2, json!({ "payments": pay(2000) })))
        }),
        (PaymentMismatch, "claimed total differs", || {
            on(
                created(),
                paid_ev(2, 2, json!({ "payments": pay(2500), "total": 2600 })),
            )
        }),
        (PaymentMismatch, "other currency", || {
            on(
                created(),
                paid_ev(2, 2, json!({ "payments": pay(2500), "currency": "EUR" })),
            )
        }),
        (OutOfRange, "stock counter overflows", || {
            let mut state = state_with(&[inv_ev(1, "A", 5, "till-1")]);
            if let Some(stock) = state.stock.get_mut("A") {
                stock
                    .increments
                    .insert("till-1".into(), i64::MAX as u64 - 5);
            }
            on(state, inv_ev(2, "A", 10, "till-1"))
        }),
    ]
}

// The lock cases rely on T1 falling inside a lock taken at T0 + 1000.
const _: () = assert!(T1 < T0 + 1000 + super::super::super::lock::LOCK_TTL_MS_MIN);

/// Under rules V2 no order total can overflow (100 lines and 100 modifiers of at most
/// 10^12 each, times 10^4, stay below 2^63); under V1's bounds it could, and still must be
/// refused when an old entry replays.
#[test]
fn an_order_total_that_overflows_is_out_of_range_under_v1_bounds() {
    // 10 lines of (10^12 + 100 × 10^12) × 10^4 ≈ 10^19 > i64::MAX, each field in V1's bounds.
    let modifiers: Vec<_> = (0..100)
        .map(|i| json!({ "name": format!("m{i}"), "price": 1_000_000_000_000i64 }))
        .collect();
    let items: Vec<_> = (0..10)
        .map(|i| {
            json!({ "id": format!("li-{i}"), "sku": "X", "name": "X",
                "unitPrice": 1_000_000_000_000i64, "quantity": 10_000, "modifiers": modifiers })
        })
        .collect();
    let mut state = empty();
    let before = state.clone();
    let outcome = state.apply_under(&create_with_items(json!(items)), T1, Rules::V1);
    assert!(
        matches!(
            &outcome,
            Outcome::Rejected {
                code: RejectCode::OutOfRange,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(state, before);
    let outcome = state.apply(&create_with_items(json!(items)), T1);
    assert!(
        matches!(&outcome, Outcome::Rejected { code: RejectCode::MalformedPayload, message, .. }
            if message.contains("at most 10")),
        "V2 refuses the lines themselves: {outcome:?}"
    );
}
