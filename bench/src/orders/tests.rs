//! The order flows are what the hub accepts, in the shape issue 18 asks for: every order
//! created, updated twice, paid, in that order; 0.5–2 KB per event; about the number of
//! orders asked for open at a time; the same events from the same seed.

use std::collections::{BTreeMap, HashSet};

use pos_hub::domain::order::OrderStatus;
use pos_hub::domain::{MemState, Outcome, Realm};

use super::*;

const BASE_MS: u64 = 1_790_000_000_000;

fn events(seed: u64, client: u32, open: usize, n: usize) -> Vec<FlowEvent> {
    let mut flows = OrderFlows::new(seed, client, open, BASE_MS);
    (0..n).map(|_| flows.next_event()).collect()
}

/// Every event of several tills' flows, applied in turn to the domain's reference state (the
/// rules every hub node runs), is accepted; each order's events are created → updated →
/// updated → paid with versions 1 to 4; the hub sees `open` orders open after the first ones.
#[test]
fn every_flow_is_accepted_in_order_and_keeps_the_open_orders_asked_for() {
    let open = 40;
    let tills = 3;
    let mut state = MemState::new(Realm::new(TENANT, STORE));
    let mut flows: Vec<OrderFlows> = (0..tills)
        .map(|c| OrderFlows::new(7, c, open, BASE_MS))
        .collect();
    let mut seen: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    let mut ids = HashSet::new();
    for i in 0..6_000u64 {
        // The tills take turns, as their Appends reach the leader.
        let flow = &mut flows[(i % u64::from(tills)) as usize];
        let made = flow.next_event();
        let e = &made.event;
        assert!(
            ids.insert(e.event_id.clone()),
            "eventId repeated: {}",
            e.event_id
        );
        let outcome = state.apply(e, BASE_MS + i);
        assert!(
            matches!(outcome, Outcome::Accepted { .. }),
            "event {i} ({} v{} on {}) was not accepted: {outcome:?}\n{}",
            e.event_type,
            e.version,
            e.aggregate_id,
            serde_json::to_string(e).unwrap_or_default()
        );
        seen.entry(e.aggregate_id.clone())
            .or_default()
            .push((e.event_type.clone(), e.version));
        if i >= u64::from(tills) * open as u64 {
            let active = state
                .orders
                .values()
                .filter(|o| o.status == OrderStatus::Active)
                .count();
            let asked = tills as usize * open;
            assert!(
                (asked - tills as usize..=asked).contains(&active),
                "after event {i}: {active} orders open, {asked} asked for"
            );
        }
    }
    let mut paid = 0;
    for (order, steps) in &seen {
        for (k, (event_type, version)) in steps.iter().enumerate() {
            assert_eq!(event_type, FLOW[k], "{order}: {steps:?}");
            assert_eq!(*version, k as u64 + 1, "{order}: {steps:?}");
        }
        if steps.len() == FLOW.len() {
            paid += 1;
            assert_eq!(state.orders[order].status, OrderStatus::Paid, "{order}");
        }
    }
    // 6,000 events in flows of 4 with 120 open at the end: the rest were paid.
    assert!(
        paid >= (6_000 - 4 * tills as usize * open) / 4,
        "{paid} paid"
    );
    let started: u64 = flows.iter().map(OrderFlows::orders_started).sum();
    assert_eq!(started as usize, seen.len());
    // The last event may have paid an order whose slot the next event fills.
    assert!(
        flows
            .iter()
            .all(|f| (open - 1..=open).contains(&f.open_now()))
    );
}

#[test]
fn every_event_is_half_a_kilobyte_to_two_and_the_sizes_vary() {
    let made = events(11, 0, 50, 20_000);
    let mut by_type: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for m in &made {
        let json = serde_json::to_vec(&m.event).expect("JSON");
        assert_eq!(m.json_bytes, json.len(), "the reported size is the JSON's");
        assert!(
            (EVENT_JSON_MIN..=EVENT_JSON_MAX).contains(&m.json_bytes),
            "{} bytes: {}",
            m.json_bytes,
            String::from_utf8_lossy(&json)
        );
        let range = by_type
            .entry(
                FLOW.iter()
                    .find(|t| **t == m.event.event_type)
                    .expect("a flow type"),
            )
            .or_insert((usize::MAX, 0));
        range.0 = range.0.min(m.json_bytes);
        range.1 = range.1.max(m.json_bytes);
    }
    // Each type spreads over a good part of the range, not one fixed size.
    for (event_type, (min, max)) in &by_type {
        assert!(max - min >= 300, "{event_type}: {min}..{max} bytes");
    }
    assert_eq!(by_type.len(), 3, "created, updated and paid: {by_type:?}");
}

#[test]
fn the_same_seed_makes_the_same_events_and_another_seed_others() {
    let as_json = |made: Vec<FlowEvent>| -> Vec<String> {
        made.iter()
            .map(|m| serde_json::to_string(&m.event).expect("JSON"))
            .collect()
    };
    let a = as_json(events(42, 3, 10, 500));
    assert_eq!(a, as_json(events(42, 3, 10, 500)));
    let other_seed = as_json(events(43, 3, 10, 500));
    let other_till = as_json(events(42, 4, 10, 500));
    for other in [&other_seed, &other_till] {
        let same = a.iter().zip(other.iter()).filter(|(x, y)| x == y).count();
        assert_eq!(same, 0, "no event is shared");
    }
}

/// Two tills of the same run never share an eventId or an order id.
#[test]
fn tills_of_one_run_never_share_an_event_or_an_order() {
    let mut ids = HashSet::new();
    let mut orders: BTreeMap<String, u32> = BTreeMap::new();
    for till in 0..8 {
        for m in events(5, till, 5, 2_000) {
            assert!(ids.insert(m.event.event_id.clone()), "{}", m.event.event_id);
            let owner = *orders.entry(m.event.aggregate_id.clone()).or_insert(till);
            assert_eq!(owner, till, "{} written by two tills", m.event.aggregate_id);
            assert_eq!(m.event.actor.device_id, format!("till-{till:02}"));
        }
    }
}

#[test]
fn event_ids_are_uuid_v7_at_the_time_base() {
    for m in events(1, 2, 4, 100) {
        let id = uuid::Uuid::parse_str(&m.event.event_id).expect("a UUID");
        assert_eq!(id.get_version_num(), 7, "{id}");
        let (secs, nanos) = id.get_timestamp().expect("a v7 time").to_unix();
        assert_eq!(secs * 1000 + u64::from(nanos) / 1_000_000, BASE_MS, "{id}");
    }
}

#[test]
fn times_are_rfc_3339_with_milliseconds() {
    assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(rfc3339_ms(1_790_000_000_123), "2026-09-21T14:13:20.123Z");
    assert_eq!(rfc3339_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
}
