//! The only place that wires the parts of a node together. `serve` runs a node in four
//! named steps:
//! 1. `node::open`: the store, the Raft core over it, and the `Node` every handler uses;
//! 2. `peer::start`: the peer port (Raft RPCs, forwarded appends), mutual TLS optional;
//! 3. `client::start`: the client port (gRPC, gRPC-web, HTTP routes and the web app, the
//!    caller check, limits, CORS, TLS), and the mDNS advertisement;
//! 4. `shutdown::run`: until the shutdown signal or a fatal Raft error, then a bounded,
//!    ordered stop.

mod client;
pub mod listen;
mod node;
mod peer;
mod shutdown;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use client::is_lan_origin;
pub use node::{REPLICATION_ENTRIES_MAX, SNAPSHOT_CHUNK_BYTES, SNAPSHOT_CHUNK_TIMEOUT_MS};
pub use shutdown::SHUTDOWN_GRACE;

use crate::domain::Realm;
use crate::menu::Menu;
use crate::raft::node::Timing;
use crate::raft_types::{HubNode, NodeId, Raft};
use crate::store::{self, StoreError};

#[derive(Clone)]
pub struct ServeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub peer_listen: SocketAddr,
    /// How the other nodes and the devices reach this node.
    pub advertise: HubNode,
    /// The group to bootstrap; empty, or without this node: wait to be added.
    pub initial_cluster: BTreeMap<NodeId, HubNode>,
    pub realm: Realm,
    pub timing: Timing,
    pub snapshot_every_log_entries: u64,
    /// Log entries kept behind the latest snapshot, for nodes catching up after one.
    pub keep_log_entries: u64,
    /// The log's bounds in bytes: a snapshot past them, a purge down to them.
    pub log_bounds: crate::raft::compaction::LogBounds,
    /// Recent batches of applied events kept in memory for live subscribers.
    pub feed_batches: usize,
    /// The store's public keys (one, or two during a rotation), to verify device tokens;
    /// `None` runs the client API open.
    pub public_keys: Option<crate::auth::token::KeySet>,
    /// The WAN address probed to tell whether the hub is online (no offline grace then).
    pub wan_probe: Option<String>,
    /// Shifts this node's wall clock reading (ms); 0 except in tests (`--clock-offset-ms`).
    pub clock_offset_ms: i64,
    /// (epoch ms, rate): this node's wall clock runs `rate` times as fast from the epoch
    /// on; `None` except in soaks (`--clock-rate`).
    pub clock_rate: Option<(u64, u32)>,
    /// Where history files close (`store::HISTORY_SEGMENT_BYTES`; smaller in tests).
    pub history_segment_bytes: u64,
    /// How long after expiry a known device's token still works, in seconds.
    pub offline_grace_s: u64,
    /// The peer port's TLS dir (store CA, node certificate): mutual TLS between nodes.
    pub peer_tls: Option<PathBuf>,
    /// The client port's TLS dir (this node's certificate); `None` serves plaintext.
    pub client_tls: Option<PathBuf>,
    /// Advertise the client port on mDNS (`_poshub._tcp`) for devices to find.
    pub mdns: bool,
    /// Whether the log is fsynced before an append is acknowledged (always, in a shop).
    pub durability: store::Durability,
    /// How long the log waits after an append for more to share its fsync (0: none).
    pub commit_window: std::time::Duration,
    /// Open Subscribe streams allowed per device.
    pub subscriptions_per_device: usize,
    /// Per-device append rate: sustained events per second, and burst.
    pub rate_events_per_s: u32,
    pub rate_burst_events: u32,
    /// The store's menu, checked at start and served by GetMenu.
    pub menu: Arc<Menu>,
    /// Host names (besides loopback names, IP addresses and the advertised client host)
    /// the client port answers to while it runs without authentication.
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Boxed: openraft's error is large, and every step of `serve` returns this type.
    #[error("raft configuration: {0}")]
    Config(Box<openraft::ConfigError>),
    /// Boxed, like `Config`.
    #[error("raft: {0}")]
    Raft(Box<openraft::error::Fatal<NodeId>>),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the {what} server failed: {detail}")]
    Server { what: &'static str, detail: String },
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("TLS: {0}")]
    Tls(#[from] crate::auth::tls::TlsError),
    #[error("peer TLS configuration: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl From<openraft::error::Fatal<NodeId>> for AppError {
    fn from(err: openraft::error::Fatal<NodeId>) -> Self {
        AppError::Raft(Box::new(err))
    }
}

impl From<openraft::ConfigError> for AppError {
    fn from(err: openraft::ConfigError) -> Self {
        AppError::Config(Box::new(err))
    }
}

/// Runs a node until `shutdown` resolves.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    let node = node::open(&config).await?;
    let peer_listener = bind(config.peer_listen, "peer port").await?;
    let client_listener = bind(config.listen, "client port").await?;
    bootstrap(&node.raft, &config).await?;
    let stop = shutdown::Stop::new();
    let peer_task = peer::start(&config, node.clone(), peer_listener, &stop)?;
    let client_task = client::start(&config, node.clone(), client_listener, &stop)?;
    tracing::info!(
        node = config.node_id,
        client = %config.listen,
        client_tls = config.client_tls.is_some(),
        peer = %config.peer_listen,
        peer_tls = config.peer_tls.is_some(),
        realm = %config.realm,
        "serving"
    );
    // Advertised once serving; withdrawn when this is dropped at shutdown.
    let advertiser = client::advertise(&config);
    // Ends with the runtime.
    tokio::spawn(crate::memory::trim_every(crate::memory::TRIM_EVERY));
    shutdown::run(
        node.raft.clone(),
        shutdown,
        stop,
        shutdown::Tasks {
            peer: peer_task,
            client: client_task,
        },
        advertiser,
    )
    .await
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, what, source })
}

/// Initializes the group the first time a listed node starts. Every node of the initial
/// cluster makes the same call with the same membership, so whichever runs first, the
/// result is one group; a node that already has state (a restart) skips it.
async fn bootstrap(raft: &Raft, config: &ServeConfig) -> Result<(), AppError> {
    if !config.initial_cluster.contains_key(&config.node_id) {
        tracing::info!(
            node = config.node_id,
            "not in the initial cluster: waiting to be added with `pos-hub cluster add-node`"
        );
        return Ok(());
    }
    if raft.is_initialized().await? {
        return Ok(());
    }
    match raft.initialize(config.initial_cluster.clone()).await {
        Ok(()) => {
            tracing::info!(members = ?config.initial_cluster.keys().collect::<Vec<_>>(), "initialized the group")
        }
        // Another node's vote or log reached us first: the group already exists.
        Err(err) => tracing::info!(%err, "the group was already initialized"),
    }
    Ok(())
}
