//! Fuzzing the decode + validate path with property tests: protobuf bytes (random, or valid
//! encodings cut short and bit-flipped), random JSON payloads on well-formed events, and
//! random JSON lines, all the way through `convert` and `domain::apply`.
//!
//! Every input must end as a decode error, a conversion error or an outcome — never a
//! panic — and every outcome must keep the log's contract: a rejection or duplicate
//! changes nothing, an acceptance appends at the next seq.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use pos_hub::domain::inventory::INVENTORY_DELTA_ABS_MAX;
use pos_hub::domain::payload::{GUEST_COUNT_MAX, MONEY_ABS_MAX_MINOR, QUANTITY_MAX};
use pos_hub::domain::rules::{self, Rules};
use pos_hub::domain::{Event, MemState, Outcome, Realm, RejectCode, State};
use pos_hub::proto::convert::{self, PAYLOAD_INTEGER_ABS_MAX};
use pos_hub::proto::pb;
use proptest::option::weighted;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseError;
use prost::Message;
use prost_types::{ListValue, Struct, value::Kind};
use serde_json::{Number, Value, json};

const T0: u64 = 1_700_000_000_000;
const ORDER_FLOW: &str = include_str!("../examples/order-flow.jsonl");
/// The payload fields the validators read, so that random payloads hit real fields.
const FIELDS: &str = "items id sku name unitPrice quantity category modifiers price payments \
    method amount total currency delta reason ttlMs orderId station notes tableNumber guestCount";
/// Every known event type.
const TYPES: &str = "order.created order.updated order.parked order.reparked order.paid \
    order.cancelled order.locked order.lock.renew order.lock.released kds.ticket.created \
    kds.ticket.ack kds.ticket.done bds.ticket.created bds.ticket.done inventory.adjusted";
/// Strings the rules compare against (the first is empty), mixed into the random ones.
const WORDS: &str = "|t-demo|s-001|o-1|k-1|till-1|USD|usd|US|order|kds|order.created|\
    2026-11-24T12:00:00Z|0193a1f0-0001-7000-8000-000000000001|é∂😀\u{0}";
/// JSON tokens, including numbers that no `i64`, `u64` or `f64` holds exactly.
const TOKENS: &str = "null true \"\" [] {} 0 -1 0.5 1e400 -0 18446744073709551616 \
    9007199254740993 -9223372036854775809 , : \"payload\": \\u0000 \\ud800";

fn words(list: &'static str, sep: char) -> Vec<&'static str> {
    list.split(sep).collect()
}

fn realm() -> Realm {
    Realm::new("t-demo", "s-001")
}

/// The aggregate type of `ty`, and the aggregate it targets in `SEEDED`: creates make a
/// new one (`o-2`), follow-ups edit an existing one (`o-1`).
fn target(ty: &str) -> (&str, String) {
    let aggregate_type = ty.split('.').next().unwrap_or_default();
    let id = match aggregate_type {
        "inventory" => "SKU-1".to_owned(),
        t if ty.ends_with(".created") => format!("{}-2", &t[..1]),
        t => format!("{}-1", &t[..1]),
    };
    (aggregate_type, id)
}

/// Applies `event` and checks the outcome contract against a copy taken before.
fn apply_checked(state: &mut MemState, event: &Event, hub_time: u64) -> Result<(), TestCaseError> {
    let before = state.clone();
    match state.apply(event, hub_time) {
        Outcome::Accepted { .. } if event.redacted => {
            prop_assert!(false, "a hub accepted an event marked redacted");
        }
        Outcome::Accepted { seq } => {
            prop_assert_eq!(seq, before.last_seq() + 1, "accepted out of seq order");
            prop_assert_eq!(state.last_seq(), seq);
        }
        outcome => prop_assert!(*state == before, "{outcome:?} changed the state"),
    }
    Ok(())
}

/// Decodes `bytes` both as a request and as one event, and applies whatever converts.
fn check_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut state = MemState::new(realm());
    for event in pb::AppendRequest::decode(bytes).map_or_else(|_| vec![], |r| r.events) {
        if let Ok(event) = convert::event_from_pb(&event) {
            apply_checked(&mut state, &event, T0)?;
        }
    }
    if let Ok(Ok(event)) = pb::Event::decode(bytes).map(|e| convert::event_from_pb(&e)) {
        apply_checked(&mut MemState::new(realm()), &event, T0)?;
    }
    Ok(())
}

