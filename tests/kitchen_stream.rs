//! Kitchen and bar screens read no payments, and their streams never look like a gap:
//! against a running node that checks device tokens, over real gRPC, a kds or bds token's
//! Subscribe gets `order.paid` as a redaction marker at its own seq (catching up from
//! storage and live), a till's gets the payments, a marker cannot be appended back, and
//! the Rust SDK following a kds stream ends with the order paid at the log's last seq.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::*;
use common::{claims, expect_status, phase, with_token};
use ed25519_dalek::SigningKey;
use pos_hub::auth::token::{self, Role};
use pos_hub::client::{Device, DeviceConfig, HubConfig};
use pos_hub::domain::Realm;
use pos_hub::domain::order::OrderStatus;
use pos_hub::proto::pb;
use serde_json::json;
use tonic::Code;

/// Fries ×2 at 350: the order's total, and what its payment pays.
const TOTAL: i64 = 700;

struct Store {
    key: SigningKey,
    cluster: Cluster,
}

impl Store {
    async fn start() -> Store {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let key = common::store_key(&dir);
        let options = Options {
            public_key: Some(key.public_path),
            ..Options::default()
        };
        Store {
            key: key.signing,
            cluster: Cluster::start_with(1, options).await,
        }
    }

    fn token(&self, device: &str, role: Role) -> String {
        token::issue(&self.key, &claims(device, role))
    }

    /// Appends as till-1; every event must be accepted. Returns their seqs.
    async fn till_appends(&self, events: Vec<pb::Event>) -> Vec<u64> {
        let till = self.token("till-1", Role::Till);
        let reply = self
            .cluster
            .client(1)
            .append(with_token(pb::AppendRequest { events }, Some(&till)))
            .await
            .expect("the till appends")
            .into_inner();
        reply
            .results
            .iter()
            .map(|r| {
                assert_eq!(r.status, pb::AppendStatus::Accepted as i32, "{r:?}");
                r.seq
            })
            .collect()
    }

    async fn last_seq(&self) -> u64 {
        let token = self.token("reader", Role::Till);
        let hello = pb::HelloRequest {
            device_id: "reader".into(),
            cursor: 0,
        };
        self.cluster
            .client(1)
            .hello(with_token(hello, Some(&token)))
            .await
            .expect("Hello")
            .into_inner()
            .last_seq
    }

    async fn subscribe(&self, token: &str) -> tonic::Streaming<pb::SubscribeResponse> {
        self.cluster
            .client(1)
            .subscribe(with_token(pb::SubscribeRequest { cursor: 0 }, Some(token)))
            .await
            .expect("subscribes")
            .into_inner()
    }
}

fn order_event(
    order: &str,
    version: u64,
    event_type: &str,
    payload: serde_json::Value,
) -> pb::Event {
    let id = uuid::Uuid::now_v7().to_string();
    to_pb(&common::event(
        &id,
        ("order", order),
        version,
        event_type,
        "till-1",
        version,
        payload,
    ))
}

/// An order for Fries ×2, and its payment by card.
fn sale(order: &str) -> Vec<pb::Event> {
    let items =
        json!([{ "id": "li-1", "sku": "FRIES", "name": "Fries", "unitPrice": 350, "quantity": 2 }]);
    vec![
        order_event(
            order,
            1,
            "order.created",
            json!({ "currency": "USD", "items": items }),
        ),
        order_event(
            order,
            2,
            "order.paid",
            json!({
                "payments": [{ "method": "card", "amount": TOTAL }],
                "total": TOTAL,
                "currency": "USD",
            }),
        ),
    ]
}

/// Reads `stream` until seq `up_to`, checking every seq arrives once, in order, with no
/// gap (heartbeats are skipped); `seen` holds what was read before.
async fn read_until(
    stream: &mut tonic::Streaming<pb::SubscribeResponse>,
    seen: &mut Vec<pb::Event>,
    up_to: u64,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = seen.last().map_or(0, |e| e.seq);
    while last < up_to {
        let batch = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("no seq {up_to} within 30 s (at seq {last})"))
            .expect("the stream stays healthy")
            .expect("the stream stays open");
        for event in batch.events {
            assert_eq!(event.seq, last + 1, "seqs are contiguous: {event:?}");
            last = event.seq;
            seen.push(event);
        }
    }
}

