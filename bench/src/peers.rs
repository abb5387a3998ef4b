//! `--compare`: the same appending clients and relay subscriber against the
//! systems a shop might pick instead, each a 3-node group on loopback on this machine, at
//! the same durability (every acknowledged write fsynced on a majority):
//! - NATS JetStream: an R3 file stream with `sync_interval: always`, publish with ack
//!   (the event id as `Nats-Msg-Id`), an ordered consumer on another server for relay;
//! - etcd 3: one put per event under the store's prefix, a watch on another member.
//!
//! The bench installs nothing: `bench/peers.sh` does. A missing peer is reported as such.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use pos_hub::proto::pb;
use serde::Serialize;

use super::cluster::{channel, free_port};
use super::load::{self, Appender, Shared, Target};
use super::{BenchError, BenchPlan, Percentiles, etcd, histogram};

/// One peer's results, beside pos-hub's.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PeerReport {
    pub system: String,
    pub version: String,
    pub durability: String,
    /// Why it was not measured (not installed, failed to start).
    pub skipped: Option<String>,
    pub appends_acked: u64,
    pub appends_failed: u64,
    pub appends_per_second: f64,
    pub append_latency_ms: Option<Percentiles>,
    pub relay_latency_ms: Option<Percentiles>,
}

impl PeerReport {
    fn skipped(system: &str, why: String) -> PeerReport {
        PeerReport {
            system: system.into(),
            version: String::new(),
            durability: String::new(),
            skipped: Some(why),
            appends_acked: 0,
            appends_failed: 0,
            appends_per_second: 0.0,
            append_latency_ms: None,
            relay_latency_ms: None,
        }
    }
}

/// Child processes killed on drop.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn version_of(program: &str, flag: &str) -> Option<String> {
    let out = Command::new(program).arg(flag).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // "nats-server: v2.15.1", "etcd Version: 3.4.23": the last word is the version.
    text.lines()
        .next()
        .and_then(|l| l.split_whitespace().last())
        .map(|v| v.trim_start_matches('v').to_owned())
}

fn spawn(program: &str, args: &[String], log: &Path) -> Result<Child, BenchError> {
    let out = std::fs::File::create(log).map_err(|e| BenchError::io(log, e))?;
    let err = out.try_clone().map_err(|e| BenchError::io(log, e))?;
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| BenchError::io(Path::new(program), e))
}

/// Runs the plan's load against every peer in turn.
pub async fn compare(plan: &BenchPlan) -> Vec<PeerReport> {
    let mut reports = Vec::new();
    for (system, run) in [("NATS JetStream", Peer::Nats), ("etcd", Peer::Etcd)] {
        let dir = plan.dir.join(system.replace(' ', "-").to_lowercase());
        let report = match run.measure(plan, &dir).await {
            Ok(report) => report,
            Err(err) => PeerReport::skipped(system, err.to_string()),
        };
        let _ = std::fs::remove_dir_all(&dir);
        reports.push(report);
    }
    reports
}

#[derive(Clone, Copy)]
enum Peer {
    Nats,
    Etcd,
}

impl Peer {
    async fn measure(self, plan: &BenchPlan, dir: &Path) -> Result<PeerReport, BenchError> {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
        match self {
            Peer::Nats => nats(plan, dir).await,
            Peer::Etcd => etcd(plan, dir).await,
        }
    }
}

/// The load and the relay subscriber against one target, as for pos-hub.
async fn drive<T: Target>(
    plan: &BenchPlan,
    target: Arc<T>,
    relay: impl std::future::Future<Output = Result<Histogram<u64>, BenchError>> + Send + 'static,
    shared: Arc<Shared>,
) -> Result<(load::AppendStats, Histogram<u64>), BenchError> {
    let relay = tokio::spawn(relay);
    // Give the relay subscriber a moment to be in place before the first append.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = load::append_load(
        target,
        plan.clients,
        plan.pacing,
        plan.duration,
        shared.clone(),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    shared.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let relay = relay
        .await
        .map_err(|e| BenchError::Setup(format!("relay task: {e}")))??;
    Ok((stats, relay))
}

fn report(
    system: &str,
    version: String,
    durability: &str,
    stats: &load::AppendStats,
    relay: &Histogram<u64>,
) -> PeerReport {
    let seconds = stats.elapsed.as_secs_f64();
    PeerReport {
        system: system.into(),
        version,
        durability: durability.into(),
        skipped: None,
        appends_acked: stats.acked,
        appends_failed: stats.failed,
        appends_per_second: if seconds > 0.0 {
            stats.acked as f64 / seconds
        } else {
            0.0
        },
        append_latency_ms: Percentiles::of(&stats.latency),
        relay_latency_ms: Percentiles::of(relay),
    }
}

