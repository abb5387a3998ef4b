//! Every way the client API refuses a request, against a real one-node group: each names
//! the problem in its status, and nothing reaches the log.

mod common;

use common::cluster::*;
use pos_hub::proto::pb;
use tonic::Code;

fn phase(what: &str) {
    eprintln!("--- {what}");
}

async fn last_seq(c: &Cluster) -> u64 {
    let hello = c
        .client(1)
        .hello(pb::HelloRequest {
            device_id: "test".into(),
            cursor: 0,
        })
        .await;
    hello.expect("Hello answers").into_inner().last_seq
}

/// An inventory adjustment (always acceptable) for `tenant`'s realm.
fn event(n: u64, tenant: &str) -> pb::Event {
    let mut event = inventory_event("FRIES", 1, "till-1", n);
    event.tenant_id = tenant.into();
    event
}

fn expect_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, words: &str) {
    let status = result.expect_err("the call is refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(words),
        "message {:?} should say {words:?}",
        status.message()
    );
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
    expect_status(
        hub.get_order(pb::GetOrderRequest {
            order_id: "o-404".into(),
            consistency: 0,
        })
        .await,
        Code::NotFound,
        "o-404",
    );
    expect_status(
        hub.get_order(pb::GetOrderRequest {
            order_id: "o-1".into(),
            consistency: 7,
        })
        .await,
        Code::InvalidArgument,
        "consistency 7",
    );
    expect_status(
        hub.list_orders(pb::ListOrdersRequest {
            status: 42,
            consistency: 0,
        })
        .await,
        Code::InvalidArgument,
        "order status 42",
    );
    expect_status(
        hub.list_tickets(pb::ListTicketsRequest {
            kind: 9,
            status: 0,
            consistency: 0,
        })
        .await,
        Code::InvalidArgument,
        "ticket kind 9",
    );
    expect_status(
        hub.list_tickets(pb::ListTicketsRequest {
            kind: 0,
            status: 9,
            consistency: 0,
        })
        .await,
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

#[test]
fn serve_and_client_refuse_bad_flags_with_the_reason() {
    let run = |args: &[&str]| {
        let output = std::process::Command::new(common::BIN)
            .args(args)
            .output()
            .expect("runs");
        assert!(!output.status.success(), "{args:?} must fail");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    assert!(run(&["serve"]).contains("needs --node-id"));
    assert!(run(&["serve", "--node-id", "0"]).contains("start at 1"));
    assert!(
        run(&[
            "serve",
            "--node-id",
            "1",
            "--heartbeat-ms",
            "300",
            "--election-timeout-ms",
            "200"
        ])
        .contains("must exceed --heartbeat-ms")
    );
    assert!(
        run(&["serve", "--node-id", "1", "--initial-cluster", "1=nowhere"])
            .contains("needs a peer address")
    );
    assert!(run(&["serve", "--node-id", "1"]).contains("needs the store's public key"));
    assert!(
        run(&[
            "serve",
            "--node-id",
            "1",
            "--public-key",
            "/nonexistent/store.pub.pem"
        ])
        .contains("/nonexistent/store.pub.pem")
    );
    assert!(run(&["client", "--hub", "not a url", "status"]).contains("not a URL"));
    // Nothing listens on port 1 of loopback.
    assert!(
        run(&["client", "--hub", "http://127.0.0.1:1", "status"]).contains("cannot reach the hub")
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
    let run = |args: &[&str]| {
        let output = till(args);
        assert!(!output.status.success(), "{args:?} must fail");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let order_list = ["order", "list"];
    assert!(run(&order_list).contains("--device ID"));
    let with = |extra: &[&'static str]| {
        let mut all = vec!["--device", "till-1"];
        all.extend_from_slice(extra);
        all
    };
    assert!(run(&with(&["--hub", "not a url", "order", "list"])).contains("not a URL"));
    assert!(
        run(&with(&[
            "--hub",
            "http://127.0.0.1:1,https://127.0.0.1:2",
            "order",
            "list"
        ]))
        .contains("mixes http:// and https://")
    );
    assert!(
        run(&with(&["--hub", "https://127.0.0.1:1", "order", "list"]))
            .contains("pin the store CA with --ca")
    );
    assert!(
        run(&with(&[
            "--hub",
            "http://127.0.0.1:1",
            "--ca",
            "/nonexistent/ca.pem",
            "order",
            "list"
        ]))
        .contains("must be an https:// URL")
    );
    assert!(
        run(&with(&["--token", "not-a-token", "order", "list"])).contains("not a pos-hub token")
    );
    assert!(
        run(&with(&[
            "order", "add", "o-404", "--sku", "X", "--name", "X", "--price", "1"
        ]))
        .contains("order o-404 is not known to this device")
    );
    // With no hub at all a new order is still taken: it waits in the outbox.
    let queued = till(&with(&["order", "new", "--id", "o-1"]));
    let out = String::from_utf8_lossy(&queued.stdout);
    assert!(queued.status.success() && out.contains("QUEUED"), "{out}");
    assert!(
        run(&with(&[
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
            "cheese"
        ]))
        .contains("is not NAME=PRICE")
    );
    assert!(
        run(&with(&[
            "order", "pay", "o-1", "--method", "cash", "--amount", "5"
        ]))
        .contains("refused (PAYMENT_MISMATCH)")
    );
    assert!(run(&with(&["outbox", "--resolve", "9"])).contains("there is no dead letter #9"));
}
