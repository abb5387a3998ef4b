//! `pos-hub cluster`: look at and change the group, against any node's client port.
//! Changes go to the leader: when a follower answers "not the leader", the command
//! follows it to the leader's client address. `revoke-device` and `archive-mark` write an
//! admin's event (`device.revoked`, `store.archived`) through the normal log (Append,
//! which any node forwards to the leader).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use tonic::transport::Channel;

use super::client::{Bearer, connect};
use crate::api::auth::{DEVICE_AGGREGATE, STORE_AGGREGATE};
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
    /// Record that the store's events up to SEQ are archived elsewhere (admin token): hubs
    /// may then delete their history behind it once it is older than --retain-days, and
    /// from now on refuse events whose eventId was made before that (EVENT_BEYOND_RETENTION).
    /// The mark never moves back.
    ArchiveMark {
        /// The last archived seq.
        through_seq: u64,
        /// Days the store keeps its history and deduplicates eventIds (7 to 3650): longer
        /// than any till may stay offline with events queued.
        #[arg(long, default_value_t = 30)]
        retain_days: u64,
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
    if let ClusterCommand::ArchiveMark {
        through_seq,
        retain_days,
        tenant_id,
        store_id,
    } = &args.command
    {
        let channel = connect(&args.hub, args.ca.as_deref()).await?;
        let realm = Realm::new(tenant_id.clone(), store_id.clone());
        let mut payload = serde_json::Map::new();
        payload.insert("throughSeq".into(), (*through_seq).into());
        payload.insert("retainDays".into(), (*retain_days).into());
        let admin = Admin::new(channel, bearer, args.token.as_deref(), realm)?;
        let event = AdminEvent {
            aggregate_type: STORE_AGGREGATE,
            aggregate_id: None,
            event_type: "store.archived",
            payload,
        };
        let result = admin.append(event, "the archive mark").await?;
        println!(
            "archived through seq {through_seq} (mark at seq {}), events kept and \
             deduplicated for {retain_days} days",
            result.seq
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut hub = args.hub.clone();
    for _ in 0..=LEADER_HOPS_MAX {
        let mut client = ClusterClient::with_interceptor(
            connect(&hub, args.ca.as_deref()).await?,
            bearer.clone(),
        );
        let reply = match &args.command {
            ClusterCommand::Status
            | ClusterCommand::RevokeDevice { .. }
            | ClusterCommand::ArchiveMark { .. } => {
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
    let mut payload = serde_json::Map::new();
    if let Some(reason) = reason {
        payload.insert("reason".into(), reason.clone().into());
    }
    let admin = Admin::new(channel, bearer, token, realm)?;
    let event = AdminEvent {
        aggregate_type: DEVICE_AGGREGATE,
        aggregate_id: Some(device.to_owned()),
        event_type: "device.revoked",
        payload,
    };
    let result = admin.append(event, "the revocation").await?;
    println!(
        "revoked device {device:?} at seq {}: every node refuses its tokens issued until now \
         once it has applied that seq",
        result.seq
    );
    Ok(ExitCode::SUCCESS)
}

/// An admin's event to write, before its envelope.
struct AdminEvent {
    aggregate_type: &'static str,
    /// `None`: the store's own id.
    aggregate_id: Option<String>,
    event_type: &'static str,
    payload: serde_json::Map<String, serde_json::Value>,
}

/// Who writes an admin's event, where, and for which store.
struct Admin {
    hub: HubClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>,
    actor: String,
    realm: Realm,
}

impl Admin {
    /// The actor is the admin token's `sub` (the hub checks that it matches), and the
    /// realm the token's; on a hub without tokens, this tool's name and `realm`.
    fn new(
        channel: Channel,
        bearer: Bearer,
        token: Option<&str>,
        realm: Realm,
    ) -> anyhow::Result<Self> {
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
        Ok(Self {
            hub: HubClient::with_interceptor(channel, bearer),
            actor,
            realm,
        })
    }

    /// Appends `event` (stamped past the store's clock) and returns its result once it is
    /// accepted (or was before); a refusal is an error naming `what` and the hub's reason.
    async fn append(mut self, event: AdminEvent, what: &str) -> anyhow::Result<pb::AppendResult> {
        let status = |s: tonic::Status| anyhow::anyhow!("{}: {}", s.code(), s.message());
        let hello = self
            .hub
            .hello(pb::HelloRequest {
                device_id: self.actor.clone(),
                cursor: 0,
            })
            .await
            .map_err(status)?
            .into_inner();
        let event = Event {
            event_id: uuid::Uuid::now_v7().to_string(),
            aggregate_id: event
                .aggregate_id
                .unwrap_or_else(|| self.realm.store_id.clone()),
            tenant_id: self.realm.tenant_id,
            store_id: self.realm.store_id,
            aggregate_type: event.aggregate_type.into(),
            version: 1,
            event_type: event.event_type.into(),
            at: now_rfc3339(),
            actor: Actor {
                device_id: self.actor.clone(),
                user_id: None,
            },
            clock: Clock {
                lamport: hello.lamport.saturating_add(1),
                device_id: self.actor,
            },
            payload: event.payload,
            ..Event::default()
        };
        let reply = self
            .hub
            .append(pb::AppendRequest {
                events: vec![convert::event_to_pb(&event)?],
            })
            .await
            .map_err(status)?
            .into_inner();
        let Some(result) = reply.results.into_iter().next() else {
            bail!("the hub answered no result for {what}");
        };
        match pb::AppendStatus::try_from(result.status) {
            Ok(pb::AppendStatus::Accepted) | Ok(pb::AppendStatus::Duplicate) => Ok(result),
            _ => bail!("{what} was refused: {} {}", result.code, result.message),
        }
    }
}
