//! The report: `report.md` (what ran, the per-fault table, every violation) and
//! `timeline.svg` (acknowledged appends per second and their latency over time, with the
//! fault windows shaded), so a person sees at a glance what each fault did.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::checker::Outcome;
use crate::history::{Call, Entry, Phase, Reply};

pub struct RunInfo {
    pub seed: u64,
    pub nodes: usize,
    pub seconds: u64,
    pub faults: Vec<String>,
    pub topology: String,
    pub skipped: Vec<String>,
    pub log_len: u64,
    pub outbox_confirmed: usize,
    pub command: String,
}

pub fn markdown(info: &RunInfo, outcome: &Outcome) -> String {
    let mut md = String::new();
    let verdict = if outcome.violations.is_empty() {
        "PASS: no violation".to_owned()
    } else {
        format!("FAIL: {} violations", outcome.violations.len())
    };
    let _ = writeln!(md, "# pos-hub chaos report\n");
    let _ = writeln!(md, "**{verdict}**\n");
    let _ = writeln!(md, "- command: `{}`", info.command);
    let _ = writeln!(
        md,
        "- seed {}, {} nodes, {} s, faults: {}",
        info.seed,
        info.nodes,
        info.seconds,
        info.faults.join(", ")
    );
    let _ = writeln!(md, "- topology: {}", info.topology);
    if !info.skipped.is_empty() {
        let _ = writeln!(
            md,
            "- skipped: {} (partition and netem need network namespaces; netem also needs the kernel's `sch_netem` or iptables with NFQUEUE)",
            info.skipped.join(", ")
        );
    }
    let _ = writeln!(
        md,
        "- log: {} events on every node; appends ok/fail/unknown {}/{}/{}; reads {}/{}/{}",
        info.log_len,
        outcome.appends.0,
        outcome.appends.1,
        outcome.appends.2,
        outcome.reads.0,
        outcome.reads.1,
        outcome.reads.2
    );
    let _ = writeln!(
        md,
        "- client SDK outbox: {} events confirmed to the app, each checked to be in the log once",
        info.outbox_confirmed
    );
    let _ = writeln!(
        md,
        "- availability: {:.1}% of the operations invoked while a majority was up succeeded\n",
        outcome.availability * 100.0
    );
    let _ = writeln!(
        md,
        "| fault | count | ops ok | fail | unknown | recoveries | p50 recovery | worst recovery | worst first device |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let ms = |v: Option<f64>| v.map_or("—".to_owned(), |ms| format!("{ms:.0} ms"));
    for (name, s) in &outcome.faults {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.count,
            s.ok,
            s.fail,
            s.unknown,
            s.recoveries_ms.len(),
            ms(s.median_recovery_ms()),
            ms(s.worst_recovery_ms),
            ms(s.worst_first_recovery_ms)
        );
    }
    let _ = writeln!(
        md,
        "\nRecovery, per device and per time the fault ran: from the fault's start to that \
         device's next acknowledged append (the first it invoked at or after the start). The \
         worst is the maximum over devices; the worst first device is, each time the fault \
         ran, the device that recovered first (about when the group served appends again), \
         at its worst."
    );
    let _ = writeln!(md, "\nViolations: {}\n", outcome.violations.len());
    for v in &outcome.violations {
        let _ = writeln!(md, "- `{}`: {}", v.check, v.detail);
    }
    let _ = writeln!(
        md,
        "\n![appends per second and latency, fault windows shaded](timeline.svg)\n"
    );
    let _ = writeln!(
        md,
        "Checks: acknowledged appends in the log once at their seq (`lost-ack`), refused and \
         definitely failed ones absent, no event twice (`duplicate`), identical logs on every \
         node without gaps (`nodes-agree`, `gap`), real-time order of acknowledged appends, \
         linearizable reads not stale, versions 1, 2, 3… per order and ticket, no write under \
         another device's unexpired lock (`double-lock`), read models equal to the log \
         replayed, Subscribe streams in order without gap or repeat across reconnects, and \
         every outbox-confirmed event in the log once."
    );
    md
}

