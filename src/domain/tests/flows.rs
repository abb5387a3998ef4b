//! Accepted paths: the order lifecycle, lease locks, forced writes, tickets, inventory
//! and dedupe.

use serde_json::json;

use super::super::lock::{LOCK_TTL_MS_DEFAULT, LOCK_TTL_MS_MAX, LOCK_TTL_MS_MIN};
use super::super::order::OrderStatus;
use super::super::outcome::{Outcome, RejectCode};
use super::super::state::MemState;
use super::super::ticket::{TicketKind, TicketStatus};
use super::{
    T0, burger, create_o1, ev, inv_ev, o1_after, order_ev, paid_in_cash, realm, state_with, uuid,
};

fn accepted(state: &mut MemState, event: &super::Event, hub_time: u64) -> u64 {
    match state.apply(event, hub_time) {
        Outcome::Accepted { seq } => seq,
        other => panic!(
            "{} expected to be accepted, got {other:?}",
            event.event_type
        ),
    }
}

fn rejected(state: &mut MemState, event: &super::Event, hub_time: u64) -> RejectCode {
    let before = state.clone();
    match state.apply(event, hub_time) {
        Outcome::Rejected { code, .. } => {
            assert_eq!(*state, before, "a rejection changed the state");
            code
        }
        other => panic!(
            "{} expected to be rejected, got {other:?}",
            event.event_type
        ),
    }
}

#[test]
fn order_lifecycle_happy_path() {
    let mut s = MemState::new(realm());
    assert_eq!(accepted(&mut s, &create_o1(1), T0), 1);
    let o = &s.orders["o-1"];
    assert_eq!(
        (o.status, o.total, o.head.version, o.head.seq),
        (OrderStatus::Active, 2500, 1, 1)
    );

    let items = json!([burger(3), { "id": "li-2", "sku": "FRIES", "name": "Fries", "unitPrice": 300, "quantity": 2,
        "modifiers": [{ "name": "cheese", "price": 50 }, { "id": "m-2", "name": "bacon", "price": 100 }] }]);
    accepted(
        &mut s,
        &order_ev(
            2,
            2,
            "order.updated",
            "till-1",
            json!({ "items": items, "tableNumber": "7", "guestCount": 3 }),
        ),
        T0 + 1,
    );
    let o = &s.orders["o-1"];
    assert_eq!(o.total, 3 * 1250 + 2 * (300 + 50 + 100));
    assert_eq!(
        (o.table_number.as_deref(), o.guest_count),
        (Some("7"), Some(3))
    );

    accepted(
        &mut s,
        &order_ev(
            3,
            3,
            "order.parked",
            "till-1",
            json!({ "reason": "dessert later" }),
        ),
        T0 + 2,
    );
    assert_eq!(s.orders["o-1"].status, OrderStatus::Parked);
    accepted(
        &mut s,
        &order_ev(4, 4, "order.reparked", "till-2", json!({})),
        T0 + 3,
    );
    assert_eq!(s.orders["o-1"].status, OrderStatus::Active);
    let total = s.orders["o-1"].total;
    let pay = json!({ "payments": [{ "method": "card", "amount": total - 1000 }, { "method": "cash", "amount": 1000 }], "total": total, "currency": "usd" });
    assert_eq!(
        accepted(&mut s, &order_ev(5, 5, "order.paid", "till-2", pay), T0 + 4),
        5
    );
    let o = &s.orders["o-1"];
    assert_eq!(
        (
            o.status,
            o.payments.len(),
            o.head.version,
            o.head.seq,
            o.head.lamport
        ),
        (OrderStatus::Paid, 2, 5, 5, 5)
    );
    assert_eq!(s.events[4].seq, Some(5));
    assert_eq!(s.events[4].hub_time, Some(T0 + 4));
}

#[test]
fn parked_order_can_be_cancelled() {
    let mut s = o1_after("order.parked", "till-1");
    accepted(
        &mut s,
        &order_ev(
            3,
            3,
            "order.cancelled",
            "till-2",
            json!({ "reason": "walked out" }),
        ),
        T0 + 5000,
    );
    assert_eq!(s.orders["o-1"].status, OrderStatus::Cancelled);
}

