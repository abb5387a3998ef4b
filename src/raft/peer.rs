//! The peer service: only for the other nodes of this Raft group, on the peer port.
//! Devices never reach it (the client port serves them). It carries openraft's RPCs,
//! appends forwarded by followers, read-index requests and election nudges.

use std::sync::Arc;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use tonic::{Request, Response, Status};

use super::network::{decode, encode};
use super::node::Node;
use crate::proto::pb;
use crate::proto::pb::peer_server::Peer;
use crate::raft_types::{NodeId, TypeConfig};

pub struct PeerService {
    pub node: Arc<Node>,
}

fn bad_request(err: impl std::fmt::Display) -> Status {
    Status::invalid_argument(err.to_string())
}

fn encode_reply<T: serde::Serialize>(
    what: &'static str,
    value: &T,
) -> Result<Response<pb::RaftMessage>, Status> {
    encode(what, value)
        .map(Response::new)
        .map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode("append entries", request.get_ref()).map_err(bad_request)?;
        let reply = self.node.raft.append_entries(rpc).await;
        // Taken from a leader of this term or later (not refused for a higher vote).
        if matches!(&reply, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.node.leader_contact.heard();
        }
        encode_reply("append entries reply", &reply)
    }

    async fn vote(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let rpc: VoteRequest<NodeId> = decode("vote", request.get_ref()).map_err(bad_request)?;
        encode_reply("vote reply", &self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> =
            decode("snapshot chunk", request.get_ref()).map_err(bad_request)?;
        let reply = self.node.raft.install_snapshot(rpc).await;
        if reply.is_ok() {
            self.node.leader_contact.heard();
        }
        encode_reply("snapshot reply", &reply)
    }

    async fn forward(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let events = request.into_inner().events;
        // Only the leader proposes; a forwarded append is never forwarded again.
        let results = self.node.propose(events).await?;
        Ok(Response::new(pb::AppendResponse { results }))
    }

    async fn read_index(
        &self,
        _: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        let index = self.node.read_index_as_leader().await?;
        Ok(Response::new(pb::ReadIndexResponse { index }))
    }

    async fn elect(
        &self,
        _: Request<pb::ElectRequest>,
    ) -> Result<Response<pb::ElectResponse>, Status> {
        self.node
            .raft
            .trigger()
            .elect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::ElectResponse {}))
    }
}

/// The peer service with message limits fitting log batches and snapshot chunks.
pub fn server(node: Arc<Node>) -> pb::peer_server::PeerServer<PeerService> {
    pb::peer_server::PeerServer::new(PeerService { node })
        .max_decoding_message_size(super::network::PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(super::network::PEER_MESSAGE_BYTES_MAX)
}
