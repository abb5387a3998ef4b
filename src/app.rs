//! The only place that wires the parts of a node together:
//! config → store → raft → peer service and client services → serve until shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method};
use openraft::{Config, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::api::CLIENT_MESSAGE_BYTES_MAX;
use crate::api::auth::AccessPolicy;
use crate::api::cluster::ClusterService;
use crate::api::hub::HubService;
use crate::domain::Realm;
use crate::menu::Menu;
use crate::metrics::Metrics;
use crate::proto::pb;
use crate::raft::network::{PeerClients, PeerNetwork};
use crate::raft::node::{Node, Timing};
use crate::raft::typ::Raft;
use crate::raft::{HubNode, NodeId, peer};
use crate::store::{self, StoreError};

/// Encoded protobuf descriptors, for gRPC server reflection.
const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("pos_descriptor");
/// Snapshot chunks sent to a catching-up node, in bytes.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;
/// How long a follower may take to store one snapshot chunk.
pub const SNAPSHOT_CHUNK_TIMEOUT_MS: u64 = 10_000;
/// How long a stopping node lets open connections finish before it closes them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Log entries per AppendEntries message.
pub const REPLICATION_ENTRIES_MAX: u64 = 64;

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
    /// Recent batches of applied events kept in memory for live subscribers.
    pub feed_batches: usize,
    /// The store's public key, to verify device tokens; `None` runs the client API open.
    pub public_key: Option<ed25519_dalek::VerifyingKey>,
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
    /// Open Subscribe streams allowed per device.
    pub subscriptions_per_device: usize,
    /// Per-device append rate: sustained events per second, and burst.
    pub rate_events_per_s: u32,
    pub rate_burst_events: u32,
    /// The store's menu, checked at start and served by GetMenu.
    pub menu: Arc<Menu>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("raft configuration: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("raft: {0}")]
    Raft(#[from] openraft::error::Fatal<NodeId>),
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

/// Browsers on the shop's LAN may call the client port (gRPC-web). An origin counts as LAN
/// when its host is localhost, a `.local` name, or a private, loopback or link-local IP.
pub fn is_lan_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => rest.split(':').next().unwrap_or(""),
    };
    if host == "localhost" || host.ends_with(".local") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_private() || ip.is_loopback() || ip.is_link_local(),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback()
                || (ip.segments()[0] & 0xfe00) == 0xfc00
                || (ip.segments()[0] & 0xffc0) == 0xfe80
        }
        Err(_) => false,
    }
}

fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(|origin: &HeaderValue, _| {
            origin.to_str().is_ok_and(is_lan_origin)
        }))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            HeaderName::from_static("content-type"),
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
            HeaderName::from_static("authorization"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(600))
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, what, source })
}

/// Streams a peer may reset before they are accepted, before h2 closes the connection.
const PEER_MAX_PENDING_RESETS: usize = 1024;

