//! `--hold N`: fill the group with N events of order flows (`orders`), as a shop makes
//! them, and measure what a node holding them costs, against issue 18's targets:
//! - resident memory at a quarter of the fill and at the end, each read after the data
//!   dirs settled (snapshot built, log purged), and their ratio;
//! - the data dir against the events' own size as JSON (the spec's wire format);
//! - catch-up: one Subscribe from cursor 0, read to the end;
//! - the last snapshot build and install, from the nodes' logs (`snaplog`), at the
//!   quarter and at the end;
//! - a fresh node joining the filled group, until it serves reads (`join`).
//!
//! The events go in batches (`--hold-batch`, a till flushing its outbox after a night
//! offline), so that a million of them take minutes, not an evening.

mod fill;
pub mod join;
mod text;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use self::join::JoinReport;
pub use self::text::{TargetCheck, Verdict};
use super::BenchError;
use super::cluster::LocalCluster;
use super::load::{self, Decode};
use super::orders::OrderFlows;
use super::procstat;
use super::snaplog::{self, SnapshotLine};

/// The fill's seed when none is given.
pub const DEFAULT_SEED: u64 = 0x5eed_0018;
/// Orders open at any time when not told otherwise: a busy restaurant's evening.
pub const DEFAULT_OPEN_ORDERS: usize = 300;

/// What to fill the group with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoldPlan {
    pub events: u64,
    /// Events per Append.
    pub batch: usize,
    /// Orders open at any time, over all clients (each client keeps its share, at least 1).
    pub open_orders: usize,
    pub seed: u64,
}

/// What one node holding the filled log costs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HoldNode {
    pub node: u64,
    /// After a quarter of the events, once settled.
    pub rss_quarter_mb: f64,
    /// After all of them, once settled.
    pub rss_mb: f64,
    /// `rss_mb` over `rss_quarter_mb`.
    pub rss_growth: f64,
    pub data_dir_mb: f64,
    /// Data dir bytes over the events' JSON bytes.
    pub data_over_json: f64,
}

/// The events' sizes as JSON.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SizeStats {
    pub min: u64,
    pub mean: f64,
    pub max: u64,
}

/// One Subscribe from cursor 0, read to the group's last seq: once by a reader that
/// decodes each event's seq and eventId (the hub's serving rate, the target's figure), and
/// once by one that decodes every event whole, as a device does.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CatchUp {
    pub node: u64,
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub full_decode_seconds: f64,
    pub full_decode_events_per_second: f64,
}

/// A snapshot line and the node that logged it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeSnapshot {
    pub node: u64,
    pub last_seq: u64,
    /// `None`: the line carries no time.
    pub elapsed_ms: Option<f64>,
    /// Of it, fetching the history the installing node lacked.
    pub history_ms: Option<f64>,
}

/// The times of the snapshots built while the group held at most a quarter of the fill,
/// and of those built once it held three quarters or more, over every node's log: one
/// build is one sample on a shared machine (its time moved 17–53 ms from build to build
/// at the same live state), so the target compares medians.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BuildTimes {
    pub early: Option<TimeStats>,
    pub late: Option<TimeStats>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimeStats {
    pub builds: usize,
    pub median_ms: f64,
    pub max_ms: f64,
}

impl TimeStats {
    fn of(mut ms: Vec<f64>) -> Option<TimeStats> {
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let mid = ms.len() / 2;
        let median_ms = if ms.len().is_multiple_of(2) {
            (ms[mid - 1] + ms[mid]) / 2.0
        } else {
            ms[mid]
        };
        Some(TimeStats {
            builds: ms.len(),
            median_ms,
            max_ms: ms[ms.len() - 1],
        })
    }
}

/// See `BuildTimes`.
fn build_times(cluster: &LocalCluster, events: u64) -> BuildTimes {
    let lines: Vec<SnapshotLine> = cluster
        .nodes
        .iter()
        .flat_map(|node| snaplog::builds_in_file(&node.log))
        .collect();
    let times = |keep: &dyn Fn(u64) -> bool| {
        TimeStats::of(
            lines
                .iter()
                .filter(|l| keep(l.last_seq))
                .filter_map(|l| l.elapsed_ms)
                .collect(),
        )
    };
    BuildTimes {
        early: times(&|seq| seq <= events / 4),
        late: times(&|seq| seq >= events / 4 * 3),
    }
}

