//! Step 1 of `serve`: open the data dir, start the Raft core over it with this node's
//! timing and snapshot policy, assemble the `Node` every handler shares, and start its
//! election watchdog.

use std::sync::Arc;

use openraft::{Config, SnapshotPolicy};

use super::{AppError, ServeConfig};
use crate::metrics::Metrics;
use crate::raft::batch::Batcher;
use crate::raft::compaction;
use crate::raft::forward::Forwarder;
use crate::raft::history::PeerHistory;
use crate::raft::network::{PeerClients, PeerNetwork};
use crate::raft::node::Node;
use crate::raft::watchdog::{self, LeaderContact};
use crate::raft_types::Raft;
use crate::store;

/// Snapshot chunks sent to a catching-up node, in bytes.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;
/// How long a follower may take to store one snapshot chunk.
pub const SNAPSHOT_CHUNK_TIMEOUT_MS: u64 = 10_000;
/// Log entries per AppendEntries message.
pub const REPLICATION_ENTRIES_MAX: u64 = 64;

/// Opens the store and starts the Raft core; the group is not bootstrapped yet.
pub(super) async fn open(config: &ServeConfig) -> Result<Arc<Node>, AppError> {
    let (log, mut state_machine) = store::open_with(
        &config.data_dir,
        &config.realm,
        config.feed_batches,
        config.durability,
        config.commit_window,
        config.history_segment_bytes,
    )
    .await?;
    if config.durability == store::Durability::UnsafeNoFsync {
        tracing::error!(
            "UNSAFE: --unsafe-no-fsync: appends are acknowledged before they are on disk; a power cut loses them"
        );
    }
    let committed = log.committed_index();
    let reader = state_machine.reader();
    let clock = reader.clock().clone();
    if config.clock_offset_ms != 0 {
        tracing::warn!(
            offset_ms = config.clock_offset_ms,
            "TEST ONLY: this node's wall clock reading is shifted (--clock-offset-ms)"
        );
        clock.set_wall_offset_ms(config.clock_offset_ms);
    }
    if let Some((epoch_ms, rate)) = config.clock_rate {
        tracing::warn!(
            epoch_ms,
            rate,
            "TEST ONLY: this node's wall clock runs faster than real time (--clock-rate)"
        );
        clock.set_wall_rate(epoch_ms, rate);
    }
    if clock.behind_ms() > 0 {
        tracing::warn!(
            behind_ms = clock.behind_ms(),
            "the wall clock is behind the group's last committed hub time; using that hub time, advancing"
        );
    }
    let raft_config = Config {
        cluster_name: format!("pos-hub {}", config.realm),
        heartbeat_interval: config.timing.heartbeat_ms,
        election_timeout_min: config.timing.election_timeout_min_ms,
        election_timeout_max: config.timing.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_log_entries),
        // Keep as many entries after a snapshot as between two snapshots: a follower that
        // is briefly behind catches up from the log, one that is far behind gets the snapshot.
        max_in_snapshot_log_to_keep: config.keep_log_entries,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        install_snapshot_timeout: SNAPSHOT_CHUNK_TIMEOUT_MS,
        max_payload_entries: REPLICATION_ENTRIES_MAX,
        ..Default::default()
    }
    .validate()?;
    let peer_client_tls = match &config.peer_tls {
        Some(dir) => Some(crate::auth::tls::peer_client_config(dir)?),
        None => None,
    };
    let peers = PeerClients::with_tls(peer_client_tls);
    state_machine.set_history_source(Arc::new(PeerHistory::new(peers.clone(), config.node_id)));
    let log_view = log.clone();
    let raft = Raft::new(
        config.node_id,
        Arc::new(raft_config),
        PeerNetwork {
            peers: peers.clone(),
        },
        log,
        state_machine,
    )
    .await?;
    // Ends by itself once Raft stops.
    tokio::spawn(compaction::run(raft.clone(), log_view, config.log_bounds));
    tokio::spawn(compaction::retain(raft.clone(), reader.clone()));
    let signals = crate::raft::signals::watch(&raft, config.timing);
    let node = Arc::new(Node {
        id: config.node_id,
        raft: raft.clone(),
        reader,
        committed,
        peers,
        metrics: Arc::new(Metrics::default()),
        timing: config.timing,
        batcher: Batcher::start(raft, clock),
        forwarder: Forwarder::default(),
        leader_contact: LeaderContact::default(),
        signals,
    });
    // Ends by itself once Raft stops.
    tokio::spawn(watchdog::run(node.clone()));
    Ok(node)
}
