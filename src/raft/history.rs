//! Fetching history from the other members: a node that installs a snapshot of live state
//! (`store::snapshot`) first fills its history up to the snapshot's seq from a peer's
//! history files (`Peer/ReadHistory`), page by page, each record checked on arrival.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::network::PeerClients;
use crate::proto::pb;
use crate::raft_types::{NodeId, StoredMembership};
use crate::store::HistorySource;

/// Bytes of history records asked for per call, and the most a node serves in one: 4 MiB
/// is a few thousand order events, well inside a peer message.
pub const PAGE_BYTES_MAX: usize = 4 << 20;
/// How long one page may take.
const PAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Rounds over every other member before an install gives up (openraft then sends the
/// snapshot again later), with a pause between rounds growing to `ROUND_PAUSE_MAX`.
const ROUNDS: u32 = 8;
const ROUND_PAUSE_MAX: Duration = Duration::from_secs(4);

/// Fetches history from the other members of the group.
pub struct PeerHistory {
    pub peers: PeerClients,
    pub self_id: NodeId,
    /// The member that answered last: asked first next time.
    preferred: AtomicU64,
}

impl PeerHistory {
    pub fn new(peers: PeerClients, self_id: NodeId) -> Self {
        Self {
            peers,
            self_id,
            preferred: AtomicU64::new(self_id),
        }
    }

    /// The other members' peer addresses, the one that answered last first.
    fn sources(&self, membership: &StoredMembership) -> Vec<(NodeId, String)> {
        let mut nodes: BTreeMap<NodeId, String> = membership
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.self_id)
            .map(|(id, node)| (*id, node.peer_addr.clone()))
            .collect();
        let preferred = self.preferred.load(Ordering::Relaxed);
        let first = nodes.remove_entry(&preferred);
        first.into_iter().chain(nodes).collect()
    }

    async fn page(&self, id: NodeId, addr: &str, after: u64, upto: u64) -> Result<Vec<u8>, String> {
        let mut client = self.peers.get(id, addr).map_err(|e| e.to_string())?;
        let request = pb::ReadHistoryRequest {
            after,
            upto,
            max_bytes: PAGE_BYTES_MAX as u64,
        };
        let reply = tokio::time::timeout(PAGE_TIMEOUT, client.read_history(request))
            .await
            .map_err(|_| format!("node {id} did not answer within {PAGE_TIMEOUT:?}"))?
            .map_err(|status| format!("node {id}: {}", status.message()))?
            .into_inner();
        if reply.records.is_empty() {
            return Err(format!(
                "node {id} holds no event after seq {after} (its history ends at {})",
                reply.last_seq
            ));
        }
        Ok(reply.records)
    }
}

impl HistorySource for PeerHistory {
    fn fetch<'a>(
        &'a self,
        membership: &'a StoredMembership,
        after: u64,
        upto: u64,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send + 'a>> {
        Box::pin(async move {
            let mut failures = Vec::new();
            let mut pause = Duration::from_millis(100);
            for round in 0..ROUNDS {
                if round > 0 {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(ROUND_PAUSE_MAX);
                }
                failures.clear();
                let sources = self.sources(membership);
                if sources.is_empty() {
                    return Err("no other member to fetch the history from".into());
                }
                for (id, addr) in sources {
                    match self.page(id, &addr, after, upto).await {
                        Ok(records) => {
                            self.preferred.store(id, Ordering::Relaxed);
                            return Ok(records);
                        }
                        Err(why) => failures.push(why),
                    }
                }
                tracing::warn!(
                    after,
                    upto,
                    round,
                    failures = %failures.join("; "),
                    "no member gave the history a snapshot install needs; trying again"
                );
            }
            Err(format!(
                "no member gave the events after seq {after} (up to {upto}) in {ROUNDS} rounds: {}",
                failures.join("; ")
            ))
        })
    }
}