#[test]
fn lease_lock_take_renew_release() {
    let mut s = state_with(&[create_o1(1)]);
    let t = T0 + 10_000;
    accepted(
        &mut s,
        &order_ev(2, 2, "order.locked", "till-1", json!({})),
        t,
    );
    let lock = s.orders["o-1"].lock.clone().expect("locked");
    assert_eq!(
        (
            lock.holder.as_str(),
            lock.user_id.as_deref(),
            lock.expires_at_ms
        ),
        ("till-1", Some("u-till-1"), t + LOCK_TTL_MS_DEFAULT)
    );

    // Another device is shut out of every write, told who holds the lock in its own
    // field; the holder is not shut out.
    for (n, ty) in [
        (3, "order.updated"),
        (4, "order.parked"),
        (5, "order.cancelled"),
        (6, "order.locked"),
    ] {
        match s.apply(&order_ev(n, 3, ty, "till-2", json!({})), t + 1) {
            Outcome::Rejected {
                code, lock_holder, ..
            } => assert_eq!(
                (code, lock_holder.as_deref()),
                (RejectCode::Locked, Some("till-1")),
                "{ty}"
            ),
            other => panic!("{ty}: {other:?}"),
        }
    }
    assert_eq!(
        rejected(
            &mut s,
            &order_ev(7, 3, "order.lock.renew", "till-2", json!({})),
            t + 1
        ),
        RejectCode::NotLockHolder
    );
    accepted(
        &mut s,
        &order_ev(8, 3, "order.updated", "till-1", json!({ "guestCount": 4 })),
        t + 1,
    );

    // Renew moves the expiry to now + clamped ttl.
    accepted(
        &mut s,
        &order_ev(9, 4, "order.lock.renew", "till-1", json!({ "ttlMs": 1 })),
        t + 20_000,
    );
    assert_eq!(
        s.orders["o-1"].lock.as_ref().map(|l| l.expires_at_ms),
        Some(t + 20_000 + LOCK_TTL_MS_MIN)
    );
    // Re-lock by the holder extends too.
    accepted(
        &mut s,
        &order_ev(
            10,
            5,
            "order.locked",
            "till-1",
            json!({ "ttlMs": 10_000_000 }),
        ),
        t + 30_000,
    );
    assert_eq!(
        s.orders["o-1"].lock.as_ref().map(|l| l.expires_at_ms),
        Some(t + 30_000 + LOCK_TTL_MS_MAX)
    );

    accepted(
        &mut s,
        &order_ev(11, 6, "order.lock.released", "till-1", json!({})),
        t + 31_000,
    );
    assert_eq!(s.orders["o-1"].lock, None);
    assert_eq!(
        rejected(
            &mut s,
            &order_ev(12, 7, "order.lock.released", "till-1", json!({})),
            t + 32_000
        ),
        RejectCode::NotLockHolder
    );
    accepted(
        &mut s,
        &order_ev(13, 7, "order.updated", "till-2", json!({})),
        t + 32_000,
    );
}

#[test]
fn expired_lock_binds_nobody() {
    let mut s = state_with(&[create_o1(1)]);
    accepted(
        &mut s,
        &order_ev(2, 2, "order.locked", "till-1", json!({ "ttlMs": 30_000 })),
        T0 + 1000,
    );
    let expiry = T0 + 31_000;
    assert_eq!(
        rejected(
            &mut s,
            &order_ev(3, 3, "order.updated", "till-2", json!({})),
            expiry - 1
        ),
        RejectCode::Locked
    );
    // At the expiry instant the lock no longer binds: another device takes it over.
    accepted(
        &mut s,
        &order_ev(4, 3, "order.locked", "till-2", json!({})),
        expiry,
    );
    assert_eq!(
        s.orders["o-1"].lock.as_ref().map(|l| l.holder.as_str()),
        Some("till-2")
    );
    // The former holder cannot renew or release it any more.
    for (n, ty) in [(5, "order.lock.renew"), (6, "order.lock.released")] {
        assert_eq!(
            rejected(&mut s, &order_ev(n, 4, ty, "till-1", json!({})), expiry + 1),
            RejectCode::NotLockHolder,
            "{ty}"
        );
    }
    // Its own expired lock can still be released by its holder.
    accepted(
        &mut s,
        &order_ev(7, 4, "order.lock.released", "till-2", json!({})),
        expiry + 100_000,
    );
    assert_eq!(s.orders["o-1"].lock, None);
}

