//! With `--peer-tls`, the peer port speaks mutual TLS with the store CA: a process without
//! a certificate from that CA (plaintext, a foreign CA's certificate, or none) cannot make
//! the group accept an entry or change its term. A certificate from the store CA gets in,
//! and is held to the node it names: a non-member's is refused, and a member's may not
//! speak for another node.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::phase;
use openraft::{CommittedLeaderId, LogId, Vote};
use pos_hub::auth::tls;
use pos_hub::proto::pb;
use pos_hub::proto::pb::peer_client::PeerClient;
use pos_hub::raft::network::encode;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A vote for a far-future term: a node that took it would bump its term and step down.
fn usurping_vote() -> pb::RaftMessage {
    let request = openraft::raft::VoteRequest::<u64> {
        vote: Vote::new(1_000_000, 99),
        last_log_id: Some(LogId::new(CommittedLeaderId::new(1_000_000, 99), 1_000_000)),
    };
    encode("vote", &request).expect("encodes")
}

async fn peer(
    addr: &str,
    tls: Option<ClientTlsConfig>,
) -> Result<PeerClient<tonic::transport::Channel>, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint =
        Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|e| e.to_string())?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
    }
    let channel = endpoint
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(PeerClient::new(channel))
}

/// Tries to usurp the group and to inject an entry through `addr`; both must fail.
async fn attack(addr: &str, tls: Option<ClientTlsConfig>, who: &str) {
    let Ok(mut client) = peer(addr, tls).await else {
        return;
    }; // refused at connect: good
    let vote = tokio::time::timeout(Duration::from_secs(5), client.vote(usurping_vote())).await;
    assert!(
        !matches!(vote, Ok(Ok(_))),
        "{who}: a vote got through: {vote:?}"
    );
    let forward = pb::AppendRequest {
        events: vec![inventory_event("FRIES", 1, "intruder", 1)],
    };
    let inject = tokio::time::timeout(Duration::from_secs(5), client.forward(forward)).await;
    assert!(
        !matches!(inject, Ok(Ok(_))),
        "{who}: an append got through: {inject:?}"
    );
}