/// Runs a node until `shutdown` resolves.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    let (log, state_machine) = store::open_with(
        &config.data_dir,
        &config.realm,
        config.feed_batches,
        config.durability,
    )
    .await?;
    if config.durability == store::Durability::UnsafeNoFsync {
        tracing::error!(
            "UNSAFE: --unsafe-no-fsync: appends are acknowledged before they are on disk; a power cut loses them"
        );
    }
    let committed = log.committed_index();
    let reader = state_machine.reader();
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
    let node = Arc::new(Node {
        id: config.node_id,
        raft: raft.clone(),
        reader,
        committed,
        peers,
        metrics: Arc::new(Metrics::default()),
        timing: config.timing,
        batcher: crate::raft::batch::Batcher::start(raft.clone()),
    });

    let peer_listener = bind(config.peer_listen, "peer port").await?;
    let client_listener = bind(config.listen, "client port").await?;
    bootstrap(&raft, &config).await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    // Raft cancels every RPC that misses its deadline (a heartbeat after 50 ms), which
    // resets an HTTP/2 stream. On a slow or lossy link that is many resets, and h2's
    // reset-flood guard (20 by default) then closed the whole peer connection with
    // GOAWAY `too_many_resets`, found by the chaos harness under netem. Peers are the
    // group's own nodes, so the guard is raised, not removed.
    let mut peer_builder = tonic::transport::Server::builder()
        .http2_max_pending_accept_reset_streams(Some(PEER_MAX_PENDING_RESETS));
    if let Some(dir) = &config.peer_tls {
        // Mutual TLS: a caller without a certificate from the store CA is refused during
        // the handshake, before any Raft message is read.
        peer_builder = peer_builder.tls_config(crate::auth::tls::peer_server_config(dir)?)?;
    } else {
        tracing::warn!(
            "the peer port is plaintext (no --peer-tls): keep it off networks guests can reach"
        );
    }
    let peer_server = peer_builder
        .add_service(peer::server(node.clone()))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(peer_listener).map(|accepted| {
                accepted.inspect(|tcp| {
                    let _ = tcp.set_nodelay(true);
                })
            }),
            stopped(),
        );

    let access = AccessPolicy::new(
        config.public_key,
        config.realm.clone(),
        node.reader.clone(),
        config.offline_grace_s,
    );
    if access.is_open() {
        tracing::warn!("NO AUTHENTICATION: the client API accepts any caller (no --public-key)");
    }
    let limiter = Arc::new(crate::api::limits::RateLimiter::new(
        config.rate_events_per_s,
        config.rate_burst_events,
    ));
    let subscriptions = Arc::new(crate::api::limits::SubscriptionSlots::new(
        config.subscriptions_per_device,
    ));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let grpc = tonic::service::Routes::new(
        pb::hub_server::HubServer::new(HubService {
            node: node.clone(),
            access: access.clone(),
            limiter: limiter.clone(),
            subscriptions: subscriptions.clone(),
            menu: config.menu.clone(),
        })
        .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX),
    )
    .add_service(pb::cluster_server::ClusterServer::new(ClusterService {
        node: node.clone(),
        access: access.clone(),
    }))
    .add_service(reflection)
    .prepare();
    // Plain HTTP routes and the web app first; every other POST is gRPC, or gRPC-web
    // translated to gRPC (both only ever POST). Any other method on an unknown path is a
    // browser asking for a page that does not exist: 404, not a gRPC error.
    let grpc = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebLayer::new())
        .service(grpc);
    let app = crate::http::routes(node.clone())
        .fallback_service(axum::routing::post_service(grpc).fallback(crate::http::web::not_found))
        .layer(cors());
    let client_task = match &config.client_tls {
        Some(dir) => {
            let tls = crate::auth::tls::client_server_config(dir)?;
            let listener =
                crate::auth::tls::TlsListener::new(client_listener, tls).map_err(|source| {
                    AppError::Bind {
                        addr: config.listen,
                        what: "client port",
                        source,
                    }
                })?;
            tokio::spawn(
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped())
                    .into_future(),
            )
        }
        None => {
            tracing::warn!(
                "the client port is plaintext (no --client-tls): tokens cross the network readable"
            );
            let listener = axum::serve::ListenerExt::tap_io(client_listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped())
                    .into_future(),
            )
        }
    };

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
    let advertiser = if config.mdns {
        match crate::discovery::advertise(
            &config.realm,
            config.node_id,
            &config.advertise.client_addr,
            config.client_tls.is_some(),
        ) {
            Ok(advertiser) => Some(advertiser),
            Err(err) => {
                tracing::warn!(%err, "not advertising on mDNS; devices need the address");
                None
            }
        }
    } else {
        None
    };
    let peer_task = tokio::spawn(peer_server);
    // A node whose Raft core has stopped (a storage error: the disk is full or failing)
    // must not go on answering from stale state: it stops with the error, and its
    // supervisor restarts it once the disk is usable again.
    let fatal = tokio::select! {
        () = shutdown => None,
        fatal = raft_stopped(raft.clone()) => Some(fatal),
    };
    match &fatal {
        None => tracing::info!("shutting down"),
        Some(err) => tracing::error!(%err, "raft stopped: shutting the node down"),
    }
    drop(advertiser);
    let _ = stop_tx.send(true);
    // Raft first: its state machine's feed closes, which ends every Subscribe stream
    // (devices move to another node); then the servers get a bounded grace to finish.
    if let Err(err) = raft.shutdown().await {
        tracing::warn!(%err, "raft did not shut down cleanly");
    }
    let (peer_abort, client_abort) = (peer_task.abort_handle(), client_task.abort_handle());
    let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
        (peer_task.await, client_task.await)
    })
    .await;
    let (peer_result, client_result) = match finished {
        Ok(results) => results,
        Err(_) => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; closing them");
            peer_abort.abort();
            client_abort.abort();
            if let Some(fatal) = fatal {
                return Err(AppError::Raft(fatal));
            }
            return Ok(());
        }
    };
    if let Some(fatal) = fatal {
        return Err(AppError::Raft(fatal));
    }
    match peer_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(AppError::Server {
                what: "peer",
                detail: e.to_string(),
            });
        }
        Err(e) => {
            return Err(AppError::Server {
                what: "peer",
                detail: e.to_string(),
            });
        }
    }
    match client_result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(AppError::Server {
            what: "client",
            detail: e.to_string(),
        }),
        Err(e) => Err(AppError::Server {
            what: "client",
            detail: e.to_string(),
        }),
    }
}

/// Resolves with the error once the Raft core has stopped by itself.
async fn raft_stopped(raft: Raft) -> openraft::error::Fatal<NodeId> {
    let mut metrics = raft.metrics();
    loop {
        if let Err(fatal) = &metrics.borrow_and_update().running_state {
            return fatal.clone();
        }
        if metrics.changed().await.is_err() {
            return openraft::error::Fatal::Stopped;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::is_lan_origin;

    #[test]
    fn only_lan_origins_may_call_from_a_browser() {
        for ok in [
            "http://192.168.1.20:5173",
            "http://10.0.0.7",
            "https://172.20.1.1:443",
            "http://localhost:3000",
            "http://till-3.local",
            "http://127.0.0.1:8080",
            "http://[::1]:4001",
            "http://[fd00::5]:80",
        ] {
            assert!(is_lan_origin(ok), "{ok} is a LAN origin");
        }
        for no in [
            "https://example.com",
            "http://8.8.8.8",
            "http://172.32.0.1",
            "null",
            "file://",
            "http://[2001:db8::1]",
        ] {
            assert!(!is_lan_origin(no), "{no} is not a LAN origin");
        }
    }
}