/// Cuts `bytes` at a random point (if asked), then flips some of their bits.
fn damage(mut bytes: Vec<u8>, cut: Option<Index>, flips: &[(Index, u8)]) -> Vec<u8> {
    if let Some(cut) = cut {
        bytes.truncate(cut.index(bytes.len() + 1));
    }
    for (at, bit) in flips {
        if !bytes.is_empty() {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << (bit % 8);
        }
    }
    bytes
}

/// A compiled regex strategy: a `&str` strategy would compile its regex for every value.
fn regex(pattern: &str) -> impl Strategy<Value = String> {
    proptest::string::string_regex(pattern).expect("a valid regex")
}

/// Known words, random printable text, and lengths around the id and text limits.
fn text() -> impl Strategy<Value = String> {
    let long = prop_oneof![select(vec![128, 129, 1024, 1025]), 1usize..2000];
    prop_oneof![
        3 => select(words(WORDS, '|')).prop_map(String::from),
        3 => regex("\\PC{0,24}"),
        1 => long.prop_map(|n| "x".repeat(n)),
    ]
}

/// Boxed, so that `prop_recursive`, which rebuilds its strategy for every value, clones
/// it instead of compiling its regex again.
fn key() -> BoxedStrategy<String> {
    prop_oneof![4 => select(words(FIELDS, ' ')).prop_map(String::from), 1 => text()].boxed()
}

fn double() -> impl Strategy<Value = f64> {
    let (two53, inf) = (PAYLOAD_INTEGER_ABS_MAX as f64, f64::INFINITY);
    let odd = [f64::NAN, inf, -inf, f64::MAX, -0.0, 0.5, 1e300];
    let edges = [two53, two53 + 2.0, -two53 - 2.0, 1e12, 9.3e18];
    prop_oneof![
        any::<f64>(),
        (-20_000i64..20_000).prop_map(|n| n as f64),
        -1e6f64..1e6,
        select([odd.as_slice(), &edges].concat()),
    ]
}

/// Integers at and around every bound the converter or the validators enforce.
fn integer() -> impl Strategy<Value = i64> {
    let two53 = PAYLOAD_INTEGER_ABS_MAX as i64;
    let edges = [two53, MONEY_ABS_MAX_MINOR, QUANTITY_MAX, GUEST_COUNT_MAX];
    let edges = [edges, [INVENTORY_DELTA_ABS_MAX, 45_000, i64::MAX, i64::MIN]].concat();
    let near = (select(edges), -1i64..=1, any::<bool>()).prop_map(|(edge, step, negate)| {
        let n = edge.saturating_add(step);
        if negate { n.saturating_neg() } else { n }
    });
    prop_oneof![1 => any::<i64>(), 8 => -3i64..20_000, 3 => near]
}

/// Wraps `tree` (up to 4 deep) in a chain of up to 16 lists/objects, so that nesting up
/// to 20 deep is common.
fn nested<T: std::fmt::Debug + Clone + 'static>(
    tree: impl Strategy<Value = T>,
    wrap: fn(T, bool, String) -> T,
) -> impl Strategy<Value = T> {
    (tree, prop::collection::vec((any::<bool>(), key()), 0..=16))
        .prop_map(move |(tree, chain)| chain.into_iter().fold(tree, |t, (l, k)| wrap(t, l, k)))
}

fn list(values: Vec<prost_types::Value>) -> prost_types::Value {
    let kind = Some(Kind::ListValue(ListValue { values }));
    prost_types::Value { kind }
}

fn object(fields: BTreeMap<String, prost_types::Value>) -> prost_types::Value {
    let kind = Some(Kind::StructValue(Struct { fields }));
    prost_types::Value { kind }
}

fn pb_value() -> impl Strategy<Value = prost_types::Value> {
    let key = key();
    let leaf = prop_oneof![
        Just(None),
        any::<i32>().prop_map(|n| Some(Kind::NullValue(n))),
        any::<bool>().prop_map(|b| Some(Kind::BoolValue(b))),
        double().prop_map(|x| Some(Kind::NumberValue(x))),
        text().prop_map(|s| Some(Kind::StringValue(s))),
    ];
    let tree = leaf
        .prop_map(|kind| prost_types::Value { kind })
        .prop_recursive(4, 32, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(list),
                prop::collection::btree_map(key.clone(), inner, 0..5).prop_map(object),
            ]
        });
    nested(tree, |inner, is_list, key| {
        if is_list {
            list(vec![inner])
        } else {
            object([(key, inner)].into())
        }
    })
}

