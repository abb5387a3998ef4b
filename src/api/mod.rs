//! The client-facing API on the client port: `pos.v1.Hub` (devices) and `pos.v1.Cluster`
//! (operators).
//! - `auth`: the caller check, an interceptor in front of both services, and the Append
//!   rule that a device writes only its own events;
//! - `error`: `ApiError`, every refusal, and the one place it becomes a gRPC status;
//! - `hub`, `cluster`, `subscribe`, `bootstrap`: the handlers. They stay thin: writes and linearizable
//!   reads go through `raft::node::Node`; conversions are `proto::convert`'s;
//! - `limits`: per-device append rate and Subscribe stream caps;
//! - `paging`: listings answered a page at a time, bounded in count and bytes;
//! - `view`: what each role sees (kitchen and bar screens: no payments, and redaction
//!   markers in place of payment-carrying events on Subscribe).

pub mod auth;
mod bootstrap;
pub mod cluster;
pub mod error;
pub mod hub;
pub mod limits;
pub mod paging;
mod subscribe;
pub mod view;

pub use error::ApiError;
