//! Property tests: random event sequences over a small universe (3 orders, 2 tickets per
//! kind, 2 SKUs, 3 devices) with versions near the current one, random force, lock ttls,
//! hub-time steps that let locks lapse, re-sent eventIds and malformed events.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::{Value, json};

use super::event::{Event, Realm};
use super::outcome::Outcome;
use super::state::MemState;
use super::ticket::TicketKind;

const T0: u64 = 1_700_000_000_000;
const ORDERS: [&str; 3] = ["o-1", "o-2", "o-3"];
const TICKETS: [&str; 2] = ["t-1", "t-2"];
const SKUS: [&str; 2] = ["A", "B"];
const DEVICES: [&str; 3] = ["till-1", "till-2", "kds-1"];
const ORDER_TYPES: [&str; 9] = [
    "order.created",
    "order.updated",
    "order.parked",
    "order.reparked",
    "order.paid",
    "order.cancelled",
    "order.locked",
    "order.lock.renew",
    "order.lock.released",
];
const KDS_TYPES: [&str; 3] = ["kds.ticket.created", "kds.ticket.ack", "kds.ticket.done"];
const BDS_TYPES: [&str; 2] = ["bds.ticket.created", "bds.ticket.done"];
/// Unit price of the one product orders are made of, in minor units.
const PRICE: i64 = 1000;

/// Where an event goes and who sends it; shared by the aggregate kinds.
#[derive(Debug, Clone)]
struct Common {
    device: usize,
    version_offset: i64,
    force: bool,
    lamport: u64,
    /// Hub time elapsed since the previous event, in ms.
    dt: u64,
}

#[derive(Debug, Clone)]
enum Step {
    Order {
        spec: OrderSpec,
        c: Common,
    },
    Ticket {
        bar: bool,
        ticket: usize,
        ty: usize,
        order: usize,
        c: Common,
    },
    Inventory {
        sku: usize,
        delta: i64,
        c: Common,
    },
    /// Re-send an earlier event (same eventId), possibly with another type.
    Resend {
        which: Index,
        retype: bool,
        dt: u64,
    },
    /// An order event broken in one of several ways.
    Malformed {
        how: u8,
        order: usize,
        c: Common,
    },
}

fn common() -> impl Strategy<Value = Common> {
    // Mostly the expected next version, sometimes stale, repeated or skipping one.
    let offset = prop_oneof![6 => Just(1i64), 1 => Just(0i64), 1 => Just(-1i64), 1 => Just(2i64)];
    (
        0..3usize,
        offset,
        prop::bool::weighted(0.15),
        0..60u64,
        0..15_000u64,
    )
        .prop_map(|(device, version_offset, force, lamport, dt)| Common {
            device,
            version_offset,
            force,
            lamport,
            dt,
        })
}

/// An index into `ORDER_TYPES`. Creates are over-weighted so that orders exist early,
/// and locks so that lock conflicts are common before orders close.
fn order_type() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => Just(0usize), 3 => Just(1usize), 1 => Just(2usize), 1 => Just(3usize), 1 => Just(4usize),
        1 => Just(5usize), 4 => Just(6usize), 2 => Just(7usize), 1 => Just(8usize),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..3usize, order_type(), 1..4i64, prop::bool::weighted(0.8), prop::option::of(0..100_000u64), common())
            .prop_map(|(order, ty, quantity, exact_payment, ttl, c)| Step::Order {
                spec: OrderSpec { order, ty, quantity, exact_payment, ttl },
                c,
            }),
        2 => (any::<bool>(), 0..2usize, 0..3usize, 0..3usize, common())
            .prop_map(|(bar, ticket, ty, order, c)| Step::Ticket { bar, ticket, ty, order, c }),
        1 => (0..2usize, prop_oneof![-20..0i64, 1..20i64], common())
            .prop_map(|(sku, delta, c)| Step::Inventory { sku, delta, c }),
        1 => (any::<Index>(), any::<bool>(), 0..5_000u64).prop_map(|(which, retype, dt)| Step::Resend { which, retype, dt }),
        1 => (0..6u8, 0..3usize, common()).prop_map(|(how, order, c)| Step::Malformed { how, order, c }),
    ]
}

/// Test event `n` as `c` writes it: its device, Lamport time and force flag.
fn event(
    n: u128,
    aggregate_type: &str,
    aggregate_id: &str,
    event_type: &str,
    version: u64,
    c: &Common,
    payload: Value,
) -> Event {
    let device = DEVICES[c.device];
    let mut event = super::tests::ev(
        n,
        aggregate_type,
        aggregate_id,
        version,
        event_type,
        device,
        payload,
    );
    event.actor.user_id = None;
    event.clock.lamport = c.lamport;
    event.force = c.force;
    event
}

/// A version `offset` from `current`, at least 1 (version 0 is a malformed envelope, which
/// `Step::Malformed` covers).
fn near(current: u64, offset: i64) -> u64 {
    current.saturating_add_signed(offset).max(1)
}

