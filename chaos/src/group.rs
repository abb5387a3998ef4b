//! The hub nodes as processes: start, SIGKILL, SIGSTOP/SIGCONT, restart, and the questions
//! the nemesis asks (who leads, has everybody caught up).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use pos_hub::proto::pb;
use pos_hub::proto::pb::cluster_client::ClusterClient;
use pos_hub::proto::pb::hub_client::HubClient;
use tonic::transport::{Channel, Endpoint};

use crate::topology::Topology;

pub const TENANT: &str = "t-chaos";
pub const STORE: &str = "s-001";
/// The hub's Raft timing in the runs: its defaults.
pub use pos_hub::wire::ELECTION_TIMEOUT_MS;

pub struct Node {
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    pub paused: bool,
    /// Start with `--join` (a node added by the membership fault) instead of the initial
    /// cluster.
    pub joins: bool,
}

pub struct Group {
    pub topology: Topology,
    pub hub_bin: PathBuf,
    pub dir: PathBuf,
    pub nodes: BTreeMap<u64, Node>,
    /// Current voters, as the harness believes.
    pub members: Vec<u64>,
    /// Nodes that exited without the nemesis killing them: (node, exit status).
    pub unexpected_exits: Vec<(u64, String)>,
    /// The node whose data dir is a small tmpfs (for the disk-full fault), if any.
    pub tmpfs_node: Option<u64>,
    /// Nodes whose data dir is the power-cut FUSE layer (for lose-unsynced).
    pub powerfs: BTreeMap<u64, (crate::powerfs::PowerFs, fuser::BackgroundSession)>,
    /// Extra `serve` flags for every node (e.g. the deliberately broken `--unsafe-no-fsync`).
    pub hub_args: Vec<String>,
    initial_cluster: String,
}

/// A channel for the harness's own questions to a node: each bounded by 3 s.
pub fn channel(addr: &str) -> Channel {
    channel_with_timeout(addr, Duration::from_secs(3))
}

/// A channel whose calls are each bounded by `timeout`.
pub fn channel_with_timeout(addr: &str, timeout: Duration) -> Channel {
    // A static, well-formed URL: from_shared cannot fail on it.
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap_or_else(|_| Endpoint::from_static("http://127.0.0.1:1"))
        .connect_timeout(Duration::from_millis(500))
        .timeout(timeout)
        // As the SDK: a call open on a node that misses a ping fails at once.
        .http2_keep_alive_interval(Duration::from_millis(pos_hub::wire::PING_INTERVAL_MS))
        .keep_alive_timeout(Duration::from_millis(pos_hub::wire::PING_TIMEOUT_MS))
        .keep_alive_while_idle(false)
        .tcp_nodelay(true)
        .connect_lazy()
}

