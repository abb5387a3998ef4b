//! The harness must catch a hub that acknowledges before its data is durable. `pos-hub
//! serve --unsafe-no-fsync` (hidden, deliberately broken) never fsyncs; under
//! `lose-unsynced` power cuts it loses acknowledged events, and the run must fail with
//! `lost-ack` violations. Needs what `lose-unsynced` needs: root, iproute2, fuse3; and a
//! built `pos-hub` (`POS_HUB_BIN`, else the workspace's, beside the harness).

use std::process::Command;

#[test]
fn a_hub_that_skips_fsync_loses_acknowledged_events_and_the_checker_says_so() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_pos-hub-chaos"));
    command
        .args(["run", "--nodes", "3", "--minutes", "0.3", "--seed", "21"])
        .args(["--faults", "lose-unsynced", "--fault-seconds", "3"])
        .args(["--quiet-seconds", "2", "--hub-args=--unsafe-no-fsync"])
        .arg("--out")
        .arg(out.path());
    // Without POS_HUB_BIN, the harness runs the workspace's `pos-hub` beside it.
    if let Some(hub) = std::env::var_os("POS_HUB_BIN") {
        command.arg("--hub-bin").arg(hub);
    }
    let run = command.output().expect("runs pos-hub-chaos");
    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap_or_default();
    assert_eq!(
        run.status.code(),
        Some(1),
        "the run must end with violations (exit 1); stderr: {}\nreport: {report}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(report.contains("**FAIL"), "{report}");
    assert!(
        report.contains("`lost-ack`"),
        "acknowledged events lost to the power cut are reported as lost-ack: {report}"
    );
}