fn often(s: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![3 => Just(s.to_owned()), 1 => text()]
}

fn uuid(n: u128) -> String {
    uuid::Uuid::from_u128(n).to_string()
}

prop_compose! {
    /// Mostly well-formed events of known types, so that many reach the payload rules.
    fn pb_event()(
        id in prop_oneof![
            3 => any::<u128>().prop_map(uuid), 1 => (0u128..3).prop_map(uuid), 1 => text()
        ],
        realm in prop_oneof![3 => Just(("t-demo".into(), "s-001".into())), 1 => (text(), text())],
        known in select(words(TYPES, ' ')),
        unknown in weighted(0.2, (text(), text(), text())),
        version in prop_oneof![3 => 1u64..3, 1 => any::<u64>()],
        at in often("2026-11-24T12:00:00.000Z"),
        actor in weighted(0.9, (often("till-1"), often(""))),
        clock in weighted(0.9, (any::<u64>(), often("till-1"))),
        payload in weighted(0.9, prop::collection::btree_map(key(), pb_value(), 0..6)),
        (force, seq, hub_time, rules) in any::<(bool, u64, u64, u32)>(),
        redacted in prop::bool::weighted(0.1),
    ) -> pb::Event {
        // Creates and follow-ups share an aggregate, so a request can create, then edit it.
        let (aggregate_type, aggregate_id) = target(known);
        let known = (aggregate_type.to_owned(), known.to_owned(), aggregate_id.replace('2', "1"));
        let (aggregate_type, r#type, aggregate_id) = unknown.unwrap_or(known);
        pb::Event {
            event_id: id, tenant_id: realm.0, store_id: realm.1, aggregate_type, aggregate_id,
            version, r#type, at, force, seq, hub_time, rules, redacted,
            actor: actor.map(|(device_id, user_id)| pb::Actor { device_id, user_id }),
            clock: clock.map(|(lamport, device_id)| pb::Clock { lamport, device_id }),
            payload: payload.map(|fields| Struct { fields }),
        }
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let key = key();
    let leaf = prop_oneof![
        2 => Just(Value::Null),
        2 => any::<bool>().prop_map(Value::Bool),
        6 => integer().prop_map(Value::from),
        1 => (1u64 << 63..).prop_map(Value::from),
        3 => double().prop_map(|x| Number::from_f64(x).map_or(Value::Null, Value::Number)),
        3 => text().prop_map(Value::String),
    ];
    let tree = leaf.prop_recursive(4, 32, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..5).prop_map(|m| json!(m)),
        ]
    });
    nested(tree, |inner, list, key| {
        if list {
            json!([inner])
        } else {
            json!({ key: inner })
        }
    })
}

/// A valid payload for an event of type `ty` on `SEEDED`.
fn template(ty: &str) -> Value {
    let item = json!({
        "id": "li-1", "sku": "BURGER", "name": "Burger", "unitPrice": 1250, "quantity": 2,
        "category": "food", "modifiers": [{ "id": "m-1", "name": "No onions", "price": 0 }],
    });
    let ticket_item = json!({ "sku": "BURGER", "name": "Burger", "quantity": 2, "notes": "rare" });
    let (aggregate_type, _) = target(ty);
    match ty.rsplit('.').next() {
        Some("created") if aggregate_type == "order" => {
            json!({ "tableNumber": "5", "guestCount": 2, "currency": "USD", "items": [item] })
        }
        Some("created") => json!({ "orderId": "o-1", "station": "grill", "items": [ticket_item] }),
        Some("updated") => json!({ "tableNumber": "7", "guestCount": 3, "items": [item] }),
        Some("parked" | "cancelled") => json!({ "reason": "guest stepped out" }),
        Some("paid") => json!({
            "payments": [{ "method": "card", "amount": 2500 }], "total": 2500, "currency": "usd",
        }),
        Some("locked" | "renew") => json!({ "ttlMs": 45_000 }),
        Some("ack" | "done") => json!({ "orderId": "o-1" }),
        Some("adjusted") => json!({ "sku": "SKU-1", "delta": -2, "reason": "sold" }),
        _ => json!({}),
    }
}

