//! The election watchdog: a voter that hears nothing from a leader stands for election on
//! openraft's own schedule, without the extra delays openraft 0.9 adds.
//!
//! openraft 0.9 makes a follower wait out the silent leader's lease (the maximum election
//! timeout) and its own election timeout before it stands. On top of that, a node that
//! once saw a longer log in a vote reply waits 2 × the maximum election timeout more at
//! its next election, and the flag is cleared only when it next stands, however long ago
//! it was set; and with no pre-vote, a node that was cut off keeps campaigning after it
//! heals, with terms that collide with the right candidate's when the leader then dies.
//! Measured under the chaos workload: elections of 1.5–2.4 s where the plain schedule
//! gives 0.75–0.95 s (`docs/reliability.md`).
//!
//! The watchdog asks openraft to stand (`trigger().elect()`) once no leader has sent
//! AppendEntries (or a snapshot) for the lease plus a fresh random election timeout: once
//! per silence, the retries are openraft's. Standing is always safe in
//! Raft: the votes decide, and a voter still refuses a candidate while its leader's lease
//! holds or when the candidate's log is shorter. openraft's own timer keeps running beside
//! it; the watchdog only never waits longer than the plain schedule.
//!
//! And a voter that refuses a candidate for a shorter log while no leader is heard from
//! stands at once (`stand_with_the_longer_log`): that candidate cannot win, and without
//! this the group waits another election timeout (or the refused candidate's penalty) for
//! the right one. In a group of three with the leader gone, the two left must agree, and
//! the one that stood first often holds fewer of the dead leader's entries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio::time::MissedTickBehavior;

use super::node::{Node, Timing};
use crate::raft_types::{HubNode, NodeId};

/// When this node last heard from a leader (AppendEntries or a snapshot chunk it took).
#[derive(Debug)]
pub struct LeaderContact {
    epoch: Instant,
    /// Milliseconds since `epoch`, plus one; 0: never.
    last: AtomicU64,
}

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl LeaderContact {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// A leader was heard from just now.
    pub fn heard(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }

    /// Whether a leader was heard from within `ms` (never: no).
    fn heard_within(&self, ms: u64) -> bool {
        let last = self.last();
        last != 0 && self.now().saturating_sub(last) <= ms
    }
}

/// Whether this node may stand for election: a voter that is a follower or a candidate.
fn may_stand(m: &openraft::RaftMetrics<NodeId, HubNode>, id: NodeId) -> bool {
    let voter = m
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == id);
    voter && matches!(m.state, ServerState::Follower | ServerState::Candidate)
}

/// Stands for election now, in the background, when this voter has just refused a
/// candidate for a shorter log and has heard no leader for a lease (a leader it still
/// hears keeps it from standing: no disruption of a healthy group). Safe as any election:
/// the votes decide. It stands in a term above the refused candidate's (`candidate_term`):
/// in that one the candidate has voted for itself and would refuse this node in turn.
pub fn stand_with_the_longer_log(node: &Arc<Node>, candidate_term: u64) {
    let lease = node.timing.election_timeout_max_ms;
    if node.leader_contact.heard_within(lease) {
        return;
    }
    let term = {
        let metrics = node.raft.metrics();
        let m = metrics.borrow();
        if !may_stand(&m, node.id) {
            return;
        }
        m.current_term
    };
    // Each election request raises this node's term by one, in order: enough of them to
    // pass the candidate's term (never more than three: a far higher term is not ours to
    // chase, openraft's timer takes it from there).
    let elections = (candidate_term + 1).saturating_sub(term).clamp(1, 3);
    let node = node.clone();
    tokio::spawn(async move {
        tracing::info!(
            node = node.id,
            term,
            candidate_term,
            "refused a candidate with a shorter log and no leader is heard: standing for election"
        );
        for _ in 0..elections {
            if let Err(err) = node.raft.trigger().elect().await {
                tracing::debug!(%err, "the election trigger failed");
                return;
            }
        }
    });
}

/// A fresh random election timeout, in `[min, max]` ms.
fn election_timeout(timing: &Timing) -> u64 {
    use rand_core::RngCore;
    let spread = timing
        .election_timeout_max_ms
        .saturating_sub(timing.election_timeout_min_ms);
    timing.election_timeout_min_ms + rand_core::OsRng.next_u64() % (spread + 1)
}

/// Runs until the node's Raft stops.
pub async fn run(node: Arc<Node>) {
    let timing = node.timing;
    let lease = timing.election_timeout_max_ms;
    let mut metrics = node.raft.metrics();
    let mut tick = tokio::time::interval(Duration::from_millis(timing.heartbeat_ms.max(1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let contact = &node.leader_contact;
    let mut seen = contact.last();
    let mut due = seen + lease + election_timeout(&timing);
    let mut vote_seen = metrics.borrow().vote;
    loop {
        tick.tick().await;
        if metrics.has_changed().is_err() {
            return; // Raft stopped
        }
        let (standing, vote) = {
            let m = metrics.borrow_and_update();
            (may_stand(&m, node.id), m.vote)
        };
        let last = contact.last();
        if last != seen {
            seen = last;
            due = last + lease + election_timeout(&timing);
        }
        // A vote for another candidate: give it an election timeout to win, as
        // openraft's own timer does.
        if vote != vote_seen {
            vote_seen = vote;
            if vote.leader_id().voted_for() != Some(node.id) && due != u64::MAX {
                due = due.max(contact.now() + election_timeout(&timing));
            }
        }
        // Never heard of a leader: openraft's start-up election, untouched.
        if !standing || seen == 0 {
            continue;
        }
        let now = contact.now();
        if now < due {
            continue;
        }

        tracing::info!(
            node = node.id,
            silent_ms = now - seen,
            "no word from a leader: standing for election"
        );
        if let Err(err) = node.raft.trigger().elect().await {
            tracing::debug!(%err, "the election trigger failed");
        }
        // Once per silence: retries are openraft's, whose extra delay after a refusal for a
        // shorter log is right then (it was just earned). Two watchdogs retrying on the same
        // beat kept taking the same terms, each refusing the other, for seconds.
        due = u64::MAX;
        vote_seen = node.raft.metrics().borrow().vote;
    }
}
