//! The peer service: only for the other nodes of this Raft group, on the peer port.
//! Devices never reach it (the client port serves them). It carries openraft's RPCs,
//! appends forwarded by followers, read-index requests and election nudges.
//!
//! With mutual TLS, every caller's certificate names its node (`pos-hub-node:ID`): a Raft
//! message must come from the node it names as its sender (the candidate of a vote, the
//! leader of entries or a snapshot), and forwarded appends, read-index requests and
//! election nudges only from a member of the group. A certificate of one node cannot
//! speak for another.

use std::sync::Arc;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use tonic::{Request, Response, Status};

use super::network::{PeerError, decode, encode};
use super::node::Node;
use crate::proto::pb;
use crate::proto::pb::peer_server::Peer;
use crate::raft_types::{NodeId, TypeConfig};

pub struct PeerService {
    pub node: Arc<Node>,
    /// The peer port serves mutual TLS: every caller has a certificate naming its node.
    pub tls: bool,
}

impl PeerService {
    /// The node the caller's certificate names; `None` on a plaintext peer port.
    fn caller<T>(&self, request: &Request<T>) -> Result<Option<NodeId>, Status> {
        if !self.tls {
            return Ok(None);
        }
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::permission_denied("the caller presented no certificate"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::permission_denied("the caller presented no certificate"))?;
        crate::auth::tls::node_id_of(leaf)
            .map(Some)
            .map_err(|err| Status::permission_denied(err.to_string()))
    }

    /// A Raft message must come from the node it names as its sender.
    fn check_sender<T>(
        &self,
        request: &Request<T>,
        what: &str,
        sender: Option<NodeId>,
    ) -> Result<(), Status> {
        match (self.caller(request)?, sender) {
            (None, _) => Ok(()),
            (Some(caller), Some(sender)) if caller == sender => Ok(()),
            (Some(caller), sender) => Err(Status::permission_denied(format!(
                "{what} from node {} sent with the certificate of node {caller}",
                sender.map_or_else(|| "(none)".to_owned(), |id| id.to_string())
            ))),
        }
    }

    /// Forwarded appends, read-index requests and election nudges come from members only.
    fn check_member<T>(&self, request: &Request<T>, what: &str) -> Result<(), Status> {
        let Some(caller) = self.caller(request)? else {
            return Ok(());
        };
        let metrics = self.node.raft_metrics();
        if metrics
            .membership_config
            .membership()
            .nodes()
            .any(|(id, _)| *id == caller)
        {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{what} from node {caller}, which is not a member of this group"
            )))
        }
    }
}

/// A peer message this node cannot read: FAILED_PRECONDITION when it is in another
/// format (the group runs two versions), INVALID_ARGUMENT when its bytes are bad.
fn bad_request(err: PeerError) -> Status {
    match err {
        PeerError::Format { .. } => Status::failed_precondition(err.to_string()),
        _ => Status::invalid_argument(err.to_string()),
    }
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
        self.check_sender(&request, "append entries", rpc.vote.leader_id().voted_for())?;
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
        self.check_sender(&request, "a vote request", rpc.vote.leader_id().voted_for())?;
        let candidate_log = rpc.last_log_id;
        let candidate_term = rpc.vote.leader_id().get_term();
        let reply = self.node.raft.vote(rpc).await;
        if let Ok(answer) = &reply
            && !answer.vote_granted
            && answer.last_log_id > candidate_log
        {
            // Refused for a shorter log: that candidate cannot win, this node may.
            super::watchdog::stand_with_the_longer_log(&self.node, candidate_term);
        }
        encode_reply("vote reply", &reply)
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> =
            decode("snapshot chunk", request.get_ref()).map_err(bad_request)?;
        self.check_sender(
            &request,
            "a snapshot chunk",
            rpc.vote.leader_id().voted_for(),
        )?;
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
        self.check_member(&request, "a forwarded append")?;
        let events = request.into_inner().events;
        // Only the leader proposes; a forwarded append is never forwarded again.
        let results = self.node.propose(events).await?;
        Ok(Response::new(pb::AppendResponse { results }))
    }

    async fn read_index(
        &self,
        request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        self.check_member(&request, "a read-index request")?;
        let index = self.node.read_index_as_leader().await?;
        Ok(Response::new(pb::ReadIndexResponse { index }))
    }

    async fn elect(
        &self,
        request: Request<pb::ElectRequest>,
    ) -> Result<Response<pb::ElectResponse>, Status> {
        self.check_member(&request, "an election nudge")?;
        self.node
            .raft
            .trigger()
            .elect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::ElectResponse {}))
    }

    async fn read_history(
        &self,
        request: Request<pb::ReadHistoryRequest>,
    ) -> Result<Response<pb::ReadHistoryResponse>, Status> {
        self.check_member(&request, "a history read")?;
        let pb::ReadHistoryRequest {
            after,
            upto,
            max_bytes,
        } = request.into_inner();
        let max_bytes = usize::try_from(max_bytes)
            .unwrap_or(usize::MAX)
            .min(super::history::PAGE_BYTES_MAX);
        let reader = self.node.reader.clone();
        let (records, last_seq) = tokio::task::spawn_blocking(move || {
            let records = reader.history_records(after, upto, max_bytes)?;
            Ok::<_, crate::store::StoreError>((records, reader.history_last_seq()))
        })
        .await
        .map_err(|e| Status::internal(format!("history read task failed: {e}")))?
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ReadHistoryResponse { records, last_seq }))
    }
}

/// The peer service with message limits fitting log batches and snapshot chunks; `tls`
/// when the port serves mutual TLS (callers are then held to their certificates).
pub fn server(node: Arc<Node>, tls: bool) -> pb::peer_server::PeerServer<PeerService> {
    pb::peer_server::PeerServer::new(PeerService { node, tls })
        .max_decoding_message_size(super::network::PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(super::network::PEER_MESSAGE_BYTES_MAX)
}
