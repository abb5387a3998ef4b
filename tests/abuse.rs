//! One buggy or hostile device against a running node, over real gRPC: clocks, sizes and
//! fields the rules refuse, and a flood of oversize Appends. Each refusal names its reason
//! and leaves the log as it was. (Role abuse needs tokens: `tests/auth.rs`.)

mod common;

use std::time::Duration;

use common::cluster::*;
use common::{event, phase};
use pos_hub::domain::rules::{EVENT_BYTES_MAX, LAMPORT_AHEAD_MAX, LAMPORT_MAX};
use pos_hub::proto::pb;
use prost::Message;
use serde_json::{Value, json};
use tonic::Code;

const WITHIN: Duration = Duration::from_secs(20);

async fn hello(c: &Cluster) -> pb::HelloResponse {
    c.hello(1).await.expect("Hello answers")
}

/// The one result of appending `e`, which must be REJECTED with `code`, its message
/// naming `words`; the log's last seq and clock are unchanged.
async fn rejected(c: &Cluster, e: pb::Event, code: &str, words: &str) {
    let before = hello(c).await;
    let mut hub = c.client(1);
    let results = append(&mut hub, vec![e], WITHIN)
        .await
        .expect("the Append is answered");
    let r = &results[0];
    assert_eq!(r.status, pb::AppendStatus::Rejected as i32, "{r:?}");
    assert_eq!(r.code, code, "{r:?}");
    assert!(
        r.message.contains(words),
        "{:?} should name {words:?}",
        r.message
    );
    let after = hello(c).await;
    assert_eq!(after.last_seq, before.last_seq, "nothing was appended");
    assert_eq!(
        after.lamport, before.lamport,
        "the store's clock did not move"
    );
}