/// The last snapshot built and the last installed, over the nodes' logs, up to a moment.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SnapshotFigures {
    pub built: Option<NodeSnapshot>,
    pub installed: Option<NodeSnapshot>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HoldReport {
    pub events: u64,
    pub events_per_append: usize,
    pub seed: u64,
    /// Orders open at any time (the clients' shares added up).
    pub open_orders: usize,
    pub orders_started: u64,
    /// Events answered DUPLICATE: stored once by an earlier send that the fill or the hub
    /// itself repeated (the group holding exactly the events sent is checked).
    pub duplicates_answered: u64,
    pub fill_seconds: f64,
    /// The events' size as JSON, as devices send them.
    pub json_mb: f64,
    /// The same events as protobuf (`pos.v1.Event`), as the hub stores them.
    pub protobuf_mb: f64,
    pub event_json_bytes: SizeStats,
    /// Events in when the first measurement was taken (a quarter of the fill).
    pub quarter_events: u64,
    pub quarter_settle_seconds: f64,
    /// How long the data dirs took to settle at the end (snapshot built, log purged).
    pub settle_seconds: f64,
    pub nodes: Vec<HoldNode>,
    pub catch_up: CatchUp,
    pub snapshots_quarter: SnapshotFigures,
    pub snapshots: SnapshotFigures,
    pub build_times: BuildTimes,
    pub join: JoinReport,
    /// Issue 18's targets, each with what was measured and its verdict.
    pub targets: Vec<TargetCheck>,
}

/// Fills the group with `plan.events` events of order flows from `clients` concurrent
/// clients spread over the nodes, and measures it (see the module's doc).
pub async fn run(
    cluster: &mut LocalCluster,
    plan: &HoldPlan,
    clients: usize,
    progress: bool,
) -> Result<HoldReport, BenchError> {
    let addrs: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.client_addr.clone())
        .collect();
    let base_ms = pos_hub::clock::now_ms();
    let flows: Vec<OrderFlows> = (0..clients)
        .map(|c| {
            let open = fill::share(plan.open_orders as u64, clients, c).max(1) as usize;
            OrderFlows::new(plan.seed, c as u32, open, base_ms)
        })
        .collect();
    let open_orders = (0..clients)
        .map(|c| fill::share(plan.open_orders as u64, clients, c).max(1) as usize)
        .sum();
    let counters = fill::Counters::new();
    let ticker = progress.then(|| {
        let counters = counters.clone();
        let events = plan.events;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let done = counters.acked.load(Ordering::Relaxed);
                eprint!("\r  filling: {done:>9}/{events} events ");
            }
        })
    });
    let quarter_events = plan.events / 4;
    let started = Instant::now();
    let filled = fill::fill(&addrs, flows, quarter_events, plan.batch, &counters).await;
    let quarter_fill = started.elapsed();
    let flows = match filled {
        Ok(flows) => flows,
        Err(e) => {
            if let Some(t) = &ticker {
                t.abort();
            }
            return Err(e);
        }
    };
    let quarter_settle = settle(cluster).await;
    let rss_quarter = rss(cluster)?;
    let snapshots_quarter = snapshots(cluster);
    let resumed = Instant::now();
    let filled = fill::fill(
        &addrs,
        flows,
        plan.events - quarter_events,
        plan.batch,
        &counters,
    )
    .await;
    let fill_seconds = (quarter_fill + resumed.elapsed()).as_secs_f64();
    if let Some(t) = ticker {
        t.abort();
        eprintln!();
    }
    let flows = filled?;
    let settle_seconds = settle(cluster).await;
    let rss_end = rss(cluster)?;

    let json_bytes = counters.json_bytes.load(Ordering::Relaxed);
    let mut nodes = Vec::new();
    for node in &cluster.nodes {
        let Some(&(_, rss_mb)) = rss_end.iter().find(|(id, _)| *id == node.id) else {
            continue;
        };
        let rss_quarter_mb = rss_quarter
            .iter()
            .find(|(id, _)| *id == node.id)
            .map_or(0.0, |(_, mb)| *mb);
        let data = procstat::disk_usage(&node.data_dir);
        nodes.push(HoldNode {
            node: node.id,
            rss_quarter_mb,
            rss_mb,
            rss_growth: rss_mb / rss_quarter_mb.max(f64::MIN_POSITIVE),
            data_dir_mb: mb(data),
            data_over_json: data as f64 / json_bytes.max(1) as f64,
        });
    }

    // Read after the memory was measured: the catch-up's own buffers are not the hold's.
    let reader = &cluster.nodes[0];
    let last_seq = holds_every_event(&reader.client_addr, plan.events, &counters).await?;
    let took = load::catch_up(&reader.client_addr, last_seq, Decode::Heads).await?;
    let full = load::catch_up(&reader.client_addr, last_seq, Decode::Full).await?;
    let rate = |took: Duration| last_seq as f64 / took.as_secs_f64().max(1e-9);
    let catch_up = CatchUp {
        node: reader.id,
        events: last_seq,
        seconds: took.as_secs_f64(),
        events_per_second: rate(took),
        full_decode_seconds: full.as_secs_f64(),
        full_decode_events_per_second: rate(full),
    };

    let join = join::fresh_node(cluster, last_seq).await?;
    let snapshots = snapshots(cluster);
    let build_times = build_times(cluster, plan.events);
    join::leave(cluster, &join).await?;

    let min = counters.json_min.load(Ordering::Relaxed);
    let mut report = HoldReport {
        events: plan.events,
        events_per_append: plan.batch,
        seed: plan.seed,
        open_orders,
        orders_started: flows.iter().map(OrderFlows::orders_started).sum(),
        duplicates_answered: counters.duplicates.load(Ordering::Relaxed),
        fill_seconds,
        json_mb: mb(json_bytes),
        protobuf_mb: mb(counters.protobuf_bytes.load(Ordering::Relaxed)),
        event_json_bytes: SizeStats {
            min: if min == u64::MAX { 0 } else { min },
            mean: json_bytes as f64 / plan.events.max(1) as f64,
            max: counters.json_max.load(Ordering::Relaxed),
        },
        quarter_events,
        quarter_settle_seconds: quarter_settle,
        settle_seconds,
        nodes,
        catch_up,
        snapshots_quarter,
        build_times,
        snapshots,
        join,
        targets: Vec::new(),
    };
    report.targets = text::targets(&report);
    Ok(report)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Each running node's RSS in MB.