/// What an order step asks for: which order, which type, and the payload's knobs.
#[derive(Debug, Clone, Copy)]
struct OrderSpec {
    order: usize,
    ty: usize,
    quantity: i64,
    /// Pay the order's exact total (else one too much).
    exact_payment: bool,
    ttl: Option<u64>,
}

fn order_event(n: u128, model: &MemState, spec: &OrderSpec, c: &Common) -> Event {
    let OrderSpec {
        order,
        ty,
        quantity,
        exact_payment: exact,
        ttl,
    } = *spec;
    let id = ORDERS[order];
    let current = model.orders.get(id).map_or(0, |o| o.head.version);
    let total = model.orders.get(id).map_or(0, |o| o.total);
    let items = json!([{ "id": "li-1", "sku": "A", "name": "A", "unitPrice": PRICE, "quantity": quantity }]);
    let payload = match ORDER_TYPES[ty] {
        "order.created" | "order.updated" => json!({ "items": items }),
        "order.paid" => {
            let amount = if exact { total } else { total + 1 };
            json!({ "payments": [{ "method": "cash", "amount": amount }] })
        }
        "order.locked" | "order.lock.renew" => ttl.map_or(json!({}), |ms| json!({ "ttlMs": ms })),
        _ => json!({}),
    };
    event(
        n,
        "order",
        id,
        ORDER_TYPES[ty],
        near(current, c.version_offset),
        c,
        payload,
    )
}

/// Turns steps into concrete events with their hub times. Versions are chosen relative to
/// a model state that applies the events as they are built, so most land near the
/// aggregate's current version.
fn build(steps: &[Step]) -> Vec<(Event, u64)> {
    let mut model = MemState::new(Realm::new("t-demo", "s-001"));
    let mut out: Vec<(Event, u64)> = Vec::new();
    let mut hub_time = T0;
    for (i, step) in steps.iter().enumerate() {
        let n = i as u128 + 1;
        let (e, dt) = match step {
            Step::Order { spec, c } => (order_event(n, &model, spec, c), c.dt),
            Step::Ticket {
                bar,
                ticket,
                ty,
                order,
                c,
            } => {
                let (agg, kind, types): (&str, TicketKind, &[&str]) = if *bar {
                    ("bds", TicketKind::Bds, &BDS_TYPES)
                } else {
                    ("kds", TicketKind::Kds, &KDS_TYPES)
                };
                let ty = types[ty % types.len()];
                let id = TICKETS[*ticket];
                let current = model
                    .tickets
                    .get(&(kind, id.to_owned()))
                    .map_or(0, |t| t.head.version);
                let payload = if ty.ends_with(".created") {
                    json!({ "orderId": ORDERS[*order], "items": [{ "name": "A", "quantity": 1 }] })
                } else {
                    json!({})
                };
                (
                    event(n, agg, id, ty, near(current, c.version_offset), c, payload),
                    c.dt,
                )
            }
            Step::Inventory { sku, delta, c } => {
                let payload = json!({ "sku": SKUS[*sku], "delta": delta });
                (
                    event(
                        n,
                        "inventory",
                        SKUS[*sku],
                        "inventory.adjusted",
                        1,
                        c,
                        payload,
                    ),
                    c.dt,
                )
            }
            Step::Resend { which, retype, dt } => {
                if out.is_empty() {
                    continue;
                }
                let mut e = out[which.index(out.len())].0.clone();
                if *retype {
                    e.event_type = "order.cancelled".into();
                    e.version += 1;
                }
                (e, *dt)
            }
            Step::Malformed { how, order, c } => {
                let spec = OrderSpec {
                    order: *order,
                    ty: 1,
                    quantity: 1,
                    exact_payment: true,
                    ttl: None,
                };
                let mut e = order_event(n, &model, &spec, c);
                match how {
                    0 => e.event_id = format!("not-a-uuid-{n}"),
                    1 => e.store_id = "s-999".into(),
                    2 => e.at = "noon".into(),
                    3 => e.actor.device_id.clear(),
                    4 => e.aggregate_type = "table".into(),
                    _ => {
                        let items = json!([{ "id": "x", "sku": "A", "name": "A", "unitPrice": 12.5, "quantity": 1 }]);
                        e.payload.insert("items".into(), items);
                    }
                };
                (e, c.dt)
            }
        };
        hub_time += dt;
        model.apply(&e, hub_time);
        out.push((e, hub_time));
    }
    out
}

/// Applies `events` in order to a fresh state, handing every step to `check` as
/// `(state before, event, hub time, outcome, state after)`; returns the outcomes.
fn replay(
    events: &[(Event, u64)],
    mut check: impl FnMut(&MemState, &Event, u64, &Outcome, &MemState) -> Result<(), TestCaseError>,
) -> Result<(MemState, Vec<Outcome>), TestCaseError> {
    let mut state = MemState::new(Realm::new("t-demo", "s-001"));
    let mut outcomes = Vec::with_capacity(events.len());
    for (e, hub_time) in events {
        let before = state.clone();
        let outcome = state.apply(e, *hub_time);
        check(&before, e, *hub_time, &outcome, &state)?;
        outcomes.push(outcome);
    }
    Ok((state, outcomes))
}