fn order_created(order: &str, lamport: u64, payload: Value) -> pb::Event {
    let id = uuid::Uuid::now_v7().to_string();
    to_pb(&event(
        &id,
        ("order", order),
        1,
        "order.created",
        "till-1",
        lamport,
        payload,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clocks_beyond_the_bounds_are_refused_by_name() {
    let c = Cluster::start(1).await;
    let mut hub = c.client(1);
    append_accepted(
        &mut hub,
        vec![inventory_event("FRIES", 1, "till-1", 7)],
        WITHIN,
    )
    .await;
    assert_eq!(hello(&c).await.lamport, 7);

    phase("Lamport 2^64 - 1: above what a browser holds exactly");
    rejected(
        &c,
        inventory_event("FRIES", 1, "till-1", u64::MAX),
        "CLOCK_OUT_OF_RANGE",
        "2^53 - 1",
    )
    .await;
    phase("Lamport 2^53: the first clock over the bound");
    rejected(
        &c,
        inventory_event("FRIES", 1, "till-1", LAMPORT_MAX + 1),
        "CLOCK_OUT_OF_RANGE",
        "2^53 - 1",
    )
    .await;
    phase("a clock far ahead of the store's");
    rejected(
        &c,
        inventory_event("FRIES", 1, "till-1", 7 + LAMPORT_AHEAD_MAX + 1),
        "CLOCK_OUT_OF_RANGE",
        "ahead of the store's clock 7",
    )
    .await;

    phase("exactly as far ahead as allowed is accepted");
    append_accepted(
        &mut hub,
        vec![inventory_event("FRIES", 1, "till-1", 7 + LAMPORT_AHEAD_MAX)],
        WITHIN,
    )
    .await;
    assert_eq!(hello(&c).await.lamport, 7 + LAMPORT_AHEAD_MAX);
}

/// `s` padded with `fill` to exactly `bytes` bytes.
fn sized(s: &str, fill: char, bytes: usize) -> String {
    let mut out = s.to_owned();
    while out.len() < bytes {
        out.push(fill);
    }
    out
}

/// The largest `order.created` the rules allow: every list full, every text at its bound
/// (V2: 100 lines, 100 modifiers in all, ids and names 64 bytes).
fn largest_order() -> Value {
    let items: Vec<Value> = (0..100)
        .map(|i| {
            json!({
                "id": sized(&format!("line-{i}-"), 'l', 64),
                "sku": sized(&format!("sku-{i}-"), 's', 64),
                "name": sized("Burger ", 'n', 64),
                "unitPrice": 1_000,
                "quantity": 1,
                "category": sized("food ", 'c', 64),
                "modifiers": [{
                    "id": sized(&format!("mod-{i}-"), 'm', 64),
                    "name": sized("No onions ", 'o', 64),
                    "price": 0,
                }],
            })
        })
        .collect();
    json!({
        "tableNumber": sized("T", 't', 64),
        "guestCount": 10_000,
        "currency": "USD",
        "items": items,
    })
}

/// The largest kitchen ticket the rules allow: 100 items, notes at 256 bytes.
fn largest_ticket(order: &str) -> Value {
    let items: Vec<Value> = (0..100)
        .map(|i| {
            json!({
                "sku": sized(&format!("sku-{i}-"), 's', 64),
                "name": sized("Burger ", 'n', 64),
                "quantity": 10_000,
                "notes": sized("no onions ", 'x', 256),
            })
        })
        .collect();
    json!({ "orderId": order, "station": sized("grill ", 'g', 64), "items": items })
}

/// An envelope with every id at its 64-byte bound.
fn long_envelope(e: &mut pb::Event) {
    let device = sized("till-", 'd', 64);
    e.actor = Some(pb::Actor {
        device_id: device.clone(),
        user_id: sized("user-", 'u', 64),
    });
    e.clock = Some(pb::Clock {
        lamport: 1,
        device_id: device,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_valid_events_are_appended_and_an_oversize_one_is_refused() {
    let c = Cluster::start(1).await;
    let mut hub = c.client(1);
    let order = sized("order-", 'o', 64);

    phase("the largest valid order and ticket fit the byte bound and are accepted");
    let mut created = order_created(&order, 1, largest_order());
    long_envelope(&mut created);
    let mut ticket = to_pb(&event(
        &uuid::Uuid::now_v7().to_string(),
        ("kds", &sized("ticket-", 'k', 64)),
        1,
        "kds.ticket.created",
        "till-1",
        2,
        largest_ticket(&order),
    ));
    long_envelope(&mut ticket);
    for e in [&created, &ticket] {
        let bytes = e.encoded_len();
        eprintln!(
            "{}: {bytes} bytes encoded (bound {EVENT_BYTES_MAX})",
            e.r#type
        );
        assert!(bytes <= EVENT_BYTES_MAX, "{} is {bytes} bytes", e.r#type);
    }
    append_accepted(&mut hub, vec![created, ticket], WITHIN).await;
    let before = hello(&c).await.last_seq;
    assert_eq!(before, 2);

    phase("one event over the byte bound: the whole Append is refused, by size");
    let mut oversize = order_created("o-big", 3, json!({ "currency": "USD" }));
    let note = prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(
            "x".repeat(EVENT_BYTES_MAX),
        )),
    };
    oversize
        .payload
        .get_or_insert_with(Default::default)
        .fields
        .insert("tableNumber".into(), note);
    let small = inventory_event("FRIES", 1, "till-1", 3);
    let refused = append(&mut hub, vec![small, oversize.clone()], WITHIN)
        .await
        .expect_err("an oversize event is refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("event 1") && refused.message().contains("bytes encoded"),
        "{refused:?}"
    );
    assert_eq!(hello(&c).await.last_seq, before, "nothing was appended");

    phase("one line too many, one modifier too many, one byte too long: named");
    let mut payload = largest_order();
    let items = payload["items"].as_array_mut().expect("items");
    items.push(items[0].clone());
    rejected(
        &c,
        order_created("o-2", 3, payload),
        "MALFORMED_PAYLOAD",
        "items has 101 entries; at most 100",
    )
    .await;
    let mut payload = largest_order();
    payload["items"][0]["modifiers"]
        .as_array_mut()
        .expect("modifiers")
        .push(json!({ "name": "extra", "price": 0 }));
    rejected(
        &c,
        order_created("o-2", 3, payload),
        "MALFORMED_PAYLOAD",
        "the event's modifiers to 101",
    )
    .await;
    let mut payload = largest_order();
    payload["items"][3]["name"] = json!(sized("x", 'x', 65));
    rejected(
        &c,
        order_created("o-2", 3, payload),
        "MALFORMED_PAYLOAD",
        "items[3].name is 65 bytes long; at most 64",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_payload_fields_are_refused_by_name() {
    let c = Cluster::start(1).await;
    phase("at the payload's root");
    let payload = json!({ "currency": "USD", "discountOverride": 100 });
    rejected(
        &c,
        order_created("o-1", 1, payload),
        "MALFORMED_PAYLOAD",
        "payload field discountOverride is not a field of order.created",
    )
    .await;
    phase("inside a line item and a modifier");
    let payload = json!({ "items": [{
        "id": "l-1", "sku": "B", "name": "Burger", "unitPrice": 100, "quantity": 1,
        "secret": "x",
    }]});
    rejected(
        &c,
        order_created("o-1", 1, payload),
        "MALFORMED_PAYLOAD",
        "payload field items[0].secret is not a known field",
    )
    .await;
    let payload = json!({ "items": [{
        "id": "l-1", "sku": "B", "name": "Burger", "unitPrice": 100, "quantity": 1,
        "modifiers": [{ "name": "Cheese", "price": 50, "cost": 10 }],
    }]});
    rejected(
        &c,
        order_created("o-1", 1, payload),
        "MALFORMED_PAYLOAD",
        "payload field items[0].modifiers[0].cost is not a known field",
    )
    .await;
}

/// Peak resident memory of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_concurrent_4mb_appends_leave_the_node_serving() {
    const FLOOD: usize = 40;
    const MESSAGE_BYTES: usize = 4_000_000;
    let c = Cluster::start(1).await;
    let mut hub = c.client(1);
    append_accepted(
        &mut hub,
        vec![inventory_event("FRIES", 1, "till-1", 1)],
        WITHIN,
    )
    .await;

    phase("40 Appends of 4 MB each, at once, each on its own connection");
    let mut flood = tokio::task::JoinSet::new();
    for n in 0..FLOOD {
        let addr = c.client_addr(1);
        flood.spawn(async move {
            let mut big = inventory_event("FRIES", 1, "mallory", 2 + n as u64);
            let blob = prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(
                    "x".repeat(MESSAGE_BYTES - 200),
                )),
            };
            big.payload
                .get_or_insert_with(Default::default)
                .fields
                .insert("reason".into(), blob);
            let mut client = hub_client(&addr);
            append(&mut client, vec![big], Duration::from_secs(60)).await
        });
    }
    phase("a till's Append sent meanwhile is acknowledged");
    let seqs = append_accepted(
        &mut hub,
        vec![inventory_event("FRIES", 1, "till-1", 2)],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(seqs, vec![2]);
    let mut refused = 0;
    while let Some(joined) = flood.join_next().await {
        let status = joined
            .expect("the flood task ran")
            .expect_err("a 4 MB Append is refused");
        assert!(
            matches!(
                status.code(),
                Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted
            ),
            "{status:?}"
        );
        refused += 1;
    }
    assert_eq!(refused, FLOOD);
    assert_eq!(
        hello(&c).await.last_seq,
        2,
        "no flood event reached the log"
    );
    let peak_mib = peak_rss_kib(c.pid(1)) / 1024;
    eprintln!("peak RSS of the node: {peak_mib} MiB");
    assert!(peak_mib < 300, "peak RSS {peak_mib} MiB");
}