/// A well-formed event of type `ty` on `aggregate_id` by till-1, version 1 for creates
/// and 2 otherwise.
fn event_json(id: u128, ty: &str, aggregate_id: &str, force: bool, payload: Value) -> Value {
    json!({
        "eventId": uuid(id), "tenantId": "t-demo", "storeId": "s-001",
        "aggregateType": target(ty).0, "aggregateId": aggregate_id,
        "version": if ty.ends_with(".created") { 1 } else { 2 },
        "type": ty, "at": "2026-11-24T12:00:00.000Z", "actor": { "deviceId": "till-1" },
        "clock": { "lamport": 5, "deviceId": "till-1" }, "payload": payload, "force": force,
    })
}

/// Order o-1 (total 2500, version 1) with kitchen ticket k-1 and bar ticket b-1 on it,
/// made by events 1-3, so that follow-ups reach the payload and transition rules.
static SEEDED: LazyLock<MemState> = LazyLock::new(|| {
    let mut state = MemState::new(realm());
    let seeds = [
        ("order.created", "o-1"),
        ("kds.ticket.created", "k-1"),
        ("bds.ticket.created", "b-1"),
    ];
    for (n, (ty, id)) in (1..).zip(seeds) {
        let event = serde_json::from_value(event_json(n, ty, id, false, template(ty)));
        let outcome = state.apply(&event.expect("an Event"), T0);
        assert!(
            matches!(outcome, Outcome::Accepted { .. }),
            "seed {ty}: {outcome:?}"
        );
    }
    state
});

/// Sets `value` under `key` in the payload root or in one of the objects the validators
/// read (an item, a modifier, a payment), often over a real field.
fn plant(payload: &mut Value, at: Index, key: String, value: Value) {
    let places = ["", "/items/0", "/items/0/modifiers/0", "/payments/0"];
    if let Some(Value::Object(o)) = payload.pointer_mut(places[at.index(places.len())]) {
        o.insert(key, value);
    }
}

