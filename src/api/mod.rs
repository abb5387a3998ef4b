//! The client-facing API on the client port: `pos.v1.Hub` (devices) and `pos.v1.Cluster`
//! (operators). Handlers stay thin: writes and linearizable reads go through
//! `raft::node::Node`, whose `WriteError` becomes a gRPC status in one `From` impl.

pub mod auth;
pub mod cluster;
pub mod convert;
pub mod hub;
pub mod limits;
mod subscribe;

use tonic::Status;

use crate::store::StoreError;

/// Most events one Append may carry; one Append becomes one Raft log entry.
pub const APPEND_EVENTS_MAX: usize = 1024;
/// Largest client message, in bytes (an Append of many events, with payloads).
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 4 << 20;

/// A failure to read this node's storage: not the client's fault.
fn store_status(err: StoreError) -> Status {
    tracing::error!(%err, "storage read failed");
    Status::internal(format!("storage: {err}"))
}