impl Group {
    pub fn new(
        topology: Topology,
        hub_bin: PathBuf,
        dir: &Path,
        ids: &[u64],
    ) -> anyhow::Result<Group> {
        let initial_cluster = ids
            .iter()
            .map(|n| {
                format!(
                    "{n}={}/{}",
                    topology.peer_addr(*n),
                    topology.client_addr(*n)
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = BTreeMap::new();
        for &id in ids {
            nodes.insert(id, Group::node(dir, id)?);
        }
        Ok(Group {
            topology,
            hub_bin,
            dir: dir.to_path_buf(),
            nodes,
            members: ids.to_vec(),
            unexpected_exits: Vec::new(),
            tmpfs_node: None,
            powerfs: BTreeMap::new(),
            hub_args: Vec::new(),
            initial_cluster,
        })
    }

    fn node(dir: &Path, id: u64) -> anyhow::Result<Node> {
        let node_dir = dir.join(format!("node{id}"));
        std::fs::create_dir_all(&node_dir).with_context(|| format!("{}", node_dir.display()))?;
        Ok(Node {
            data_dir: node_dir.join("data"),
            log_path: node_dir.join("node.log"),
            child: None,
            paused: false,
            joins: false,
        })
    }

    /// Puts node `id`'s data dir on a tmpfs of `megabytes` (before it first starts).
    pub fn mount_tmpfs(&mut self, id: u64, megabytes: u64) -> anyhow::Result<()> {
        let dir = &self.nodes.get(&id).context("unknown node")?.data_dir;
        std::fs::create_dir_all(dir)?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir)
            .output()
            .context("running mount")?;
        if !out.status.success() {
            bail!(
                "mounting a tmpfs at {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        self.tmpfs_node = Some(id);
        Ok(())
    }

    /// Puts node `id`'s data dir on the power-cut FUSE layer (before it first starts).
    pub fn mount_powerfs(&mut self, id: u64) -> anyhow::Result<()> {
        let dir = self
            .nodes
            .get(&id)
            .context("unknown node")?
            .data_dir
            .clone();
        std::fs::create_dir_all(&dir)?;
        let mounted = crate::powerfs::PowerFs::mount(&dir).with_context(|| {
            format!(
                "mounting the FUSE layer at {} (needs root, /dev/fuse and fusermount3 from fuse3)",
                dir.display()
            )
        })?;
        self.powerfs.insert(id, mounted);
        Ok(())
    }

    pub fn log_path(&self, id: u64) -> anyhow::Result<&Path> {
        Ok(self
            .nodes
            .get(&id)
            .context("unknown node")?
            .log_path
            .as_path())
    }

    pub fn data_dir(&self, id: u64) -> Option<&Path> {
        self.nodes.get(&id).map(|n| n.data_dir.as_path())
    }

    pub fn client_addr(&self, id: u64) -> String {
        self.topology.client_addr(id)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn start(&mut self, id: u64) -> anyhow::Result<()> {
        let topology = self.topology.clone();
        let hub_bin = self.hub_bin.clone();
        let initial = self.initial_cluster.clone();
        let hub_args = self.hub_args.clone();
        let node = self.nodes.get_mut(&id).context("unknown node")?;
        if node.child.is_some() {
            return Ok(());
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)?;
        writeln!(log, "=== chaos: start node {id} ===")?;
        let listen = if topology.is_netns() {
            format!("0.0.0.0:{}", crate::topology::CLIENT_PORT)
        } else {
            topology.client_addr(id)
        };
        let peer_listen = if topology.is_netns() {
            format!("0.0.0.0:{}", crate::topology::PEER_PORT)
        } else {
            topology.peer_addr(id)
        };
        let mut cmd = topology.command_for(id, &hub_bin);
        cmd.args(["serve", "--no-mdns", "--insecure-no-auth"])
            .args(["--node-id", &id.to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--listen", &listen, "--peer-listen", &peer_listen])
            .args(["--advertise-client", &topology.client_addr(id)])
            .args(["--advertise-peer", &topology.peer_addr(id)])
            .args(["--tenant", TENANT, "--store", STORE])
            .args(["--snapshot-every", "500"])
            // Snapshots often (so installs happen), but enough log behind them that a
            // rebuilt node can catch up after its install while the workload runs.
            .args(["--keep-log-entries", "5000"])
            .args(&hub_args);
        if topology.is_netns() {
            // The peer port listens on the namespaces' own network, which only the group's
            // nodes reach.
            cmd.arg("--insecure-plaintext-peers");
        }
        if node.joins {
            cmd.arg("--join");
        } else {
            cmd.args(["--initial-cluster", &initial]);
        }
        cmd.env("RUST_LOG", "warn,pos_hub=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        node.child = Some(cmd.spawn().context("starting pos-hub serve")?);
        node.paused = false;
        Ok(())
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes.get(&id)?.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self, id: u64) -> bool {
        let Some(node) = self.nodes.get_mut(&id) else {
            return false;
        };
        match node.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                // Not killed by the nemesis: say so in its log and in ours.
                tracing::error!(node = id, %status, "a node exited by itself");
                if let Ok(mut log) = OpenOptions::new().append(true).open(&node.log_path) {
                    let _ = writeln!(log, "=== chaos: node {id} exited by itself: {status} ===");
                }
                node.child = None;
                self.unexpected_exits.push((id, status.to_string()));
                false
            }
            Some(Err(_)) | None => {
                node.child = None;
                false
            }
        }
    }

    pub fn kill(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id)
            && let Some(mut child) = node.child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
            node.paused = false;
        }
    }

    fn signal(&mut self, id: u64, signal: i32) -> anyhow::Result<()> {
        let pid = self.pid(id).context("the node is not running")?;
        let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
        // SAFETY: kill(2) on a pid of a child this process started and has not reaped.
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn pause(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, libc::SIGSTOP)?;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.paused = true;
        }
        Ok(())
    }

    pub fn resume(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, libc::SIGCONT)?;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.paused = false;
        }
        Ok(())
    }

    pub fn kill_all(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
    }

    /// Adds a node record (for the membership fault) that starts with `--join`.
    pub fn add_blank(&mut self, id: u64) -> anyhow::Result<()> {
        self.topology.add_node_link(id)?;
        let mut node = Group::node(&self.dir, id)?;
        node.joins = true;
        let _ = std::fs::remove_dir_all(&node.data_dir);
        self.nodes.insert(id, node);
        Ok(())
    }

    pub async fn hello(&self, id: u64) -> Option<pb::HelloResponse> {
        let mut client = HubClient::new(channel(&self.client_addr(id)));
        let request = pb::HelloRequest {
            device_id: "chaos".into(),
            cursor: 0,
        };
        match tokio::time::timeout(Duration::from_secs(1), client.hello(request)).await {
            Ok(Ok(reply)) => Some(reply.into_inner()),
            _ => None,
        }
    }

    /// The leader a majority of the running, unpaused members agree on.
    pub async fn leader(&mut self) -> Option<u64> {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for id in self.members.clone() {
            if !self.is_running(id) || self.nodes.get(&id).is_some_and(|n| n.paused) {
                continue;
            }
            if let Some(hello) = self.hello(id).await
                && hello.leader_id != 0
            {
                *votes.entry(hello.leader_id).or_default() += 1;
            }
        }
        let majority = self.members.len() / 2 + 1;
        votes
            .into_iter()
            .find(|(_, n)| *n >= majority)
            .map(|(leader, _)| leader)
    }

    pub async fn wait_leader(&mut self, within: Duration) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Some(leader) = self.leader().await {
                return Some(leader);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Waits until every running member reports the same last seq as the leader.
    pub async fn wait_converged(&mut self, within: Duration) -> anyhow::Result<u64> {
        let deadline = tokio::time::Instant::now() + within;
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            // As a supervisor would: a member that stopped (a storage error) is started again.
            for id in self.members.clone() {
                if !self.is_running(id) {
                    self.start(id)?;
                }
            }
            let mut seqs = BTreeMap::new();
            for id in self.members.clone() {
                if let Some(hello) = self.hello(id).await {
                    seqs.insert(id, hello.last_seq);
                }
            }
            let values: Vec<u64> = seqs.values().copied().collect();
            if seqs.len() == self.members.len() && values.windows(2).all(|w| w[0] == w[1]) {
                return Ok(values.first().copied().unwrap_or(0));
            }
            last = format!("{seqs:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("the nodes did not converge within {within:?}: last seqs {last}")
    }

    /// Membership changes wait for a new node to catch up (by snapshot): minutes, not 3 s.
    pub fn cluster_client(&self, id: u64) -> ClusterClient<Channel> {
        ClusterClient::new(channel_with_timeout(
            &self.client_addr(id),
            Duration::from_secs(120),
        ))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for id in self.ids() {
            if self.nodes.get(&id).is_some_and(|n| n.paused) {
                let _ = self.resume(id);
            }
        }
        self.kill_all();
        // Dropping the sessions unmounts the FUSE layers.
        self.powerfs.clear();
        if let Some(dir) = self.tmpfs_node.and_then(|id| self.data_dir(id)) {
            let _ = std::process::Command::new("umount").arg(dir).output();
        }
    }
}
