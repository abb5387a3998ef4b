//! The Rust client SDK for tills and screens (spec §8, local-first with an outbox).
//!
//! - `hub`: `HubClient`, the connection to a store's group: given addresses, the
//!   group's members from Hello, mDNS discovery and a cache of the last good addresses,
//!   failing over from node to node;
//! - `outbox`: the device's durable store (`device.kv`, a checksummed log file of our own):
//!   queued events, dead letters, the committed read model and its cursor, the Lamport
//!   clock;
//! - `model`: the read model: the committed state with the device's own queued events on
//!   top, both decided by the hub's own rules (`domain::apply`);
//! - `device`: `Device`, the SDK handle: `append`, `lock`, reads, and the background tasks
//!   that send the outbox and follow the committed log.
//!
//! A refused event carries its code as `RefusalCode`: the domain's `RejectCode` for the
//! hub's rules, an explicit `Unknown` for a code from a newer hub, or the gRPC code of a
//! refused request; a `LOCKED` refusal names the lock holder in its own field.

pub use crate::proto::convert::{Refusal, RefusalCode};

pub mod device;
pub mod hub;
pub mod model;
pub mod outbox;

pub use device::{Appended, Device, DeviceConfig, Draft, Final, LockGuard, Progress, Running};
pub use hub::{HubClient, HubConfig};
pub use outbox::{DeadLetter, OutboxError, Queued};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("the device's data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    /// Refused, with nothing left queued: by the device's own view at `append`, or by the
    /// hub for `Device::lock`.
    #[error("refused ({code}): {message}")]
    Refused {
        code: RefusalCode,
        message: String,
        /// For LOCKED: the device holding the order.
        lock_holder: Option<String>,
    },
    /// The event is queued but no hub confirmed it in time; it stays in the outbox.
    #[error("event {event_id} is queued but no hub confirmed it yet")]
    Unconfirmed { event_id: String },
    /// The committed log does not continue the device's copy.
    #[error("the device's copy of the log diverged: {0}")]
    Diverged(String),
}

#[cfg(test)]
mod tests;