async fn terms_and_seqs(c: &Cluster) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for id in 1..=3 {
        let status = c.status_json(id).await;
        out.push((
            status["term"].as_u64().expect("term"),
            status["lastSeq"].as_u64().expect("lastSeq"),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_holders_of_a_store_ca_certificate_reach_the_peer_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_ca = dir.path().join("store-ca");
    tls::init_ca(&store_ca).expect("store CA");
    let options = Options {
        peer_tls_ca: Some(store_ca.clone()),
        ..Options::default()
    };
    let mut c = Cluster::start_with(3, options).await;
    let leader = c.leader_id().await;

    phase("the group works over mutual TLS");
    let seqs = append_accepted(
        &mut c.client(leader),
        vec![inventory_event("FRIES", 1, "till-1", 1)],
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(seqs, vec![1]);
    c.wait_same_last_seq(&[1, 2, 3], 1, Duration::from_secs(30))
        .await;
    let before = terms_and_seqs(&c).await;

    let store_ca_cert =
        Certificate::from_pem(std::fs::read_to_string(store_ca.join(tls::CA_CERT)).expect("reads"));
    let foreign = dir.path().join("foreign");
    tls::init_ca(&foreign.join("ca")).expect("foreign CA");
    tls::issue_node(
        &foreign.join("ca"),
        9,
        &["127.0.0.1".to_owned()],
        &foreign.join("node"),
    )
    .expect("foreign cert");
    let foreign_identity = Identity::from_pem(
        std::fs::read_to_string(foreign.join("node").join(tls::NODE_CERT)).expect("reads"),
        std::fs::read_to_string(foreign.join("node").join(tls::NODE_KEY)).expect("reads"),
    );

    for id in 1..=3 {
        let addr = c.peer_addr(id);
        eprintln!(
            "--- node {id}'s peer port: plaintext, a foreign CA's certificate, no certificate"
        );
        attack(&addr, None, "plaintext").await;
        let foreign_cert = ClientTlsConfig::new()
            .ca_certificate(store_ca_cert.clone())
            .identity(foreign_identity.clone());
        attack(&addr, Some(foreign_cert), "foreign certificate").await;
        attack(
            &addr,
            Some(ClientTlsConfig::new().ca_certificate(store_ca_cert.clone())),
            "no certificate",
        )
        .await;
    }
    assert_eq!(
        terms_and_seqs(&c).await,
        before,
        "no term moved and nothing was appended"
    );

    phase("a store certificate of a node that is not a member: refused by name");
    let outsider = dir.path().join("outsider");
    tls::issue_node(&store_ca, 9, &["127.0.0.1".to_owned()], &outsider).expect("store cert");
    let mut client = peer(
        &c.peer_addr(leader),
        Some(tls::peer_client_config(&outsider).expect("config")),
    )
    .await
    .expect("connects with a store certificate");
    let refused = client
        .read_index(pb::ReadIndexRequest {})
        .await
        .expect_err("a non-member may not ask for a read index");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("node 9") && refused.message().contains("not a member"),
        "{refused:?}"
    );
    let refused = client
        .forward(pb::AppendRequest {
            events: vec![inventory_event("FRIES", 1, "intruder", 2)],
        })
        .await
        .expect_err("a non-member may not forward appends");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let history = pb::ReadHistoryRequest {
        after: 0,
        upto: u64::MAX,
        max_bytes: 1 << 20,
    };
    let refused = client
        .read_history(history)
        .await
        .expect_err("a non-member may not read the history");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("history read"), "{refused:?}");

    phase("a member's certificate speaking for another node: refused, naming both");
    let other = (1..=3).find(|id| *id != leader).expect("a follower");
    let impostor = (1..=3)
        .find(|id| *id != leader && *id != other)
        .expect("a third node");
    let certs = dir.path().join("member-certs");
    tls::issue_node(&store_ca, impostor, &["127.0.0.1".to_owned()], &certs).expect("cert");
    let mut client = peer(
        &c.peer_addr(other),
        Some(tls::peer_client_config(&certs).expect("config")),
    )
    .await
    .expect("connects with a member's certificate");
    let vote = openraft::raft::VoteRequest::<u64> {
        vote: Vote::new(1_000_000, leader),
        last_log_id: Some(LogId::new(
            CommittedLeaderId::new(1_000_000, leader),
            1_000_000,
        )),
    };
    let refused = client
        .vote(encode("vote", &vote).expect("encodes"))
        .await
        .expect_err("a vote for another candidate is refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains(&format!(
            "vote request from node {leader} sent with the certificate of node {impostor}"
        )),
        "{refused:?}"
    );
    let entries = openraft::raft::AppendEntriesRequest::<pos_hub::raft_types::TypeConfig> {
        vote: Vote::new_committed(1_000_000, leader),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let refused = client
        .append_entries(encode("entries", &entries).expect("encodes"))
        .await
        .expect_err("entries as another leader are refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains(&format!("node {leader}"))
            && refused.message().contains(&format!("node {impostor}")),
        "{refused:?}"
    );
    assert_eq!(
        terms_and_seqs(&c).await,
        before,
        "no term moved and nothing was appended"
    );

    phase("a member's certificate does get through (so the refusals above could have)");
    let index = client
        .read_index(pb::ReadIndexRequest {})
        .await
        .map(|reply| reply.into_inner().index);
    // The follower answers with its own read-index call to the leader, or refuses as not
    // the leader; either way not as a permission matter.
    if let Err(status) = &index {
        assert_ne!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    }
    let mut client = peer(
        &c.peer_addr(leader),
        Some(tls::peer_client_config(&certs).expect("config")),
    )
    .await
    .expect("connects with a member's certificate");
    let index = client
        .read_index(pb::ReadIndexRequest {})
        .await
        .expect("the leader answers a member")
        .into_inner()
        .index;
    assert!(index >= 1, "read index {index}");
    let history = client
        .read_history(pb::ReadHistoryRequest {
            after: 0,
            upto: u64::MAX,
            max_bytes: 1 << 20,
        })
        .await
        .expect("the leader gives a member its history")
        .into_inner();
    assert_eq!(history.last_seq, 1, "the one event appended above");
    assert!(!history.records.is_empty(), "its record comes back");
}
