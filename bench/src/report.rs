//! The bench's results: a table for the terminal and the same numbers as JSON.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::BenchPlan;
use super::load::{AppendStats, Pacing};
use super::procstat::ProcSample;

/// Milliseconds at the percentiles that matter.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub(super) fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        let ms = |us: u64| us as f64 / 1000.0;
        (!h.is_empty()).then(|| Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        })
    }
}

/// Per-node process cost over the load.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeCost {
    pub node: u64,
    pub leader: bool,
    pub cpu_us_per_event: f64,
    pub disk_write_bytes_per_event: f64,
    pub rss_mb: f64,
    pub data_dir_mb: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BenchReport {
    pub nodes: usize,
    pub clients: usize,
    pub mode: String,
    pub seconds: f64,
    pub subscribers: usize,
    pub event_bytes: usize,
    pub appends_acked: u64,
    pub appends_failed: u64,
    pub appends_per_second: f64,
    pub append_latency_ms: Option<Percentiles>,
    /// Append sent through one node → seen by a subscriber on another.
    pub relay_latency_ms: Option<Percentiles>,
    pub subscriber_events_delivered: u64,
    pub events_in_log: u64,
    /// This machine's own 4 KiB write + fdatasync, where the data dirs are.
    pub fsync_ms: Option<Percentiles>,
    pub node_costs: Vec<NodeCost>,
    /// The leader's disk write bytes per event over the event's encoded size.
    pub leader_write_amplification: Option<f64>,
    pub failover_ms: Option<f64>,
    pub restart_catch_up_ms: Option<f64>,
    pub catch_up_events_per_second: Option<f64>,
    /// A node holding the events of `--hold`.
    pub hold: Option<super::hold::HoldReport>,
    /// The same load against other systems (`--compare`).
    pub peers: Vec<super::peers::PeerReport>,
}

pub(super) struct Inputs<'a> {
    pub plan: &'a BenchPlan,
    pub nodes: usize,
    pub leader: Option<u64>,
    pub load: AppendStats,
    pub relay: Histogram<u64>,
    pub delivered: u64,
    pub events_in_log: u64,
    pub before: Vec<(u64, ProcSample)>,
    pub after: Vec<(u64, ProcSample)>,
    pub data_bytes: Vec<(u64, u64)>,
    pub fsync: Histogram<u64>,
    pub restart_catch_up: Option<Duration>,
    pub catch_up: Option<(u64, Duration)>,
    pub event_bytes: usize,
    pub hold: Option<super::hold::HoldReport>,
}

pub(super) fn build(i: Inputs<'_>) -> BenchReport {
    let acked = i.load.acked;
    let per_event = |x: f64| if acked == 0 { 0.0 } else { x / acked as f64 };
    let mut node_costs = Vec::new();
    for (id, after) in &i.after {
        let Some((_, before)) = i.before.iter().find(|(b, _)| b == id) else {
            continue;
        };
        let data = i
            .data_bytes
            .iter()
            .find(|(n, _)| n == id)
            .map_or(0, |(_, b)| *b);
        node_costs.push(NodeCost {
            node: *id,
            leader: i.leader == Some(*id),
            cpu_us_per_event: per_event(after.cpu.saturating_sub(before.cpu).as_micros() as f64),
            disk_write_bytes_per_event: per_event(
                after
                    .disk_write_bytes
                    .saturating_sub(before.disk_write_bytes) as f64,
            ),
            rss_mb: after.rss_bytes as f64 / (1 << 20) as f64,
            data_dir_mb: data as f64 / (1 << 20) as f64,
        });
    }
    let leader_write_amplification = node_costs
        .iter()
        .find(|c| c.leader)
        .map(|c| c.disk_write_bytes_per_event / i.event_bytes.max(1) as f64);
    let seconds = i.load.elapsed.as_secs_f64();
    BenchReport {
        nodes: i.nodes,
        clients: i.plan.clients,
        mode: match i.plan.pacing {
            Pacing::Closed => "closed loop".into(),
            Pacing::Open { per_second } => format!("open loop, {per_second} appends/s offered"),
        },
        seconds,
        subscribers: i.plan.subscribers,
        event_bytes: i.event_bytes,
        appends_acked: acked,
        appends_failed: i.load.failed,
        appends_per_second: if seconds > 0.0 {
            acked as f64 / seconds
        } else {
            0.0
        },
        append_latency_ms: Percentiles::of(&i.load.latency),
        relay_latency_ms: Percentiles::of(&i.relay),
        subscriber_events_delivered: i.delivered,
        events_in_log: i.events_in_log,
        fsync_ms: Percentiles::of(&i.fsync),
        node_costs,
        leader_write_amplification,
        failover_ms: i.load.failover.map(|d| d.as_secs_f64() * 1000.0),
        restart_catch_up_ms: i.restart_catch_up.map(|d| d.as_secs_f64() * 1000.0),
        catch_up_events_per_second: i
            .catch_up
            .map(|(events, took)| events as f64 / took.as_secs_f64().max(1e-9)),
        hold: i.hold,
        peers: Vec::new(),
    }
}

