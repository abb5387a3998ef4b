//! `Hub/Bootstrap` against a running group: the live state it returns is exactly what the
//! committed log up to the seq it names makes, read while appends go on (no apply falls
//! between its orders, tickets and stock), on a follower and linearizably; and a bad
//! request is refused by name.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::phase;
use pos_hub::client::model::{Changes, Layer, ReadModel};
use pos_hub::domain::Realm;
use pos_hub::proto::{convert, pb};

const WAIT: Duration = Duration::from_secs(30);

/// The read model the committed log makes up to `seq`, folded by the device SDK's rules
/// from Subscribe's events.
async fn replayed(
    client: &mut pb::hub_client::HubClient<tonic::transport::Channel>,
    seq: u64,
) -> Layer {
    let mut model = ReadModel::new(Realm::new(TENANT, STORE), Layer::default());
    if seq == 0 {
        return model.committed().clone();
    }
    let mut stream = client
        .subscribe(pb::SubscribeRequest { cursor: 0 })
        .await
        .expect("Subscribe")
        .into_inner();
    while model.cursor() < seq {
        let batch = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("events within the wait")
            .expect("a batch")
            .expect("the stream goes on");
        for event in batch.events.iter().filter(|e| e.seq <= seq) {
            let event = convert::event_from_pb(event).expect("a valid event");
            model
                .apply_committed(&event, &mut Changes::default())
                .unwrap_or_else(|d| panic!("seq {}: {}", d.seq, d.detail));
        }
    }
    model.committed().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_is_the_state_the_log_makes_at_the_seq_it_names_while_appends_go_on() {
    let mut cluster = Cluster::start(3).await;
    let leader_id = cluster.leader_id().await;
    let mut leader = cluster.client(leader_id);
    append_accepted(&mut leader, order_flow("o-0", "till-1", 1, true), WAIT).await;

    phase("appends go on while Bootstrap reads node 2's state, locally and linearizably");
    let writer = tokio::spawn(async move {
        let mut lamport = 100;
        for n in 1..=120u64 {
            // Every third order stays open; the rest are paid.
            let mut events = order_flow(&format!("o-{n}"), "till-1", lamport, n % 3 != 0);
            events.push(inventory_event("FRIES", -2, "till-1", lamport + 10));
            lamport += 20;
            append_accepted(&mut leader, events, WAIT).await;
        }
    });
    let mut node2 = cluster.client(2);
    let mut reads = Vec::new();
    while !writer.is_finished() || reads.len() < 4 {
        let consistency = if reads.len() % 2 == 0 {
            pb::Consistency::Local
        } else {
            pb::Consistency::Linearizable
        };
        reads.push(bootstrap(&mut node2, consistency).await);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    writer.await.expect("the writer finished");
    let seqs: Vec<u64> = reads.iter().map(|r| r.seq).collect();
    eprintln!("bootstrap read at seqs {seqs:?}");
    let distinct: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
    assert!(distinct.len() >= 3, "reads fell between appends: {seqs:?}");

    phase("each read is exactly the replay of the log up to its seq");
    for read in reads {
        let replay = replayed(&mut node2, read.seq).await;
        let lamport = replay.lamport;
        let (orders, tickets, stocks) = as_sent(replay, read.seq);
        assert_eq!(
            read.lamport, lamport,
            "the store's clock at seq {}",
            read.seq
        );
        assert_eq!(read.orders, orders, "orders at seq {}", read.seq);
        assert_eq!(
            sorted_tickets(read.tickets),
            tickets,
            "tickets at seq {}",
            read.seq
        );
        assert_eq!(read.stocks, stocks, "stock at seq {}", read.seq);
    }

    phase("the hub times: created and last changed, on orders and tickets");
    let last = bootstrap(&mut node2, pb::Consistency::Linearizable).await;
    let open = last
        .orders
        .iter()
        .find(|o| o.id == "o-120")
        .expect("the last order is live");
    assert!(open.created_at_ms > 0 && open.created_at_ms <= open.updated_at_ms);
    assert!(
        last.tickets
            .iter()
            .all(|t| t.created_at_ms > 0 && t.created_at_ms <= t.updated_at_ms)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_with_an_unknown_consistency_is_refused_by_name() {
    let cluster = Cluster::start(1).await;
    let status = cluster
        .client(1)
        .bootstrap(pb::BootstrapRequest { consistency: 7 })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("unknown consistency 7"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_never_takes_a_bootstrap_older_than_the_seq_its_device_holds() {
    let cluster = Cluster::start(1).await;
    let mut client = cluster.client(1);
    let seqs = append_accepted(&mut client, order_flow("o-1", "till-1", 1, false), WAIT).await;
    let last = *seqs.last().expect("seqs");
    let hub = pos_hub::client::hub::HubClient::new(pos_hub::client::HubConfig::new(
        vec![cluster.client_addr(1)],
        Realm::new(TENANT, STORE),
    ))
    .expect("a client");

    phase("a device holding the node's seq, or less, takes its state");
    for at_least in [0, last] {
        let live = hub.bootstrap(at_least).await.expect("the node's state");
        assert_eq!(live.seq, last);
        assert_eq!(live.orders.len(), 1);
    }

    phase("a device already past the node's seq is not taken back: the attempt fails");
    let err = hub
        .bootstrap(last + 1)
        .await
        .expect_err("a state older than the device's copy");
    let err = err.to_string();
    assert!(
        err.contains(&format!(
            "is behind this device: its live state is at seq {last}, the device holds seq {}",
            last + 1
        )),
        "{err}"
    );
}
