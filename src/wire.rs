//! What the client and peer APIs promise beyond their protobuf messages: message and batch
//! bounds, and the metadata keys that carry machine-readable details of a refusal. Below
//! the `api` (which enforces them), the `raft` runner (which batches up to them) and the
//! client SDK (which reads them), so none of those imports another for a constant.

/// Most events one Append may carry, and one Raft log entry at most (Appends that arrive
/// together share an entry up to this many events).
pub const APPEND_EVENTS_MAX: usize = 1024;

/// Largest client message, in bytes (an Append of many events, with payloads).
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 4 << 20;

/// The code at the head of Subscribe's OUT_OF_RANGE message when the cursor is below the
/// store's retention: the device must bootstrap from the live state (`Hub/Bootstrap`).
pub const CURSOR_BELOW_RETENTION: &str = "CURSOR_BELOW_RETENTION";

/// Metadata key carrying the retry delay, in milliseconds, on RESOURCE_EXHAUSTED.
pub const RETRY_AFTER_METADATA: &str = "retry-after-ms";

/// Metadata key naming the leader's client address on a FAILED_PRECONDITION "not leader".
pub const LEADER_METADATA: &str = "x-pos-hub-leader";

/// The default Raft timing (`serve --heartbeat-ms`, `--election-timeout-ms`; the maximum
/// election timeout is twice the minimum). Devices size their deadlines from it.
pub const HEARTBEAT_MS: u64 = 50;
pub const ELECTION_TIMEOUT_MS: u64 = 200;

/// How long the group takes, with the default timing, to replace a leader that went
/// silent: openraft 0.9 followers first wait out the leader's lease (the maximum election
/// timeout) and then their own election timeout (up to the maximum), so 2 × 2 × 200 ms.
/// A candidate that loses a round to a longer log waits longer (see `docs/reliability.md`).
pub const LEADER_REPLACED_MS: u64 = 4 * ELECTION_TIMEOUT_MS;

/// The deadline of one call (Hello, Append, a read) for a device that cannot ping (a
/// browser), before it tries the next node: the time a silent leader takes to be
/// replaced, plus 200 ms for the commit. A call to a healthy follower made as the leader
/// died waits for the new leader and usually answers within it; a node that says nothing
/// for this long is paused, cut off or gone.
pub const CALL_DEADLINE_MS: u64 = LEADER_REPLACED_MS + 200;

/// Devices that can (the Rust SDK, the chaos workload's devices) send an HTTP/2 PING on
/// a connection with a call open once it has been silent for `PING_INTERVAL_MS`, and
/// drop the connection, failing its calls, when the PONG takes longer than
/// `PING_TIMEOUT_MS`. A node's HTTP/2 layer answers pings while its Raft waits, so this
/// tells a paused, crashed or unplugged node (left within 0.5 s) from a live one waiting
/// out an election, which keeps the call.
pub const PING_INTERVAL_MS: u64 = 200;
pub const PING_TIMEOUT_MS: u64 = 300;

/// The deadline of one call for a device that pings: a live node answers by itself
/// within it (it waits for a new leader at most 4 × the maximum election timeout, then
/// says there is none; a leader cut off from the majority refuses its open appends once
/// the majority's acknowledgements are one maximum election timeout old), so only a node
/// that answers pings yet does not answer costs this. Twice the leader replacement.
pub const PINGED_CALL_DEADLINE_MS: u64 = 2 * LEADER_REPLACED_MS + 400;

/// The longest a Subscribe stream stays silent: after this long without a message the
/// node sends a heartbeat (a `SubscribeResponse` with no events).
pub const SUBSCRIBE_HEARTBEAT_MS: u64 = 1_000;

/// A Subscribe stream silent for this long (two heartbeats missed) is dead: the device
/// closes it and subscribes on the next node.
pub const SUBSCRIBE_SILENCE_MS: u64 = 2 * SUBSCRIBE_HEARTBEAT_MS;
