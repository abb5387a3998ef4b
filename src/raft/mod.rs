//! Raft plumbing: the openraft type configuration, the command carried by log entries,
//! and the local (single-node) runner used by `pos-hub log`.
//!
//! The networked group (peer service, forwarding, membership) builds on these types.

pub mod batch;
pub mod command;
pub mod local;
pub mod network;
pub mod node;
pub mod peer;
pub mod typ;

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
