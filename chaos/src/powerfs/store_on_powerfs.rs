//! A real store on the layer: the events `pos-hub log append` reported durable survive a
//! power cut.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};

use super::*;

/// Found by `lose-unsynced`: sled 0.34 "flushes" with `sync_file_range`, which makes
/// nothing durable on a power cut (on this layer nothing at all; on a disk, not the
/// file's size nor the drive's cache), so a one-node store lost events it had reported
/// durable. A store appends through `pos-hub log append`; the moment it has reported
/// 400 events it is SIGKILLed and the power is cut; every reported event must be there.
/// Needs root, /dev/fuse and fusermount3, and a built `pos-hub` (`POS_HUB_BIN`).
#[test]
fn events_a_store_reported_durable_survive_a_power_cut() {
    // Else the workspace's `pos-hub` beside this test's build: tests run from
    // `<target>/debug/deps/`, whatever the target dir.
    let bin = match std::env::var_os("POS_HUB_BIN") {
        Some(bin) => std::path::PathBuf::from(bin),
        None => std::env::current_exe()
            .expect("this test's path")
            .parent()
            .and_then(Path::parent)
            .expect("the target dir's profile dir")
            .join("pos-hub"),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let (fs, session) = PowerFs::mount(&data)
        .expect("mounting the FUSE layer (needs root, /dev/fuse and fusermount3 from fuse3)");
    let events: String = (0..3000)
        .map(|i| {
            format!(
                "{{\"eventId\":\"{}\",\"tenantId\":\"t-demo\",\"storeId\":\"s-001\",\"aggregateType\":\"inventory\",\"aggregateId\":\"FRIES\",\"version\":1,\"type\":\"inventory.adjusted\",\"at\":\"2026-11-25T12:00:00.000Z\",\"actor\":{{\"deviceId\":\"till-1\"}},\"clock\":{{\"lamport\":{i},\"deviceId\":\"till-1\"}},\"payload\":{{\"sku\":\"FRIES\",\"delta\":1}}}}\n",
                uuid::Uuid::now_v7()
            )
        })
        .collect();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, events).expect("writes events");
    let mut child = std::process::Command::new(&bin)
        .args(["log", "--snapshot-every", "100", "--data-dir"])
        .arg(&data)
        .arg("append")
        .arg(&file)
        .args(["--batch", "10"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("runs {}: {e}", bin.display()));
    // `log append` prints a line per event once its batch is durable.
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reported = BTreeSet::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("reads a line");
        if let Some(id) = line
            .strip_prefix("ACCEPTED")
            .and_then(|rest| rest.split_whitespace().nth(1))
        {
            reported.insert(id.to_owned());
        }
        if reported.len() >= 400 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(reported.len(), 400, "the store reported 400 events");
    let lost = fs.cut();
    let dump = std::process::Command::new(&bin)
        .args(["log", "--snapshot-every", "100", "--data-dir"])
        .arg(&data)
        .args(["dump", "--json"])
        .output()
        .expect("runs log dump");
    assert!(
        dump.status.success(),
        "the store opens after the cut: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let kept: BTreeSet<String> = String::from_utf8_lossy(&dump.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|event| event["eventId"].as_str().map(str::to_owned))
        .collect();
    drop(session);
    let missing: Vec<&String> = reported.difference(&kept).collect();
    assert!(
        missing.is_empty(),
        "{} of {} reported events were lost in the cut ({lost} unsynced bytes dropped), e.g. {:?}",
        missing.len(),
        reported.len(),
        missing.first()
    );
}