/// Per second: acknowledged appends, and the median and worst append latency.
fn per_second(history: &[Entry]) -> Vec<(usize, f64, f64)> {
    let mut invoked: BTreeMap<u64, f64> = BTreeMap::new();
    for e in history {
        if let Entry::Invoke {
            op,
            t,
            call: Call::Append { .. },
            ..
        } = e
        {
            invoked.insert(*op, *t);
        }
    }
    let mut buckets: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for e in history {
        if let Entry::Ok {
            op,
            t,
            reply: Reply::Append { .. },
        } = e
            && let Some(start) = invoked.get(op)
        {
            buckets
                .entry((*t / 1000.0) as usize)
                .or_default()
                .push(t - start);
        }
    }
    let last = buckets.keys().last().copied().unwrap_or(0);
    (0..=last)
        .map(|s| {
            let mut lat = buckets.get(&s).cloned().unwrap_or_default();
            lat.sort_by(f64::total_cmp);
            let median = lat.get(lat.len() / 2).copied().unwrap_or(0.0);
            let worst = lat.last().copied().unwrap_or(0.0);
            (lat.len(), median, worst)
        })
        .collect()
}

pub fn svg(history: &[Entry]) -> String {
    let series = per_second(history);
    let seconds = series.len().max(1) as f64;
    let (w, h, left, top) = (960.0, 450.0, 60.0, 56.0);
    let plot_w = w - left - 20.0;
    let half = (h - top - 60.0) / 2.0;
    let x = |s: f64| left + s / seconds * plot_w;
    let max_ops = series.iter().map(|s| s.0).max().unwrap_or(1).max(1) as f64;
    let max_lat = series.iter().map(|s| s.2).fold(1.0, f64::max);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    // Fault windows.
    let mut open: BTreeMap<String, f64> = BTreeMap::new();
    let mut shaded = 0usize;
    for e in history {
        if let Entry::Fault { t, name, phase, .. } = e {
            match phase {
                Phase::Start => {
                    open.insert(name.clone(), *t);
                }
                Phase::End => {
                    if let Some(start) = open.remove(name) {
                        let (x0, x1) = (x(start / 1000.0), x(t / 1000.0));
                        // Labels in three rows so that neighbours do not overlap.
                        let label_y = top - 4.0 - 14.0 * (shaded % 3) as f64;
                        shaded += 1;
                        let _ = writeln!(
                            out,
                            r##"<rect x="{x0:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="#f4c7c3" opacity="0.6"/><text x="{x0:.1}" y="{:.1}" fill="#a33">{name}</text>"##,
                            (x1 - x0).max(1.0),
                            2.0 * half + 20.0,
                            label_y
                        );
                    }
                }
            }
        }
    }
    // Throughput (top) and latency (bottom) lines: which value of a second's
    // (appends, median, worst), where, on what scale, in what colour.
    let top2 = top + half + 20.0;
    type Value = fn(&(usize, f64, f64)) -> f64;
    let lines: [(Value, f64, f64, &str); 3] = [
        (|s| s.0 as f64, top, max_ops, "#1f6feb"),
        (|s| s.1, top2, max_lat, "#2da44e"),
        (|s| s.2, top2, max_lat, "#cf222e"),
    ];
    for (value, y0, max, color) in lines {
        let points: Vec<String> = series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let at = i as f64 + 0.5;
                format!("{:.1},{:.1}", x(at), y0 + half - value(s) / max * half)
            })
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
    }
    for (y0, label) in [
        (top, format!("acknowledged appends/s (max {max_ops:.0})")),
        (
            top2,
            format!("append latency ms: median (green), worst (red); max {max_lat:.0}"),
        ),
    ] {
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#888"/><text x="{:.1}" y="{:.1}">{label}</text>"##,
            y0 + half,
            left + plot_w,
            y0 + half,
            left + 4.0,
            y0 + 12.0
        );
    }
    let step = (seconds / 10.0).ceil().max(1.0) as usize;
    for s in (0..series.len()).step_by(step) {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{s}s</text>"#,
            x(s as f64),
            h - 12.0
        );
    }
    out.push_str("</svg>\n");
    out
}