fn payments_of(event: &pb::Event) -> usize {
    event
        .payload
        .as_ref()
        .and_then(|p| p.fields.get("payments"))
        .and_then(|v| match &v.kind {
            Some(prost_types::value::Kind::ListValue(list)) => Some(list.values.len()),
            _ => None,
        })
        .unwrap_or(0)
}

/// The kitchen's copy of `appended`: the marker, identical but for the payload.
fn assert_marker(marker: &pb::Event, appended: &pb::Event, who: &str) {
    assert_eq!(marker.r#type, "order.paid", "{who}");
    assert!(marker.redacted, "{who}: order.paid arrives marked redacted");
    assert!(
        marker.payload.as_ref().is_none_or(|p| p.fields.is_empty()),
        "{who}: no payment detail reaches the screen: {:?}",
        marker.payload
    );
    assert_eq!(marker.event_id, appended.event_id, "{who}");
    assert_eq!(marker.aggregate_id, appended.aggregate_id, "{who}");
    assert_eq!(marker.version, appended.version, "{who}");
    assert_eq!(marker.clock, appended.clock, "{who}");
    assert_eq!(marker.actor, appended.actor, "{who}");
    assert!(marker.hub_time > 0, "{who}: committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kitchen_and_bar_streams_carry_the_paid_seq_without_payments_while_a_till_gets_them() {
    let store = Store::start().await;
    let kds = store.token("kds-1", Role::Kds);
    let bds = store.token("bds-1", Role::Bds);
    let till = store.token("till-1", Role::Till);

    phase("till-1 sells o-1: created at seq 1, paid at seq 2");
    let first = sale("o-1");
    assert_eq!(store.till_appends(first.clone()).await, [1, 2]);

    phase("kds-1 and bds-1 catch up from storage: seq 2 arrives as a marker");
    let mut kds_stream = store.subscribe(&kds).await;
    let mut kds_seen = Vec::new();
    read_until(&mut kds_stream, &mut kds_seen, 2).await;
    assert!(!kds_seen[0].redacted, "order.created is sent as committed");
    assert_eq!(kds_seen[0].payload, first[0].payload);
    assert_marker(&kds_seen[1], &first[1], "kds, catching up");
    let mut bds_stream = store.subscribe(&bds).await;
    let mut bds_seen = Vec::new();
    read_until(&mut bds_stream, &mut bds_seen, 2).await;
    assert_marker(&bds_seen[1], &first[1], "bds, catching up");

    phase("till-1 sells o-2 while the kitchen's stream is live: seqs 3 and 4");
    let second = sale("o-2");
    assert_eq!(store.till_appends(second.clone()).await, [3, 4]);
    read_until(&mut kds_stream, &mut kds_seen, 4).await;
    assert!(!kds_seen[2].redacted);
    assert_marker(&kds_seen[3], &second[1], "kds, live");
    read_until(&mut bds_stream, &mut bds_seen, 4).await;
    assert_marker(&bds_seen[3], &second[1], "bds, live");
    let seqs: Vec<u64> = kds_seen.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4], "the kitchen's stream has every seq");

    phase("a till's stream on the same node carries the payments, unmarked");
    let mut till_stream = store.subscribe(&till).await;
    let mut till_seen = Vec::new();
    read_until(&mut till_stream, &mut till_seen, 4).await;
    for (seq, appended) in [(2, &first[1]), (4, &second[1])] {
        let paid = &till_seen[seq - 1];
        assert!(!paid.redacted, "seq {seq}");
        assert_eq!(
            paid.payload, appended.payload,
            "seq {seq}: as the till sent it"
        );
        assert_eq!(payments_of(paid), 1, "seq {seq}: the card payment");
    }

    phase("a marker appended back is refused, and the log stays at seq 4");
    let mut echo = kds_seen[3].clone();
    echo.event_id = uuid::Uuid::now_v7().to_string();
    echo.seq = 0;
    echo.hub_time = 0;
    echo.rules = 0;
    let refused = store
        .cluster
        .client(1)
        .append(with_token(
            pb::AppendRequest { events: vec![echo] },
            Some(&till),
        ))
        .await;
    expect_status(refused, Code::InvalidArgument, "marked redacted");
    assert_eq!(store.last_seq().await, 4, "nothing reached the log");

    phase("GetOrder for the kitchen: paid, no payments");
    let order = store
        .cluster
        .client(1)
        .get_order(with_token(
            pb::GetOrderRequest {
                order_id: "o-2".into(),
                consistency: pb::Consistency::Linearizable as i32,
            },
            Some(&kds),
        ))
        .await
        .expect("GetOrder")
        .into_inner()
        .order
        .expect("the order");
    assert_eq!(order.status, pb::OrderStatus::Paid as i32);
    assert!(order.payments.is_empty());
}

