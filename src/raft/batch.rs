//! Group commit before Raft: on the leader, Appends that arrive while earlier ones are
//! still being committed wait in a queue and go into the log together, as one entry.
//!
//! Every Raft entry costs the same whatever it carries: a log write, a replication
//! message to each follower, an apply, a response. With one entry per Append, 64 tills
//! cost 64 of each per commit round; batched, a round costs one of each. A lone till
//! gains nothing and loses nothing: its Append finds the queue empty and goes at once.
//!
//! Events keep their order (the queue is FIFO, an Append's events stay together) and
//! their independence: `apply` decides each event on its own, exactly as if the Appends
//! had been one request, and each caller gets back the outcomes of its own events.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use prost::Message;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::clock::HubClock;
use crate::domain::{Outcome, Rules};
use crate::proto::pb;
use crate::raft_types::Raft;
use crate::raft_types::{Command, NodeId};
use crate::wire::APPEND_EVENTS_MAX;

/// Entries proposed and not yet committed, at most. While they are in flight, new
/// Appends queue and form the next entry. More than one keeps openraft's pipeline busy
/// (the next entry is on its way while the last is being synced); a few is enough.
pub const IN_FLIGHT_ENTRIES: usize = 4;

/// Events of one entry, in encoded bytes, at most: Appends join an entry while it stays
/// under this (and under `APPEND_EVENTS_MAX` events). One Append always fits its own entry,
/// so an entry is at most one client message (4 MiB). Kept to one AppendEntries message
/// (`network::REPLICATION_BYTES_MAX`), which must be answered within a heartbeat.
pub const ENTRY_BYTES_MAX: usize = 256 << 10;

/// Appends waiting for a slot, at most. A full queue answers at once (the node is
/// overloaded) rather than letting requests pile up unbounded.
const QUEUE: usize = 8192;

/// Why a batched proposal failed; every Append of the entry gets the same answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader: {0:?})")]
    NotLeader(Option<NodeId>),
    #[error("the node is shutting down")]
    Stopped,
    #[error("the node is overloaded: {QUEUE} appends are waiting to be committed")]
    Overloaded,
    #[error("raft: {0}")]
    Raft(String),
}

type Reply = oneshot::Sender<Result<Vec<Outcome>, ProposeError>>;

struct Waiting {
    events: Vec<pb::Event>,
    /// The events' encoded size.
    bytes: usize,
    reply: Reply,
}

/// The queue in front of `Raft::client_write`; cheap to share.
#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::Sender<Waiting>,
}

impl Batcher {
    /// Starts the task that drains the queue into log entries, stamped with `clock`.
    pub fn start(raft: Raft, clock: HubClock) -> Batcher {
        Self::with_queue(raft, clock, QUEUE)
    }

    fn with_queue(raft: Raft, clock: HubClock, capacity: usize) -> Batcher {
        let (queue, waiting) = mpsc::channel(capacity);
        tokio::spawn(drain(raft, clock, waiting));
        Batcher { queue }
    }

    /// Proposes `events` (at most `APPEND_EVENTS_MAX`) in the next entry; answers with
    /// their outcomes once that entry is committed and applied here.
    pub async fn propose(&self, events: Vec<pb::Event>) -> Result<Vec<Outcome>, ProposeError> {
        let (reply, answer) = oneshot::channel();
        let bytes = events.iter().map(Message::encoded_len).sum();
        self.queue
            .try_send(Waiting {
                events,
                bytes,
                reply,
            })
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => ProposeError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => ProposeError::Stopped,
            })?;
        answer.await.map_err(|_| ProposeError::Stopped)?
    }
}

