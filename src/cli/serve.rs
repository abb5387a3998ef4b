//! `pos-hub serve`: run one node of a store's group.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::app::{self, ServeConfig};
use crate::auth::token::KeySet;
use crate::domain::Realm;
use crate::menu::Menu;
use crate::raft::node::Timing;
use crate::raft_types::{HubNode, NodeId};

/// By default the leader keeps this many snapshot intervals of log behind its snapshot.
const KEEP_LOG_SNAPSHOTS: u64 = 10;

// Raft timing for a store LAN, defined in `wire` because devices size their call
// deadlines from it. openraft 0.9 refuses votes while the leader's lease (the maximum
// election timeout, twice this minimum) holds, so a dead leader is replaced after
// lease + timeout: measured 0.7–0.9 s typically and 1.6 s at worst (a candidate with a
// shorter log losing a round) on loopback. Heartbeats at a quarter of the timeout keep a
// briefly slow Wi-Fi link from starting elections.
pub use crate::wire::{ELECTION_TIMEOUT_MS, HEARTBEAT_MS};
pub const APPEND_TIMEOUT_MS: u64 = 5_000;
/// The longest `--commit-window`: past it the window costs more latency than an SD card's
/// sync (a few ms) saves.
pub const COMMIT_WINDOW_MAX_MS: u64 = 50;
pub const DEV_CLIENT_ADDR: &str = "127.0.0.1:4001";
pub const DEV_PEER_ADDR: &str = "127.0.0.1:4002";

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// One node on this machine for development: node 1, realm t-demo/s-001, data in
    /// ./data, client port 127.0.0.1:4001, peer port 127.0.0.1:4002. Plaintext.
    #[arg(long, conflicts_with_all = ["node_id", "initial_cluster", "join", "peer_tls", "client_tls"])]
    dev: bool,
    /// This node's id in the group (1, 2, 3, …).
    #[arg(long)]
    node_id: Option<NodeId>,
    /// Directory holding this node's database and snapshots.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Client port (gRPC, gRPC-web, HTTP). Defaults to 127.0.0.1:$PORT, or :4001.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The client port's number when --listen is not given (the spec's PORT).
    #[arg(long, env = "PORT", default_value_t = 4001)]
    port: u16,
    /// Peer port: Raft between the nodes of the group only.
    #[arg(long, default_value = DEV_PEER_ADDR)]
    peer_listen: SocketAddr,
    /// How devices reach this node, when it differs from --listen (e.g. listening on 0.0.0.0).
    #[arg(long)]
    advertise_client: Option<String>,
    /// How the other nodes reach this node's peer port, when it differs from --peer-listen.
    #[arg(long)]
    advertise_peer: Option<String>,
    /// The group to bootstrap, the same on every node: `ID=PEER_ADDR[/CLIENT_ADDR],…`,
    /// e.g. `1=10.0.0.2:4002/10.0.0.2:4001,2=…`. Omitted: a group of this node alone.
    #[arg(long)]
    initial_cluster: Option<String>,
    /// Start empty and wait to be added with `pos-hub cluster add-node`.
    #[arg(long)]
    join: bool,
    #[arg(long = "tenant", env = "TENANT_ID", default_value = "t-demo")]
    tenant_id: String,
    #[arg(long = "store", env = "STORE_ID", default_value = "s-001")]
    store_id: String,
    /// Raft heartbeat interval.
    #[arg(long, default_value_t = HEARTBEAT_MS)]
    heartbeat_ms: u64,
    /// Minimum election timeout; the maximum is twice this.
    #[arg(long, default_value_t = ELECTION_TIMEOUT_MS)]
    election_timeout_ms: u64,
    /// How long an append may wait for a leader and a commit before answering UNAVAILABLE.
    #[arg(long, default_value_t = APPEND_TIMEOUT_MS)]
    append_timeout_ms: u64,
    /// Take a Raft snapshot every N log entries.
    #[arg(long, default_value_t = crate::raft::local::SNAPSHOT_EVERY_LOG_ENTRIES,
          value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_every: u64,
    /// Log entries the leader keeps behind its latest snapshot (default: 10 × the snapshot
    /// interval). A node that installs a snapshot catches up from these; with too few, a
    /// slow node installing a big snapshot while tills append falls behind the purge again
    /// and needs snapshot after snapshot.
    #[arg(long)]
    keep_log_entries: Option<u64>,
    /// Also take a snapshot once the log behind the last one holds this many MiB (an entry
    /// holds 1 to 1024 events, so entries alone do not bound the log's size).
    #[arg(long, default_value_t = crate::raft::compaction::SNAPSHOT_LOG_BYTES >> 20,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    snapshot_log_mib: u64,
    /// Also purge the log down to this many MiB behind the latest snapshot.
    #[arg(long, default_value_t = crate::raft::compaction::KEEP_LOG_BYTES >> 20,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    keep_log_mib: u64,
    /// Recent batches of applied events kept in memory for live subscribers; one that
    /// falls further behind reads storage instead (memory ≈ this × events per append).
    #[arg(long, default_value_t = crate::store::EVENT_FEED_BATCHES as u64,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    feed_batches: u64,
    /// The store's public key (PEM) that signs device tokens; every client call then needs
    /// `authorization: Bearer <token>`. Give it twice during a key rotation (current and
    /// next): tokens signed by either are accepted, each checked by the key its `kid` names.
    #[arg(long, value_name = "FILE")]
    public_key: Vec<PathBuf>,
    /// The same key as base64 of the PEM file (the spec's .env variable); two keys during a
    /// rotation, separated by a comma. Ignored when --public-key is given.
    #[arg(long, env = "CLUSTER_PUBLIC_KEY_BASE64", hide_env_values = true)]
    public_key_base64: Option<String>,
    /// TESTS ONLY: shift this node's wall clock reading by this many ms (negative: into the
    /// past), to show what a node whose clock is wrong does. Never in a shop.
    #[arg(long, hide = true, default_value_t = 0, allow_negative_numbers = true)]
    clock_offset_ms: i64,
    /// TESTS ONLY: run this node's wall clock this many times as fast from
    /// --clock-epoch-ms on, so that a soak puts days of a store through in minutes (every
    /// node of the group and its devices with the same two values). Never in a shop.
    #[arg(long, hide = true, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    clock_rate: u32,
    /// TESTS ONLY: where --clock-rate starts (ms since the Unix epoch; 0: when the node
    /// starts).
    #[arg(long, hide = true, default_value_t = 0)]
    clock_epoch_ms: u64,
    /// TESTS ONLY: close history files at this many KiB instead of 16 MiB, so that a test
    /// sees retention delete files without writing gigabytes.
    #[arg(long, hide = true, default_value_t = crate::store::HISTORY_SEGMENT_BYTES >> 10,
          value_parser = clap::value_parser!(u64).range(64..))]
    history_segment_kib: u64,
    /// How long after expiry a token of a device known to the log still works, in days: a
    /// store without internet cannot refresh tokens (spec §6.6). Unknown devices get none,
    /// revoked ones none, and none is given while the --wan-probe address answers.
    #[arg(long, default_value_t = 7)]
    offline_grace_days: u64,
    /// A WAN address (`HOST:PORT`, e.g. the cloud's API) probed by TCP every 5 s: while it
    /// answers, the hub is online and expired tokens get no offline grace. Without it the
    /// hub cannot tell, and gives the grace.
    #[arg(long, value_name = "HOST:PORT")]
    wan_probe: Option<String>,
    /// TLS dir for the peer port (`pos-hub certs issue`): mutual TLS with the store CA.
    #[arg(long)]
    peer_tls: Option<PathBuf>,
    /// TLS dir for the client port (`pos-hub certs issue`, may be the --peer-tls dir): serve
    /// gRPC, gRPC-web and HTTP over TLS; devices pin the store CA with `--ca`.
    #[arg(long)]
    client_tls: Option<PathBuf>,
    /// Do not advertise this node on mDNS (`_poshub._tcp.local.`); devices then need its
    /// address. `--dev` never advertises.
    #[arg(long)]
    no_mdns: bool,
    /// Never fsync the log: appends are acknowledged before they are durable. A
    /// deliberately broken mode, for showing that the chaos harness catches the writes a
    /// power cut then loses. Never in a shop.
    #[arg(long, hide = true)]
    unsafe_no_fsync: bool,
    /// Milliseconds the log waits after an append for others to share its fsync: fewer
    /// syncs (an SD card's wear) for that much more latency per append. 0 syncs at once.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=COMMIT_WINDOW_MAX_MS))]
    commit_window: u64,
    /// Open Subscribe streams allowed per device (with tokens).
    #[arg(long, default_value_t = crate::api::limits::SUBSCRIPTIONS_PER_DEVICE_MAX)]
    subscriptions_per_device: usize,
    /// Per-device append rate limit: sustained events per second.
    #[arg(long, default_value_t = crate::api::limits::RATE_EVENTS_PER_S)]
    rate_events_per_s: u32,
    /// Per-device append rate limit: burst, in events (an outbox flushing after an outage).
    #[arg(long, default_value_t = crate::api::limits::RATE_BURST_EVENTS)]
    rate_burst_events: u32,
    /// Serve the client API without tokens. Only for trials on a private machine.
    #[arg(long, conflicts_with_all = ["public_key", "public_key_base64"])]
    insecure_no_auth: bool,
    /// Serve the peer port without TLS on an address other machines can reach. Anyone who
    /// reaches it can then vote and forward events as any device: only on a network that
    /// nothing but the group's nodes can reach (a test's own network namespace).
    #[arg(long)]
    insecure_plaintext_peers: bool,
    /// A host name (or NAME:PORT) browsers may use for this node while it runs without
    /// authentication (repeat). Loopback names, IP addresses and the advertised client
    /// address are always allowed; other names are refused (DNS rebinding).
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// The store's menu (JSON, see `examples/menu.json`), the same file on every node;
    /// checked at start, served to tills by GetMenu. `--dev` without it serves the example.
    #[arg(long, value_name = "FILE")]
    menu: Option<PathBuf>,
}

