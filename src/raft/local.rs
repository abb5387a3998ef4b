//! A Raft group of one node on this machine, so that even `pos-hub log append` goes through
//! the same path as a replicated write: propose → durable log → commit → apply.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    ClientWriteError, Fatal, InitializeError, InstallSnapshotError, NetworkError, RPCError,
    RaftError, Unreachable,
};
use openraft::metrics::WaitError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Config, SnapshotPolicy};

use crate::domain::{Outcome, Realm, Rules};
use crate::proto::pb;
use crate::raft_types::Raft;
use crate::raft_types::{Command, HubNode, NodeId, TypeConfig};
use crate::store::{self, StateReader, StoreError};

/// The id of the only node of a local group.
pub const LOCAL_NODE_ID: NodeId = 1;
/// How long to wait for the local node to lead and catch up after opening its data dir.
pub const LOCAL_START_TIMEOUT_MS: u64 = 30_000;
/// By default, take a snapshot (and allow purging the log before it) after this many entries.
pub const SNAPSHOT_EVERY_LOG_ENTRIES: u64 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("raft configuration: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("raft stopped: {0}")]
    Fatal(#[from] Fatal<NodeId>),
    #[error("cannot initialize the local group: {0}")]
    Initialize(#[from] RaftError<NodeId, InitializeError<NodeId, HubNode>>),
    #[error("the local node did not become ready: {0}")]
    NotReady(#[from] WaitError),
    #[error("append failed: {0}")]
    Write(#[from] RaftError<NodeId, ClientWriteError<NodeId, HubNode>>),
}

/// The network of a group that has no other member: every RPC says the peer is unreachable.
/// openraft never calls it while the membership is this node alone.
pub struct NoPeers {
    target: NodeId,
}

#[derive(Debug, thiserror::Error)]
#[error("node {target} is not reachable: this is a single-node local group")]
struct NoPeerError {
    target: NodeId,
}

impl NoPeers {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<NodeId, HubNode, E> {
        RPCError::Unreachable(Unreachable::new(&NoPeerError {
            target: self.target,
        }))
    }
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeers;

    async fn new_client(&mut self, target: NodeId, _node: &HubNode) -> NoPeers {
        NoPeers { target }
    }
}

impl RaftNetwork<TypeConfig> for NoPeers {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, HubNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, HubNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, HubNode, RaftError<NodeId>>> {
        Err(RPCError::Network(NetworkError::new(&NoPeerError {
            target: self.target,
        })))
    }
}

/// A running single-node group over one data dir.
pub struct LocalNode {
    raft: Raft,
    reader: StateReader,
}

impl LocalNode {
    /// Opens the data dir, starts the node, initializes the group the first time, and
    /// returns once the node leads and has applied everything in its log. A snapshot is
    /// taken every `snapshot_every_log_entries` entries.
    pub async fn start(
        data_dir: &Path,
        realm: &Realm,
        snapshot_every_log_entries: u64,
    ) -> Result<Self, LocalError> {
        let (log, state_machine) = store::open(data_dir, realm).await?;
        let reader = state_machine.reader();
        let config = Config {
            cluster_name: "pos-hub-local".into(),
            // One node elects itself: short timeouts only shorten start-up.
            heartbeat_interval: 50,
            election_timeout_min: 150,
            election_timeout_max: 300,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every_log_entries),
            ..Default::default()
        }
        .validate()?;
        let raft = Raft::new(
            LOCAL_NODE_ID,
            Arc::new(config),
            NoPeers {
                target: LOCAL_NODE_ID,
            },
            log,
            state_machine,
        )
        .await?;
        if !raft.is_initialized().await? {
            raft.initialize(BTreeMap::from([(LOCAL_NODE_ID, HubNode::default())]))
                .await?;
        }
        let timeout = Some(Duration::from_millis(LOCAL_START_TIMEOUT_MS));
        raft.wait(timeout)
            .current_leader(LOCAL_NODE_ID, "the local node leads")
            .await?;
        let last_log_index = raft.metrics().borrow().last_log_index;
        if let Some(index) = last_log_index {
            raft.wait(timeout)
                .applied_index_at_least(Some(index), "the local node caught up")
                .await?;
        }
        Ok(Self { raft, reader })
    }

    /// Proposes the events as one log entry stamped with this node's time, and returns the
    /// outcome of each once the entry is durable, committed and applied.
    pub async fn append(&self, events: Vec<pb::Event>) -> Result<Vec<Outcome>, LocalError> {
        let command = Command {
            hub_time_ms: self.reader.clock().now_ms(),
            rules: Rules::CURRENT,
            events,
        };
        let response = self.raft.client_write(command).await?;
        Ok(response.data.outcomes)
    }

    #[cfg(test)]
    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn reader(&self) -> &StateReader {
        &self.reader
    }

    pub async fn shutdown(self) {
        if let Err(err) = self.raft.shutdown().await {
            tracing::warn!(%err, "raft did not shut down cleanly");
        }
    }
}
