//! pos-hub-bench (also run as `pos-hub bench`): measured speed of a real group. It starts
//! its own nodes (the `pos-hub` binary, `serve`, on loopback, fresh data dirs) or targets
//! given addresses, drives appending
//! clients in a closed or open loop, follows the log on another node for the propagation
//! latency, and reads what each node process cost from `/proc`.
//!
//! Latencies go into HDR histograms (microseconds, 3 significant digits). In the open loop a
//! latency counts from the time the append was scheduled, not sent, so a stall shows in
//! the tail instead of slowing the offered load (no coordinated omission).

pub mod cluster;
pub mod hold;
pub mod load;
pub mod orders;
pub mod peers;
pub mod procstat;
mod report;
pub mod snaplog;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

pub use report::{BenchReport, Percentiles};

/// Generated client of the two etcd calls `--compare` makes (`proto/etcd/kv.proto`).
#[allow(clippy::all, clippy::pedantic)]
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}

use load::{Pacing, Shared};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    /// The group did not accept an event the bench sent as valid.
    #[error("the group refused an event of the fill: {0}")]
    Refused(String),
}

impl BenchError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        BenchError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Microseconds, 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // Bounds that are valid constants: creation cannot fail.
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
    })
}

pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    histogram.saturating_record(elapsed.as_micros().max(1) as u64);
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    /// Nodes to start (ignored with `targets`).
    pub nodes: usize,
    /// The `pos-hub` executable the started nodes run (ignored with `targets`).
    pub hub_bin: PathBuf,
    /// Existing nodes' client addresses instead of starting a group.
    pub targets: Vec<String>,
    pub clients: usize,
    pub duration: Duration,
    pub pacing: Pacing,
    /// Live subscribers besides the relay one, spread over the nodes.
    pub subscribers: usize,
    /// SIGKILL the leader halfway, measure the failover, restart it and time its catch-up.
    pub failover: bool,
    /// After the load, read the whole log from cursor 0 on one node.
    pub catch_up: bool,
    /// Where the group's data dirs go (and the fsync probe runs).
    pub dir: PathBuf,
    pub keep: bool,
    /// Extra `serve` flags for the started nodes.
    pub serve_args: Vec<String>,
    /// Print a progress line every second.
    pub progress: bool,
    /// Then run the same load against NATS JetStream and etcd (`peers`).
    pub compare: bool,
    /// First fill the started group with order flows and measure a node holding them
    /// (`hold`).
    pub hold: Option<hold::HoldPlan>,
}