/// The menu from `--menu`; with `--dev` and no file the built-in example, so that the dev
/// hub's web app has something to sell; otherwise none (tills show an empty menu).
fn menu(args: &ServeArgs) -> anyhow::Result<Menu> {
    Ok(match &args.menu {
        Some(path) => Menu::load(path)?,
        None if args.dev => Menu::example()?,
        None => Menu::empty(),
    })
}

/// The token-verifying key from the flags, if any.
/// The public keys from `--public-key` (one or two files), else from
/// `CLUSTER_PUBLIC_KEY_BASE64` (one or two, comma-separated); `None` when neither is given.
fn public_keys(args: &ServeArgs) -> anyhow::Result<Option<KeySet>> {
    use crate::auth::keys;
    let keys = if !args.public_key.is_empty() {
        args.public_key
            .iter()
            .map(|path| keys::load_verifying_key(path))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        match &args.public_key_base64 {
            Some(encoded) if !encoded.trim().is_empty() => encoded
                .split(',')
                .map(keys::verifying_key_from_base64_pem)
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Ok(None),
        }
    };
    let set = KeySet::new(keys).context("the store's public keys")?;
    tracing::info!(kids = ?set.kids(), "verifying device tokens with these store keys");
    Ok(Some(set))
}

/// Parses `ID=PEER[/CLIENT],…`.
pub fn parse_initial_cluster(spec: &str) -> anyhow::Result<BTreeMap<NodeId, HubNode>> {
    let mut members = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addrs) = part.split_once('=').with_context(|| {
            format!("--initial-cluster entry {part:?} is not ID=PEER_ADDR[/CLIENT_ADDR]")
        })?;
        let id: NodeId = id
            .trim()
            .parse()
            .with_context(|| format!("--initial-cluster: node id {id:?} is not a number"))?;
        if id == 0 {
            bail!("--initial-cluster: node ids start at 1");
        }
        let (peer, client) = match addrs.split_once('/') {
            Some((peer, client)) => (peer.trim(), client.trim()),
            None => (addrs.trim(), ""),
        };
        if peer.is_empty() || !peer.contains(':') {
            bail!("--initial-cluster: node {id} needs a peer address HOST:PORT, got {peer:?}");
        }
        if members
            .insert(
                id,
                HubNode {
                    peer_addr: peer.to_owned(),
                    client_addr: client.to_owned(),
                },
            )
            .is_some()
        {
            bail!("--initial-cluster names node {id} twice");
        }
    }
    if members.is_empty() {
        bail!("--initial-cluster is empty");
    }
    Ok(members)
}

