//! `pos-hub-bench` end to end: it starts its own group, measures it, and writes what it
//! measured. These tests check that every figure is produced and consistent, never how
//! fast anything was (the machines are shared and noisy). The nodes are the `pos-hub`
//! built next to the bench (`cargo build --workspace` builds both), as is the
//! `pos-hub bench` that runs the bench.

use std::path::PathBuf;
use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_pos-hub-bench");

/// The `pos-hub` next to the bench.
fn hub() -> PathBuf {
    let hub = std::path::Path::new(BENCH).with_file_name("pos-hub");
    assert!(
        hub.is_file(),
        "{} is missing: build it (`cargo build -p pos-hub`)",
        hub.display()
    );
    hub
}

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(BENCH)
        .args(args)
        .arg("--hub-bin")
        .arg(hub())
        .output()
        .expect("runs pos-hub-bench")
}

/// Runs the bench with `--json` into a temp dir; returns its table and its JSON.
fn bench_report(args: &[&str]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--json", json.to_str().expect("utf-8")]);
    let out = bench(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON file"))
        .expect("valid JSON");
    (stdout, report)
}

#[test]
fn a_short_bench_with_a_failover_reports_every_figure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (stdout, report) = bench_report(&[
        "--nodes",
        "3",
        "--clients",
        "4",
        "--seconds",
        "4",
        "--subscribers",
        "3",
        "--failover",
        "--catch-up",
        "--quiet",
        "--dir",
        data.to_str().expect("utf-8"),
    ]);
    assert!(stdout.contains("append (ack)"), "{stdout}");
    let acked = report["appends_acked"].as_u64().expect("acked");
    assert!(acked > 0, "{report}");
    // Every acknowledged append is in the log (nothing else was appended).
    assert!(report["events_in_log"].as_u64() >= Some(acked), "{report}");
    assert_eq!(report["append_latency_ms"]["count"].as_u64(), Some(acked));
    assert!(
        report["relay_latency_ms"]["count"].as_u64() > Some(0),
        "{report}"
    );
    assert_eq!(report["fsync_ms"]["count"].as_u64(), Some(200));
    // Each live subscriber saw every event appended while it ran.
    assert!(
        report["subscriber_events_delivered"].as_u64() >= Some(3 * acked),
        "{report}"
    );
    assert!(report["failover_ms"].as_f64().is_some(), "{report}");
    assert!(report["restart_catch_up_ms"].as_f64().is_some(), "{report}");
    assert!(
        report["catch_up_events_per_second"].as_f64() > Some(0.0),
        "{report}"
    );
    // The killed leader's costs cannot be read over the run; the two others' can.
    let costs = report["node_costs"].as_array().expect("node costs");
    assert_eq!(costs.len(), 2, "{report}");
    assert!(
        costs
            .iter()
            .all(|c| c["cpu_us_per_event"].as_f64() > Some(0.0))
    );
    assert!(
        !data.exists(),
        "the bench removes its data dirs unless --keep"
    );
}

