//! Every way the client API refuses a request, against a real one-node group: each names
//! the problem in its status, and nothing reaches the log.

mod common;

use common::cluster::*;
use common::{expect_status, phase};
use pos_hub::proto::pb;
use tonic::Code;

async fn last_seq(c: &Cluster) -> u64 {
    c.hello(1).await.expect("Hello answers").last_seq
}

/// An inventory adjustment (always acceptable) for `tenant`'s realm.
fn event(n: u64, tenant: &str) -> pb::Event {
    let mut event = inventory_event("FRIES", 1, "till-1", n);
    event.tenant_id = tenant.into();
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_by_name_and_change_nothing() {
    let c = Cluster::start(1).await;
    let mut hub = c.client(1);
    let mut cluster = c.cluster_client(1);

    phase("appends the log cannot take");
    expect_status(
        hub.append(pb::AppendRequest { events: vec![] }).await,
        Code::InvalidArgument,
        "at least one event",
    );
    let too_many: Vec<pb::Event> = (1..=1025).map(|n| event(n, TENANT)).collect();
    expect_status(
        hub.append(pb::AppendRequest { events: too_many }).await,
        Code::InvalidArgument,
        "at most 1024",
    );
    let mut huge = event(2000, TENANT);
    let blob = prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue("x".repeat(5 << 20))),
    };
    huge.payload
        .get_or_insert_with(Default::default)
        .fields
        .insert("note".into(), blob);
    let refused = hub
        .append(pb::AppendRequest { events: vec![huge] })
        .await
        .expect_err("too large");
    assert!(
        matches!(refused.code(), Code::OutOfRange | Code::ResourceExhausted),
        "a 5 MiB message is refused for its size: {refused:?}"
    );
    assert_eq!(last_seq(&c).await, 0, "nothing was appended");

    phase("an event of another realm is decided by the rules: REJECTED, not appended");
    let reply = hub
        .append(pb::AppendRequest {
            events: vec![event(1, "t-other")],
        })
        .await
        .expect("answers");
    let result = &reply.into_inner().results[0];
    assert_eq!(
        result.status,
        pb::AppendStatus::Rejected as i32,
        "{result:?}"
    );
    assert_eq!(result.code, "WRONG_REALM", "{result:?}");
    assert_eq!(last_seq(&c).await, 0, "nothing was appended");

    phase("reads with unknown ids or filters");
    let get = |order_id: &str, consistency: i32| pb::GetOrderRequest {
        order_id: order_id.into(),
        consistency,
    };
    let tickets = |kind: i32, status: i32| pb::ListTicketsRequest {
        kind,
        status,
        ..Default::default()
    };
    expect_status(
        hub.get_order(get("o-404", 0)).await,
        Code::NotFound,
        "o-404",
    );
    expect_status(
        hub.get_order(get("o-1", 7)).await,
        Code::InvalidArgument,
        "consistency 7",
    );
    expect_status(
        hub.list_orders(pb::ListOrdersRequest {
            status: 42,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "order status 42",
    );
    expect_status(
        hub.list_tickets(tickets(9, 0)).await,
        Code::InvalidArgument,
        "ticket kind 9",
    );
    expect_status(
        hub.list_tickets(tickets(0, 9)).await,
        Code::InvalidArgument,
        "ticket status 9",
    );

    phase("membership changes that make no sense");
    let add = |id: u64, peer: &str, client: &str| pb::AddNodeRequest {
        id,
        peer_addr: peer.into(),
        client_addr: client.into(),
    };
    expect_status(
        cluster.add_node(add(0, "127.0.0.1:1", "127.0.0.1:2")).await,
        Code::InvalidArgument,
        "start at 1",
    );
    expect_status(
        cluster.add_node(add(5, "", "127.0.0.1:2")).await,
        Code::InvalidArgument,
        "--peer-addr",
    );
    expect_status(
        cluster.add_node(add(1, "127.0.0.1:1", "127.0.0.1:2")).await,
        Code::AlreadyExists,
        "already a voter",
    );
    expect_status(
        cluster.remove_node(pb::RemoveNodeRequest { id: 9 }).await,
        Code::NotFound,
        "node 9",
    );
    expect_status(
        cluster.remove_node(pb::RemoveNodeRequest { id: 1 }).await,
        Code::FailedPrecondition,
        "last voter",
    );
    expect_status(
        cluster
            .transfer_leader(pb::TransferLeaderRequest { to: 7 })
            .await,
        Code::InvalidArgument,
        "not a voter",
    );
    let status = cluster
        .status(pb::ClusterStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.nodes.len(), 1, "the group is unchanged: {status:?}");
    assert_eq!(last_seq(&c).await, 0, "nothing was appended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services_for_stock_grpc_tools() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let c = Cluster::start(1).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", c.client_addr(1)))
        .expect("a URL")
        .connect()
        .await
        .expect("connects");
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let reply = replies
        .message()
        .await
        .expect("a reply")
        .expect("one message");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("not a service list: {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in ["pos.v1.Hub", "pos.v1.Cluster"] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
    }
    assert!(
        !names.iter().any(|n| n == "pos.v1.Peer"),
        "the peer service is not on the client port: {names:?}"
    );
}

