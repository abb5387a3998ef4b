//! Group commit on a follower: Appends forwarded to the leader while earlier forwards are
//! still on their way wait in a queue and go together, as one `Peer/Forward` call.
//!
//! Each forward is a gRPC call on both ends (a stream, headers, a task, a response), paid
//! per Append however small it is. With `FORWARDS_IN_FLIGHT` calls out, the Appends that
//! arrive meanwhile leave in the next call, so a busy follower makes a few calls per commit
//! round, not one per till; a lone till's Append finds the queue empty and goes at once.
//!
//! The leader treats a merged call as one Append (its events stay together, in order, in
//! one entry) and answers one result per event; each waiting caller gets its own slice. A
//! failed call fails every Append in it the same way, as if each had been sent alone:
//! each caller then maps the failure and retries as before. The call itself runs in its
//! own task, so a caller that goes away (its client hung up) takes nobody's Append with it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tonic::transport::Channel;

use crate::proto::pb;
use crate::proto::pb::peer_client::PeerClient;
use crate::raft_types::NodeId;
use crate::wire::APPEND_EVENTS_MAX;

/// Forward calls out at once, at most; Appends arriving while they are out wait and merge.
pub const FORWARDS_IN_FLIGHT: usize = 4;
/// A merged call stops at about this many encoded bytes of events (the first Append
/// always goes, whatever its size): a quarter of a peer message's budget.
pub const FORWARD_MERGE_BYTES: usize = 256 << 10;

/// How a forward call failed, for every Append it carried.
#[derive(Debug, Clone)]
pub enum CallFailure {
    /// The leader (or the transport) answered with this status.
    Status(tonic::Status),
    /// No answer within the budget.
    Timeout(Duration),
    /// The leader's answer did not have one result per event.
    Mismatch { outcomes: usize, events: usize },
}

type Reply = Result<Vec<pb::AppendResult>, CallFailure>;

/// One Append waiting to be forwarded.
struct Job {
    leader: NodeId,
    events: Vec<pb::Event>,
    bytes: usize,
    reply: oneshot::Sender<Reply>,
}

/// The follower's queue of Appends to forward (see the module).
pub struct Forwarder {
    queue: Mutex<VecDeque<Job>>,
    in_flight: Arc<Semaphore>,
}

impl Default for Forwarder {
    fn default() -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            in_flight: Arc::new(Semaphore::new(FORWARDS_IN_FLIGHT)),
        }
    }
}