#[test]
fn bad_bench_flags_are_refused_with_the_reason() {
    let refused = |args: &[&str], reason: &str| {
        let out = bench(args);
        assert!(!out.status.success(), "{args:?} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    };
    refused(&["--nodes", "7"], "--nodes must be 1 to 5");
    refused(&["--clients", "0"], "--clients must be at least 1");
    refused(&["--seconds", "0"], "--seconds must be at least 1");
    refused(&["--rate=-5"], "--rate must be a positive number");
    refused(&["--rate=0"], "--rate must be a positive number");
    refused(
        &["--nodes", "1", "--failover"],
        "--failover needs --nodes 3 or 5",
    );
    refused(
        &["--target", "127.0.0.1:1", "--failover"],
        "cannot be used with --target",
    );
    refused(
        &["--target", "127.0.0.1:1", "--compare"],
        "cannot be used with --target",
    );
    refused(
        &["--target", "127.0.0.1:1", "--hold", "10"],
        "cannot be used with --target",
    );
    refused(&["--hold", "0"], "--hold must be at least 1 event");
    refused(
        &["--hold", "10", "--hold-open", "0"],
        "--hold-open must be at least 1 order",
    );
    refused(&["--seed", "0xZZ"], "\"0xZZ\" is not a seed");
    refused(&["--seed=-1"], "is not a seed");
    refused(
        &["--hold", "10", "--hold-batch", "0"],
        "--hold-batch must be 1 to 1000",
    );
    refused(
        &["--hold", "10", "--hold-batch", "1001"],
        "--hold-batch must be 1 to 1000",
    );
}

/// `--hold`: the group is filled with exactly that many events of order flows (in batches,
/// with retries that the eventIds make safe), a node's memory is read at a quarter and at
/// the end, the log is read from cursor 0, the snapshot lines are found in the nodes' logs,
/// and a fresh node joins; each target gets a verdict. Raft timing is relaxed so that a
/// debug build on a loaded machine keeps its leader while 1–2 KB events go in.
#[test]
fn hold_fills_the_group_with_order_flows_and_measures_every_target() {
    let (stdout, report) = bench_report(&[
        "--nodes",
        "3",
        "--clients",
        "1",
        "--seconds",
        "1",
        "--hold",
        "3000",
        "--hold-batch",
        "40",
        "--quiet",
        "--serve-arg=--snapshot-every=20",
        "--serve-arg=--keep-log-entries=5",
        "--serve-arg=--heartbeat-ms=250",
        "--serve-arg=--election-timeout-ms=1500",
    ]);
    assert!(
        stdout.contains("holding 3000 events of order flows"),
        "{stdout}"
    );
    let hold = &report["hold"];
    assert_eq!(hold["events"].as_u64(), Some(3000), "{report}");
    // The held events and the load's are all in the log, nothing more.
    let acked = report["appends_acked"].as_u64().expect("acked");
    assert_eq!(
        report["events_in_log"].as_u64(),
        Some(3000 + acked),
        "{report}"
    );
    // Flows of at most 4 events, with at most the open orders unfinished.
    let started = hold["orders_started"].as_u64().expect("orders");
    let open = hold["open_orders"].as_u64().expect("open");
    assert_eq!(open, 300, "{report}");
    assert!(
        started * 4 >= 3000 && 4 * (started - open) + open <= 3000,
        "{report}"
    );
    let sizes = &hold["event_json_bytes"];
    assert!(sizes["min"].as_u64() >= Some(512), "{report}");
    assert!(sizes["max"].as_u64() <= Some(2048), "{report}");
    let json_mb = hold["json_mb"].as_f64().expect("json");
    let mean = sizes["mean"].as_f64().expect("mean");
    assert!(
        (json_mb * (1 << 20) as f64 / 3000.0 - mean).abs() < 1e-6,
        "{report}"
    );
    assert!(hold["protobuf_mb"].as_f64() > Some(0.0), "{report}");
    assert_eq!(hold["quarter_events"].as_u64(), Some(750), "{report}");
    let nodes = hold["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{report}");
    for node in nodes {
        assert!(node["rss_quarter_mb"].as_f64() > Some(1.0), "{node}");
        let (rss, quarter) = (node["rss_mb"].as_f64(), node["rss_quarter_mb"].as_f64());
        let growth = node["rss_growth"].as_f64().expect("growth");
        assert!((growth - rss.expect("rss") / quarter.expect("quarter")).abs() < 1e-9);
        assert!(node["data_dir_mb"].as_f64() > Some(0.0), "{node}");
        let ratio = node["data_over_json"].as_f64().expect("ratio");
        let expected = node["data_dir_mb"].as_f64().expect("mb") / json_mb;
        assert!((ratio - expected).abs() < 1e-6, "{node}");
    }
    // The catch-up read every held event, in order.
    let catch_up = &hold["catch_up"];
    assert_eq!(catch_up["events"].as_u64(), Some(3000), "{report}");
    assert!(
        catch_up["events_per_second"].as_f64() > Some(0.0),
        "{report}"
    );
    // Snapshots every 20 entries: the last build covers part of the fill at least, the
    // quarter's no more than a quarter; the new node installed one (the log head is purged).
    let built = &hold["snapshots"]["built"];
    assert!(
        (1..=3000).contains(&built["last_seq"].as_u64().unwrap_or(0)),
        "{report}"
    );
    if let Some(quarter) = hold["snapshots_quarter"]["built"]["last_seq"].as_u64() {
        assert!(quarter <= 750, "{report}");
    }
    let installed = &hold["snapshots"]["installed"];
    assert_eq!(installed["node"].as_u64(), Some(4), "{report}");
    let join = &hold["join"];
    assert_eq!(join["node"].as_u64(), Some(4), "{report}");
    assert_eq!(join["last_seq"].as_u64(), Some(3000), "{report}");
    assert_eq!(join["added"].as_bool(), Some(true), "{report}");
    assert!(join["failure"].is_null(), "{report}");
    assert!(
        join["serves_reads_seconds"].as_f64() > Some(0.0),
        "{report}"
    );
    // Every target, with a verdict; the load afterwards ran on the 3 nodes again.
    let targets = hold["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 7, "{report}");
    for t in targets {
        assert!(
            ["met", "missed", "not measured"].contains(&t["verdict"].as_str().unwrap_or("")),
            "{t}"
        );
    }
    assert!(stdout.contains("targets (issue 18"), "{stdout}");
    assert!(
        stdout.contains("a fresh node serves reads < 10 s"),
        "{stdout}"
    );
    assert_eq!(report["node_costs"].as_array().map(Vec::len), Some(3));
}

/// The bench installs nothing: a peer that is not installed is named as not measured, with
/// how to install it, and pos-hub's own figures are still reported.
#[test]
fn a_peer_that_is_not_installed_is_reported_as_not_measured() {
    let empty = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BENCH)
        .args(["--nodes", "1", "--clients", "2", "--seconds", "1"])
        .args(["--compare", "--quiet"])
        .arg("--hub-bin")
        .arg(hub())
        .env("PATH", empty.path())
        .output()
        .expect("runs pos-hub-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for line in [
        "NATS JetStream   not measured: nats-server is not installed (run bench/peers.sh)",
        "etcd             not measured: etcd is not installed (run bench/peers.sh)",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    assert!(stdout.contains("pos-hub "), "{stdout}");
}

/// `pos-hub bench` runs the bench next to it with every argument as it is, and passes its
/// exit code and its help through.
#[test]
fn pos_hub_bench_runs_the_bench_with_its_arguments() {
    let front = |args: &[&str]| {
        Command::new(hub())
            .arg("bench")
            .args(args)
            .output()
            .expect("runs pos-hub bench")
    };
    let help = front(&["--help"]);
    let stdout = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{stdout}");
    assert!(stdout.contains("Usage: pos-hub-bench"), "{stdout}");
    assert!(stdout.contains("--hold-batch"), "{stdout}");
    let refused = front(&["--nodes", "7"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--nodes must be 1 to 5, got 7"), "{stderr}");
    let unknown = front(&["--no-such-flag"]);
    assert_eq!(unknown.status.code(), Some(2), "clap's usage error code");
}