fn no_check(
    _: &MemState,
    _: &Event,
    _: u64,
    _: &Outcome,
    _: &MemState,
) -> Result<(), TestCaseError> {
    Ok(())
}

proptest! {
    /// The same random sequence applied to two fresh states gives identical outcomes and
    /// identical states: what every node of the group relies on.
    #[test]
    fn the_same_sequence_gives_identical_states_and_outcomes(steps in prop::collection::vec(step(), 1..60)) {
        let events = build(&steps);
        let (a, outcomes_a) = replay(&events, no_check)?;
        let (b, outcomes_b) = replay(&events, no_check)?;
        prop_assert_eq!(outcomes_a, outcomes_b);
        prop_assert_eq!(a, b);
    }

    /// No order ever has two unexpired lock holders: while a device's lock binds, no other
    /// device's write to that order (a take-over `order.locked` included) is accepted
    /// unless it is forced.
    #[test]
    fn no_order_ever_has_two_unexpired_lock_holders(steps in prop::collection::vec(step(), 1..60)) {
        let events = build(&steps);
        replay(&events, |before, e, hub_time, outcome, _| {
            let holder = (e.aggregate_type == "order")
                .then(|| before.orders.get(&e.aggregate_id))
                .flatten()
                .and_then(|o| o.lock.as_ref())
                .filter(|l| l.is_held_at(hub_time))
                .map(|l| l.holder.clone());
            if let (Outcome::Accepted { .. }, Some(holder)) = (outcome, holder) {
                prop_assert!(e.force || holder == e.actor.device_id,
                    "{} by {} accepted while {} holds the lock", e.event_type, e.actor.device_id, holder);
            }
            Ok(())
        })?;
    }

    /// A Duplicate (and a Rejected) never changes state, and a Duplicate names a seq
    /// that was already given out.
    #[test]
    fn duplicates_and_rejections_never_change_state(steps in prop::collection::vec(step(), 1..60)) {
        let events = build(&steps);
        replay(&events, |before, _, _, outcome, after| {
            match outcome {
                Outcome::Duplicate { seq } => {
                    prop_assert!(*seq <= before.events.len() as u64);
                    prop_assert_eq!(after, before);
                }
                Outcome::Rejected { .. } => prop_assert_eq!(after, before),
                Outcome::Accepted { .. } => {}
            }
            Ok(())
        })?;
    }

    /// Accepted events get seqs 1, 2, 3, … with no gap, and the log holds exactly them.
    #[test]
    fn accepted_seqs_count_up_from_one_without_gaps(steps in prop::collection::vec(step(), 1..60)) {
        let events = build(&steps);
        let (state, outcomes) = replay(&events, no_check)?;
        let seqs: Vec<u64> = outcomes.iter().filter_map(|o| match o {
            Outcome::Accepted { seq } => Some(*seq),
            _ => None,
        }).collect();
        prop_assert_eq!(&seqs, &(1..=seqs.len() as u64).collect::<Vec<_>>());
        prop_assert_eq!(state.events.len(), seqs.len());
    }

    /// (b) inventory totals and per-device counters do not depend on the order of
    /// adjustments.
    #[test]
    fn inventory_adjustments_commute(
        (adjustments, shuffled) in prop::collection::vec((0..2usize, 0..3usize, prop_oneof![-1_000..0i64, 1..1_000i64]), 0..40)
            .prop_flat_map(|v| {
                let indexed: Vec<_> = v.into_iter().enumerate().collect();
                (Just(indexed.clone()), Just(indexed).prop_shuffle())
            })
    ) {
        let run = |list: &[(usize, (usize, usize, i64))]| {
            let mut s = MemState::new(Realm::new("t-demo", "s-001"));
            for (i, (sku, device, delta)) in list {
                let c = Common { device: *device, version_offset: 0, force: false, lamport: 0, dt: 0 };
                let payload = json!({ "sku": SKUS[*sku], "delta": delta });
                let e = event(*i as u128 + 1, "inventory", SKUS[*sku], "inventory.adjusted", 1, &c, payload);
                assert!(matches!(s.apply(&e, T0), Outcome::Accepted { .. }));
            }
            s
        };
        let (x, y) = (run(&adjustments), run(&shuffled));
        prop_assert_eq!(&x.stock, &y.stock);
        for sku in SKUS {
            let expected: i64 = adjustments.iter().filter(|(_, (s, _, _))| SKUS[*s] == sku).map(|(_, (_, _, d))| d).sum();
            prop_assert_eq!(x.stock.get(sku).map_or(0, |s| s.total()), expected);
        }
    }
}
