//! A fresh node joining the filled group: started blank (`serve --join`), added with
//! `pos-hub cluster add-node` as an operator would, and timed until it serves a read that
//! shows the group's last seq. Afterwards it is removed again (`cluster remove-node`), so
//! that the rest of the bench runs on the group it started.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::super::BenchError;
use pos_hub::proto::pb;
use pos_hub::proto::pb::hub_client::HubClient;
use tonic::transport::Channel;

use super::super::cluster::{LocalCluster, channel};

/// How long the join may take before it is reported as not done (the target is 10 s).
const JOIN_WITHIN: Duration = Duration::from_secs(120);
/// How often the new node is asked for its last seq.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JoinReport {
    pub node: u64,
    /// The group's last seq the new node had to show.
    pub last_seq: u64,
    /// Start of the node process → its Hello shows `last_seq`.
    pub serves_reads_seconds: Option<f64>,
    /// How long `pos-hub cluster add-node` ran (it answers once the node caught up and
    /// votes).
    pub add_node_seconds: Option<f64>,
    /// `add-node` succeeded: the node is a member.
    pub added: bool,
    /// Why the node did not join, if it did not.
    pub failure: Option<String>,
}

/// Starts node `max id + 1` blank, adds it through node 1 and times it; the node is left
/// running for its log to be read (`leave` removes it).
pub async fn fresh_node(
    cluster: &mut LocalCluster,
    last_seq: u64,
) -> Result<JoinReport, BenchError> {
    let id = cluster.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
    let via = cluster.nodes[0].client_addr.clone();
    let started = Instant::now();
    let node = cluster.spawn_joining(id)?;
    let (client, peer) = (node.client_addr.clone(), node.peer_addr.clone());
    let mut report = JoinReport {
        node: id,
        last_seq,
        serves_reads_seconds: None,
        add_node_seconds: None,
        added: false,
        failure: None,
    };
    // One connection for every Hello to the new node, so the polling costs it little.
    let mut hub = HubClient::new(channel(&client)?);
    // The blank node answers Hello (at seq 0) once it is up.
    let up_by = started + Duration::from_secs(30);
    while hello_seq(&mut hub).await.is_none() {
        if Instant::now() > up_by {
            report.failure = Some(format!(
                "the blank node {id} did not answer Hello within 30 s"
            ));
            return Ok(report);
        }
        tokio::time::sleep(POLL).await;
    }
    let output = cluster.dir.join(format!("add-node{id}.out"));
    let add_started = Instant::now();
    let mut add = cli(
        cluster.exe(),
        &output,
        &[
            "--hub",
            &format!("http://{via}"),
            "add-node",
            "--id",
            &id.to_string(),
            "--peer-addr",
            &peer,
            "--client-addr",
            &client,
        ],
    )?;
    let deadline = started + JOIN_WITHIN;
    loop {
        if report.add_node_seconds.is_none()
            && let Ok(Some(status)) = add.try_wait()
        {
            report.add_node_seconds = Some(add_started.elapsed().as_secs_f64());
            report.added = status.success();
            if !status.success() {
                report.failure = Some(format!(
                    "pos-hub cluster add-node failed ({status}): {}",
                    read_output(&output)
                ));
                break;
            }
        }
        if report.serves_reads_seconds.is_none()
            && hello_seq(&mut hub).await.is_some_and(|s| s >= last_seq)
        {
            report.serves_reads_seconds = Some(started.elapsed().as_secs_f64());
        }
        if report.add_node_seconds.is_some() && report.serves_reads_seconds.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = add.kill();
            let _ = add.wait();
            report.failure = Some(format!(
                "node {id} did not serve reads at seq {last_seq} within {} s (add-node {})",
                JOIN_WITHIN.as_secs(),
                if report.add_node_seconds.is_some() {
                    "had answered"
                } else {
                    "had not answered"
                }
            ));
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(report)
}

/// The last seq the node's Hello reports, if it answers within a second.
async fn hello_seq(hub: &mut HubClient<Channel>) -> Option<u64> {
    let hello = tokio::time::timeout(
        Duration::from_secs(1),
        hub.hello(pb::HelloRequest::default()),
    )
    .await;
    match hello {
        Ok(Ok(hello)) => Some(hello.into_inner().last_seq),
        _ => None,
    }
}

/// Removes the joined node from the group (when it joined) and stops it; then waits until
/// the others agree on a leader.
pub async fn leave(cluster: &mut LocalCluster, joined: &JoinReport) -> Result<(), BenchError> {
    let id = joined.node;
    if joined.added {
        let via = cluster.nodes[0].client_addr.clone();
        let output = cluster.dir.join(format!("remove-node{id}.out"));
        let mut remove = cli(
            cluster.exe(),
            &output,
            &[
                "--hub",
                &format!("http://{via}"),
                "remove-node",
                "--id",
                &id.to_string(),
            ],
        )?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Ok(Some(status)) = remove.try_wait() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = remove.kill();
                let _ = remove.wait();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if !status.is_some_and(|s| s.success()) {
            return Err(BenchError::Setup(format!(
                "pos-hub cluster remove-node {id} after the join measurement failed: {}",
                read_output(&output)
            )));
        }
    }
    cluster.forget(id);
    cluster.wait_leader(Duration::from_secs(30)).await.map(drop)
}

/// Runs `pos-hub cluster ARGS…`, its output into `output`.
fn cli(exe: &Path, output: &Path, args: &[&str]) -> Result<Child, BenchError> {
    let out = std::fs::File::create(output).map_err(|e| BenchError::io(output, e))?;
    let err = out.try_clone().map_err(|e| BenchError::io(output, e))?;
    Command::new(exe)
        .arg("cluster")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| BenchError::io(exe, e))
}

fn read_output(path: &Path) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("({}: {e})", path.display()))
}
