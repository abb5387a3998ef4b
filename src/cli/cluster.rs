//! `pos-hub cluster`: look at and change the group, against any node's client port.
//! Changes go to the leader: when a follower answers "not the leader", the command
//! follows it to the leader's client address. `revoke-device` writes a `device.revoked`
//! event through the normal log (Append, which any node forwards to the leader).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use tonic::transport::Channel;

use super::client::{Bearer, connect};
use crate::api::auth::DEVICE_AGGREGATE;
use crate::auth::token;
use crate::clock::now_rfc3339;
use crate::domain::{Actor, Clock, Event, Realm};
use crate::proto::pb::cluster_client::ClusterClient;
use crate::proto::pb::hub_client::HubClient;
use crate::proto::{convert, pb};
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
    /// Put a device on the store's deny-list (admin token): every node refuses its tokens
    /// issued up to now, offline grace included. A new token issued afterwards (a minute
    /// later, to clear the clock leeway) lets the device back in.
    RevokeDevice {
        /// The device's id (its tokens' `sub`).
        device: String,
        /// Why, kept in the log.
        #[arg(long)]
        reason: Option<String>,
        /// The store's realm when the hub runs without tokens; with --token, the token's.
        #[arg(long = "tenant", env = "TENANT_ID", default_value = "t-demo")]
        tenant_id: String,
        #[arg(long = "store", env = "STORE_ID", default_value = "s-001")]
        store_id: String,
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
    if let ClusterCommand::RevokeDevice {
        device,
        reason,
        tenant_id,
        store_id,
    } = &args.command
    {
        let channel = connect(&args.hub, args.ca.as_deref()).await?;
        let realm = Realm::new(tenant_id.clone(), store_id.clone());
        return revoke_device(
            channel,
            bearer,
            args.token.as_deref(),
            realm,
            device,
            reason,
        )
        .await;
    }
    let mut hub = args.hub.clone();
    for _ in 0..=LEADER_HOPS_MAX {
        let mut client = ClusterClient::with_interceptor(
            connect(&hub, args.ca.as_deref()).await?,
            bearer.clone(),
        );
        let reply = match &args.command {
            ClusterCommand::Status | ClusterCommand::RevokeDevice { .. } => {
                unreachable!("handled above")
            }
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

/// The device id the revocation is written as: the admin token's `sub` (the hub checks
/// that it matches), or, on a hub without tokens, this tool's name.
const OPEN_HUB_ACTOR: &str = "pos-hub-cli";

/// Writes `device.revoked` for `device` through Append and reports where it landed.
async fn revoke_device(
    channel: Channel,
    bearer: Bearer,
    token: Option<&str>,
    realm: Realm,
    device: &str,
    reason: &Option<String>,
) -> anyhow::Result<ExitCode> {
    if device.trim().is_empty() {
        bail!("revoke-device needs the device's id");
    }
    let (actor, realm) = match token {
        Some(token) => {
            let claims = token::decode_unverified(token.trim())
                .context("--token is not a token")?
                .claims;
            let realm = claims.realm();
            (claims.sub, realm)
        }
        None => (OPEN_HUB_ACTOR.to_owned(), realm),
    };
    let mut hub = HubClient::with_interceptor(channel, bearer);
    let hello = hub
        .hello(pb::HelloRequest {
            device_id: actor.clone(),
            cursor: 0,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
        .into_inner();
    let mut payload = serde_json::Map::new();
    if let Some(reason) = reason {
        payload.insert("reason".into(), reason.clone().into());
    }
    let event = Event {
        event_id: uuid::Uuid::now_v7().to_string(),
        tenant_id: realm.tenant_id,
        store_id: realm.store_id,
        aggregate_type: DEVICE_AGGREGATE.into(),
        aggregate_id: device.to_owned(),
        version: 1,
        event_type: "device.revoked".into(),
        at: now_rfc3339(),
        actor: Actor {
            device_id: actor.clone(),
            user_id: None,
        },
        clock: Clock {
            lamport: hello.lamport.saturating_add(1),
            device_id: actor,
        },
        payload,
        ..Event::default()
    };
    let reply = hub
        .append(pb::AppendRequest {
            events: vec![convert::event_to_pb(&event)?],
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
        .into_inner();
    let Some(result) = reply.results.first() else {
        bail!("the hub answered no result for the revocation");
    };
    match pb::AppendStatus::try_from(result.status) {
        Ok(pb::AppendStatus::Accepted) | Ok(pb::AppendStatus::Duplicate) => {
            println!(
                "revoked device {device:?} at seq {}: every node refuses its tokens issued \
                 until now once it has applied that seq",
                result.seq
            );
            Ok(ExitCode::SUCCESS)
        }
        _ => bail!(
            "the revocation was refused: {} {}",
            result.code,
            result.message
        ),
    }
}
