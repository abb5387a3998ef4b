//! `pos-hub cluster`: look at and change the group, against any node's client port.
//! Changes go to the leader: when a follower answers "not the leader", the command
//! follows it to the leader's client address.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use tonic::transport::Channel;

use super::client::{Bearer, connect};
use crate::proto::pb;
use crate::proto::pb::cluster_client::ClusterClient;
use crate::wire::LEADER_METADATA;

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Any node's client address.
    #[arg(long, env = "POS_HUB", default_value = "http://127.0.0.1:4001")]
    hub: String,
    /// An admin token (`pos-hub token issue --role admin`).
    #[arg(long, env = "POS_HUB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The store CA (PEM) to pin when the hub serves TLS (`--hub https://…`).
    #[arg(long, env = "POS_HUB_CA")]
    ca: Option<PathBuf>,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ClusterCommand {
    /// Leader, term, members and their roles, indexes.
    Status,
    /// Add a node: it joins as a learner, catches up (by snapshot if needed), then votes.
    AddNode {
        #[arg(long)]
        id: u64,
        /// Where the other nodes reach its peer port.
        #[arg(long)]
        peer_addr: String,
        /// Where devices reach its client port.
        #[arg(long)]
        client_addr: String,
    },
    /// Remove a node from the group.
    RemoveNode {
        #[arg(long)]
        id: u64,
    },
    /// Hand leadership to another voter.
    TransferLeader {
        #[arg(long)]
        to: u64,
    },
}

fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Leader) => "leader",
        Ok(pb::Role::Follower) => "follower",
        Ok(pb::Role::Learner) => "learner",
        Ok(pb::Role::Candidate) => "candidate",
        _ => "unknown",
    }
}

fn print(status: &pb::ClusterStatusResponse) {
    println!(
        "node {} sees leader {} in term {}; last log index {}, applied {}, last seq {}",
        status.node_id,
        status.leader_id,
        status.term,
        status.last_log_index,
        status.applied_index,
        status.last_seq
    );
    for node in &status.nodes {
        println!(
            "  node {} {:<9} peer {} client {}",
            node.id,
            role_name(node.role),
            node.peer_addr,
            if node.client_addr.is_empty() {
                "?"
            } else {
                &node.client_addr
            }
        );
    }
}

pub async fn print_status(channel: Channel, bearer: Bearer) -> anyhow::Result<ExitCode> {
    let status = ClusterClient::with_interceptor(channel, bearer)
        .status(pb::ClusterStatusRequest {})
        .await?
        .into_inner();
    print(&status);
    Ok(ExitCode::SUCCESS)
}

/// Leader hops a change may follow before giving up (leadership moving while we chase it).
const LEADER_HOPS_MAX: usize = 3;

pub async fn run(args: ClusterArgs) -> anyhow::Result<ExitCode> {
    let bearer = Bearer::new(args.token.as_deref())?;
    if let ClusterCommand::Status = args.command {
        return print_status(connect(&args.hub, args.ca.as_deref()).await?, bearer).await;
    }
    let mut hub = args.hub.clone();
    for _ in 0..=LEADER_HOPS_MAX {
        let mut client = ClusterClient::with_interceptor(
            connect(&hub, args.ca.as_deref()).await?,
            bearer.clone(),
        );
        let reply = match &args.command {
            ClusterCommand::Status => unreachable!("handled above"),
            ClusterCommand::AddNode {
                id,
                peer_addr,
                client_addr,
            } => {
                let request = pb::AddNodeRequest {
                    id: *id,
                    peer_addr: peer_addr.clone(),
                    client_addr: client_addr.clone(),
                };
                client.add_node(request).await
            }
            ClusterCommand::RemoveNode { id } => {
                client.remove_node(pb::RemoveNodeRequest { id: *id }).await
            }
            ClusterCommand::TransferLeader { to } => {
                client
                    .transfer_leader(pb::TransferLeaderRequest { to: *to })
                    .await
            }
        };
        match reply {
            Ok(status) => {
                print(&status.into_inner());
                return Ok(ExitCode::SUCCESS);
            }
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                let Some(leader) = status
                    .metadata()
                    .get(LEADER_METADATA)
                    .and_then(|v| v.to_str().ok())
                else {
                    bail!("{}", status.message());
                };
                eprintln!("{hub} is not the leader; asking the leader at {leader}");
                let scheme = if args.ca.is_some() { "https" } else { "http" };
                hub = format!("{scheme}://{leader}");
            }
            Err(status) => bail!("{}: {}", status.code(), status.message()),
        }
    }
    bail!("leadership kept moving; try again")
}