/// An example line with bytes cut, inserted, overwritten or bit-flipped.
fn mutate(line: &str, edits: &[(u8, Index, String)]) -> String {
    let mut bytes = line.as_bytes().to_vec();
    for (op, at, s) in edits {
        let i = at.index(bytes.len() + 1);
        match op {
            0 => bytes.truncate(i),
            1 => drop(bytes.splice(i..i, s.bytes())),
            2 => drop(bytes.splice(i..(i + s.len() + 1).min(bytes.len()), s.bytes())),
            _ => {
                if let Some(b) = bytes.get_mut(i) {
                    *b ^= 1 << (s.len() % 8);
                }
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn json_line() -> impl Strategy<Value = String> {
    let lines: Vec<&'static str> = ORDER_FLOW.lines().collect();
    let token = prop_oneof![
        select(words(TOKENS, ' ')).prop_map(String::from),
        regex("\\PC{0,6}")
    ];
    let edits = prop::collection::vec((0u8..4, any::<Index>(), token), 1..6);
    prop_oneof![
        1 => any::<String>(),
        1 => regex("[\\[\\]{}\":,0-9a-zA-Z.eE+ -]{0,300}"),
        3 => (select(lines.clone()), edits).prop_map(|(line, edits)| mutate(line, &edits)),
        // A payload nested to well past serde_json's recursion limit of 128.
        1 => (select(lines), 100usize..300).prop_map(|(line, depth)| {
            let mut event: Value = serde_json::from_str(line).expect("example line is JSON");
            event["payload"]["deep"] = (0..depth).fold(json!(1), |inner, _| json!([inner]));
            event.to_string()
        }),
    ]
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

proptest! {
    #![proptest_config(config(20_000))]

    /// Arbitrary bytes either fail to decode or decode to events that convert and apply
    /// without a panic, each outcome keeping the log's contract.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check_bytes(&bytes)?;
    }
}

proptest! {
    #![proptest_config(config(30_000))]

    /// Valid encodings of random requests and events (odd strings, NaN/±inf/huge numbers,
    /// payloads nested ~20 deep), whole, cut short or bit-flipped, never make decode,
    /// conversion or apply panic, and applied events keep the log's contract.
    #[test]
    fn damaged_encodings_never_panic(
        events in prop::collection::vec(pb_event(), 0..4),
        single in any::<bool>(),
        cut in prop::option::of(any::<Index>()),
        flips in prop::collection::vec((any::<Index>(), any::<u8>()), 0..4),
    ) {
        let bytes = match (single, events.first()) {
            (true, Some(event)) => event.encode_to_vec(),
            _ => pb::AppendRequest { events }.encode_to_vec(),
        };
        check_bytes(&damage(bytes, cut, &flips))?;
    }
}

proptest! {
    #![proptest_config(config(40_000))]

    /// Random JSON payloads (or valid ones with random subtrees planted) on otherwise
    /// well-formed events of every type, against an existing order and tickets, never make
    /// serde, conversion or apply panic, applied as parsed and after `event_to_pb` (which
    /// refuses only inexact numbers) and `event_from_pb` (which then always succeeds).
    #[test]
    fn random_json_payloads_never_panic(
        ty in select(words(TYPES, ' ')),
        random in weighted(0.3, prop::collection::btree_map(key(), json_value(), 0..6)),
        plants in prop::collection::vec((any::<Index>(), key(), json_value()), 0..4),
        id in prop_oneof![9 => 100u128..u128::MAX, 1 => 1u128..4],
        force in any::<bool>(),
        dt in prop_oneof![0u64..100_000, any::<u64>()],
    ) {
        let mut payload = random.map_or_else(|| template(ty), |m| json!(m));
        for (at, key, value) in plants {
            plant(&mut payload, at, key, value);
        }
        let line = event_json(id, ty, &target(ty).1, force, payload).to_string();
        let event: Event = serde_json::from_str(&line).map_err(fail)?;
        let hub_time = T0.saturating_add(dt);
        apply_checked(&mut SEEDED.clone(), &event, hub_time)?;
        if let Ok(wire) = convert::event_to_pb(&event) {
            if let Ok(decoded) = pb::Event::decode(wire.encode_to_vec().as_slice()) {
                prop_assert_eq!(&decoded, &wire, "the protobuf encoding does not round-trip");
            }
            let back = convert::event_from_pb(&wire).map_err(fail)?;
            apply_checked(&mut SEEDED.clone(), &back, hub_time)?;
        }
    }
}

proptest! {
    #![proptest_config(config(20_000))]

    /// Arbitrary strings and mutated or over-nested example lines parse as an `Event` or
    /// fail cleanly; the ones that parse apply without a panic, keeping the log's contract.
    #[test]
    fn random_json_lines_never_panic(line in json_line()) {
        if let Ok(event) = serde_json::from_str::<Event>(&line) {
            apply_checked(&mut SEEDED.clone(), &event, T0)?;
        }
    }
}

/// A bounded place in a payload of `ty` (a JSON pointer into `template(ty)`), the bound
/// rules V2 set on it, and whether it holds text (bytes) or a list (entries).
struct Bound {
    ty: &'static str,
    pointer: &'static str,
    field: &'static str,
    max: usize,
    list: bool,
}

fn bounds() -> Vec<Bound> {
    let b = Rules::CURRENT.bounds();
    let text = |ty, pointer, field, max| Bound {
        ty,
        pointer,
        field,
        max,
        list: false,
    };
    let list = |ty, pointer, field, max| Bound {
        ty,
        pointer,
        field,
        max,
        list: true,
    };
    vec![
        text("order.created", "/tableNumber", "tableNumber", b.name_bytes),
        text("order.created", "/items/0/id", "items[0].id", b.id_bytes),
        text("order.created", "/items/0/sku", "items[0].sku", b.id_bytes),
        text(
            "order.created",
            "/items/0/name",
            "items[0].name",
            b.name_bytes,
        ),
        text(
            "order.updated",
            "/items/0/category",
            "items[0].category",
            b.name_bytes,
        ),
        text(
            "order.created",
            "/items/0/modifiers/0/id",
            "items[0].modifiers[0].id",
            b.id_bytes,
        ),
        text(
            "order.created",
            "/items/0/modifiers/0/name",
            "items[0].modifiers[0].name",
            b.name_bytes,
        ),
        text("order.parked", "/reason", "reason", b.note_bytes),
        text("order.cancelled", "/reason", "reason", b.note_bytes),
        text(
            "order.paid",
            "/payments/0/method",
            "payments[0].method",
            b.id_bytes,
        ),
        text("kds.ticket.created", "/station", "station", b.name_bytes),
        text(
            "kds.ticket.created",
            "/items/0/name",
            "items[0].name",
            b.name_bytes,
        ),
        text(
            "bds.ticket.created",
            "/items/0/sku",
            "items[0].sku",
            b.id_bytes,
        ),
        text(
            "kds.ticket.created",
            "/items/0/notes",
            "items[0].notes",
            b.note_bytes,
        ),
        text("inventory.adjusted", "/reason", "reason", b.note_bytes),
        list("order.created", "/items", "items", b.line_items),
        list(
            "order.updated",
            "/items/0/modifiers",
            "items[0].modifiers",
            b.modifiers_per_item,
        ),
        list("order.paid", "/payments", "payments", b.payments),
        list("kds.ticket.created", "/items", "items", b.ticket_items),
    ]
}

/// `template(ty)` with the place of `bound` grown to `len` bytes or entries (list entries
/// get distinct ids, so that only the count can be wrong).
fn grown(bound: &Bound, len: usize) -> Value {
    let mut payload = template(bound.ty);
    let Some(place) = payload.pointer_mut(bound.pointer) else {
        panic!("{} has no {}", bound.ty, bound.pointer)
    };
    if bound.list {
        let first = place[0].clone();
        *place = Value::Array(
            (0..len)
                .map(|i| {
                    let mut entry = first.clone();
                    if entry.get("id").is_some() {
                        entry["id"] = json!(format!("id-{i}"));
                    }
                    entry
                })
                .collect(),
        );
    } else {
        *place = json!("é".repeat(len / 2) + &"x".repeat(len % 2));
    }
    payload
}

proptest! {
    #![proptest_config(config(2_000))]

    /// Every bounded text and list of rules V2, at its bound and one over: at the bound no
    /// rule complains about that field, one over is MALFORMED_PAYLOAD naming it. An
    /// unknown key planted anywhere the validators read is refused by name.
    #[test]
    fn every_bound_holds_at_its_limit_and_refuses_one_over(
        which in any::<Index>(),
        over in any::<bool>(),
        unknown in weighted(0.3, (any::<Index>(), "[a-z]{1,12}")),
    ) {
        let all = bounds();
        let bound = &all[which.index(all.len())];
        let len = if over { bound.max + 1 } else { bound.max };
        let mut payload = grown(bound, len);
        let mut planted = None;
        if let Some((at, key)) = unknown
            && !FIELDS.split_whitespace().any(|f| f == key)
        {
            plant(&mut payload, at, key.clone(), json!(1));
            planted = Some(key);
        }
        let line = event_json(9_999, bound.ty, &target(bound.ty).1, false, payload);
        let event: Event = serde_json::from_value(line).map_err(fail)?;
        let outcome = SEEDED.clone().apply(&event, T0);
        let message = match &outcome {
            Outcome::Rejected { code: RejectCode::MalformedPayload, message, .. } => {
                Some(message.clone())
            }
            _ => None,
        };
        let names_bound = message
            .as_deref()
            .is_some_and(|m| m.contains(&format!("field {} ", bound.field)) && m.contains("at most"));
        let names_unknown = |key: &str| {
            message.as_deref().is_some_and(|m| m.contains(key) && m.contains("unknown fields"))
        };
        let landed = planted.filter(|key| payload_has(&event, key));
        match (landed, over) {
            // Both wrong: either refusal may come first.
            (Some(key), true) => prop_assert!(
                names_bound || names_unknown(&key),
                "{} over its bound with {key}: {outcome:?}", bound.field
            ),
            (Some(key), false) => prop_assert!(
                names_unknown(&key),
                "unknown key {key} beside {} at its bound: {outcome:?}", bound.field
            ),
            (None, true) => prop_assert!(names_bound, "{} over its bound: {outcome:?}", bound.field),
            (None, false) => prop_assert!(!names_bound, "{} at its bound: {outcome:?}", bound.field),
        }
    }

    /// The byte bound on an encoded event, at it and one over.
    #[test]
    fn the_event_byte_bound_holds_at_its_limit(extra in 0usize..2) {
        let max = rules::EVENT_BYTES_MAX;
        prop_assert!(Rules::CURRENT.check_event_bytes(max - 1 + extra).is_ok());
        let refused = Rules::CURRENT.check_event_bytes(max + 1 + extra);
        prop_assert!(
            matches!(&refused, Err(r) if r.code == RejectCode::EventTooLarge
                && r.message.contains(&format!("at most {max}"))),
            "{refused:?}"
        );
        prop_assert!(Rules::V1.check_event_bytes(max * 64).is_ok(), "V1 had no byte bound");
    }
}

/// Whether the unknown `key` landed in the payload at all (a planted place may not exist
/// in this type's payload).
fn payload_has(event: &Event, key: &str) -> bool {
    serde_json::to_string(&event.payload).is_ok_and(|s| s.contains(&format!("\"{key}\"")))
}