impl Forwarder {
    /// Forwards `events` to `leader` through `client`, merged with the Appends waiting for
    /// the same leader; answers with this Append's results, in order.
    pub async fn forward(
        &self,
        client: PeerClient<Channel>,
        leader: NodeId,
        events: Vec<pb::Event>,
        budget: Duration,
    ) -> Reply {
        let (reply, mut answer) = oneshot::channel();
        let bytes = events.iter().map(Message::encoded_len).sum();
        self.lock().push_back(Job {
            leader,
            events,
            bytes,
            reply,
        });
        loop {
            let permit = tokio::select! {
                biased;
                answered = &mut answer => return answered.unwrap_or(Err(gone())),
                permit = self.in_flight.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else {
                // The semaphore is never closed; should it be, wait for the answer.
                return answer.await.unwrap_or(Err(gone()));
            };
            let jobs = self.take(leader);
            if jobs.is_empty() {
                // Another caller took this Append into its call.
                drop(permit);
                return answer.await.unwrap_or(Err(gone()));
            }
            tokio::spawn(call(client.clone(), jobs, budget, permit));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        match self.queue.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The oldest waiting Appends for `leader`, in order, up to one call's bounds (the
    /// first always). Appends for another leader stay for their own callers. Appends whose
    /// callers went away (their device hung up) are dropped, not sent: nobody would hear
    /// the answer, and the device sends them again, same eventIds, when it is back.
    fn take(&self, leader: NodeId) -> Vec<Job> {
        let mut queue = self.lock();
        let mut taken: Vec<Job> = Vec::new();
        let (mut events, mut bytes) = (0usize, 0usize);
        let mut kept = VecDeque::with_capacity(queue.len());
        while let Some(job) = queue.pop_front() {
            if job.reply.is_closed() {
                continue;
            }
            let fits = taken.is_empty()
                || (events + job.events.len() <= APPEND_EVENTS_MAX
                    && bytes + job.bytes <= FORWARD_MERGE_BYTES);
            if job.leader != leader || !fits {
                kept.push_back(job);
                if job_blocks(&kept, leader) {
                    // Keep the order of one leader's Appends: nothing after one that did
                    // not fit goes ahead of it.
                    break;
                }
                continue;
            }
            events += job.events.len();
            bytes += job.bytes;
            taken.push(job);
        }
        kept.extend(queue.drain(..).filter(|job| !job.reply.is_closed()));
        *queue = kept;
        taken
    }
}

/// Whether the last job kept back is one for `leader` (it did not fit).
fn job_blocks(kept: &VecDeque<Job>, leader: NodeId) -> bool {
    kept.back().is_some_and(|job| job.leader == leader)
}

fn gone() -> CallFailure {
    CallFailure::Status(tonic::Status::unavailable(
        "the forward call ended without an answer",
    ))
}

/// Sends `jobs` as one call and gives each its slice of the results.
async fn call(
    mut client: PeerClient<Channel>,
    jobs: Vec<Job>,
    budget: Duration,
    permit: OwnedSemaphorePermit,
) {
    let counts: Vec<usize> = jobs.iter().map(|j| j.events.len()).collect();
    let mut replies = Vec::with_capacity(jobs.len());
    let mut events = Vec::with_capacity(counts.iter().sum());
    for job in jobs {
        events.extend(job.events);
        replies.push(job.reply);
    }
    let total = events.len();
    let answer = tokio::time::timeout(budget, client.forward(pb::AppendRequest { events })).await;
    drop(permit);
    let results = match answer {
        Err(_) => Err(CallFailure::Timeout(budget)),
        Ok(Err(status)) => Err(CallFailure::Status(status)),
        Ok(Ok(response)) => {
            let results = response.into_inner().results;
            if results.len() == total {
                Ok(results)
            } else {
                Err(CallFailure::Mismatch {
                    outcomes: results.len(),
                    events: total,
                })
            }
        }
    };
    match results {
        Ok(results) => {
            let mut results = results.into_iter();
            for (reply, count) in replies.into_iter().zip(counts) {
                // A caller that went away no longer listens: its results are dropped.
                let _ = reply.send(Ok(results.by_ref().take(count).collect()));
            }
        }
        Err(failure) => {
            for reply in replies {
                let _ = reply.send(Err(failure.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(leader: NodeId, events: usize, bytes: usize) -> (Job, oneshot::Receiver<Reply>) {
        let (reply, answer) = oneshot::channel();
        let events = (0..events)
            .map(|i| pb::Event {
                event_id: format!("{leader}-{i}"),
                ..Default::default()
            })
            .collect();
        (
            Job {
                leader,
                events,
                bytes,
                reply,
            },
            answer,
        )
    }

    fn queued(
        forwarder: &Forwarder,
        jobs: Vec<(NodeId, usize, usize)>,
    ) -> Vec<oneshot::Receiver<Reply>> {
        jobs.into_iter()
            .map(|(leader, events, bytes)| {
                let (job, answer) = job(leader, events, bytes);
                forwarder.lock().push_back(job);
                answer
            })
            .collect()
    }

    fn sizes(jobs: &[Job]) -> Vec<(NodeId, usize)> {
        jobs.iter().map(|j| (j.leader, j.events.len())).collect()
    }

    #[test]
    fn waiting_appends_for_the_leader_merge_in_order_within_the_bounds() {
        let forwarder = Forwarder::default();
        let _answers = queued(
            &forwarder,
            vec![(1, 3, 100), (1, 2, 100), (2, 1, 100), (1, 4, 100)],
        );
        assert_eq!(sizes(&forwarder.take(1)), vec![(1, 3), (1, 2), (1, 4)]);
        assert_eq!(
            sizes(&forwarder.take(2)),
            vec![(2, 1)],
            "another leader's stays"
        );
        assert!(forwarder.take(1).is_empty());
    }

    #[test]
    fn appends_whose_callers_went_away_are_dropped_not_sent() {
        let forwarder = Forwarder::default();
        let mut answers = queued(&forwarder, vec![(1, 1, 10), (2, 2, 10), (1, 3, 10)]);
        // The callers of the first two hang up.
        drop(answers.remove(0));
        drop(answers.remove(0));
        assert_eq!(sizes(&forwarder.take(1)), vec![(1, 3)]);
        assert!(forwarder.lock().is_empty(), "leader 2's is gone too");
    }

    #[test]
    fn a_call_stops_at_its_bounds_and_keeps_the_order_of_what_waits() {
        let forwarder = Forwarder::default();
        let half = FORWARD_MERGE_BYTES / 2;
        let _answers = queued(
            &forwarder,
            vec![
                (1, 1, half),
                (1, 2, half + 1),
                (1, 3, 10),
                (1, APPEND_EVENTS_MAX, 10),
                (1, 5, 10),
            ],
        );
        // The second does not fit beside the first, and the third must not overtake it.
        assert_eq!(sizes(&forwarder.take(1)), vec![(1, 1)]);
        assert_eq!(sizes(&forwarder.take(1)), vec![(1, 2), (1, 3)]);
        // Too many events beside anything else: alone, an Append goes whatever its size.
        assert_eq!(sizes(&forwarder.take(1)), vec![(1, APPEND_EVENTS_MAX)]);
        assert_eq!(sizes(&forwarder.take(1)), vec![(1, 5)]);
        assert!(forwarder.take(1).is_empty());
    }
}
