//! A harness for networked pos-hub groups: spawns real `pos-hub serve` processes on free
//! loopback ports, each with its own data dir and log file inside one temp dir, and waits
//! on conditions (Hello, /healthz, /status) with deadlines, never on fixed sleeps.
//!
//! Every child is SIGKILLed when the `Cluster` is dropped; when that happens during a
//! panic, the tail of every node's log is printed. The cluster tests of one test binary
//! run one at a time (`serial()`): the machine has two cores, and parallel groups would
//! starve each other's elections.
//!
//! Set `POS_HUB_TEST_RUST_LOG` (e.g. `info,openraft=debug`) to change what the nodes log;
//! the default is `warn`. Set `POS_HUB_TEST_KEEP=1` to keep the data dirs and logs.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pos_hub::proto::pb;
use pos_hub::proto::pb::cluster_client::ClusterClient;
use pos_hub::proto::pb::hub_client::HubClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use super::BIN;

/// Serializes the clusters (and the dev node) of one test binary.
static LOCK: Mutex<()> = Mutex::new(());

/// Takes the global test lock, recovering it if an earlier test panicked while holding it.
pub fn serial() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long a whole group gets to elect a leader that everybody agrees on.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Polling interval of every wait loop.
pub const POLL: Duration = Duration::from_millis(50);
/// The largest message a test client accepts (Subscribe batches may be large).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;
/// Lines of a node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;
/// Characters kept of each log line printed (openraft's errors repeat their sources).
const LOG_LINE_CHARS: usize = 400;

pub const TENANT: &str = "t-demo";
pub const STORE: &str = "s-001";
pub const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/order-flow.jsonl");

/// Flags common to every node of a group; `None` leaves the server's default, which is
/// what the acceptance lines are about.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub snapshot_every: Option<u64>,
    pub heartbeat_ms: Option<u64>,
    pub election_timeout_ms: Option<u64>,
    pub feed_batches: Option<u64>,
    /// The store's public key: nodes then require device tokens. `None` runs them with
    /// `--insecure-no-auth`.
    pub public_key: Option<std::path::PathBuf>,
    /// Further `serve` flags, as given.
    pub extra_args: Vec<String>,
    /// The store of the realm (tenant TENANT); `None`: STORE.
    pub store: Option<String>,
    /// A store CA dir (`pos-hub certs init`): each node gets a certificate from it and the
    /// peer port runs mutual TLS.
    pub peer_tls_ca: Option<std::path::PathBuf>,
    /// Put this node's data dir on a tmpfs of this many MiB before it first starts (root
    /// only); unmounted when the cluster is dropped.
    pub tmpfs: Option<(u64, u64)>,
}

/// One `pos-hub serve` process (running or not) and where it lives.
#[derive(Debug)]
pub struct Node {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// The `--initial-cluster` this node is started with (the same on every restart).
    initial_cluster: String,
    child: Option<Child>,
    starts: u32,
}

pub struct Cluster {
    nodes: BTreeMap<u64, Node>,
    /// Voters of the group as the test believes it to be (a blank node is not one).
    members: Vec<u64>,
    initial_cluster: String,
    options: Options,
    dir: tempfile::TempDir,
    // Last, so that it is released after the children are killed and the dir removed.
    _serial: Option<MutexGuard<'static, ()>>,
}