/// Where a node is and which group it belongs to: the part of the config that `--dev`
/// fixes and that otherwise comes from the flags.
struct Placement {
    node_id: NodeId,
    data_dir: PathBuf,
    listen: SocketAddr,
    peer_listen: SocketAddr,
    advertise: HubNode,
    initial_cluster: BTreeMap<NodeId, HubNode>,
    realm: Realm,
}

fn dev_placement() -> anyhow::Result<Placement> {
    let advertise = HubNode {
        peer_addr: DEV_PEER_ADDR.into(),
        client_addr: DEV_CLIENT_ADDR.into(),
    };
    Ok(Placement {
        node_id: 1,
        data_dir: PathBuf::from("data"),
        listen: DEV_CLIENT_ADDR.parse()?,
        peer_listen: DEV_PEER_ADDR.parse()?,
        initial_cluster: BTreeMap::from([(1, advertise.clone())]),
        advertise,
        realm: Realm::new("t-demo", "s-001"),
    })
}

fn placement(args: &ServeArgs) -> anyhow::Result<Placement> {
    let Some(node_id) = args.node_id else {
        bail!("serve needs --node-id (or --dev for a one-node dev hub)")
    };
    if node_id == 0 {
        bail!("--node-id: node ids start at 1");
    }
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], args.port)));
    let advertise = HubNode {
        peer_addr: args
            .advertise_peer
            .clone()
            .unwrap_or_else(|| args.peer_listen.to_string()),
        client_addr: args
            .advertise_client
            .clone()
            .unwrap_or_else(|| listen.to_string()),
    };
    let initial_cluster = match (&args.initial_cluster, args.join) {
        (_, true) => BTreeMap::new(),
        (Some(spec), false) => {
            let mut members = parse_initial_cluster(spec)?;
            // This node knows its own client address even if the list leaves it out.
            if let Some(me) = members.get_mut(&node_id)
                && me.client_addr.is_empty()
            {
                me.client_addr = advertise.client_addr.clone();
            }
            members
        }
        (None, false) => BTreeMap::from([(node_id, advertise.clone())]),
    };
    Ok(Placement {
        node_id,
        data_dir: args.data_dir.clone(),
        listen,
        peer_listen: args.peer_listen,
        advertise,
        initial_cluster,
        realm: Realm::new(args.tenant_id.clone(), args.store_id.clone()),
    })
}

