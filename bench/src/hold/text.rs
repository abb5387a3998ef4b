//! The hold's targets (issue 18, for a node holding 1M events of order flows) with their
//! verdicts, and the hold's part of the text report.

use std::fmt;

use serde::Serialize;

use super::{HoldReport, NodeSnapshot};

/// The number of events issue 18's targets are set for.
pub const TARGET_EVENTS: u64 = 1_000_000;
pub const RSS_MAX_MB: f64 = 150.0;
pub const RSS_GROWTH_MAX: f64 = 1.2;
pub const DATA_OVER_JSON_MAX: f64 = 1.5;
pub const CATCH_UP_MIN_PER_S: f64 = 300_000.0;
pub const SNAPSHOT_GROWTH_MAX: f64 = 1.5;
pub const JOIN_MAX_S: f64 = 10.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    #[serde(rename = "met")]
    Met,
    #[serde(rename = "missed")]
    Missed,
    #[serde(rename = "not measured")]
    NotMeasured,
}

impl Verdict {
    fn of(met: bool) -> Verdict {
        if met { Verdict::Met } else { Verdict::Missed }
    }

    fn as_str(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "missed",
            Verdict::NotMeasured => "not measured",
        }
    }
}

/// One target, what was measured against it, and the verdict.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    pub verdict: Verdict,
}

fn check(target: &str, measured: String, verdict: Verdict) -> TargetCheck {
    TargetCheck {
        target: target.to_owned(),
        measured,
        verdict,
    }
}