/// Runs the plan and returns the measurements.
pub async fn run(plan: &BenchPlan) -> Result<BenchReport, BenchError> {
    let fsync = procstat::fsync_probe(&plan.dir.join("probe"), 200)?;
    let mut cluster = if plan.targets.is_empty() {
        Some(
            cluster::LocalCluster::start(
                &plan.hub_bin,
                plan.nodes,
                plan.dir.clone(),
                plan.keep,
                &plan.serve_args,
            )
            .await?,
        )
    } else {
        None
    };
    let addrs: Vec<String> = match &cluster {
        Some(c) => c.nodes.iter().map(|n| n.client_addr.clone()).collect(),
        None => plan.targets.clone(),
    };
    let leader = match &cluster {
        Some(c) => Some(c.wait_leader(Duration::from_secs(30)).await?),
        None => None,
    };
    let hold = match (cluster.as_mut(), &plan.hold) {
        (Some(c), Some(hold)) => Some(hold::run(c, hold, plan.clients, plan.progress).await?),
        _ => None,
    };
    let pids = |c: &Option<cluster::LocalCluster>| -> Vec<(u64, u32)> {
        c.iter()
            .flat_map(|c| c.nodes.iter().filter_map(|n| n.pid().map(|p| (n.id, p))))
            .collect()
    };
    let before: Vec<(u64, procstat::ProcSample)> = pids(&cluster)
        .into_iter()
        .filter_map(|(id, pid)| procstat::sample(pid).ok().map(|s| (id, s)))
        .collect();
    let first_seq = load::last_seq(&addrs[0]).await?;

    let shared = Shared::new();
    // The relay subscriber follows the last node; appends through the others count.
    let relay_index = addrs.len() - 1;
    let relay = tokio::spawn(load::relay(
        addrs[relay_index].clone(),
        relay_index,
        first_seq,
        shared.clone(),
    ));
    let followers: Vec<_> = (0..plan.subscribers)
        .map(|i| tokio::spawn(load::follower(addrs.clone(), i, first_seq, shared.clone())))
        .collect();
    let progress = plan.progress.then(|| {
        let shared = shared.clone();
        let total = plan.duration;
        tokio::spawn(async move {
            let started = Instant::now();
            let mut last = 0;
            while started.elapsed() < total {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let acked = shared.acked.load(Ordering::Relaxed);
                eprint!(
                    "\r  {:>3}/{} s  {:>8} appends acknowledged  {:>7}/s ",
                    started.elapsed().as_secs().min(total.as_secs()),
                    total.as_secs(),
                    acked,
                    acked - last
                );
                last = acked;
            }
            eprintln!();
        })
    });
    let killer = match (plan.failover, leader) {
        (true, Some(leader)) => {
            let half = plan.duration / 2;
            Some((leader, tokio::spawn(tokio::time::sleep(half))))
        }
        _ => None,
    };
    let load = {
        let target = Arc::new(load::PosHub {
            addrs: addrs.clone(),
        });
        let load = load::append_load(
            target,
            plan.clients,
            plan.pacing,
            plan.duration,
            shared.clone(),
        );
        tokio::pin!(load);
        match killer {
            Some((leader, mut timer)) => {
                // Kill when the timer fires, while the load runs.
                tokio::select! {
                    stats = &mut load => stats?,
                    _ = &mut timer => {
                        if let Some(c) = cluster.as_mut()
                            && let Some(node) = c.node_mut(leader)
                        {
                            shared.mark_kill();
                            node.kill();
                        }
                        load.await?
                    }
                }
            }
            None => load.await?,
        }
    };
    // Let the relay subscriber see the last appends.
    tokio::time::sleep(Duration::from_millis(500)).await;
    shared.stop.store(true, Ordering::SeqCst);
    if let Some(p) = progress {
        let _ = p.await;
    }
    let (relay_latency, _) = relay
        .await
        .map_err(|e| BenchError::Setup(format!("relay task: {e}")))??;
    let mut delivered = 0;
    for f in followers {
        delivered += f
            .await
            .map_err(|e| BenchError::Setup(format!("subscriber task: {e}")))??;
    }
    let after: Vec<(u64, procstat::ProcSample)> = pids(&cluster)
        .into_iter()
        .filter_map(|(id, pid)| procstat::sample(pid).ok().map(|s| (id, s)))
        .collect();
    let live = addrs
        .iter()
        .enumerate()
        .find(|(i, _)| leader.is_none_or(|l| !plan.failover || *i as u64 + 1 != l))
        .map(|(_, a)| a.clone())
        .unwrap_or_else(|| addrs[0].clone());
    let last = load::last_seq(&live).await?;

    // A restarted (killed) leader's time to catch up with the group.
    let mut restart_catch_up = None;
    if let (true, Some(leader), Some(c)) = (plan.failover, leader, cluster.as_mut()) {
        let started = Instant::now();
        c.restart(leader)?;
        let addr = c
            .node(leader)
            .map(|n| n.client_addr.clone())
            .unwrap_or_default();
        let deadline = started + Duration::from_secs(120);
        while Instant::now() < deadline {
            if load::last_seq(&addr).await.is_ok_and(|s| s >= last) {
                restart_catch_up = Some(started.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let catch_up = if plan.catch_up && last > 0 {
        Some((last, load::catch_up(&live, last, load::Decode::Full).await?))
    } else {
        None
    };
    let data_bytes: Vec<(u64, u64)> = cluster
        .iter()
        .flat_map(|c| {
            c.nodes
                .iter()
                .map(|n| (n.id, procstat::disk_usage(&n.data_dir)))
        })
        .collect();
    // The group is stopped before the peers run, so they have the machine to themselves.
    drop(cluster);
    let mut report = report::build(report::Inputs {
        plan,
        nodes: addrs.len(),
        leader,
        load,
        relay: relay_latency,
        delivered,
        events_in_log: last,
        before,
        after,
        data_bytes,
        fsync,
        restart_catch_up,
        catch_up,
        event_bytes: load::event_bytes()?,
        hold,
    });
    if plan.compare {
        report.peers = peers::compare(plan).await;
    }
    Ok(report)
}