fn json(event: &pb::Event) -> bytes::Bytes {
    // The event as a device would send it over HTTP: its JSON.
    let value = pos_hub::proto::convert::event_from_pb(event)
        .ok()
        .and_then(|e| serde_json::to_vec(&e).ok())
        .unwrap_or_default();
    bytes::Bytes::from(value)
}

const SUBJECT: &str = "pos.t-demo.s-001";

struct Nats {
    clients: Vec<async_nats::jetstream::Context>,
}

struct NatsAppender(async_nats::jetstream::Context);

impl Appender for NatsAppender {
    async fn append(&mut self, event: &pb::Event) -> bool {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.event_id.as_str());
        let publish = async {
            let ack = self
                .0
                .publish_with_headers(SUBJECT, headers, json(event))
                .await
                .ok()?;
            ack.await.ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(5), publish).await,
            Ok(Some(_))
        )
    }
}

impl Target for Nats {
    type Appender = NatsAppender;

    fn nodes(&self) -> usize {
        self.clients.len()
    }

    fn connect(&self, node: usize) -> Result<NatsAppender, BenchError> {
        Ok(NatsAppender(self.clients[node].clone()))
    }
}

async fn nats(plan: &BenchPlan, dir: &Path) -> Result<PeerReport, BenchError> {
    const SYSTEM: &str = "NATS JetStream";
    let version = version_of("nats-server", "--version").ok_or_else(|| {
        BenchError::Setup("nats-server is not installed (run bench/peers.sh)".into())
    })?;
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<Result<_, BenchError>>()?;
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, route)| format!("nats-route://127.0.0.1:{route}"))
        .collect();
    let mut processes = Processes(Vec::new());
    for (i, (client, route)) in ports.iter().enumerate() {
        let conf = dir.join(format!("n{i}.conf"));
        let store: PathBuf = dir.join(format!("n{i}"));
        let text = format!(
            "server_name: n{i}\nlisten: 127.0.0.1:{client}\n\
             jetstream {{ store_dir: \"{}\", sync_interval: always }}\n\
             cluster {{ name: bench, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
            store.display(),
            routes.join(", ")
        );
        std::fs::write(&conf, text).map_err(|e| BenchError::io(&conf, e))?;
        processes.0.push(spawn(
            "nats-server",
            &["-c".into(), conf.display().to_string()],
            &dir.join(format!("n{i}.log")),
        )?);
    }
    let mut contexts = Vec::new();
    for (client, _) in &ports {
        let addr = format!("127.0.0.1:{client}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let connection = loop {
            match async_nats::connect(&addr).await {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => {
                    return Err(BenchError::Setup(format!("nats-server on {addr}: {e}")));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        contexts.push(async_nats::jetstream::new(connection));
    }
    // The stream: R3 on file storage. The cluster needs a moment to elect its meta leader.
    let config = async_nats::jetstream::stream::Config {
        name: "POS".into(),
        subjects: vec!["pos.>".into()],
        num_replicas: 3,
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let stream = loop {
        match contexts[0].get_or_create_stream(config.clone()).await {
            Ok(stream) => break stream,
            Err(e) if Instant::now() > deadline => {
                return Err(BenchError::Setup(format!("creating the R3 stream: {e}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    drop(stream);
    let shared = Shared::new();
    let relay = {
        let (context, shared) = (contexts[2].clone(), shared.clone());
        async move {
            let stream = context
                .get_stream("POS")
                .await
                .map_err(|e| BenchError::Setup(format!("relay: the stream: {e}")))?;
            let consumer = stream
                .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                    deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::New,
                    ..Default::default()
                })
                .await
                .map_err(|e| BenchError::Setup(format!("relay: the consumer: {e}")))?;
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| BenchError::Setup(format!("relay: messages: {e}")))?;
            let mut latency = histogram();
            while !shared.stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(next) =
                    tokio::time::timeout(Duration::from_millis(200), messages.next()).await
                else {
                    continue;
                };
                let Some(Ok(message)) = next else { break };
                if let Some(id) = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.as_str().to_owned())
                {
                    shared.seen([id.as_str()], 2, &mut latency);
                }
            }
            Ok(latency)
        }
    };
    let target = Arc::new(Nats { clients: contexts });
    let (stats, relay) = drive(plan, target, relay, shared).await?;
    drop(processes);
    Ok(report(
        SYSTEM,
        version,
        "R3 file stream, sync_interval: always (fsync before every ack), publish with ack",
        &stats,
        &relay,
    ))
}

const ETCD_PREFIX: &str = "/pos/t-demo/s-001/";

struct Etcd {
    addrs: Vec<String>,
}

struct EtcdAppender(etcd::kv_client::KvClient<tonic::transport::Channel>);

impl Appender for EtcdAppender {
    async fn append(&mut self, event: &pb::Event) -> bool {
        let put = etcd::PutRequest {
            key: format!("{ETCD_PREFIX}{}", event.event_id).into_bytes(),
            value: json(event).to_vec(),
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.0.put(put)).await,
            Ok(Ok(_))
        )
    }
}

impl Target for Etcd {
    type Appender = EtcdAppender;

    fn nodes(&self) -> usize {
        self.addrs.len()
    }

    fn connect(&self, node: usize) -> Result<EtcdAppender, BenchError> {
        Ok(EtcdAppender(etcd::kv_client::KvClient::new(channel(
            &self.addrs[node],
        )?)))
    }
}

async fn etcd(plan: &BenchPlan, dir: &Path) -> Result<PeerReport, BenchError> {
    const SYSTEM: &str = "etcd";
    let version = version_of("etcd", "--version")
        .ok_or_else(|| BenchError::Setup("etcd is not installed (run bench/peers.sh)".into()))?;
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<Result<_, BenchError>>()?;
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
        .collect();
    let mut processes = Processes(Vec::new());
    for (i, (client, peer)) in ports.iter().enumerate() {
        let args: Vec<String> = vec![
            format!("--name=e{i}"),
            format!("--data-dir={}", dir.join(format!("e{i}")).display()),
            format!("--listen-client-urls=http://127.0.0.1:{client}"),
            format!("--advertise-client-urls=http://127.0.0.1:{client}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-cluster={}", initial.join(",")),
            "--initial-cluster-state=new".into(),
            "--initial-cluster-token=pos-hub-bench".into(),
        ];
        processes
            .0
            .push(spawn("etcd", &args, &dir.join(format!("e{i}.log")))?);
    }
    let addrs: Vec<String> = ports
        .iter()
        .map(|(client, _)| format!("127.0.0.1:{client}"))
        .collect();
    // Ready when a put is acknowledged (the members have elected a leader).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut probe = etcd::kv_client::KvClient::new(channel(&addrs[0])?);
    loop {
        let put = etcd::PutRequest {
            key: b"/pos-bench-ready".to_vec(),
            value: b"1".to_vec(),
        };
        match tokio::time::timeout(Duration::from_secs(2), probe.put(put)).await {
            Ok(Ok(_)) => break,
            _ if Instant::now() > deadline => {
                return Err(BenchError::Setup(
                    "the etcd members did not form a group".into(),
                ));
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let shared = Shared::new();
    let relay = {
        let (addr, shared) = (addrs[2].clone(), shared.clone());
        async move {
            let mut watch = etcd::watch_client::WatchClient::new(channel(&addr)?);
            let mut range_end = ETCD_PREFIX.as_bytes().to_vec();
            if let Some(last) = range_end.last_mut() {
                *last += 1;
            }
            let create = etcd::WatchRequest {
                request_union: Some(etcd::watch_request::RequestUnion::CreateRequest(
                    etcd::WatchCreateRequest {
                        key: ETCD_PREFIX.as_bytes().to_vec(),
                        range_end,
                        start_revision: 0,
                    },
                )),
            };
            // The request stream stays open: closing it would end the watch.
            let requests = futures::stream::iter([create]).chain(futures::stream::pending());
            let mut responses = watch
                .watch(requests)
                .await
                .map_err(|e| BenchError::Setup(format!("etcd watch: {e}")))?
                .into_inner();
            let mut latency = histogram();
            while !shared.stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(next) =
                    tokio::time::timeout(Duration::from_millis(200), responses.message()).await
                else {
                    continue;
                };
                let Ok(Some(response)) = next else { break };
                let ids: Vec<String> = response
                    .events
                    .iter()
                    .filter_map(|e| e.kv.as_ref())
                    .filter_map(|kv| {
                        String::from_utf8_lossy(&kv.key)
                            .strip_prefix(ETCD_PREFIX)
                            .map(str::to_owned)
                    })
                    .collect();
                shared.seen(ids.iter().map(String::as_str), 2, &mut latency);
            }
            Ok(latency)
        }
    };
    let target = Arc::new(Etcd { addrs });
    let (stats, relay) = drive(plan, target, relay, shared).await?;
    drop(processes);
    Ok(report(
        SYSTEM,
        version,
        "3 members, one put per event (the WAL is fsynced before a put is acknowledged)",
        &stats,
        &relay,
    ))
}