/// Each target against the worst node's figure.
pub fn targets(r: &HoldReport) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    let worst = |f: fn(&super::HoldNode) -> f64| {
        r.nodes
            .iter()
            .map(|n| (n.node, f(n)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    };
    let none = || "no node measured".to_owned();
    out.push(match worst(|n| n.rss_mb) {
        Some((node, mb)) => check(
            &format!("RSS per node < {RSS_MAX_MB:.0} MB"),
            format!("{mb:.1} MB (node {node})"),
            Verdict::of(mb < RSS_MAX_MB),
        ),
        None => check("RSS per node", none(), Verdict::NotMeasured),
    });
    out.push(match worst(|n| n.rss_growth) {
        Some((node, growth)) => check(
            &format!("RSS at the end ≤ {RSS_GROWTH_MAX}× RSS at 25%"),
            format!("{growth:.2}× (node {node})"),
            Verdict::of(growth <= RSS_GROWTH_MAX),
        ),
        None => check("RSS growth", none(), Verdict::NotMeasured),
    });
    out.push(match worst(|n| n.data_over_json) {
        Some((node, ratio)) => check(
            &format!("data dir < {DATA_OVER_JSON_MAX}× the events' JSON"),
            format!("{ratio:.2}× (node {node})"),
            Verdict::of(ratio < DATA_OVER_JSON_MAX),
        ),
        None => check("data dir", none(), Verdict::NotMeasured),
    });
    let rate = r.catch_up.events_per_second;
    out.push(check(
        &format!(
            "catch-up from cursor 0 ≥ {}k events/s",
            CATCH_UP_MIN_PER_S / 1000.0
        ),
        format!("{:.0}k events/s", rate / 1000.0),
        Verdict::of(rate >= CATCH_UP_MIN_PER_S),
    ));
    out.push(match (&r.build_times.early, &r.build_times.late) {
        (Some(early), Some(late)) if early.builds >= 3 && late.builds >= 3 => {
            let ratio = late.median_ms / early.median_ms.max(0.001);
            check(
                &format!("snapshot build at the end ≤ {SNAPSHOT_GROWTH_MAX}× its time at 25%"),
                format!(
                    "{ratio:.2}× (medians: {:.0} ms of {} builds ≥ 75%, {:.0} ms of {} ≤ 25%)",
                    late.median_ms, late.builds, early.median_ms, early.builds
                ),
                Verdict::of(ratio <= SNAPSHOT_GROWTH_MAX),
            )
        }
        // Too few builds for a median: the last one against the one at 25%.
        _ => snapshot_growth(
            "snapshot build",
            &r.snapshots_quarter.built,
            &r.snapshots.built,
        ),
    });
    out.push(snapshot_growth(
        "snapshot install",
        &r.snapshots_quarter.installed,
        &r.snapshots.installed,
    ));
    let join = &r.join;
    let target = format!("a fresh node serves reads < {JOIN_MAX_S:.0} s");
    out.push(match (join.serves_reads_seconds, &join.failure) {
        (Some(s), _) => check(&target, format!("{s:.1} s"), Verdict::of(s < JOIN_MAX_S)),
        (None, Some(why)) => check(&target, format!("did not join: {why}"), Verdict::Missed),
        (None, None) => check(&target, "did not serve reads".into(), Verdict::Missed),
    });
    out
}

/// The time at the end within `SNAPSHOT_GROWTH_MAX` of the time at the quarter.
fn snapshot_growth(
    what: &str,
    quarter: &Option<NodeSnapshot>,
    end: &Option<NodeSnapshot>,
) -> TargetCheck {
    let target = format!("{what} at the end ≤ {SNAPSHOT_GROWTH_MAX}× its time at 25%");
    match (
        quarter.as_ref().and_then(|q| q.elapsed_ms),
        end.as_ref().and_then(|e| e.elapsed_ms),
    ) {
        (Some(q), Some(e)) if q > 0.0 => check(
            &target,
            format!("{:.2}× ({e:.0} ms / {q:.0} ms)", e / q),
            Verdict::of(e / q <= SNAPSHOT_GROWTH_MAX),
        ),
        _ => check(
            &target,
            format!(
                "at 25%: {}; at the end: {}",
                snapshot_text(quarter),
                snapshot_text(end)
            ),
            Verdict::NotMeasured,
        ),
    }
}

fn snapshot_text(s: &Option<NodeSnapshot>) -> String {
    match s {
        None => "none logged".to_owned(),
        Some(s) => match s.elapsed_ms {
            Some(ms) => match s.history_ms {
                Some(h) => format!(
                    "node {}, last_seq {}, {ms:.0} ms, of which {h:.0} ms fetching the history \
                     it lacked",
                    s.node, s.last_seq
                ),
                None => format!("node {}, last_seq {}, {ms:.0} ms", s.node, s.last_seq),
            },
            None => format!(
                "node {}, last_seq {}, time not logged (no elapsed_ms)",
                s.node, s.last_seq
            ),
        },
    }
}

impl fmt::Display for HoldReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "holding {} events of order flows (seed {:#x}, {} orders open at a time, {} orders \
             started), {} per append, filled in {:.0} s:",
            self.events,
            self.seed,
            self.open_orders,
            self.orders_started,
            self.events_per_append,
            self.fill_seconds
        )?;
        if self.duplicates_answered > 0 {
            writeln!(
                f,
                "  {} events answered DUPLICATE (sent again by the fill or by a node forwarding \
                 them; the group holds each once)",
                self.duplicates_answered
            )?;
        }
        let sizes = &self.event_json_bytes;
        writeln!(
            f,
            "  events: {:.1} MB as JSON ({} to {} bytes, {:.0} on average), {:.1} MB as protobuf",
            self.json_mb, sizes.min, sizes.max, sizes.mean, self.protobuf_mb
        )?;
        writeln!(
            f,
            "  settled after {:.0} s at 25% ({} events) and {:.0} s at the end",
            self.quarter_settle_seconds, self.quarter_events, self.settle_seconds
        )?;
        for n in &self.nodes {
            writeln!(
                f,
                "  node {}: RSS {:.1} MB (at 25%: {:.1} MB, {:.2}×), data dir {:.1} MB = {:.2}× the events' JSON",
                n.node, n.rss_mb, n.rss_quarter_mb, n.rss_growth, n.data_dir_mb, n.data_over_json
            )?;
        }
        let c = &self.catch_up;
        writeln!(
            f,
            "  catch-up from cursor 0 on node {}: {} events in {:.2} s = {:.0} events/s \
             (the reader decoding seqs and eventIds); {:.2} s = {:.0} events/s decoding \
             every event whole, as a device does",
            c.node,
            c.events,
            c.seconds,
            c.events_per_second,
            c.full_decode_seconds,
            c.full_decode_events_per_second
        )?;
        writeln!(
            f,
            "  snapshot build, last: {} (at 25%: {})",
            snapshot_text(&self.snapshots.built),
            snapshot_text(&self.snapshots_quarter.built)
        )?;
        for (name, times) in [
            ("≤ 25%", &self.build_times.early),
            ("≥ 75%", &self.build_times.late),
        ] {
            if let Some(t) = times {
                writeln!(
                    f,
                    "  snapshot builds with last_seq {name} of the fill: {}, median {:.0} ms, slowest {:.0} ms",
                    t.builds, t.median_ms, t.max_ms
                )?;
            }
        }
        writeln!(
            f,
            "  snapshot install, last: {} (at 25%: {})",
            snapshot_text(&self.snapshots.installed),
            snapshot_text(&self.snapshots_quarter.installed)
        )?;
        let j = &self.join;
        let add = j.add_node_seconds.map_or("did not answer".to_owned(), |s| {
            format!("answered after {s:.1} s")
        });
        match (j.serves_reads_seconds, &j.failure) {
            (Some(s), _) => writeln!(
                f,
                "  fresh node {} (blank, `cluster add-node`): served reads at seq {} {s:.1} s after it started (add-node {add})",
                j.node, j.last_seq
            )?,
            (None, why) => writeln!(
                f,
                "  fresh node {} did not serve reads at seq {} (add-node {add}): {}",
                j.node,
                j.last_seq,
                why.as_deref().unwrap_or("no reason known")
            )?,
        }
        write!(f, "targets (issue 18, set for {TARGET_EVENTS} events held")?;
        if self.events != TARGET_EVENTS {
            write!(f, "; this run held {}", self.events)?;
        }
        writeln!(f, "):")?;
        for t in &self.targets {
            writeln!(
                f,
                "  {:<52} {:<40} {}",
                t.target,
                t.measured,
                t.verdict.as_str()
            )?;
        }
        Ok(())
    }
}