fn kitchen_device(store: &Store, dir: &Path) -> Device {
    let mut hub = HubConfig::new(
        vec![store.cluster.client_addr(1)],
        Realm::new(TENANT, STORE),
    );
    hub.token = Some(store.token("kds-1", Role::Kds));
    Device::open(DeviceConfig {
        data_dir: dir.join("kds-1"),
        device_id: "kds-1".into(),
        user_id: None,
        hub,
    })
    .expect("opens the kitchen device")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_following_a_kitchen_stream_ends_with_the_order_paid_at_the_last_seq() {
    let store = Store::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kitchen = kitchen_device(&store, dir.path());
    let _running = kitchen.start();

    phase("till-1 sells o-1 and o-2 (seqs 1-4); the kitchen device follows");
    store.till_appends(sale("o-1")).await;
    store.till_appends(sale("o-2")).await;
    let last = store.last_seq().await;
    assert_eq!(last, 4);

    // A device whose rules refused the marker would reset to seq 0 and refuse it again,
    // for ever: its cursor would fall back and never reach the end.
    let mut progress = kitchen.progress();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut highest = 0;
    loop {
        let cursor = progress.borrow_and_update().cursor;
        assert!(
            cursor >= highest,
            "the cursor went back from {highest} to {cursor}"
        );
        highest = cursor;
        if cursor == last {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the kitchen device did not reach seq {last}: {:?}",
            progress.borrow()
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), progress.changed()).await;
    }

    for id in ["o-1", "o-2"] {
        let order = kitchen
            .committed_order(id)
            .expect("the kitchen has the order");
        assert_eq!(order.status, OrderStatus::Paid, "{id}");
        assert!(
            order.payments.is_empty(),
            "{id}: no payments on the kitchen screen"
        );
        assert_eq!(order.total, TOTAL, "{id}: what it cooks from is all there");
        assert_eq!(order.head.version, 2, "{id}");
    }
    assert_eq!(kitchen.cursor(), last);
    assert!(kitchen.dead_letters().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kitchen_screen_that_starts_late_bootstraps_the_orders_without_their_payments() {
    let store = Store::start().await;
    phase("till-1 sells o-1 and o-2 (seqs 1-4) before any kitchen screen is on");
    store.till_appends(sale("o-1")).await;
    store.till_appends(sale("o-2")).await;
    let last = store.last_seq().await;

    phase("Bootstrap by role: the till's orders carry payments, the kitchen's do not");
    let read = |token: Option<String>| {
        let mut client = store.cluster.client(1);
        async move {
            let request = pb::BootstrapRequest {
                consistency: pb::Consistency::Linearizable as i32,
            };
            let mut stream = client
                .bootstrap(with_token(request, token.as_deref()))
                .await?
                .into_inner();
            let mut orders = Vec::new();
            while let Some(page) = stream.message().await? {
                assert_eq!(page.seq, last, "every page names the seq it was read at");
                orders.extend(page.orders);
            }
            Ok::<_, tonic::Status>(orders)
        }
    };
    let till = read(Some(store.token("till-1", Role::Till)))
        .await
        .expect("the till reads");
    let kitchen = read(Some(store.token("kds-1", Role::Kds)))
        .await
        .expect("the kitchen reads");
    assert_eq!(till.len(), 2);
    assert!(till.iter().all(|o| o.payments.len() == 1));
    assert_eq!(kitchen.len(), 2);
    assert!(
        kitchen
            .iter()
            .all(|o| o.payments.is_empty() && o.total == TOTAL)
    );
    let refused = read(None).await.expect_err("no token, no state");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    phase("a kitchen device started now holds both orders, paid, without payments");
    let dir = tempfile::tempdir().expect("tempdir");
    let device = kitchen_device(&store, dir.path());
    let _running = device.start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while device.cursor() < last {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            device.progress().borrow()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in ["o-1", "o-2"] {
        let order = device.committed_order(id).expect("bootstrapped");
        assert_eq!(order.status, OrderStatus::Paid, "{id}");
        assert!(order.payments.is_empty(), "{id}");
    }
}
