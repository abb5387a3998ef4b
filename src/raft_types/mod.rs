//! What the Raft group replicates, below both the `store` (which persists it) and the `raft`
//! runner (which proposes and ships it): the openraft type configuration, the command a log
//! entry carries and the answer its apply gives, the node address record, and short names
//! for openraft's generic types instantiated with our `TypeConfig`.

mod command;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use command::{Command, Response};

/// A node of the group as the membership records it: where its peers reach it (Raft RPCs)
/// and where devices reach it (the client API).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubNode {
    pub peer_addr: String,
    pub client_addr: String,
}

impl fmt::Display for HubNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {} / client {}", self.peer_addr, self.client_addr)
    }
}

/// Node ids are small integers chosen by the operator (`--node-id`).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The openraft configuration of pos-hub. Snapshots are files, streamed in chunks,
    /// so a large log never has to fit in memory to be sent to a new node.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = HubNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type EntryPayload = openraft::EntryPayload<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, HubNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, HubNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type LogState = openraft::storage::LogState<TypeConfig>;
pub type LogFlushed = openraft::storage::LogFlushed<TypeConfig>;
