//! A running node of the group and the paths every write and linearizable read takes:
//! on the leader, propose (stamped with the leader's hub time); elsewhere, forward to the
//! leader over the peer port. Both the client API and the peer service call these, and
//! `WriteError` maps to a gRPC status in one place (`From<WriteError> for Status`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::ServerState;
use openraft::error::{CheckIsLeaderError, RaftError};

use super::batch::{Batcher, ProposeError};
use super::forward::{CallFailure, Forwarder};
use super::network::{PeerClients, PeerError};
use super::signals::Signals;
use super::watchdog::LeaderContact;
use crate::metrics::Metrics;
use crate::proto::convert::{self, OutcomeCountMismatch};
use crate::proto::pb;
use crate::raft_types::Raft;
use crate::raft_types::{HubNode, NodeId};
use crate::store::StateReader;
use crate::wire::LEADER_METADATA;

/// Timeouts of one node, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// How long an append may wait for a leader and a commit before it answers UNAVAILABLE.
    pub append_timeout_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no leader: a majority of the group is not reachable from node {node}")]
    NoLeader { node: NodeId },
    #[error("node {node} leads but has not heard from a majority for {silent_ms} ms: no quorum")]
    NoQuorum { node: NodeId, silent_ms: u64 },
    /// One round of heartbeats did not confirm the leadership (a follower slow to answer,
    /// one gone): the next round may; a read retries while its budget lasts.
    #[error("node {node} leads but a majority did not confirm it in time for this read ({detail})")]
    QuorumUnconfirmed { node: NodeId, detail: String },
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        leader: Option<NodeId>,
        leader_client_addr: Option<String>,
    },
    #[error("not committed within {0:?}; the outcome is unknown: retry with the same eventIds")]
    Timeout(Duration),
    #[error("forwarding to leader {leader}: {source}")]
    Forward { leader: NodeId, source: PeerError },
    #[error("raft: {0}")]
    Raft(String),
    #[error("the node is shutting down")]
    Stopped,
    #[error(
        "the leader is overloaded: too many appends wait to be committed; nothing was written, retry"
    )]
    Overloaded,
    /// A bug: the answer does not have one result per event.
    #[error(transparent)]
    Outcomes(#[from] OutcomeCountMismatch),
}

impl From<WriteError> for tonic::Status {
    fn from(err: WriteError) -> Self {
        let message = err.to_string();
        match err {
            WriteError::NoLeader { .. }
            | WriteError::NoQuorum { .. }
            | WriteError::QuorumUnconfirmed { .. }
            | WriteError::Timeout(_)
            | WriteError::Stopped
            | WriteError::Overloaded => tonic::Status::unavailable(message),
            WriteError::Forward {
                source: PeerError::Status(status),
                ..
            } => tonic::Status::new(status.code(), message),
            WriteError::Forward { .. } => tonic::Status::unavailable(message),
            WriteError::NotLeader {
                leader_client_addr, ..
            } => {
                let mut status = tonic::Status::failed_precondition(match &leader_client_addr {
                    Some(addr) => format!("{message}; the leader serves clients at {addr}"),
                    None => message,
                });
                if let Some(addr) = leader_client_addr
                    && let Ok(value) = addr.parse()
                {
                    status.metadata_mut().insert(LEADER_METADATA, value);
                }
                status
            }
            WriteError::Raft(_) | WriteError::Outcomes(_) => tonic::Status::internal(message),
        }
    }
}

/// Everything a request handler needs of its node.
pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    pub reader: StateReader,
    pub committed: Arc<AtomicU64>,
    pub peers: PeerClients,
    pub metrics: Arc<Metrics>,
    pub timing: Timing,
    /// Group commit in front of `raft.client_write` (see `batch`).
    pub batcher: Batcher,
    /// Group commit of the Appends this node forwards while it follows (see `forward`).
    pub forwarder: Forwarder,
    /// When a leader was last heard from, for the election watchdog (see `watchdog`).
    pub leader_contact: LeaderContact,
    /// Who leads and whether this leader lost its majority, changed only on a change.
    pub signals: tokio::sync::watch::Receiver<Signals>,
}

