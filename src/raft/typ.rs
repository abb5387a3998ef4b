//! Short names for openraft's generic types instantiated with our `TypeConfig`.

use super::{HubNode, NodeId, TypeConfig};

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
