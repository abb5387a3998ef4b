//! Signals derived from openraft's metrics that change only when they change. openraft
//! publishes its metrics on every turn of its loop (every tick, every batch of messages),
//! waking every receiver each time: an append waiting for "the leader moved" or "the
//! majority went silent" on its own receiver would wake thousands of times a second under
//! load, with 64 of them open. One task per node watches the metrics instead, and these
//! signals wake their waiters only when their value changes.

use tokio::sync::watch;

use super::node::Timing;
use crate::raft_types::{HubNode, NodeId, Raft};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Signals {
    /// The leader this node takes for the leader.
    pub leader: Option<NodeId>,
    /// This node leads a group of more than one voter and has heard no majority for over
    /// one maximum election timeout: the others' leases have run out.
    pub quorum_lost: bool,
}

fn derive(m: &openraft::RaftMetrics<NodeId, HubNode>, timing: &Timing) -> Signals {
    let voters = m.membership_config.membership().voter_ids().count();
    let quorum_lost = m.current_leader == Some(m.id)
        && voters > 1
        && m.millis_since_quorum_ack
            .is_some_and(|ms| ms > timing.election_timeout_max_ms);
    Signals {
        leader: m.current_leader,
        quorum_lost,
    }
}

/// Starts the watching task; it ends when Raft stops (then the signals stop changing and
/// their waiters rely on their own timeouts).
pub fn watch(raft: &Raft, timing: Timing) -> watch::Receiver<Signals> {
    let mut metrics = raft.metrics();
    let (tx, rx) = watch::channel(derive(&metrics.borrow_and_update(), &timing));
    tokio::spawn(async move {
        while metrics.changed().await.is_ok() {
            let now = derive(&metrics.borrow_and_update(), &timing);
            tx.send_if_modified(|signals| {
                let changed = *signals != now;
                *signals = now;
                changed
            });
        }
    });
    rx
}
