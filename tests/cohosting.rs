//! Two hubs of different stores of one tenant on one machine (spec §7), sharing the
//! tenant's signing key: each has its own ports and data dir, and a device of one store,
//! with a valid token, gets PERMISSION_DENIED on every RPC of the other, whose log never
//! shows its events.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::{claims, phase, with_token};
use pos_hub::auth::token::{self, Claims, Role};
use pos_hub::proto::pb;
use tonic::Code;

fn signed<T>(message: T, token: &str) -> tonic::Request<T> {
    with_token(message, Some(token))
}

fn denied<T: std::fmt::Debug>(rpc: &str, result: Result<T, tonic::Status>) {
    let status = result.expect_err(rpc);
    assert_eq!(status.code(), Code::PermissionDenied, "{rpc}: {status:?}");
    assert!(
        status.message().contains("t-demo/s-001") && status.message().contains("t-demo/s-002"),
        "{rpc}: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_of_one_store_gets_nothing_from_the_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The tenant's key: both stores' hubs check tokens against it.
    let tenant = common::store_key(dir.path());
    let key = tenant.signing;
    let start = |store: &str| Options {
        public_key: Some(tenant.public_path.clone()),
        store: Some(store.to_owned()),
        ..Options::default()
    };

    phase("two hubs on this machine: t-demo/s-001 (A) and t-demo/s-002 (B)");
    let a = Cluster::start_with(1, start("s-001")).await;
    let b = Cluster::start_beside(&a, 1, start("s-002")).await;
    assert_ne!(a.client_addr(1), b.client_addr(1));
    let claims = |store: &str, device: &str, role: Role| Claims {
        store_id: store.into(),
        ..claims(device, role)
    };
    // Managers: their events are stock adjustments.
    let till_a = token::issue(&key, &claims("s-001", "till-1", Role::Manager));
    let admin_a = token::issue(&key, &claims("s-001", "op", Role::Admin));
    let till_b = token::issue(&key, &claims("s-002", "till-9", Role::Manager));

    phase("A's till writes to A");
    let reply = a
        .client(1)
        .append(signed(
            pb::AppendRequest {
                events: vec![inventory_event("FRIES", 3, "till-1", 1)],
            },
            &till_a,
        ))
        .await
        .expect("A accepts its own till")
        .into_inner();
    assert_eq!(reply.results[0].status, pb::AppendStatus::Accepted as i32);

    phase("the same till, with its valid token, on B: PERMISSION_DENIED for every RPC");
    let mut hub = b.client(1);
    denied(
        "Hello",
        hub.hello(signed(pb::HelloRequest::default(), &till_a))
            .await,
    );
    let mut event = inventory_event("FRIES", 3, "till-1", 2);
    event.store_id = "s-002".into();
    denied(
        "Append",
        hub.append(signed(
            pb::AppendRequest {
                events: vec![event],
            },
            &till_a,
        ))
        .await,
    );
    denied(
        "Subscribe",
        hub.subscribe(signed(pb::SubscribeRequest { cursor: 0 }, &till_a))
            .await,
    );
    let get = pb::GetOrderRequest {
        order_id: "o-1".into(),
        consistency: 0,
    };
    denied("GetOrder", hub.get_order(signed(get, &till_a)).await);
    denied(
        "ListOrders",
        hub.list_orders(signed(pb::ListOrdersRequest::default(), &till_a))
            .await,
    );
    denied(
        "GetInventory",
        hub.get_inventory(signed(pb::GetInventoryRequest::default(), &till_a))
            .await,
    );
    denied(
        "ListTickets",
        hub.list_tickets(signed(pb::ListTicketsRequest::default(), &till_a))
            .await,
    );
    let mut cluster = b.cluster_client(1);
    denied(
        "Cluster.Status",
        cluster
            .status(signed(pb::ClusterStatusRequest {}, &admin_a))
            .await,
    );

    phase("B's own devices see B's log, which has none of A's events");
    let hello = hub
        .hello(signed(pb::HelloRequest::default(), &till_b))
        .await
        .expect("B's till")
        .into_inner();
    assert_eq!(hello.last_seq, 0, "B's log is empty");
    let mut stream = hub
        .subscribe(signed(pb::SubscribeRequest { cursor: 0 }, &till_b))
        .await
        .expect("B's till subscribes")
        .into_inner();
    let nothing = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    assert!(
        nothing.is_err(),
        "B's Subscribe yields nothing: {nothing:?}"
    );
    let stock = hub
        .get_inventory(signed(
            pb::GetInventoryRequest {
                sku: "FRIES".into(),
                ..Default::default()
            },
            &till_b,
        ))
        .await
        .expect("B's till reads")
        .into_inner();
    assert!(stock.stocks.is_empty(), "A's stock is not in B: {stock:?}");
}
