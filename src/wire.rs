//! What the client and peer APIs promise beyond their protobuf messages: message and batch
//! bounds, and the metadata keys that carry machine-readable details of a refusal. Below
//! the `api` (which enforces them), the `raft` runner (which batches up to them) and the
//! client SDK (which reads them), so none of those imports another for a constant.

/// Most events one Append may carry, and one Raft log entry at most (Appends that arrive
/// together share an entry up to this many events).
pub const APPEND_EVENTS_MAX: usize = 1024;

/// Largest client message, in bytes (an Append of many events, with payloads).
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 4 << 20;

/// Metadata key carrying the retry delay, in milliseconds, on RESOURCE_EXHAUSTED.
pub const RETRY_AFTER_METADATA: &str = "retry-after-ms";

/// Metadata key naming the leader's client address on a FAILED_PRECONDITION "not leader".
pub const LEADER_METADATA: &str = "x-pos-hub-leader";
