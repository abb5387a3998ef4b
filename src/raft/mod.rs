//! The Raft group at run time, over the types of `raft_types`:
//! - `node`: `Node`, the paths every write and linearizable read takes (propose on the
//!   leader, forward from a follower) and `WriteError`;
//! - `batch`: group commit in front of `Raft::client_write`;
//! - `network`, `peer`: the peer port (tonic) that carries Raft RPCs, forwarded appends
//!   and read-index requests between nodes;
//! - `local`: a single-node group on this machine, for `pos-hub log`;
//! - `watchdog`: stands for election when no leader is heard, without openraft 0.9's
//!   extra delays.

pub mod batch;
pub mod compaction;
pub mod forward;
pub mod history;
pub mod local;
pub mod network;
pub mod node;
pub mod peer;
pub mod signals;
pub mod watchdog;