#[test]
fn paying_clears_the_lock() {
    let mut s = o1_after("order.locked", "till-1");
    accepted(&mut s, &paid_in_cash(3, 3), T0 + 2000);
    assert_eq!(s.orders["o-1"].lock, None);
}

#[test]
fn forced_write_wins_on_lamport_and_eventid() {
    let mut s = o1_after("order.locked", "till-2");
    // Stale version, and till-2 holds the lock: a forced write with a higher lamport wins.
    let mut forced = order_ev(30, 1, "order.updated", "till-1", json!({ "guestCount": 9 }));
    forced.force = true;
    accepted(&mut s, &forced, T0 + 2000);
    let o = &s.orders["o-1"];
    assert_eq!(
        (o.head.version, o.head.lamport, o.guest_count),
        (3, 30, Some(9))
    );
    assert_eq!(
        o.lock.as_ref().map(|l| l.holder.as_str()),
        Some("till-2"),
        "force leaves the lock alone"
    );
    assert_eq!(s.events[2].version, 1, "the event is stored as sent");

    // Same lamport: the eventId breaks the tie.
    let mut lower = order_ev(29, 9, "order.updated", "till-3", json!({}));
    lower.force = true;
    lower.clock.lamport = 30;
    assert_eq!(rejected(&mut s, &lower, T0 + 3000), RejectCode::Superseded);
    let mut higher = order_ev(31, 9, "order.updated", "till-3", json!({}));
    higher.force = true;
    higher.clock.lamport = 30;
    accepted(&mut s, &higher, T0 + 3000);
    assert_eq!(s.orders["o-1"].head.version, 4);

    // A forced order.locked takes the lock over.
    let mut take = order_ev(40, 4, "order.locked", "till-1", json!({}));
    take.force = true;
    accepted(&mut s, &take, T0 + 4000);
    assert_eq!(
        s.orders["o-1"].lock.as_ref().map(|l| l.holder.as_str()),
        Some("till-1")
    );

    // Force does not skip lifecycle rules.
    let mut recall = order_ev(50, 1, "order.reparked", "till-1", json!({}));
    recall.force = true;
    assert_eq!(
        rejected(&mut s, &recall, T0 + 5000),
        RejectCode::OrderNotParked
    );
}

#[test]
fn tickets_follow_their_order() {
    let mut s = o1_after("order.locked", "till-1");
    let order_head = s.orders["o-1"].head.clone();
    // Ticket writes ignore the order's lock and leave its version alone.
    accepted(
        &mut s,
        &ev(
            3,
            "kds",
            "kt-1",
            1,
            "kds.ticket.created",
            "till-2",
            json!({ "orderId": "o-1", "station": "grill", "items": [{ "sku": "BURGER", "name": "Burger", "quantity": 2 }] }),
        ),
        T0 + 2000,
    );
    accepted(
        &mut s,
        &ev(
            4,
            "bds",
            "bt-1",
            1,
            "bds.ticket.created",
            "till-2",
            json!({ "orderId": "o-1", "items": [{ "name": "Beer", "quantity": 1 }] }),
        ),
        T0 + 2000,
    );
    assert_eq!(s.orders["o-1"].head, order_head);
    accepted(
        &mut s,
        &ev(
            5,
            "kds",
            "kt-1",
            2,
            "kds.ticket.ack",
            "kds-1",
            json!({ "orderId": "o-1" }),
        ),
        T0 + 3000,
    );
    let kds = &s.tickets[&(TicketKind::Kds, "kt-1".to_owned())];
    assert_eq!(
        (kds.status, kds.head.version, kds.station.as_deref()),
        (TicketStatus::Acked, 2, Some("grill"))
    );
    assert_eq!(
        s.tickets[&(TicketKind::Bds, "bt-1".to_owned())].status,
        TicketStatus::Created
    );
    assert!(s.orders["o-1"].ticket(TicketKind::Bds, "bt-1").is_some());

    // Paid orders still get their food.
    accepted(&mut s, &paid_in_cash(6, 3), T0 + 4000);
    accepted(
        &mut s,
        &ev(7, "kds", "kt-1", 3, "kds.ticket.done", "kds-1", json!({})),
        T0 + 5000,
    );
    accepted(
        &mut s,
        &ev(
            8,
            "kds",
            "kt-2",
            1,
            "kds.ticket.created",
            "till-1",
            json!({ "orderId": "o-1", "items": [{ "name": "Pie", "quantity": 1 }] }),
        ),
        T0 + 6000,
    );
    assert_eq!(
        s.orders["o-1"]
            .ticket(TicketKind::Kds, "kt-1")
            .map(|t| t.status),
        Some(TicketStatus::Done)
    );
    assert_eq!(
        s.orders["o-1"]
            .ticket(TicketKind::Kds, "kt-2")
            .map(|t| t.status),
        Some(TicketStatus::Created)
    );
    assert_eq!(s.orders["o-1"].head.version, 3);
}