impl Node {
    pub fn raft_metrics(&self) -> openraft::RaftMetrics<NodeId, HubNode> {
        self.raft.metrics().borrow().clone()
    }

    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// The member `id` as the membership records it.
    pub fn member(&self, id: NodeId) -> Option<HubNode> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
    }

    /// The current leader, waiting up to `wait` for one to be elected.
    async fn leader(&self, wait: Duration) -> Option<NodeId> {
        if let Some(leader) = self.raft_metrics().current_leader {
            return Some(leader);
        }
        self.raft
            .wait(Some(wait))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .ok()
            .and_then(|m| m.current_leader)
    }

    /// Resolves once this node no longer takes `leader` for the leader.
    async fn leadership_moves_from(&self, leader: NodeId) {
        let mut signals = self.signals.clone();
        if signals
            .wait_for(|s| s.leader != Some(leader))
            .await
            .is_err()
        {
            // Raft stopped: the caller's own timeout or error ends the wait.
            std::future::pending::<()>().await;
        }
    }

    fn not_leader(&self, leader: Option<NodeId>) -> WriteError {
        let leader_client_addr = leader.and_then(|id| self.member(id)).map(|n| n.client_addr);
        WriteError::NotLeader {
            leader,
            leader_client_addr,
        }
    }

    /// Appends through whichever node leads: proposes here when this node leads, else
    /// forwards. Retries while leadership moves, until `append_timeout_ms`. One result per
    /// event, in order, as the leader wrote it: a follower passes the leader's results on
    /// unchanged, so a code it does not know itself still reaches the device.
    pub async fn append(
        &self,
        events: Vec<pb::Event>,
    ) -> Result<Vec<pb::AppendResult>, WriteError> {
        let started = Instant::now();
        let budget = Duration::from_millis(self.timing.append_timeout_ms);
        // Without a leader, wait about two elections for one, not the whole budget: a group
        // that cannot elect in that time has no majority, and the till should hear so fast.
        let leader_wait = Duration::from_millis(self.timing.election_timeout_max_ms * 4);
        let result = loop {
            let left = budget.saturating_sub(started.elapsed()).min(leader_wait);
            let Some(leader) = self.leader(left).await else {
                break Err(WriteError::NoLeader { node: self.id });
            };
            let attempt = if leader == self.id {
                self.propose(events.clone()).await
            } else {
                self.forward(leader, events.clone()).await
            };
            match attempt {
                // Leadership moved under us: look again, while time is left.
                Err(WriteError::NotLeader { .. } | WriteError::Forward { .. })
                    if started.elapsed() + Duration::from_millis(self.timing.heartbeat_ms)
                        < budget =>
                {
                    tokio::time::sleep(Duration::from_millis(self.timing.heartbeat_ms)).await;
                }
                other => break other,
            }
        };
        self.metrics.append_requests.fetch_add(1, Ordering::Relaxed);
        if let Ok(results) = &result {
            self.metrics.observe_append(started.elapsed());
            let accepted = results
                .iter()
                .filter(|r| r.status == pb::AppendStatus::Accepted as i32)
                .count();
            self.metrics
                .appended_events
                .fetch_add(accepted as u64, Ordering::Relaxed);
        }
        result
    }

    async fn forward(
        &self,
        leader: NodeId,
        events: Vec<pb::Event>,
    ) -> Result<Vec<pb::AppendResult>, WriteError> {
        let count = events.len();
        let addr = self.member(leader).map(|n| n.peer_addr).unwrap_or_default();
        let fail = |source| WriteError::Forward { leader, source };
        let client = self.peers.get(leader, &addr).map_err(fail)?;
        self.metrics
            .forwarded_appends
            .fetch_add(1, Ordering::Relaxed);
        let budget = Duration::from_millis(self.timing.append_timeout_ms);
        // Merged with the other Appends waiting to go to the same leader (`forward`).
        let call = self.forwarder.forward(client, leader, events, budget);
        // A leader that died or was cut off mid-forward says nothing: stop waiting once
        // this node sees the leadership move (it votes in an election, or hears a new
        // leader), and send again to the new leader. Safe: a resent event keeps its
        // eventId and is answered DUPLICATE if the old leader's entry commits after all.
        let reply = tokio::select! {
            reply = call => reply,
            () = self.leadership_moves_from(leader) => {
                return Err(self.not_leader(self.raft_metrics().current_leader));
            }
        };
        let results = reply.map_err(|failure| match failure {
            CallFailure::Timeout(budget) => fail(PeerError::Timeout(budget)),
            // The leader stepped down between our look and its answer.
            CallFailure::Status(status) if status.code() == tonic::Code::FailedPrecondition => {
                self.not_leader(None)
            }
            CallFailure::Status(status) => fail(PeerError::Status(status)),
            CallFailure::Mismatch { outcomes, events } => {
                OutcomeCountMismatch { outcomes, events }.into()
            }
        })?;
        if results.len() != count {
            return Err(OutcomeCountMismatch {
                outcomes: results.len(),
                events: count,
            }
            .into());
        }
        Ok(results)
    }

    /// Proposes the events in the next log entry, stamped with this leader's clock (with
    /// the other Appends waiting then: `batch`); answers once it is committed on a majority
    /// and applied here, one result per event.
    pub async fn propose(
        &self,
        events: Vec<pb::Event>,
    ) -> Result<Vec<pb::AppendResult>, WriteError> {
        let metrics = self.raft_metrics();
        if metrics.current_leader != Some(self.id) || metrics.state != ServerState::Leader {
            return Err(self.not_leader(metrics.current_leader));
        }
        self.check_quorum(&metrics).await?;
        let budget = Duration::from_millis(self.timing.append_timeout_ms);
        let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
        let proposed = tokio::time::timeout(budget, self.batcher.propose(events));
        // A leader cut off while the entry waits for its commit answers at once, so the
        // device takes its append to a node that can commit it. Safe: the resent events
        // keep their eventIds and are answered DUPLICATE if this entry commits after all.
        let outcome = tokio::select! {
            outcome = proposed => outcome,
            silent_ms = self.quorum_lost() => {
                return Err(WriteError::NoQuorum { node: self.id, silent_ms });
            }
        };
        match outcome {
            Err(_) => Err(WriteError::Timeout(budget)),
            Ok(Ok(outcomes)) => Ok(convert::append_results(&ids, &outcomes)?),
            Ok(Err(ProposeError::NotLeader(leader))) => Err(self.not_leader(leader)),
            Ok(Err(ProposeError::Stopped)) => Err(WriteError::Stopped),
            Ok(Err(ProposeError::Overloaded)) => Err(WriteError::Overloaded),
            Ok(Err(ProposeError::Raft(err))) => Err(WriteError::Raft(err)),
        }
    }

    /// Fails fast instead of queueing writes that cannot commit: a leader cut off from the
    /// majority notices it through missing heartbeat acknowledgements. A leader with no
    /// acknowledgement yet has just won a majority's votes and passes; a stale one gets
    /// one election timeout to hear from the majority again (a busy or briefly slow
    /// network), then the append is refused.
    async fn check_quorum(
        &self,
        metrics: &openraft::RaftMetrics<NodeId, HubNode>,
    ) -> Result<(), WriteError> {
        let voters = metrics.membership_config.membership().voter_ids().count();
        let stale = |m: &openraft::RaftMetrics<NodeId, HubNode>| {
            m.millis_since_quorum_ack
                .is_some_and(|ms| ms > self.timing.election_timeout_max_ms)
        };
        if voters <= 1 || !stale(metrics) {
            return Ok(());
        }
        let wait = Duration::from_millis(self.timing.election_timeout_max_ms);
        match self
            .raft
            .wait(Some(wait))
            .metrics(|m| !stale(m), "a quorum acknowledges the leader")
            .await
        {
            Ok(_) => Ok(()),
            Err(_) => {
                let silent_ms = self
                    .raft_metrics()
                    .millis_since_quorum_ack
                    .unwrap_or(u64::MAX);
                Err(WriteError::NoQuorum {
                    node: self.id,
                    silent_ms,
                })
            }
        }
    }

    /// Resolves, with how long the majority has been silent, once this leader has gone
    /// one maximum election timeout without a majority's acknowledgement: by then the
    /// others' leases have run out and they may have elected another leader. openraft
    /// publishes its metrics on every tick (1.5 heartbeats), so this is seen within one.
    /// Never resolves in a group of one voter.
    async fn quorum_lost(&self) -> u64 {
        let mut signals = self.signals.clone();
        if signals.wait_for(|s| s.quorum_lost).await.is_err() {
            // Raft stopped: the proposal itself ends with an error.
            std::future::pending::<()>().await;
        }
        self.raft_metrics().millis_since_quorum_ack.unwrap_or(0)
    }

    /// On the leader: confirms leadership with a quorum and returns the log index a
    /// linearizable read must see applied. A leader cut off from the majority says so
    /// as soon as it can tell (`quorum_lost`), so the device reads elsewhere.
    pub async fn read_index_as_leader(&self) -> Result<u64, WriteError> {
        let budget = Duration::from_millis(self.timing.append_timeout_ms);
        let confirmed = tokio::select! {
            confirmed = tokio::time::timeout(budget, self.raft.get_read_log_id()) => confirmed,
            silent_ms = self.quorum_lost() => {
                return Err(WriteError::NoQuorum { node: self.id, silent_ms });
            }
        };
        match confirmed {
            Err(_) => Err(WriteError::NoQuorum {
                node: self.id,
                silent_ms: budget.as_millis() as u64,
            }),
            Ok(Ok((read_log_id, _applied))) => Ok(read_log_id.map_or(0, |id| id.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to)))) => {
                Err(self.not_leader(to.leader_id))
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                Err(WriteError::QuorumUnconfirmed {
                    node: self.id,
                    detail: e.to_string(),
                })
            }
            Ok(Err(RaftError::Fatal(_))) => Err(WriteError::Stopped),
        }
    }

    /// On a follower: the read index, asked of `leader`. Stops waiting once this node
    /// sees the leadership move (a paused or cut-off leader says nothing), as `forward`.
    async fn read_index_from(&self, leader: NodeId, budget: Duration) -> Result<u64, WriteError> {
        let addr = self.member(leader).map(|n| n.peer_addr).unwrap_or_default();
        let fail = |source| WriteError::Forward { leader, source };
        let mut client = self.peers.get(leader, &addr).map_err(fail)?;
        let call = tokio::time::timeout(budget, client.read_index(pb::ReadIndexRequest {}));
        let reply = tokio::select! {
            reply = call => reply,
            () = self.leadership_moves_from(leader) => {
                return Err(self.not_leader(self.raft_metrics().current_leader));
            }
        };
        Ok(reply
            .map_err(|_| fail(PeerError::Timeout(budget)))?
            .map_err(|status| fail(PeerError::Status(status)))?
            .into_inner()
            .index)
    }

    /// Waits until this node has applied everything committed before the call (as
    /// confirmed by the leader), so that a local read after it is linearizable.
    pub async fn read_barrier(&self) -> Result<(), WriteError> {
        self.read_barrier_within(Duration::from_millis(self.timing.append_timeout_ms))
            .await
    }

    /// `read_barrier`, giving up after `budget`.
    /// Asks again, while `budget` lasts, when the leadership moves under the question or a
    /// round of heartbeats did not confirm it.
    pub async fn read_barrier_within(&self, budget: Duration) -> Result<(), WriteError> {
        let started = Instant::now();
        let heartbeat = Duration::from_millis(self.timing.heartbeat_ms);
        let index = loop {
            let left = budget.saturating_sub(started.elapsed());
            let Some(leader) = self.leader(left).await else {
                return Err(WriteError::NoLeader { node: self.id });
            };
            let asked = if leader == self.id {
                self.read_index_as_leader().await
            } else {
                self.read_index_from(leader, left).await
            };
            match asked {
                Err(
                    WriteError::NotLeader { .. }
                    | WriteError::Forward { .. }
                    | WriteError::QuorumUnconfirmed { .. },
                ) if started.elapsed() + heartbeat < budget => {
                    tokio::time::sleep(heartbeat).await;
                }
                other => break other?,
            }
        };
        if index > 0 {
            self.raft
                .wait(Some(budget))
                .applied_index_at_least(Some(index), "linearizable read")
                .await
                .map_err(|_| WriteError::Timeout(budget))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_whose_leadership_one_round_did_not_confirm_is_unavailable_not_internal() {
        let status = tonic::Status::from(WriteError::QuorumUnconfirmed {
            node: 2,
            detail: "not enough for a quorum, got: {2}".into(),
        });
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            status
                .message()
                .starts_with("node 2 leads but a majority did not confirm it"),
            "{}",
            status.message()
        );
    }
}
