//! `pos-hub log append` / `log dump` on the example dinner order, through the real binary.

mod common;

use common::cluster::EXAMPLE;
use common::*;

#[test]
fn the_example_flow_is_accepted_once_and_then_only_duplicated() {
    let dir = tempfile::tempdir().expect("tempdir");

    phase("append the 15 example events to an empty log");
    let first = succeeded(&log(dir.path(), &["append", EXAMPLE]), "append");
    assert_example_report(
        &first,
        "ACCEPTED",
        "15 events: 15 accepted, 0 duplicate, 0 rejected",
    );

    let text = succeeded(&log(dir.path(), &["dump"]), "dump");
    assert!(
        text.contains("order o-1001 paid total=3750 version=8"),
        "{text}"
    );
    assert!(
        text.contains("tickets=[kds:kt-5001=done bds:bt-7001=done]"),
        "{text}"
    );
    assert!(text.contains("stock BURGER-CLASSIC +22"), "{text}");
    let events = dump_json(dir.path());
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=15).collect::<Vec<_>>());

    phase("the same file again: 15 duplicates with their first seqs, nothing changes");
    let again = succeeded(&log(dir.path(), &["append", EXAMPLE]), "append");
    assert_example_report(
        &again,
        "DUPLICATE",
        "15 events: 0 accepted, 15 duplicate, 0 rejected",
    );
    assert_eq!(
        stdout(&log(dir.path(), &["dump"])),
        text,
        "the log and read models are unchanged"
    );
}

#[test]
fn a_file_with_one_bad_line_appends_nothing_and_names_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.jsonl");
    let good = event(
        "0193a1f0-0001-7000-8000-0000000000aa",
        ("inventory", "FRIES"),
        1,
        "inventory.adjusted",
        "till-1",
        1,
        serde_json::json!({"sku": "FRIES", "delta": 3}),
    );
    let mut bad = good.clone();
    bad.as_object_mut().expect("object").remove("version");
    write_jsonl(&file, &[good, bad]);
    let output = log(dir.path(), &["append", file.to_str().expect("utf-8 path")]);
    let err = failed(&output, "append of bad.jsonl");
    assert!(
        err.contains("bad.jsonl:2") && err.contains("version"),
        "{err}"
    );
    assert!(dump_json(dir.path()).is_empty(), "nothing was appended");
}

#[test]
fn rejected_events_are_reported_with_their_code_and_exit_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("stale.jsonl");
    let created = event(
        "0193a1f0-0001-7000-8000-0000000000b1",
        ("order", "o-1"),
        1,
        "order.created",
        "till-1",
        1,
        serde_json::json!({"items": []}),
    );
    let stale = event(
        "0193a1f0-0001-7000-8000-0000000000b2",
        ("order", "o-1"),
        1,
        "order.parked",
        "till-1",
        2,
        serde_json::json!({}),
    );
    write_jsonl(&file, &[created, stale]);
    let output = log(dir.path(), &["append", file.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains("REJECTED  0193a1f0-0001-7000-8000-0000000000b2 order.parked STALE_VERSION"),
        "{text}"
    );
    assert_eq!(
        dump_json(dir.path()).len(),
        1,
        "only the accepted event is in the log"
    );
}

#[test]
fn a_batch_size_out_of_range_is_refused_before_touching_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = log(dir.path(), &["append", EXAMPLE, "--batch", "0"]);
    refused(
        &output,
        "append --batch 0",
        "--batch must be between 1 and 1024, got 0",
    );
    assert!(
        !dir.path().join("db").exists(),
        "the data dir was not even opened"
    );
}

#[test]
fn a_data_dir_of_one_realm_refuses_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(log(dir.path(), &["append", EXAMPLE]).status.success());
    let output = log(dir.path(), &["--tenant", "t-other", "dump"]);
    refused(
        &output,
        "dump of another realm",
        "realm t-demo/s-001, not t-other/s-001",
    );
}

#[test]
fn logs_are_json_lines_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = std::process::Command::new(BIN)
        .args(["--log-format", "json", "log", "--data-dir"])
        .arg(dir.path())
        .args(["--snapshot-every", "1", "append", EXAMPLE, "--batch", "1"])
        .env("RUST_LOG", "pos_hub=info")
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", stderr(&output));
    let logs = stderr(&output);
    let lines: Vec<&str> = logs.lines().collect();
    assert!(!lines.is_empty(), "snapshots were logged");
    for line in lines {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(
            entry["level"].is_string() && entry["fields"].is_object(),
            "{entry}"
        );
    }
}

#[test]
fn a_data_dir_written_before_rules_versions_reads_as_it_did_and_takes_new_events() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(fixtures.join("data-v1"))
        .arg(&dir)
        .status()
        .expect("runs cp");
    assert!(copied.success(), "copies the fixture");

    phase("this release dumps the old data dir exactly as the old release did");
    let expected =
        std::fs::read_to_string(fixtures.join("data-v1.dump.txt")).expect("reads the dump");
    assert_eq!(succeeded(&log(&dir, &["dump"]), "dump"), expected);

    phase("new events are decided by the new rules");
    let file = tmp.path().join("new.jsonl");
    let fine = event(
        "0193a1f0-0000-7000-8000-000000000010",
        ("inventory", "FRIES"),
        1,
        "inventory.adjusted",
        "till-1",
        9,
        serde_json::json!({"sku": "FRIES", "delta": 1}),
    );
    let mut far = fine.clone();
    far["eventId"] = "0193a1f0-0000-7000-8000-000000000011".into();
    far["clock"]["lamport"] = (1u64 << 53).into();
    write_jsonl(&file, &[fine, far]);
    let report = stdout(&log(&dir, &["append", file.to_str().expect("utf-8 path")]));
    assert!(report.contains("ACCEPTED  seq=10"), "{report}");
    assert!(
        report.contains("REJECTED") && report.contains("CLOCK_OUT_OF_RANGE"),
        "{report}"
    );
}
