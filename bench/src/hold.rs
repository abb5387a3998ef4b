//! `--hold N`: fill the group with N events, let it snapshot and purge, then read what one
//! node holding them costs at rest: resident memory and bytes in its data dir, against the
//! events' own size as JSON (the spec's wire format).
//!
//! The events go in batches (`--hold-batch`, a till flushing its outbox after a night
//! offline), so that a million of them take minutes, not an evening.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pos_hub::proto::pb::hub_client::HubClient;
use pos_hub::proto::{convert, pb};
use serde::Serialize;

use super::BenchError;
use super::cluster::{LocalCluster, channel};
use super::load::domain_event;
use super::procstat;

/// What one node holding the filled log costs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HoldNode {
    pub node: u64,
    pub rss_mb: f64,
    pub data_dir_mb: f64,
    /// Data dir bytes over the events' JSON bytes.
    pub data_over_json: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HoldReport {
    pub events: u64,
    pub events_per_append: usize,
    pub fill_seconds: f64,
    /// The events' size as JSON, as devices send them.
    pub json_mb: f64,
    /// How long the data dirs took to settle (snapshot built, log purged).
    pub settle_seconds: f64,
    pub nodes: Vec<HoldNode>,
}

/// Appends `events` events in batches of `batch` from `clients` concurrent clients spread
/// over the nodes, then waits until the data dirs stop changing and measures each node.
pub async fn run(
    cluster: &LocalCluster,
    events: u64,
    batch: usize,
    clients: usize,
    progress: bool,
) -> Result<HoldReport, BenchError> {
    let addrs: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.client_addr.clone())
        .collect();
    let started = Instant::now();
    let claimed = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let json = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in 0..clients {
        let addr = addrs[client % addrs.len()].clone();
        let (claimed, acked, json) = (claimed.clone(), acked.clone(), json.clone());
        tasks.push(tokio::spawn(async move {
            fill(client, &addr, events, batch, &claimed, &acked, &json).await
        }));
    }
    let ticker = progress.then(|| {
        let acked = acked.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let done = acked.load(Ordering::Relaxed);
                eprint!("\r  filling: {done:>9}/{events} events ");
            }
        })
    });
    for task in tasks {
        task.await
            .map_err(|e| BenchError::Setup(format!("a fill task failed: {e}")))??;
    }
    if let Some(t) = ticker {
        t.abort();
        eprintln!();
    }
    let fill_seconds = started.elapsed().as_secs_f64();

    let settle_started = Instant::now();
    settle(cluster).await;
    let settle_seconds = settle_started.elapsed().as_secs_f64();
    let json_bytes = json.load(Ordering::Relaxed);
    let mut nodes = Vec::new();
    for node in &cluster.nodes {
        let Some(pid) = node.pid() else { continue };
        let sample = procstat::sample(pid)?;
        let data = procstat::disk_usage(&node.data_dir);
        nodes.push(HoldNode {
            node: node.id,
            rss_mb: sample.rss_bytes as f64 / (1 << 20) as f64,
            data_dir_mb: data as f64 / (1 << 20) as f64,
            data_over_json: data as f64 / json_bytes.max(1) as f64,
        });
    }
    Ok(HoldReport {
        events,
        events_per_append: batch,
        fill_seconds,
        json_mb: json_bytes as f64 / (1 << 20) as f64,
        settle_seconds,
        nodes,
    })
}

/// One filling client: claims batches until `events` are claimed; retries a batch that got
/// no answer (the eventIds are the same, so a retry cannot add an event twice).
async fn fill(
    client: usize,
    addr: &str,
    events: u64,
    batch: usize,
    claimed: &AtomicU64,
    acked: &AtomicU64,
    json: &AtomicU64,
) -> Result<(), BenchError> {
    let mut hub = HubClient::new(channel(addr)?);
    loop {
        let first = claimed.fetch_add(batch as u64, Ordering::SeqCst);
        if first >= events {
            return Ok(());
        }
        let last = (first + batch as u64).min(events);
        let mut request = pb::AppendRequest::default();
        for n in first..last {
            let event = domain_event(client, n + 1);
            let bytes = serde_json::to_vec(&event)
                .map_err(|e| BenchError::Setup(format!("bench event as JSON: {e}")))?;
            json.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            request.events.push(
                convert::event_to_pb(&event)
                    .map_err(|e| BenchError::Setup(format!("bench event: {e}")))?,
            );
        }
        let mut tries = 0;
        loop {
            tries += 1;
            let answer =
                tokio::time::timeout(Duration::from_secs(10), hub.append(request.clone())).await;
            match answer {
                Ok(Ok(response)) => {
                    let results = &response.get_ref().results;
                    let stored = |r: &pb::AppendResult| {
                        r.status == pb::AppendStatus::Accepted as i32
                            || r.status == pb::AppendStatus::Duplicate as i32
                    };
                    if let Some(bad) = results.iter().find(|r| !stored(r)) {
                        return Err(BenchError::Setup(format!(
                            "the group refused a bench event: {} {}",
                            bad.code, bad.message
                        )));
                    }
                    acked.fetch_add(results.len() as u64, Ordering::Relaxed);
                    break;
                }
                _ if tries < 20 => tokio::time::sleep(Duration::from_millis(200)).await,
                Ok(Err(status)) => {
                    return Err(BenchError::Setup(format!(
                        "appending a batch on {addr} failed {tries} times: {}",
                        status.message()
                    )));
                }
                Err(_) => {
                    return Err(BenchError::Setup(format!(
                        "appending a batch on {addr} got no answer {tries} times"
                    )));
                }
            }
        }
    }
}

/// Waits until no node's data dir changed size for 5 s in a row (its last snapshot is
/// built and the log purged), at most 3 minutes.
async fn settle(cluster: &LocalCluster) {
    let sizes = || -> Vec<u64> {
        cluster
            .nodes
            .iter()
            .map(|n| procstat::disk_usage(&n.data_dir))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = sizes();
    let mut steady = 0;
    while steady < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = sizes();
        steady = if now == last { steady + 1 } else { 0 };
        last = now;
    }
}