/// `count` distinct free loopback ports (all bound at once, then released).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("binds a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// The last `lines` lines of a file (or a note that it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..]
                .iter()
                .map(|line| match line.char_indices().nth(LOG_LINE_CHARS) {
                    Some((cut, _)) => format!("{}…", &line[..cut]),
                    None => (*line).to_owned(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}

impl Cluster {
    /// Starts `n` voters (ids 1..=n) with default options and waits for an agreed leader.
    pub async fn start(n: u64) -> Cluster {
        Self::start_with(n, Options::default()).await
    }

    pub async fn start_with(n: u64, options: Options) -> Cluster {
        Self::start_inner(n, options, Some(serial())).await
    }

    /// A second group in a test that already holds one (which holds the test lock).
    pub async fn start_beside(_first: &Cluster, n: u64, options: Options) -> Cluster {
        Self::start_inner(n, options, None).await
    }

    async fn start_inner(
        n: u64,
        options: Options,
        serial: Option<MutexGuard<'static, ()>>,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("creates the cluster temp dir");
        let ports = free_ports(2 * n as usize);
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let i = (id - 1) as usize;
            let node_dir = dir.path().join(format!("node{id}"));
            std::fs::create_dir_all(&node_dir).expect("creates the node dir");
            nodes.insert(
                id,
                Node {
                    id,
                    client_addr: format!("127.0.0.1:{}", ports[2 * i]),
                    peer_addr: format!("127.0.0.1:{}", ports[2 * i + 1]),
                    data_dir: node_dir.join("data"),
                    log_path: node_dir.join("node.log"),
                    initial_cluster: String::new(),
                    child: None,
                    starts: 0,
                },
            );
        }
        let initial_cluster = nodes
            .values()
            .map(|n| format!("{}={}/{}", n.id, n.peer_addr, n.client_addr))
            .collect::<Vec<_>>()
            .join(",");
        for node in nodes.values_mut() {
            node.initial_cluster = initial_cluster.clone();
        }
        let mut cluster = Cluster {
            nodes,
            members: (1..=n).collect(),
            initial_cluster,
            options,
            dir,
            _serial: serial,
        };
        eprintln!(
            "harness: starting {n} nodes in {} with --initial-cluster {}",
            cluster.dir.path().display(),
            cluster.initial_cluster
        );
        if let Some((id, megabytes)) = cluster.options.tmpfs {
            let dir = &cluster.nodes[&id].data_dir;
            std::fs::create_dir_all(dir).expect("creates the data dir");
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
                .arg(dir)
                .output()
                .expect("runs mount");
            assert!(
                out.status.success(),
                "mounting a tmpfs at {} (this test needs root): {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for id in 1..=n {
            cluster.spawn(id);
        }
        let members = cluster.members.clone();
        let leader = cluster.wait_leader(&members, LEADER_TIMEOUT).await;
        eprintln!("harness: {n} nodes up, node {leader} leads");
        cluster
    }

    /// Adds a node process that is not in the group: started with the group's
    /// `--initial-cluster`, which does not contain its id, so it waits to be added.
    pub fn spawn_blank_node(&mut self, id: u64) {
        assert!(!self.nodes.contains_key(&id), "node {id} exists already");
        let ports = free_ports(2);
        let node_dir = self.dir.path().join(format!("node{id}"));
        std::fs::create_dir_all(&node_dir).expect("creates the node dir");
        self.nodes.insert(
            id,
            Node {
                id,
                client_addr: format!("127.0.0.1:{}", ports[0]),
                peer_addr: format!("127.0.0.1:{}", ports[1]),
                data_dir: node_dir.join("data"),
                log_path: node_dir.join("node.log"),
                initial_cluster: self.initial_cluster.clone(),
                child: None,
                starts: 0,
            },
        );
        self.spawn(id);
    }

    fn spawn(&mut self, id: u64) {
        let options = self.options.clone();
        let cwd = self.dir.path().to_path_buf();
        let node = self.nodes.get_mut(&id).expect("known node");
        assert!(node.child.is_none(), "node {id} is running already");
        node.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("opens the node log");
        writeln!(log, "=== harness: start #{} of node {id} ===", node.starts).expect("writes log");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--no-mdns")
            .args(["--node-id", &id.to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--listen", &node.client_addr])
            .args(["--peer-listen", &node.peer_addr])
            .args(["--initial-cluster", &node.initial_cluster])
            .args([
                "--tenant",
                TENANT,
                "--store",
                options.store.as_deref().unwrap_or(STORE),
            ]);
        if let Some(ms) = options.heartbeat_ms {
            cmd.args(["--heartbeat-ms", &ms.to_string()]);
        }
        if let Some(ms) = options.election_timeout_ms {
            cmd.args(["--election-timeout-ms", &ms.to_string()]);
        }
        if let Some(every) = options.snapshot_every {
            cmd.args(["--snapshot-every", &every.to_string()]);
        }
        if let Some(batches) = options.feed_batches {
            cmd.args(["--feed-batches", &batches.to_string()]);
        }
        cmd.args(&options.extra_args);
        if let Some(ca) = &options.peer_tls_ca {
            let tls_dir = node.data_dir.with_file_name("tls");
            if !tls_dir.exists() {
                pos_hub::auth::tls::issue_node(ca, id, &["127.0.0.1".to_owned()], &tls_dir)
                    .expect("issues the node certificate");
            }
            cmd.arg("--peer-tls").arg(&tls_dir);
        }
        match &options.public_key {
            Some(path) => {
                cmd.arg("--public-key").arg(path);
            }
            None => {
                cmd.arg("--insecure-no-auth");
            }
        }
        let rust_log = std::env::var("POS_HUB_TEST_RUST_LOG").unwrap_or_else(|_| "warn".to_owned());
        cmd.env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clones the log handle"))
            .stderr(log);
        node.child = Some(cmd.spawn().expect("spawns pos-hub serve"));
    }

    /// The flags later starts and restarts use: a test that reconfigures its nodes changes
    /// them before restarting each.
    pub fn options_mut(&mut self) -> &mut Options {
        &mut self.options
    }

    /// The process id of a running node.
    pub fn pid(&self, id: u64) -> u32 {
        self.nodes[&id]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is not running"))
            .id()
    }

    /// SIGKILLs a node and reaps it.
    pub fn kill(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("node {id} is not running"));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaps the killed node");
        eprintln!("harness: node {id} killed");
    }

    /// Starts a stopped node again with the same flags and data dir (does not wait).
    pub fn restart(&mut self, id: u64) {
        self.spawn(id);
        eprintln!("harness: node {id} restarted");
    }

    /// SIGKILLs every running node.
    pub fn stop_all(&mut self) {
        let running: Vec<u64> = self.running();
        for id in running {
            self.kill(id);
        }
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes[&id].child.is_some()
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    pub fn members(&self) -> Vec<u64> {
        self.members.clone()
    }

    pub fn set_members(&mut self, members: &[u64]) {
        self.members = members.to_vec();
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&id]
    }

    pub fn client_addr(&self, id: u64) -> String {
        self.nodes[&id].client_addr.clone()
    }

    pub fn peer_addr(&self, id: u64) -> String {
        self.nodes[&id].peer_addr.clone()
    }

    /// `http://127.0.0.1:P`, the node's client URL as the CLI takes it.
    pub fn url(&self, id: u64) -> String {
        format!("http://{}", self.nodes[&id].client_addr)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A gRPC client of the node's `Hub` service (connects lazily, reconnects by itself).
    pub fn client(&self, id: u64) -> HubClient<Channel> {
        hub_client(&self.nodes[&id].client_addr)
    }

    pub fn cluster_client(&self, id: u64) -> ClusterClient<Channel> {
        ClusterClient::new(channel(&self.nodes[&id].client_addr))
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// The tail of a node's log file (stdout and stderr of all its runs).
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        tail(&self.nodes[&id].log_path, lines)
    }

    pub fn all_log_tails(&self) -> String {
        self.nodes
            .values()
            .map(|n| {
                format!(
                    "----- node {} ({}, {}) log tail:\n{}",
                    n.id,
                    n.client_addr,
                    if n.child.is_some() {
                        "running"
                    } else {
                        "stopped"
                    },
                    tail(&n.log_path, LOG_TAIL_LINES)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Panics if a node the harness believes running has exited on its own.
    pub fn check_alive(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(child) = node.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                node.child = None;
                panic!(
                    "node {} exited by itself ({status}); its log:\n{}",
                    node.id,
                    tail(&node.log_path, LOG_TAIL_LINES)
                );
            }
        }
    }

    /// Waits until node `id` exits by itself and reaps it; panics after `within`.
    pub async fn wait_exit(&mut self, id: u64, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            let node = self.nodes.get_mut(&id).expect("known node");
            let child = node.child.as_mut().expect("the node is running");
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} still runs after {within:?}; its log:\n{}",
                tail(&node.log_path, LOG_TAIL_LINES)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Hello on a node, bounded by 2 s.
    pub async fn hello(&self, id: u64) -> Result<pb::HelloResponse, String> {
        hello_at(&self.nodes[&id].client_addr, 0).await
    }

    /// `(seq, eventId)` of every event of node `id`'s log after `cursor`, up to seq `up_to`,
    /// as Subscribe streams them (`subscribe_ids`); panics, naming the node, past `within`.
    pub async fn log_ids(
        &self,
        id: u64,
        cursor: u64,
        up_to: u64,
        within: Duration,
    ) -> Vec<(u64, String)> {
        subscribe_ids(&mut self.client(id), cursor, up_to, within)
            .await
            .unwrap_or_else(|e| panic!("node {id}'s log: {e}"))
    }

    /// `poll_until`, first checking on every try that no node has exited by itself.
    pub async fn poll<T>(
        &mut self,
        within: Duration,
        mut probe: impl AsyncFnMut(&Self) -> Result<T, String>,
    ) -> Result<T, String> {
        poll_until(within, async || {
            self.check_alive();
            probe(self).await
        })
        .await
    }

    /// Waits until every node of `among` answers Hello with the same leader, itself one of
    /// `among`; returns it.
    pub async fn wait_leader(&mut self, among: &[u64], within: Duration) -> u64 {
        let agreed = self
            .poll(within, async |c| {
                let mut leaders = Vec::new();
                let mut view = String::new();
                for &id in among {
                    // /status needs no token, so this works whether the nodes check tokens or not.
                    let leader = match c.http_get(id, "/status").await {
                        Ok(response) if response.status == 200 => {
                            serde_json::from_slice::<serde_json::Value>(&response.body)
                                .ok()
                                .and_then(|status| status["leaderId"].as_u64())
                                .unwrap_or(0)
                        }
                        Ok(response) => {
                            view.push_str(&format!(" node {id}: /status {};", response.status));
                            0
                        }
                        Err(err) => {
                            view.push_str(&format!(" node {id}: {err};"));
                            0
                        }
                    };
                    leaders.push(leader);
                    view.push_str(&format!(" node {id}: leader {leader};"));
                }
                match leaders.first() {
                    Some(&first)
                        if first != 0
                            && among.contains(&first)
                            && leaders.iter().all(|&l| l == first) =>
                    {
                        Ok(first)
                    }
                    _ => Err(view),
                }
            })
            .await;
        agreed.unwrap_or_else(|view| {
            panic!("no leader agreed by nodes {among:?} within {within:?}; last view:{view}")
        })
    }

    /// The leader that all running members agree on.
    pub async fn leader_id(&mut self) -> u64 {
        let among: Vec<u64> = self
            .members
            .iter()
            .copied()
            .filter(|&id| self.is_running(id))
            .collect();
        self.wait_leader(&among, LEADER_TIMEOUT).await
    }

    /// Waits until every node of `among` reports the same `last_seq` (Hello), at least
    /// `at_least`; returns it.
    pub async fn wait_same_last_seq(
        &mut self,
        among: &[u64],
        at_least: u64,
        within: Duration,
    ) -> u64 {
        let agreed = self
            .poll(within, async |c| {
                let mut seqs = Vec::new();
                let mut view = String::new();
                for &id in among {
                    match c.hello(id).await {
                        Ok(h) => {
                            seqs.push(Some(h.last_seq));
                            view.push_str(&format!(" node {id}: last_seq {};", h.last_seq));
                        }
                        Err(err) => {
                            seqs.push(None);
                            view.push_str(&format!(" node {id}: {err};"));
                        }
                    }
                }
                match seqs.first() {
                    Some(&Some(first))
                        if first >= at_least && seqs.iter().all(|&s| s == Some(first)) =>
                    {
                        Ok(first)
                    }
                    _ => Err(view),
                }
            })
            .await;
        agreed.unwrap_or_else(|view| {
            panic!(
                "nodes {among:?} did not agree on a last_seq >= {at_least} within {within:?}; last view:{view}"
            )
        })
    }

    /// GET on a node's client port (HTTP/1.0, Connection: close), bounded by 5 s.
    pub async fn http_get(&self, id: u64, path: &str) -> Result<HttpResponse, String> {
        http_get(&self.nodes[&id].client_addr, path).await
    }

    /// Waits until `/healthz` of the node answers 200.
    pub async fn wait_healthy(&mut self, id: u64, within: Duration) {
        self.poll(within, async |c| healthz(&c.nodes[&id].client_addr).await)
            .await
            .unwrap_or_else(|last| {
                panic!("node {id}: /healthz not 200 within {within:?}; last: {last}")
            });
    }

    /// `/status` of a node as JSON.
    pub async fn status_json(&self, id: u64) -> serde_json::Value {
        let response = self
            .http_get(id, "/status")
            .await
            .unwrap_or_else(|e| panic!("node {id}: GET /status: {e}"));
        assert_eq!(
            response.status,
            200,
            "node {id}: /status: {}",
            response.text()
        );
        serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("node {id}: /status is not JSON ({e}): {}", response.text()))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some((id, _)) = self.options.tmpfs
            && let Some(node) = self.nodes.get(&id)
        {
            let _ = Command::new("umount").arg(&node.data_dir).output();
        }
        if std::thread::panicking() {
            eprintln!(
                "harness: the test failed; node logs follow\n{}",
                self.all_log_tails()
            );
        }
        if std::env::var_os("POS_HUB_TEST_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("harness: kept {}", self.dir.path().display());
        }
    }
}

// ---------------------------------------------------------------------------------------
// gRPC helpers

pub fn channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URL")
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect_lazy()
}

pub fn hub_client(addr: &str) -> HubClient<Channel> {
    HubClient::new(channel(addr))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub async fn hello_at(addr: &str, cursor: u64) -> Result<pb::HelloResponse, String> {
    let mut client = hub_client(addr);
    let request = pb::HelloRequest {
        device_id: "test-harness".into(),
        cursor,
    };
    match tokio::time::timeout(Duration::from_secs(2), client.hello(request)).await {
        Err(_) => Err("Hello timed out after 2s".into()),
        Ok(Err(status)) => Err(format!("Hello failed: {status}")),
        Ok(Ok(response)) => Ok(response.into_inner()),
    }
}

/// Append bounded by `within`; a test-side timeout comes back as `DeadlineExceeded`.
pub async fn append(
    client: &mut HubClient<Channel>,
    events: Vec<pb::Event>,
    within: Duration,
) -> Result<Vec<pb::AppendResult>, tonic::Status> {
    let request = pb::AppendRequest { events };
    match tokio::time::timeout(within, client.append(request)).await {
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "test-side timeout: no answer to Append within {within:?}"
        ))),
        Ok(Err(status)) => Err(status),
        Ok(Ok(response)) => Ok(response.into_inner().results),
    }
}

/// Appends `events`, asserting every one is ACCEPTED; returns their seqs.
pub async fn append_accepted(
    client: &mut HubClient<Channel>,
    events: Vec<pb::Event>,
    within: Duration,
) -> Vec<u64> {
    let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    let results = append(client, events, within)
        .await
        .unwrap_or_else(|status| panic!("Append failed: {status:?}"));
    assert_eq!(results.len(), ids.len(), "one result per event");
    results
        .iter()
        .zip(&ids)
        .map(|(r, id)| {
            assert_eq!(&r.event_id, id, "results come in request order");
            assert_eq!(
                r.status,
                pb::AppendStatus::Accepted as i32,
                "event {id} not accepted: {r:?}"
            );
            r.seq
        })
        .collect()
}

/// Appends `events` until they are answered (the same events, hence the same ids, each
/// time), moving to the next node after every error. Bounded by `attempts` tries of at most
/// `per_try` each. Returns the results and how many tries it took.
pub async fn append_retrying(
    clients: &mut [HubClient<Channel>],
    next: &mut usize,
    events: &[pb::Event],
    attempts: usize,
    per_try: Duration,
) -> Result<(Vec<pb::AppendResult>, usize), String> {
    let mut errors = Vec::new();
    for attempt in 1..=attempts {
        let i = *next % clients.len();
        match append(&mut clients[i], events.to_vec(), per_try).await {
            Ok(results) => {
                if results.len() != events.len() {
                    return Err(format!(
                        "{} results for {} events",
                        results.len(),
                        events.len()
                    ));
                }
                for (r, e) in results.iter().zip(events) {
                    if r.event_id != e.event_id {
                        return Err(format!(
                            "result for {} where {} was expected",
                            r.event_id, e.event_id
                        ));
                    }
                }
                return Ok((results, attempt));
            }
            Err(status) => {
                if errors.len() < 8 {
                    errors.push(format!(
                        "client #{i}: {:?} {}",
                        status.code(),
                        status.message()
                    ));
                }
                *next += 1;
                tokio::time::sleep(POLL).await;
            }
        }
    }
    Err(format!(
        "no answer after {attempts} tries; first errors: {errors:?}"
    ))
}

/// `(seq, eventId)` of every event Subscribe streams from `cursor` until seq `up_to`
/// (inclusive), checking that seqs come in order, each once, without gaps.
pub async fn subscribe_ids(
    client: &mut HubClient<Channel>,
    cursor: u64,
    up_to: u64,
    within: Duration,
) -> Result<Vec<(u64, String)>, String> {
    let deadline = tokio::time::Instant::now() + within;
    let stream =
        tokio::time::timeout_at(deadline, client.subscribe(pb::SubscribeRequest { cursor }))
            .await
            .map_err(|_| format!("Subscribe({cursor}) did not answer within {within:?}"))?
            .map_err(|status| format!("Subscribe({cursor}) failed: {status:?}"))?;
    collect_stream(stream.into_inner(), cursor, up_to, deadline).await
}

/// Reads an open Subscribe stream up to seq `up_to` (see `subscribe_ids`).
pub async fn collect_stream(
    mut stream: tonic::Streaming<pb::SubscribeResponse>,
    cursor: u64,
    up_to: u64,
    deadline: tokio::time::Instant,
) -> Result<Vec<(u64, String)>, String> {
    let mut out = Vec::new();
    let mut last = cursor;
    while last < up_to {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => {
                return Err(format!(
                    "Subscribe from {cursor}: timed out at seq {last}, waiting for {up_to}"
                ));
            }
            Ok(Err(status)) => {
                return Err(format!(
                    "Subscribe from {cursor}: error at seq {last}: {status:?}"
                ));
            }
            Ok(Ok(None)) => {
                return Err(format!(
                    "Subscribe from {cursor}: stream ended at seq {last}, before {up_to}"
                ));
            }
            Ok(Ok(Some(batch))) => {
                for event in batch.events {
                    if event.seq != last + 1 {
                        return Err(format!(
                            "Subscribe from {cursor}: seq {} ({}) after seq {last}; expected {}",
                            event.seq,
                            event.event_id,
                            last + 1
                        ));
                    }
                    last = event.seq;
                    if event.seq <= up_to {
                        out.push((event.seq, event.event_id));
                    }
                }
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Events

/// The spec-shaped JSON of `super::event` as a protobuf event.
pub fn to_pb(json: &serde_json::Value) -> pb::Event {
    let event: pos_hub::domain::Event =
        serde_json::from_value(json.clone()).expect("a domain event");
    pos_hub::proto::convert::event_to_pb(&event).expect("converts to protobuf")
}

/// An `inventory.adjusted` event with a fresh UUIDv7 (always acceptable: stock counters
/// take any number of adjustments at version 1).
pub fn inventory_event(sku: &str, delta: i64, device: &str, lamport: u64) -> pb::Event {
    let id = uuid::Uuid::now_v7().to_string();
    to_pb(&super::event(
        &id,
        ("inventory", sku),
        1,
        "inventory.adjusted",
        device,
        lamport,
        serde_json::json!({"sku": sku, "delta": delta}),
    ))
}

/// One order as a shop makes it, by `device` from Lamport clock `lamport` on: created with
/// fries, updated, a kitchen ticket raised and acknowledged; when `paid`, paid in full and
/// its ticket done. Each event a fresh UUIDv7.
pub fn order_flow(order_id: &str, device: &str, lamport: u64, paid: bool) -> Vec<pb::Event> {
    let ticket_id = format!("kt-{order_id}");
    let line = |quantity: i64| {
        serde_json::json!([{"id": "li-1", "sku": "FRIES", "name": "Fries",
            "unitPrice": 350, "quantity": quantity}])
    };
    let order = ("order", order_id);
    let ticket = ("kds", ticket_id.as_str());
    let mut steps = vec![
        (
            order,
            1,
            "order.created",
            serde_json::json!({"tableNumber": "7",
            "guestCount": 2, "currency": "EUR", "items": line(1)}),
        ),
        (
            order,
            2,
            "order.updated",
            serde_json::json!({"items": line(2)}),
        ),
        (
            ticket,
            1,
            "kds.ticket.created",
            serde_json::json!({"orderId": order_id,
            "station": "grill", "items": [{"sku": "FRIES", "name": "Fries", "quantity": 2}]}),
        ),
        (ticket, 2, "kds.ticket.ack", serde_json::json!({})),
    ];
    if paid {
        steps.push((
            order,
            3,
            "order.paid",
            serde_json::json!({"payments":
            [{"method": "card", "amount": 700}], "total": 700, "currency": "EUR"}),
        ));
        steps.push((ticket, 3, "kds.ticket.done", serde_json::json!({})));
    }
    steps
        .into_iter()
        .zip(lamport..)
        .map(|((aggregate, version, event_type, payload), clock)| {
            let id = uuid::Uuid::now_v7().to_string();
            to_pb(&super::event(
                &id, aggregate, version, event_type, device, clock, payload,
            ))
        })
        .collect()
}

/// A device SDK handle on `dir/id`, knowing every member of `cluster`.
pub fn device(cluster: &Cluster, dir: &Path, id: &str) -> pos_hub::client::Device {
    let addrs = cluster
        .members()
        .iter()
        .map(|n| cluster.client_addr(*n))
        .collect();
    pos_hub::client::Device::open(pos_hub::client::DeviceConfig {
        data_dir: dir.join(id),
        device_id: id.to_owned(),
        user_id: None,
        hub: pos_hub::client::HubConfig::new(addrs, pos_hub::domain::Realm::new(TENANT, STORE)),
    })
    .expect("opens the device")
}

/// How long a test waits for a whole Bootstrap.
const BOOTSTRAP_WAIT: Duration = Duration::from_secs(30);

/// Every page of a Bootstrap, checked (one seq, only the final page `last`) and merged.
pub async fn bootstrap(
    client: &mut HubClient<Channel>,
    consistency: pb::Consistency,
) -> pb::BootstrapResponse {
    let request = pb::BootstrapRequest {
        consistency: consistency as i32,
    };
    let mut stream = tokio::time::timeout(BOOTSTRAP_WAIT, client.bootstrap(request))
        .await
        .expect("Bootstrap answers")
        .expect("Bootstrap")
        .into_inner();
    let mut whole: Option<pb::BootstrapResponse> = None;
    while let Some(page) = stream.message().await.expect("a page") {
        let all = whole.get_or_insert_with(|| pb::BootstrapResponse {
            seq: page.seq,
            lamport: page.lamport,
            ..Default::default()
        });
        assert!(!all.last, "a page after the last one");
        assert_eq!((page.seq, page.lamport), (all.seq, all.lamport));
        all.orders.extend(page.orders);
        all.tickets.extend(page.tickets);
        all.stocks.extend(page.stocks);
        all.last = page.last;
    }
    let whole = whole.expect("at least one page");
    assert!(whole.last, "the stream ended with its last page");
    whole
}

/// `layer` as Bootstrap sends a state: orders by id, tickets by kind then id, stock by SKU.
pub fn as_sent(
    layer: pos_hub::client::model::Layer,
    seq: u64,
) -> (Vec<pb::Order>, Vec<pb::Ticket>, Vec<pb::Stock>) {
    assert_eq!(layer.last_seq, seq);
    let orders = layer
        .orders
        .into_values()
        .map(pos_hub::proto::convert::order)
        .collect();
    let tickets = sorted_tickets(
        layer
            .tickets
            .into_values()
            .map(pos_hub::proto::convert::ticket)
            .collect(),
    );
    let stocks = layer
        .stock
        .into_values()
        .map(pos_hub::proto::convert::stock)
        .collect();
    (orders, tickets, stocks)
}

pub fn sorted_tickets(mut tickets: Vec<pb::Ticket>) -> Vec<pb::Ticket> {
    tickets.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
    tickets
}

/// The 15 events of `examples/order-flow.jsonl`.
pub fn example_events() -> Vec<pb::Event> {
    std::fs::read_to_string(EXAMPLE)
        .expect("reads the example")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let event: pos_hub::domain::Event =
                serde_json::from_str(line).expect("an example event");
            pos_hub::proto::convert::event_to_pb(&event).expect("converts to protobuf")
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Raw HTTP

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    /// De-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Tries `probe` every POLL until it answers `Ok`, or `within` has passed: then the last
/// `Err` it answered (what it was still waiting for).
pub async fn poll_until<T>(
    within: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    for _ in 0..100_000 {
        match probe().await {
            Ok(done) => return Ok(done),
            Err(waiting) => last = waiting,
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    Err(last)
}

/// `Ok` once `/healthz` at `addr` answers 200; else what it answered.
pub async fn healthz(addr: &str) -> Result<(), String> {
    match http_get(addr, "/healthz").await {
        Ok(r) if r.status == 200 => Ok(()),
        Ok(r) => Err(format!("HTTP {} {}", r.status, r.text())),
        Err(err) => Err(err),
    }
}

/// `GET path` with HTTP/1.0 and `Connection: close` (so the reply is not chunked).
pub async fn http_get(addr: &str, path: &str) -> Result<HttpResponse, String> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    http_exchange(addr, request.as_bytes(), Duration::from_secs(5)).await
}

/// Writes a raw request, reads the reply to EOF, parses it; bounded by `within`.
pub async fn http_exchange(
    addr: &str,
    request: &[u8],
    within: Duration,
) -> Result<HttpResponse, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("write to {addr}: {e}"))?;
        let mut raw = Vec::new();
        // A reset after a complete reply still leaves a parseable reply in `raw`.
        if let Err(err) = stream.read_to_end(&mut raw).await
            && raw.is_empty()
        {
            return Err(format!("read from {addr}: {err}"));
        }
        parse_http_response(&raw)
    };
    tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| format!("HTTP exchange with {addr} took more than {within:?}"))?
}

pub fn parse_http_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(len) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        if rest.len() < len {
            return Err(format!(
                "body shorter ({}) than its content-length ({len})",
                rest.len()
            ));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    for _ in 0..1_000_000 {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line without CRLF")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size {
            return Err("truncated chunk".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
    Err("too many chunks".into())
}

/// A gRPC-web reply: its messages and the trailer frame's text.
#[derive(Debug, Default)]
pub struct GrpcWebReply {
    pub messages: Vec<Vec<u8>>,
    pub trailers: String,
}

/// grpc-status of a gRPC-web reply: in the headers (a trailers-only answer) or in the
/// trailer frame.
pub fn grpc_web_status(response: &HttpResponse, reply: &GrpcWebReply) -> Option<String> {
    response
        .header("grpc-status")
        .map(str::to_owned)
        .or_else(|| {
            reply.trailers.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("grpc-status")
                    .then(|| value.trim().to_owned())
            })
        })
}

/// Splits a gRPC-web body into data frames (flag 0x00) and the trailer frame (flag 0x80).
pub fn parse_grpc_web_frames(mut body: &[u8]) -> Result<GrpcWebReply, String> {
    let mut reply = GrpcWebReply::default();
    for _ in 0..10_000 {
        if body.is_empty() {
            return Ok(reply);
        }
        if body.len() < 5 {
            return Err(format!("a frame header of {} bytes", body.len()));
        }
        let flag = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let frame = body
            .get(5..5 + len)
            .ok_or_else(|| format!("a frame of {len} bytes, {} left", body.len() - 5))?;
        if flag & 0x80 != 0 {
            reply.trailers.push_str(&String::from_utf8_lossy(frame));
        } else {
            reply.messages.push(frame.to_vec());
        }
        body = &body[5 + len..];
    }
    Err("too many frames".into())
}

/// A gRPC-web call over HTTP/1.1 (`method` is its path, `/pos.v1.Hub/Hello`), as a browser
/// makes it from a page of `origin`: its HTTP reply and frames.
pub async fn grpc_web_call(
    addr: &str,
    method: &str,
    message: &impl prost::Message,
    origin: &str,
) -> (HttpResponse, GrpcWebReply) {
    let message = message.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let mut raw = format!(
        "POST {method} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/grpc-web+proto\r\n\
         Accept: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nX-User-Agent: connect-es/2.0.0\r\n\
         Origin: {origin}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let response = http_exchange(addr, &raw, Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("gRPC-web {method}: {e}"));
    let frames = parse_grpc_web_frames(&response.body)
        .unwrap_or_else(|e| panic!("gRPC-web {method}: bad frames ({e}): {response:?}"));
    (response, frames)
}

/// The one message of a gRPC-web call that succeeded (HTTP 200, a gRPC-web content type,
/// grpc-status 0), decoded.
pub fn grpc_web_answer<M: prost::Message + Default>(
    response: &HttpResponse,
    reply: &GrpcWebReply,
) -> M {
    let ctx = format!("{response:?} {reply:?}");
    assert_eq!(response.status, 200, "{ctx}");
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/grpc-web")),
        "{ctx}"
    );
    assert_eq!(
        grpc_web_status(response, reply).as_deref(),
        Some("0"),
        "{ctx}"
    );
    assert_eq!(reply.messages.len(), 1, "{ctx}");
    M::decode(reply.messages[0].as_slice())
        .unwrap_or_else(|e| panic!("not a {} ({e}): {ctx}", std::any::type_name::<M>()))
}

// ---------------------------------------------------------------------------------------
// The CLI

/// A `pos-hub` process a test runs by itself (outside a `Cluster`), its stdout and stderr
/// in a log file: killed when dropped, and its log's tail printed if the test failed.
pub struct Process {
    child: Child,
    log_path: PathBuf,
}

impl Process {
    /// Starts `pos-hub ARGS…` in `cwd`, logging to `log_path` (does not wait).
    pub fn start(args: &[&str], cwd: &Path, log_path: PathBuf) -> Process {
        let log = std::fs::File::create(&log_path).expect("creates the log");
        let child = Command::new(BIN)
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clones the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawns `pos-hub {}`: {e}", args.join(" ")));
        Process { child, log_path }
    }

    /// How it exited, if it has exited (by itself).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path, lines)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- {} tail:\n{}",
                self.log_path.display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
    }
}

/// Runs `pos-hub ARGS…` (in `cwd`) to completion, killing it after `within`.
pub fn run_cli(args: &[&str], cwd: &Path, within: Duration) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns pos-hub");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut buf);
        buf
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("polls the CLI") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`pos-hub {}` did not finish within {within:?}; stderr so far: {}",
                args.join(" "),
                String::from_utf8_lossy(&err_reader.join().unwrap_or_default())
            );
        }
        std::thread::sleep(POLL);
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// `run_cli` off the async runtime's worker threads.
pub async fn run_cli_async(args: Vec<String>, cwd: PathBuf, within: Duration) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&args, &cwd, within)
    })
    .await
    .expect("the CLI runner does not panic")
}