/// Each command fails and names its reason on stderr.
fn assert_refused(run: impl Fn(&[&str]) -> std::process::Output, cases: &[(&[&str], &str)]) {
    for (args, reason) in cases {
        common::refused(&run(args), &format!("{args:?}"), reason);
    }
}

#[test]
fn serve_and_client_refuse_bad_flags_with_the_reason() {
    let run = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .args(args)
            .output()
            .expect("runs")
    };
    assert_refused(
        run,
        &[
            (&["serve"], "needs --node-id"),
            (&["serve", "--node-id", "0"], "start at 1"),
            (
                &[
                    "serve",
                    "--node-id",
                    "1",
                    "--heartbeat-ms",
                    "300",
                    "--election-timeout-ms",
                    "200",
                ],
                "must exceed --heartbeat-ms",
            ),
            (
                &["serve", "--node-id", "1", "--initial-cluster", "1=nowhere"],
                "needs a peer address",
            ),
            (&["serve", "--node-id", "1"], "needs the store's public key"),
            (
                &["serve", "--node-id", "1", "--commit-window", "51"],
                "51 is not in 0..=50",
            ),
            (
                &[
                    "serve",
                    "--node-id",
                    "1",
                    "--public-key",
                    "/nonexistent/store.pub.pem",
                ],
                "/nonexistent/store.pub.pem",
            ),
            (&["client", "--hub", "not a url", "status"], "not a URL"),
            // Nothing listens on port 1 of loopback.
            (
                &["client", "--hub", "http://127.0.0.1:1", "status"],
                "cannot reach the hub",
            ),
        ],
    );
}

#[test]
fn the_till_commands_refuse_bad_flags_and_unknown_orders_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("till");
    let data = data.to_str().expect("a UTF-8 path");
    let till = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .args([
                "client",
                "--no-discovery",
                "--wait-s",
                "0",
                "--data-dir",
                data,
            ])
            .args(args)
            .env_remove("POS_HUB")
            .env_remove("POS_HUB_TOKEN")
            .env_remove("POS_HUB_CA")
            .env_remove("POS_HUB_DEVICE")
            .output()
            .expect("runs")
    };
    assert_refused(till, &[(&["order", "list"], "--device ID")]);
    let till_1 = |args: &[&str]| till(&[&["--device", "till-1"], args].concat());
    assert_refused(
        till_1,
        &[
            (&["--hub", "not a url", "order", "list"], "not a URL"),
            (
                &[
                    "--hub",
                    "http://127.0.0.1:1,https://127.0.0.1:2",
                    "order",
                    "list",
                ],
                "mixes http:// and https://",
            ),
            (
                &["--hub", "https://127.0.0.1:1", "order", "list"],
                "pin the store CA with --ca",
            ),
            (
                &[
                    "--hub",
                    "http://127.0.0.1:1",
                    "--ca",
                    "/nonexistent/ca.pem",
                    "order",
                    "list",
                ],
                "must be an https:// URL",
            ),
            (
                &["--token", "not-a-token", "order", "list"],
                "not a pos-hub token",
            ),
            (
                &[
                    "order", "add", "o-404", "--sku", "X", "--name", "X", "--price", "1",
                ],
                "order o-404 is not known to this device",
            ),
        ],
    );
    // With no hub at all a new order is still taken: it waits in the outbox.
    let queued = till_1(&["order", "new", "--id", "o-1"]);
    let out = String::from_utf8_lossy(&queued.stdout);
    assert!(queued.status.success() && out.contains("QUEUED"), "{out}");
    assert_refused(
        till_1,
        &[
            (
                &[
                    "order",
                    "add",
                    "o-1",
                    "--sku",
                    "X",
                    "--name",
                    "X",
                    "--price",
                    "1",
                    "--modifier",
                    "cheese",
                ],
                "is not NAME=PRICE",
            ),
            (
                &["order", "pay", "o-1", "--method", "cash", "--amount", "5"],
                "refused (PAYMENT_MISMATCH)",
            ),
            (&["outbox", "--resolve", "9"], "there is no dead letter #9"),
        ],
    );
}