fn percentiles_row(f: &mut fmt::Formatter<'_>, name: &str, p: &Option<Percentiles>) -> fmt::Result {
    match p {
        Some(p) => writeln!(
            f,
            "{name:<28} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  ({} samples)",
            p.p50, p.p90, p.p99, p.p999, p.max, p.count
        ),
        None => writeln!(f, "{name:<28} {:>9}", "-"),
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pos-hub bench: {} nodes, {} clients, {}, {:.1} s, {} extra subscribers; event {} bytes",
            self.nodes, self.clients, self.mode, self.seconds, self.subscribers, self.event_bytes
        )?;
        writeln!(
            f,
            "appends: {} acknowledged ({:.0}/s), {} failed; {} events in the log",
            self.appends_acked, self.appends_per_second, self.appends_failed, self.events_in_log
        )?;
        writeln!(
            f,
            "{:<28} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "p50", "p90", "p99", "p99.9", "max"
        )?;
        percentiles_row(f, "append (ack)", &self.append_latency_ms)?;
        percentiles_row(f, "relay (node A → node B)", &self.relay_latency_ms)?;
        percentiles_row(f, "fsync probe (4 KiB)", &self.fsync_ms)?;
        if self.subscribers > 0 {
            writeln!(
                f,
                "subscribers: {} events delivered to {} live subscribers",
                self.subscriber_events_delivered, self.subscribers
            )?;
        }
        writeln!(
            f,
            "{:<6} {:>7} {:>14} {:>18} {:>9} {:>12}",
            "node", "leader", "CPU µs/event", "disk bytes/event", "RSS MB", "data dir MB"
        )?;
        for c in &self.node_costs {
            writeln!(
                f,
                "{:<6} {:>7} {:>14.1} {:>18.0} {:>9.1} {:>12.1}",
                c.node,
                if c.leader { "yes" } else { "" },
                c.cpu_us_per_event,
                c.disk_write_bytes_per_event,
                c.rss_mb,
                c.data_dir_mb
            )?;
        }
        if let Some(w) = self.leader_write_amplification {
            writeln!(f, "leader write amplification: {w:.1}× the event's size")?;
        }
        if let Some(ms) = self.failover_ms {
            writeln!(
                f,
                "failover (leader SIGKILL → first acknowledged append): {ms:.0} ms"
            )?;
        }
        if let Some(ms) = self.restart_catch_up_ms {
            writeln!(f, "the killed node, restarted, caught up in {ms:.0} ms")?;
        }
        if let Some(rate) = self.catch_up_events_per_second {
            writeln!(f, "catch-up from cursor 0: {rate:.0} events/s")?;
        }
        if let Some(hold) = &self.hold {
            write!(f, "{hold}")?;
        }
        if !self.peers.is_empty() {
            self.fmt_comparison(f)?;
        }
        Ok(())
    }
}

impl BenchReport {
    fn fmt_comparison(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\nthe same load, same machine, 3 nodes each:")?;
        writeln!(
            f,
            "{:<16} {:>11} {:>9} {:>9} {:>9} {:>11} {:>11}",
            "system", "appends/s", "p50 ms", "p99 ms", "p99.9 ms", "relay p50", "relay p99"
        )?;
        let row = |f: &mut fmt::Formatter<'_>,
                   name: &str,
                   rate: f64,
                   append: &Option<Percentiles>,
                   relay: &Option<Percentiles>| {
            let p = |x: &Option<Percentiles>, pick: fn(&Percentiles) -> f64| {
                x.as_ref()
                    .map_or("-".to_owned(), |x| format!("{:.2}", pick(x)))
            };
            writeln!(
                f,
                "{name:<16} {rate:>11.0} {:>9} {:>9} {:>9} {:>11} {:>11}",
                p(append, |x| x.p50),
                p(append, |x| x.p99),
                p(append, |x| x.p999),
                p(relay, |x| x.p50),
                p(relay, |x| x.p99),
            )
        };
        row(
            f,
            "pos-hub",
            self.appends_per_second,
            &self.append_latency_ms,
            &self.relay_latency_ms,
        )?;
        for peer in &self.peers {
            match &peer.skipped {
                Some(why) => writeln!(f, "{:<16} not measured: {why}", peer.system)?,
                None => row(
                    f,
                    &peer.system,
                    peer.appends_per_second,
                    &peer.append_latency_ms,
                    &peer.relay_latency_ms,
                )?,
            }
        }
        for peer in self.peers.iter().filter(|p| p.skipped.is_none()) {
            writeln!(f, "  {} {}: {}", peer.system, peer.version, peer.durability)?;
        }
        Ok(())
    }
}
