//! A local group for the bench: `pos-hub serve` child processes on loopback, with fresh
//! data dirs, started and killed by the bench.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pos_hub::proto::pb;
use pos_hub::proto::pb::hub_client::HubClient;
use tonic::transport::{Channel, Endpoint};

use super::BenchError;

/// One node the bench started.
pub struct Node {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
    /// Its stdout and stderr.
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Node {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self, exe: &Path) -> Result<(), BenchError> {
        let log = std::fs::File::create(&self.log).map_err(|e| BenchError::io(&self.log, e))?;
        let err = log.try_clone().map_err(|e| BenchError::io(&self.log, e))?;
        let child = Command::new(exe)
            .args(&self.args)
            .env("RUST_LOG", node_log_filter())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| BenchError::io(exe, e))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, as a power cut or a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the started nodes log (their `RUST_LOG`): `$POS_HUB_BENCH_NODE_LOG` (default
/// `warn`), and always the store's INFO lines, where `--hold` reads its snapshot times.
pub fn node_log_filter() -> String {
    let base = std::env::var("POS_HUB_BENCH_NODE_LOG").unwrap_or_else(|_| "warn".to_owned());
    format!("{base},pos_hub::store=info")
}

/// The group; every node is killed when it is dropped.
pub struct LocalCluster {
    pub nodes: Vec<Node>,
    exe: PathBuf,
    pub dir: PathBuf,
    keep: bool,
    /// The extra `serve` flags every node gets.
    extra: Vec<String>,
}

pub fn free_port() -> Result<u16, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| BenchError::io(Path::new("127.0.0.1:0"), e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| BenchError::io(Path::new("127.0.0.1:0"), e))
}

pub fn channel(addr: &str) -> Result<Channel, BenchError> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| BenchError::Setup(format!("address {addr}: {e}")))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect_lazy())
}

impl LocalCluster {
    /// Starts `nodes` nodes of the `pos-hub` executable `exe` under `dir` and waits until
    /// they agree on a leader.
    pub async fn start(
        exe: &Path,
        nodes: usize,
        dir: PathBuf,
        keep: bool,
        extra: &[String],
    ) -> Result<LocalCluster, BenchError> {
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::io(&dir, e))?;
        let mut ports = Vec::new();
        for _ in 0..nodes {
            ports.push((free_port()?, free_port()?));
        }
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| format!("{}=127.0.0.1:{peer}/127.0.0.1:{client}", i + 1))
            .collect();
        let initial = initial.join(",");
        let mut cluster = LocalCluster {
            nodes: Vec::new(),
            exe: exe.to_owned(),
            dir: dir.clone(),
            keep,
            extra: extra.to_vec(),
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let id = i as u64 + 1;
            let data_dir = dir.join(format!("node{id}"));
            let client_addr = format!("127.0.0.1:{client}");
            let mut args: Vec<String> = [
                "serve",
                "--no-mdns",
                "--insecure-no-auth",
                "--node-id",
                &id.to_string(),
                "--listen",
                &client_addr,
                "--peer-listen",
                &format!("127.0.0.1:{peer}"),
                "--initial-cluster",
                &initial,
                "--data-dir",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.push(data_dir.display().to_string());
            args.extend(extra.iter().cloned());
            let mut node = Node {
                id,
                client_addr,
                peer_addr: format!("127.0.0.1:{peer}"),
                data_dir,
                log: dir.join(format!("node{id}.log")),
                args,
                child: None,
            };
            node.spawn(&cluster.exe)?;
            cluster.nodes.push(node);
        }
        cluster.wait_leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// The `pos-hub` executable the nodes run.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Starts node `id` blank (`serve --join`), with the same extra flags as the others; it
    /// belongs to the group once `pos-hub cluster add-node` adds it.
    pub fn spawn_joining(&mut self, id: u64) -> Result<&Node, BenchError> {
        if self.node(id).is_some() {
            return Err(BenchError::Setup(format!("node {id} exists already")));
        }
        let (client, peer) = (free_port()?, free_port()?);
        let data_dir = self.dir.join(format!("node{id}"));
        let client_addr = format!("127.0.0.1:{client}");
        let peer_addr = format!("127.0.0.1:{peer}");
        let mut args: Vec<String> = [
            "serve",
            "--no-mdns",
            "--insecure-no-auth",
            "--join",
            "--node-id",
            &id.to_string(),
            "--listen",
            &client_addr,
            "--peer-listen",
            &peer_addr,
            "--data-dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(data_dir.display().to_string());
        args.extend(self.extra.iter().cloned());
        let mut node = Node {
            id,
            client_addr,
            peer_addr,
            data_dir,
            log: self.dir.join(format!("node{id}.log")),
            args,
            child: None,
        };
        node.spawn(&self.exe)?;
        self.nodes.push(node);
        Ok(&self.nodes[self.nodes.len() - 1])
    }

    /// Kills node `id` and forgets it (its data dir and log stay until the group is dropped).
    pub fn forget(&mut self, id: u64) {
        if let Some(i) = self.nodes.iter().position(|n| n.id == id) {
            self.nodes.remove(i).kill();
        }
    }

    pub fn node(&self, id: u64) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn node_mut(&mut self, id: u64) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.id == id)
    }

    pub fn restart(&mut self, id: u64) -> Result<(), BenchError> {
        let exe = self.exe.clone();
        let node = self
            .node_mut(id)
            .ok_or_else(|| BenchError::Setup(format!("no node {id}")))?;
        node.kill();
        node.spawn(&exe)
    }

    /// The leader every running node names, once they agree.
    pub async fn wait_leader(&self, within: Duration) -> Result<u64, BenchError> {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = Vec::new();
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                let mut client = HubClient::new(channel(&node.client_addr)?);
                let hello = tokio::time::timeout(
                    Duration::from_secs(1),
                    client.hello(pb::HelloRequest::default()),
                )
                .await;
                if let Ok(Ok(hello)) = hello {
                    seen.push(hello.into_inner().leader_id);
                }
            }
            let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
            if let Some(&leader) = seen.first()
                && leader != 0
                && seen.len() == running
                && seen.iter().all(|l| *l == leader)
                && self.node(leader).is_some_and(|n| n.child.is_some())
            {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                return Err(BenchError::Setup(format!(
                    "the group did not agree on a leader within {within:?} (logs in {})",
                    self.dir.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