fn config(args: ServeArgs) -> anyhow::Result<ServeConfig> {
    let place = if args.dev {
        dev_placement()?
    } else {
        placement(&args)?
    };
    if args.election_timeout_ms <= args.heartbeat_ms {
        bail!(
            "--election-timeout-ms ({}) must exceed --heartbeat-ms ({})",
            args.election_timeout_ms,
            args.heartbeat_ms
        );
    }
    if args.peer_tls.is_none()
        && !place.peer_listen.ip().is_loopback()
        && !args.insecure_plaintext_peers
    {
        bail!(
            "--peer-listen {} is reachable from other machines, and without --peer-tls anyone \
             who reaches it can send votes and forward events as any device: give --peer-tls \
             DIR (`pos-hub certs issue`), listen on a loopback address, or, on a network only \
             the group's nodes reach, --insecure-plaintext-peers",
            place.peer_listen
        );
    }
    let public_key = public_keys(&args)?;
    let menu = menu(&args)?;
    if public_key.is_none() && !args.insecure_no_auth && !args.dev {
        bail!(
            "serve needs the store's public key to verify device tokens: --public-key FILE or \
             CLUSTER_PUBLIC_KEY_BASE64 (--insecure-no-auth runs without, never in a shop)"
        );
    }
    Ok(ServeConfig {
        node_id: place.node_id,
        data_dir: place.data_dir,
        listen: place.listen,
        peer_listen: place.peer_listen,
        advertise: place.advertise,
        initial_cluster: place.initial_cluster,
        realm: place.realm,
        timing: Timing {
            heartbeat_ms: args.heartbeat_ms,
            election_timeout_min_ms: args.election_timeout_ms,
            election_timeout_max_ms: args.election_timeout_ms * 2,
            append_timeout_ms: args.append_timeout_ms,
        },
        snapshot_every_log_entries: args.snapshot_every,
        keep_log_entries: args
            .keep_log_entries
            .unwrap_or(args.snapshot_every.saturating_mul(KEEP_LOG_SNAPSHOTS)),
        log_bounds: crate::raft::compaction::LogBounds {
            snapshot_bytes: args.snapshot_log_mib << 20,
            keep_bytes: args.keep_log_mib << 20,
        },
        feed_batches: args.feed_batches as usize,
        public_keys: public_key,
        clock_offset_ms: args.clock_offset_ms,
        clock_rate: (args.clock_rate > 1).then(|| {
            let epoch_ms = match args.clock_epoch_ms {
                0 => crate::clock::now_ms(),
                given => given,
            };
            (epoch_ms, args.clock_rate)
        }),
        history_segment_bytes: args.history_segment_kib << 10,
        wan_probe: args.wan_probe,
        offline_grace_s: args.offline_grace_days.saturating_mul(86_400),
        subscriptions_per_device: args.subscriptions_per_device,
        peer_tls: args.peer_tls,
        client_tls: args.client_tls,
        mdns: !args.no_mdns && !args.dev,
        commit_window: std::time::Duration::from_millis(args.commit_window),
        durability: if args.unsafe_no_fsync {
            crate::store::Durability::UnsafeNoFsync
        } else {
            crate::store::Durability::Fsync
        },
        rate_events_per_s: args.rate_events_per_s,
        rate_burst_events: args.rate_burst_events,
        menu: Arc::new(menu),
        allowed_hosts: args.allow_hosts,
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let dev = args.dev;
    let config = config(args)?;
    if config.menu.is_empty() {
        tracing::warn!("no --menu: tills will show an empty menu");
    } else {
        tracing::info!(
            name = config.menu.name(),
            items = config.menu.items().len(),
            "menu loaded"
        );
    }
    if dev {
        tracing::warn!(
            "DEV MODE: one node, PLAINTEXT client and peer ports on {} and {}, no authentication. \
             Never run a shop on this.",
            DEV_CLIENT_ADDR,
            DEV_PEER_ADDR
        );
    }
    app::serve(config, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn args(flags: &[&str]) -> ServeArgs {
        let argv = std::iter::once("serve").chain(flags.iter().copied());
        <Serve as clap::Parser>::try_parse_from(argv)
            .expect("the flags parse")
            .args
    }

    #[test]
    fn the_menu_comes_from_the_file_or_the_example_in_dev_or_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("menu.json");
        std::fs::write(
            &file,
            r#"{"name":"Corner Bar","currency":"GBP","items":[
                {"sku":"ALE","name":"Ale","price":520,"category":"beverage"}]}"#,
        )
        .expect("writes the menu");
        let file_arg = file.to_str().expect("a UTF-8 path");

        let dev = menu(&args(&["--dev"])).expect("the example menu");
        assert_eq!(dev, Menu::example().expect("valid"));
        assert_eq!(dev.name(), "Demo Diner");

        for flags in [
            ["--dev", "--menu", file_arg].as_slice(),
            ["--node-id", "2", "--menu", file_arg].as_slice(),
        ] {
            let menu = menu(&args(flags)).expect("the file's menu");
            assert_eq!(menu.name(), "Corner Bar", "{flags:?}");
            assert_eq!(menu.items().len(), 1, "{flags:?}");
        }

        assert!(
            menu(&args(&["--node-id", "2"]))
                .expect("no menu")
                .is_empty()
        );

        let missing = dir.path().join("missing.json");
        let err = menu(&args(&[
            "--dev",
            "--menu",
            missing.to_str().expect("UTF-8"),
        ]))
        .expect_err("a missing file is refused, even in dev");
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_plaintext_peer_port_off_loopback_needs_the_insecure_flag() {
        let base = ["--node-id", "1", "--insecure-no-auth"];
        let with = |extra: &[&str]| {
            let mut flags = base.to_vec();
            flags.extend_from_slice(extra);
            config(args(&flags))
        };
        for addr in ["0.0.0.0:4002", "192.168.1.10:4002", "[::]:4002"] {
            let err = with(&["--peer-listen", addr])
                .err()
                .expect("refused")
                .to_string();
            assert!(
                err.contains(&format!(
                    "--peer-listen {}",
                    addr.parse::<SocketAddr>().expect("an address")
                )) && err.contains("--peer-tls")
                    && err.contains("--insecure-plaintext-peers"),
                "{err}"
            );
            with(&["--peer-listen", addr, "--insecure-plaintext-peers"])
                .expect("allowed when asked for");
        }
        for addr in ["127.0.0.1:4002", "127.0.0.5:4002", "[::1]:4002"] {
            with(&["--peer-listen", addr]).expect("loopback is fine");
        }
        with(&["--peer-listen", "0.0.0.0:4002", "--peer-tls", "tls"])
            .expect("TLS is fine (the dir is read when serving)");
    }

    #[test]
    fn initial_cluster_entries_parse_with_and_without_client_addresses() {
        let members = parse_initial_cluster("1=127.0.0.1:5002/127.0.0.1:5001, 2=10.0.0.3:4002")
            .expect("parses");
        assert_eq!(
            members[&1],
            HubNode {
                peer_addr: "127.0.0.1:5002".into(),
                client_addr: "127.0.0.1:5001".into()
            }
        );
        assert_eq!(
            members[&2],
            HubNode {
                peer_addr: "10.0.0.3:4002".into(),
                client_addr: String::new()
            }
        );
    }

    #[test]
    fn bad_initial_clusters_are_refused_with_the_reason() {
        for (spec, reason) in [
            ("", "is empty"),
            ("1", "is not ID=PEER_ADDR"),
            ("x=1.2.3.4:5", "is not a number"),
            ("0=1.2.3.4:5", "start at 1"),
            ("1=nowhere", "needs a peer address"),
            ("1=a:1,1=b:2", "twice"),
        ] {
            let err = parse_initial_cluster(spec).expect_err(spec).to_string();
            assert!(err.contains(reason), "{spec:?}: {err}");
        }
    }
}