#[test]
fn inventory_is_a_pn_counter_without_versions() {
    let mut s = MemState::new(realm());
    accepted(&mut s, &inv_ev(1, "A", 10, "till-1"), T0);
    accepted(&mut s, &inv_ev(2, "A", -3, "till-1"), T0);
    let mut any_version = inv_ev(3, "A", 5, "till-2");
    any_version.version = 77;
    any_version.force = true;
    accepted(&mut s, &any_version, T0);
    accepted(&mut s, &inv_ev(4, "A", -1_000_000_000, "till-2"), T0);
    let a = &s.stock["A"];
    assert_eq!(a.total(), 12 - 1_000_000_000);
    assert_eq!(
        (
            a.increments["till-1"],
            a.increments["till-2"],
            a.decrements["till-1"],
            a.decrements["till-2"]
        ),
        (10, 5, 3, 1_000_000_000)
    );
    assert_eq!(
        rejected(&mut s, &inv_ev(5, "A", 1_000_000_001, "till-2"), T0),
        RejectCode::MalformedPayload
    );
}

#[test]
fn duplicates_answer_with_the_first_seq_whatever_they_carry() {
    let mut s = o1_after("order.updated", "till-1");
    let before = s.clone();
    let mut resent = order_ev(
        1,
        99,
        "order.paid",
        "till-9",
        json!({ "payments": "garbage" }),
    );
    resent.event_id = uuid(1).to_uppercase();
    assert_eq!(s.apply(&resent, T0 + 99_000), Outcome::Duplicate { seq: 1 });
    resent.event_id = uuid(2).replace('-', "");
    assert_eq!(s.apply(&resent, T0 + 99_000), Outcome::Duplicate { seq: 2 });
    assert_eq!(s, before);
    // The realm is still checked first.
    resent.store_id = "s-002".into();
    assert!(matches!(
        s.apply(&resent, T0),
        Outcome::Rejected {
            code: RejectCode::WrongRealm,
            ..
        }
    ));
}

#[test]
fn a_kitchen_and_a_bar_ticket_may_share_an_id_on_one_order() {
    let mut s = state_with(&[create_o1(1)]);
    for (n, kind) in [(2, "kds"), (3, "bds")] {
        accepted(
            &mut s,
            &ev(
                n,
                kind,
                "t-1",
                1,
                &format!("{kind}.ticket.created"),
                "till-1",
                json!({ "orderId": "o-1", "items": [{ "name": "Dish", "quantity": 1 }] }),
            ),
            T0 + 1000,
        );
    }
    accepted(
        &mut s,
        &ev(4, "bds", "t-1", 2, "bds.ticket.done", "bds-1", json!({})),
        T0 + 2000,
    );
    let order = &s.orders["o-1"];
    assert_eq!(order.tickets.len(), 2, "{:?}", order.tickets);
    assert_eq!(
        order.ticket(TicketKind::Kds, "t-1").map(|t| t.status),
        Some(TicketStatus::Created)
    );
    assert_eq!(
        order.ticket(TicketKind::Bds, "t-1").map(|t| t.status),
        Some(TicketStatus::Done)
    );
}