async fn drain(raft: Raft, clock: HubClock, mut waiting: mpsc::Receiver<Waiting>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT_ENTRIES));
    let mut carried: Option<Waiting> = None;
    loop {
        // Take a slot first: while every slot is busy, Appends gather in the queue.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(w) => w,
            None => match waiting.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        let mut count = first.events.len();
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while count < APPEND_EVENTS_MAX && bytes < ENTRY_BYTES_MAX {
            match waiting.try_recv() {
                Ok(next)
                    if count + next.events.len() <= APPEND_EVENTS_MAX
                        && bytes + next.bytes <= ENTRY_BYTES_MAX =>
                {
                    count += next.events.len();
                    bytes += next.bytes;
                    batch.push(next);
                }
                Ok(next) => {
                    carried = Some(next);
                    break;
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        let clock = clock.clone();
        tokio::spawn(async move {
            commit(&raft, &clock, batch, count).await;
            drop(slot);
        });
    }
}

/// One entry for the whole batch; each caller gets the outcomes of its own events.
async fn commit(raft: &Raft, clock: &HubClock, batch: Vec<Waiting>, count: usize) {
    let mut events = Vec::with_capacity(count);
    let mut replies = Vec::with_capacity(batch.len());
    for w in batch {
        replies.push((w.events.len(), w.reply));
        events.extend(w.events);
    }
    let result = raft
        .client_write(Command {
            hub_time_ms: clock.now_ms(),
            rules: Rules::CURRENT,
            events,
        })
        .await;
    match result {
        Ok(response) => {
            let mut outcomes = response.data.outcomes.into_iter();
            for (n, reply) in replies {
                let mine: Vec<Outcome> = outcomes.by_ref().take(n).collect();
                let answer = if mine.len() == n {
                    Ok(mine)
                } else {
                    Err(ProposeError::Raft(format!(
                        "the entry answered fewer outcomes than it carried events ({count})"
                    )))
                };
                // A caller that gave up (timeout) no longer listens.
                let _ = reply.send(answer);
            }
        }
        Err(err) => {
            let err = match err {
                RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => {
                    ProposeError::NotLeader(to.leader_id)
                }
                RaftError::Fatal(_) => ProposeError::Stopped,
                other => ProposeError::Raft(other.to_string()),
            };
            for (_, reply) in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Realm;
    use crate::domain::tests::ev;
    use crate::proto::{ConvertError, convert};
    use crate::raft::local::LocalNode;

    const TENANT: &str = "t-demo";
    const STORE: &str = "s-001";

    /// Till `client`'s `n`th event (n < 100), an inventory adjustment with its own eventId.
    fn event(client: usize, n: u64) -> Result<pb::Event, ConvertError> {
        let sku = format!("SKU-{client}");
        let payload = serde_json::json!({"sku": sku, "delta": 1});
        let id = (client as u128) * 100 + u128::from(n);
        let device = format!("till-{client}");
        let event = ev(
            id,
            "inventory",
            &sku,
            1,
            "inventory.adjusted",
            &device,
            payload,
        );
        convert::event_to_pb(&event)
    }

    async fn local() -> (tempfile::TempDir, LocalNode) {
        let dir = tempfile::tempdir().expect("temp dir");
        let node = LocalNode::start(dir.path(), &Realm::new(TENANT, STORE), 1_000_000)
            .await
            .expect("local node starts");
        (dir, node)
    }

    fn last_index(raft: &Raft) -> u64 {
        raft.metrics().borrow().last_log_index.unwrap_or(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_entries_and_each_gets_its_own_outcomes() {
        let (_dir, node) = local().await;
        let batcher = Batcher::start(node.raft().clone(), node.reader().clock().clone());
        let before = last_index(node.raft());
        // 40 appends of two events each; the last one repeats an event of the first.
        let mut requests: Vec<Vec<pb::Event>> = (0..40)
            .map(|c| vec![event(c, 1).expect("event"), event(c, 2).expect("event")])
            .collect();
        let repeated = requests[0][1].clone();
        requests[39][1] = repeated.clone();
        let answers =
            futures::future::join_all(requests.iter().map(|r| batcher.propose(r.clone()))).await;

        let entries = last_index(node.raft()) - before;
        assert!(entries < 40, "40 concurrent appends took {entries} entries");
        let mut seqs = Vec::new();
        for (i, answer) in answers.iter().enumerate() {
            let outcomes = answer.as_ref().expect("committed");
            assert_eq!(outcomes.len(), 2, "append {i}: {outcomes:?}");
            for (j, outcome) in outcomes.iter().enumerate() {
                match outcome {
                    Outcome::Accepted { seq } => seqs.push(*seq),
                    Outcome::Duplicate { .. } if (i, j) == (39, 1) => {}
                    other => panic!("append {i} event {j}: {other:?}"),
                }
            }
        }
        // 79 distinct events, each accepted once, at distinct seqs 1..=79.
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=79).collect::<Vec<u64>>());
        // Each caller's outcomes belong to its own events: the log holds them at those seqs.
        let first = answers[0].as_ref().expect("committed");
        let Outcome::Accepted { seq } = first[1] else {
            panic!("{first:?}")
        };
        let stored = node
            .reader()
            .events_after(seq - 1, 1, usize::MAX)
            .expect("read back");
        assert_eq!(stored[0].event_id, repeated.event_id);
        let last = answers[39].as_ref().expect("committed");
        assert_eq!(
            last[1],
            Outcome::Duplicate { seq },
            "the repeat names the first seq"
        );
        node.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_are_bounded_in_bytes_and_the_rules_refuse_oversize_events() {
        let (_dir, node) = local().await;
        let batcher = Batcher::start(node.raft().clone(), node.reader().clock().clone());
        let before = last_index(node.raft());
        // 20 appends of one 200 KB event: at most five fit one 1 MiB entry.
        let requests: Vec<Vec<pb::Event>> = (0..20)
            .map(|c| {
                let mut e = event(c, 1).expect("event");
                e.at = "x".repeat(200_000);
                vec![e]
            })
            .collect();
        let answers =
            futures::future::join_all(requests.iter().map(|r| batcher.propose(r.clone()))).await;
        let entries = last_index(node.raft()) - before;
        assert!(entries >= 4, "4 MB of events took only {entries} entries");
        for answer in answers {
            let outcomes = answer.expect("committed");
            assert!(
                matches!(
                    &outcomes[0],
                    Outcome::Rejected {
                        code: crate::domain::RejectCode::EventTooLarge,
                        ..
                    }
                ),
                "{outcomes:?}"
            );
        }
        node.shutdown().await;
    }

    #[tokio::test]
    async fn a_full_queue_answers_overloaded_and_writes_nothing() {
        let (_dir, node) = local().await;
        let batcher = Batcher::with_queue(node.raft().clone(), node.reader().clock().clone(), 1);
        let before = node.reader().applied().expect("applied").last_seq;
        // On this single-threaded runtime the draining task cannot run between the two
        // sends: the first fills the queue, the second finds it full.
        let (first, second) = tokio::join!(
            batcher.propose(vec![event(0, 1).expect("event")]),
            batcher.propose(vec![event(1, 1).expect("event")]),
        );
        assert!(first.is_ok(), "{first:?}");
        assert_eq!(second, Err(ProposeError::Overloaded));
        assert_eq!(
            node.reader().applied().expect("applied").last_seq,
            before + 1
        );
        node.shutdown().await;
    }
}
