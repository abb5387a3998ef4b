//! The client side of the peer port: openraft's `RaftNetwork` over tonic, one lazily
//! connected channel per peer, reused across RPCs.
//!
//! openraft's requests and responses travel inside `RaftMessage.data`, encoded by `codec`
//! in the format `RaftMessage.format` names;
//! a remote `RaftError` comes back inside the response, so that openraft sees exactly the
//! error the peer's Raft returned.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use crate::proto::pb;
use crate::proto::pb::peer_client::PeerClient;
use crate::raft_types::{Entry, HubNode, LogId, NodeId, TypeConfig};

/// How long to wait for a TCP connection to a peer before calling it unreachable.
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Largest peer message accepted or sent, in bytes: a batch of log entries or a snapshot
/// chunk. Bounded so a confused peer cannot make us allocate without limit.
pub const PEER_MESSAGE_BYTES_MAX: usize = 64 << 20;
/// Log entries sent in one AppendEntries message, in bytes, at most (unless the first entry
/// alone is larger; an entry is at most one client message, 4 MiB): openraft bounds a
/// message by entry count only. The rest follows in the next message. openraft 0.9 gives
/// an AppendEntries one heartbeat interval (50 ms by default) to be sent, written, synced
/// and answered, whatever it carries, and sends the same one again when it times out: at
/// 8 MiB a group filled with order flows (1 KB events, 50 per Append, 64 tills) timed
/// out on every try and stalled. 256 KiB crosses a Pi's 100 Mbit/s link in 20 ms.
pub const REPLICATION_BYTES_MAX: u64 = 256 << 10;
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer address {addr:?} is not a valid host:port: {detail}")]
    BadAddress { addr: String, detail: String },
    #[error("cannot encode {what} for a peer: {source}")]
    Encode {
        what: &'static str,
        source: crate::codec::CodecError,
    },
    #[error("cannot decode {what} from a peer: {source}")]
    Decode {
        what: &'static str,
        source: crate::codec::CodecError,
    },
    #[error(
        "{what} from a peer is in message format {found}, this node speaks format {}: \
         the group runs two pos-hub versions (format 0 is a release before format 2); \
         finish upgrading its nodes",
        crate::codec::FORMAT
    )]
    Format { what: &'static str, found: u32 },
    #[error("peer call failed: {0}")]
    Status(#[from] tonic::Status),
    #[error("peer did not answer within {0:?}")]
    Timeout(Duration),
}

/// A peer's address and the client connected to it.
type Channels = BTreeMap<NodeId, (String, PeerClient<Channel>)>;

/// Channels to the other nodes, shared by the Raft network and by forwarding.
#[derive(Clone, Default)]
pub struct PeerClients {
    channels: Arc<Mutex<Channels>>,
    /// With TLS, peers are reached over https with this node's certificate.
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl PeerClients {
    pub fn with_tls(tls: Option<tonic::transport::ClientTlsConfig>) -> Self {
        Self {
            channels: Arc::default(),
            tls,
        }
    }

    /// A client for node `id` at `addr` (created lazily; replaced if the address changed).
    pub fn get(&self, id: NodeId, addr: &str) -> Result<PeerClient<Channel>, PeerError> {
        let mut channels = match self.channels.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((known, client)) = channels.get(&id)
            && known == addr
        {
            return Ok(client.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let bad = |detail: String| PeerError::BadAddress {
            addr: addr.to_owned(),
            detail,
        };
        let mut endpoint =
            Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|e| bad(e.to_string()))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| bad(e.to_string()))?;
        }
        let endpoint = endpoint
            .connect_timeout(Duration::from_millis(PEER_CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true);
        let client = PeerClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
        channels.insert(id, (addr.to_owned(), client.clone()));
        Ok(client)
    }
}

/// Keeps the longest prefix of `entries` (at least one entry) whose encoding is at most
/// `max_bytes`; returns the log id of the last kept entry when it dropped any.
fn keep_prefix_within(entries: &mut Vec<Entry>, max_bytes: u64) -> Option<LogId> {
    let mut total = 0u64;
    let mut keep = entries.len();
    for (i, entry) in entries.iter().enumerate() {
        // An entry that cannot be sized cannot be encoded either: the send reports it.
        let size = crate::codec::encoded_len(entry).unwrap_or(0) as u64;
        total = total.saturating_add(size);
        if total > max_bytes && i > 0 {
            keep = i;
            break;
        }
    }
    if keep == entries.len() {
        return None;
    }
    entries.truncate(keep);
    entries.last().map(|e| e.log_id)
}

pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<pb::RaftMessage, PeerError> {
    let data = crate::codec::to_vec(value).map_err(|source| PeerError::Encode { what, source })?;
    Ok(pb::RaftMessage {
        data,
        format: crate::codec::FORMAT,
    })
}

pub fn decode<T: DeserializeOwned>(
    what: &'static str,
    msg: &pb::RaftMessage,
) -> Result<T, PeerError> {
    if msg.format != crate::codec::FORMAT {
        return Err(PeerError::Format {
            what,
            found: msg.format,
        });
    }
    crate::codec::from_slice(&msg.data).map_err(|source| PeerError::Decode { what, source })
}

/// openraft's network factory: one `PeerConnection` per replication target.
pub struct PeerNetwork {
    pub peers: PeerClients,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &HubNode) -> PeerConnection {
        PeerConnection {
            target,
            client: self.peers.get(target, &node.peer_addr),
        }
    }
}

pub struct PeerConnection {
    target: NodeId,
    client: Result<PeerClient<Channel>, PeerError>,
}

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl PeerConnection {
    /// Sends one openraft request and decodes the peer's `Result<Resp, RaftError<E>>`.
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, HubNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(err) => return Err(RPCError::Unreachable(Unreachable::new(err))),
        };
        let message = encode("raft request", request)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let ttl = option.hard_ttl();
        let mut client = client;
        let call = async {
            match rpc {
                Rpc::AppendEntries => client.append_entries(message).await,
                Rpc::Vote => client.vote(message).await,
                Rpc::InstallSnapshot => client.install_snapshot(message).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, call).await {
            Err(_) => {
                return Err(RPCError::Network(NetworkError::new(&PeerError::Timeout(
                    ttl,
                ))));
            }
            Ok(Err(status)) => {
                let err = PeerError::Status(status);
                return Err(match &err {
                    PeerError::Status(s) if s.code() == tonic::Code::Unavailable => {
                        RPCError::Unreachable(Unreachable::new(&err))
                    }
                    _ => RPCError::Network(NetworkError::new(&err)),
                });
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let result: Result<Resp, RaftError<NodeId, E>> = decode("raft response", &reply)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, HubNode, RaftError<NodeId>>> {
        let cut = keep_prefix_within(&mut rpc.entries, REPLICATION_BYTES_MAX);
        let response = self.call(Rpc::AppendEntries, &rpc, &option).await?;
        // The peer holds the prefix: openraft sends the rest next.
        Ok(match (response, cut) {
            (AppendEntriesResponse::Success, Some(last)) => {
                AppendEntriesResponse::PartialSuccess(Some(last))
            }
            (response, _) => response,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, HubNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, HubNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use openraft::error::Fatal;

    use super::*;

    /// An entry at `index` carrying one event with `bytes` of payload.
    fn entry(index: u64, bytes: usize) -> Entry {
        let event = pb::Event {
            event_id: "x".repeat(bytes),
            ..Default::default()
        };
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Normal(crate::raft_types::Command {
                hub_time_ms: 1,
                rules: crate::domain::Rules::CURRENT,
                events: vec![event],
            }),
        }
    }

    #[test]
    fn append_entries_carry_a_prefix_bounded_in_bytes() {
        let mb = 1 << 20;
        let mut small: Vec<Entry> = (1..=64).map(|i| entry(i, 1_000)).collect();
        assert_eq!(keep_prefix_within(&mut small, 8 * mb), None, "all fit");
        assert_eq!(small.len(), 64);

        let mut large: Vec<Entry> = (1..=5).map(|i| entry(i, 3 * mb as usize)).collect();
        let last = keep_prefix_within(&mut large, 8 * mb).expect("cut");
        assert_eq!(large.len(), 2, "two 3 MiB entries fit 8 MiB, three do not");
        assert_eq!(last.index, 2);

        let mut one_huge = vec![entry(7, 9 * mb as usize), entry(8, 10)];
        let last = keep_prefix_within(&mut one_huge, 8 * mb).expect("cut");
        assert_eq!(
            (one_huge.len(), last.index),
            (1, 7),
            "the first entry always goes"
        );
    }

    #[test]
    fn raft_results_survive_the_peer_encoding() {
        let failed: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            Err(RaftError::Fatal(Fatal::Panicked));
        let back: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            decode("vote", &encode("vote", &failed).expect("encodes")).expect("decodes");
        assert_eq!(back, failed);
        let snapshot_err: Result<
            InstallSnapshotResponse<NodeId>,
            RaftError<NodeId, InstallSnapshotError>,
        > = Err(RaftError::Fatal(Fatal::Stopped));
        let back: Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> =
            decode(
                "snapshot",
                &encode("snapshot", &snapshot_err).expect("encodes"),
            )
            .expect("decodes");
        assert_eq!(back, snapshot_err);
    }

    #[test]
    fn a_bad_peer_address_is_reported_by_name() {
        let Err(err) = PeerClients::default().get(2, "not an address") else {
            panic!("a bad address is refused");
        };
        assert!(err.to_string().contains("not an address"), "{err}");
    }
}
