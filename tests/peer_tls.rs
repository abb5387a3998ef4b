//! With `--peer-tls`, the peer port speaks mutual TLS with the store CA: a process without
//! a certificate from that CA (plaintext, a foreign CA's certificate, or none) cannot make
//! the group accept an entry or change its term. A certificate from the store CA gets in.

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

    eprintln!(
        "--- a certificate from the store CA does get through (so the attacks above could have)"
    );
    let insider = dir.path().join("insider");
    tls::issue_node(&store_ca, 9, &["127.0.0.1".to_owned()], &insider).expect("store cert");
    let mut client = peer(
        &c.peer_addr(leader),
        Some(tls::peer_client_config(&insider).expect("config")),
    )
    .await
    .expect("connects with a store certificate");
    let index = client
        .read_index(pb::ReadIndexRequest {})
        .await
        .expect("the leader answers")
        .into_inner()
        .index;
    assert!(index >= 1, "read index {index}");
}