fn rss(cluster: &LocalCluster) -> Result<Vec<(u64, f64)>, BenchError> {
    let mut out = Vec::new();
    for node in &cluster.nodes {
        if let Some(pid) = node.pid() {
            out.push((node.id, mb(procstat::sample(pid)?.rss_bytes)));
        }
    }
    Ok(out)
}

/// The last snapshot built and installed in the nodes' logs so far: the one with the
/// highest seq, and of those the slowest.
fn snapshots(cluster: &LocalCluster) -> SnapshotFigures {
    let mut figures = SnapshotFigures::default();
    let later = |new: &NodeSnapshot, old: &Option<NodeSnapshot>| {
        old.as_ref().is_none_or(|old| {
            (new.last_seq, new.elapsed_ms.unwrap_or(-1.0))
                > (old.last_seq, old.elapsed_ms.unwrap_or(-1.0))
        })
    };
    let of = |node: u64, line: SnapshotLine| NodeSnapshot {
        node,
        last_seq: line.last_seq,
        elapsed_ms: line.elapsed_ms,
        history_ms: line.history_ms,
    };
    for node in &cluster.nodes {
        let (built, installed) = snaplog::last_in_file(&node.log);
        if let Some(b) = built.map(|l| of(node.id, l))
            && later(&b, &figures.built)
        {
            figures.built = Some(b);
        }
        if let Some(i) = installed.map(|l| of(node.id, l))
            && later(&i, &figures.installed)
        {
            figures.installed = Some(i);
        }
    }
    figures
}

/// The group was fresh and only the fill appended: once `addr` has applied everything, its
/// last seq must be the number of events sent. Fewer would mean two events of the fill
/// shared an eventId (answered DUPLICATE, so not stored).
async fn holds_every_event(
    addr: &str,
    events: u64,
    counters: &fill::Counters,
) -> Result<u64, BenchError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last_seq = load::last_seq(addr).await?;
        if last_seq == events {
            return Ok(last_seq);
        }
        if last_seq > events || Instant::now() > deadline {
            return Err(BenchError::Refused(format!(
                "the group holds {last_seq} events after a fill of {events} ({} answered \
                 DUPLICATE): the fill must have sent some eventId twice",
                counters.duplicates.load(Ordering::Relaxed)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no node's data dir changed size for 5 s in a row (its last snapshot is
/// built and the log purged), at most 3 minutes; returns the seconds waited.
async fn settle(cluster: &LocalCluster) -> f64 {
    let started = Instant::now();
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
    started.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::TimeStats;

    #[test]
    fn build_times_give_the_median_and_the_slowest() {
        assert_eq!(TimeStats::of(Vec::new()), None);
        let odd = TimeStats::of(vec![40.0, 12.0, 25.0]).expect("three builds");
        assert_eq!((odd.builds, odd.median_ms, odd.max_ms), (3, 25.0, 40.0));
        let even = TimeStats::of(vec![30.0, 10.0, 20.0, 87.0]).expect("four builds");
        assert_eq!((even.builds, even.median_ms, even.max_ms), (4, 25.0, 87.0));
    }
}
