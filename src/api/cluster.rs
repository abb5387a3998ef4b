//! `pos.v1.Cluster`: membership and leadership, for operators. Changes are made by the
//! leader; any other node answers FAILED_PRECONDITION naming the leader's client address
//! (also in the `x-pos-hub-leader` metadata), which `pos-hub cluster` follows.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use openraft::error::{ClientWriteError, RaftError};
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::error::ApiError;
use super::hub::node_infos;
use crate::proto::pb;
use crate::proto::pb::cluster_server::Cluster;
use crate::raft::node::{Node, WriteError};
use crate::raft_types::{HubNode, NodeId};

/// How long an added node may take to catch up before it is made a voter.
pub const ADD_NODE_TIMEOUT_MS: u64 = 600_000;

pub struct ClusterService {
    pub node: Arc<Node>,
}

impl ClusterService {
    fn status(&self) -> Result<pb::ClusterStatusResponse, ApiError> {
        let metrics = self.node.raft_metrics();
        Ok(pb::ClusterStatusResponse {
            node_id: self.node.id,
            leader_id: metrics.current_leader.unwrap_or(0),
            term: metrics.current_term,
            nodes: node_infos(&self.node),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |id| id.index),
            last_seq: self.node.reader.applied()?.last_seq,
        })
    }

    /// Membership changes need the leader.
    fn require_leader(&self) -> Result<BTreeSet<NodeId>, ApiError> {
        let metrics = self.node.raft_metrics();
        if metrics.state != ServerState::Leader {
            let leader_client_addr = metrics
                .current_leader
                .and_then(|id| self.node.member(id))
                .map(|n| n.client_addr);
            return Err(WriteError::NotLeader {
                leader: metrics.current_leader,
                leader_client_addr,
            }
            .into());
        }
        Ok(metrics.membership_config.membership().voter_ids().collect())
    }
}

fn change_error(err: RaftError<NodeId, ClientWriteError<NodeId, HubNode>>) -> ApiError {
    match err {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            ApiError::MembershipRefused(format!("leadership moved during the change: {err}"))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ApiError::MembershipRefused(e.to_string())
        }
        RaftError::Fatal(_) => ApiError::ShuttingDown,
    }
}

impl ClusterService {
    /// Hands leadership to voter `to`. openraft 0.9 has no transfer call, and its nodes
    /// refuse votes while the leader's lease (one maximum election timeout since the last
    /// heartbeat) holds. So the leader waits until `to` has its whole log, stops its own
    /// heartbeats and elections, lets the lease lapse, and asks `to` to campaign; a vote from
    /// an up-to-date node with a higher term then wins. Another follower's timer may fire
    /// first; then the call says who won, and the operator can run it again.
    async fn hand_over(&self, to: NodeId) -> Result<(), ApiError> {
        let timing = self.node.timing;
        let election_max = Duration::from_millis(timing.election_timeout_max_ms);
        let last = self.node.raft_metrics().last_log_index;
        self.node
            .raft
            .wait(Some(election_max * 10))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&to))
                        .is_some_and(|matched| matched.map(|l| l.index) >= last)
                },
                "the target has the whole log",
            )
            .await
            .map_err(|_| ApiError::NotCaughtUp(to))?;
        let addr = self
            .node
            .member(to)
            .map(|n| n.peer_addr)
            .unwrap_or_default();
        let mut client = self.node.peers.get(to, &addr).map_err(|e| ApiError::Peer {
            node: to,
            status: Status::unavailable(e.to_string()),
        })?;
        let runtime = self.node.raft.runtime_config();
        runtime.heartbeat(false);
        runtime.elect(false);
        tokio::time::sleep(election_max + Duration::from_millis(timing.heartbeat_ms)).await;
        let outcome = match client.elect(pb::ElectRequest {}).await {
            Err(status) => Err(ApiError::Peer { node: to, status }),
            Ok(_) => {
                let moved = self
                    .node
                    .raft
                    .wait(Some(election_max * 3))
                    .metrics(
                        |m| m.current_leader.is_some_and(|l| l != self.node.id),
                        "someone else leads",
                    )
                    .await;
                match moved.map(|m| m.current_leader) {
                    Ok(Some(leader)) if leader == to => Ok(()),
                    Ok(Some(winner)) => Err(ApiError::LostElection { winner, wanted: to }),
                    _ => Err(ApiError::DidNotTakeOver(to)),
                }
            }
        };
        runtime.heartbeat(true);
        runtime.elect(true);
        outcome
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        caller(&request)?;
        Ok(Response::new(ClusterService::status(self)?))
    }

    async fn add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        caller(&request)?;
        let request = request.into_inner();
        if request.id == 0 {
            return Err(ApiError::InvalidRequest("node ids start at 1").into());
        }
        if request.peer_addr.is_empty() || request.client_addr.is_empty() {
            return Err(ApiError::InvalidRequest(
                "add-node needs both --peer-addr and --client-addr",
            )
            .into());
        }
        let voters = self.require_leader()?;
        if voters.contains(&request.id) {
            return Err(ApiError::AlreadyVoter(request.id).into());
        }
        let member = HubNode {
            peer_addr: request.peer_addr,
            client_addr: request.client_addr,
        };
        tracing::info!(id = request.id, %member, "adding a node as learner; it catches up before it votes");
        // openraft's own "caught up" means within 5000 *entries*; one entry here can carry
        // 1024 events, so wait for the learner to match the whole log instead.
        let target = self.node.raft_metrics().last_log_index;
        self.node
            .raft
            .add_learner(request.id, member, false)
            .await
            .map_err(change_error)?;
        let id = request.id;
        self.node
            .raft
            .wait(Some(Duration::from_millis(ADD_NODE_TIMEOUT_MS)))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id))
                        .is_some_and(|matched| matched.map(|l| l.index) >= target)
                },
                "the learner matches the log",
            )
            .await
            .map_err(|_| ApiError::CatchUpTimeout(id))?;
        let mut voters = voters;
        voters.insert(request.id);
        self.node
            .raft
            .change_membership(voters, false)
            .await
            .map_err(change_error)?;
        tracing::info!(id = request.id, "node is a voter");
        Ok(Response::new(ClusterService::status(self)?))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        caller(&request)?;
        let id = request.into_inner().id;
        let mut voters = self.require_leader()?;
        let is_member = self.node.member(id).is_some();
        if !is_member {
            return Err(ApiError::NotAMember(id).into());
        }
        voters.remove(&id);
        if voters.is_empty() {
            return Err(ApiError::LastVoter.into());
        }
        // `retain: false` drops it from the learners too: it leaves the group entirely.
        self.node
            .raft
            .change_membership(voters, false)
            .await
            .map_err(change_error)?;
        tracing::info!(id, "node removed from the group");
        Ok(Response::new(ClusterService::status(self)?))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        caller(&request)?;
        let to = request.into_inner().to;
        let voters = self.require_leader()?;
        if !voters.contains(&to) {
            return Err(ApiError::NotAVoter(to).into());
        }
        if to != self.node.id {
            self.hand_over(to).await?;
        }
        Ok(Response::new(ClusterService::status(self)?))
    }
}
