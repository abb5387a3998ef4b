//! A data dir of format 1 (`tests/fixtures/data-format1`, written by the release before data
//! format 2: 2,250 order-flow events, a snapshot, the Raft log, the history) moves to
//! format 2 at its first open, and a SIGKILL at random points of that move loses nothing:
//! after every run of kills, the dir reads exactly as the old release read it, and takes
//! new events after the old ones.
//!
//! The kills fall within the time an undisturbed move takes (measured first); each is
//! counted by what it left: nothing moved yet, the log's segments moved but not the rest,
//! or all of it (`FORMAT` written). The schedule comes from a seed; replay a failure with
//! `POS_HUB_MIGRATION_KILL_SEED`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const ROUNDS: usize = 6;
const KILLS_PER_ROUND: usize = 4;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fresh_copy(to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let copied = Command::new("cp")
        .arg("-a")
        .arg(fixtures().join("data-format1"))
        .arg(to)
        .status()
        .expect("runs cp");
    assert!(copied.success(), "copies the fixture");
}

fn dump(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["log", "dump", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// What a kill left of the move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Left {
    /// The log's segment still in format 1: nothing moved (or only the sled values,
    /// which cannot be told apart from outside).
    Nothing,
    /// The segment rewritten, `FORMAT` not yet written.
    Part,
    /// `FORMAT` written: the move was done.
    All,
}

fn left(dir: &Path) -> Left {
    if dir.join("FORMAT").exists() {
        return Left::All;
    }
    let segment = dir.join("log/00000000000000000000.seg");
    let head = std::fs::read(&segment).expect("the log's segment is always whole");
    if head.starts_with(b"POSWAL") {
        Left::Part
    } else {
        Left::Nothing
    }
}

#[test]
fn a_data_dir_of_format_1_moves_over_and_a_sigkill_anywhere_in_the_move_loses_nothing() {
    let seed = std::env::var("POS_HUB_MIGRATION_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00f0_4a77_u64);
    eprintln!("seed {seed:#x} (POS_HUB_MIGRATION_KILL_SEED)");
    let mut rng = Rng(seed.max(1));
    let expected =
        std::fs::read_to_string(fixtures().join("data-format1.dump.txt")).expect("reads the dump");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");

    phase("undisturbed moves: timed, and the dir reads as the old release read it");
    let mut times = Vec::new();
    for _ in 0..3 {
        fresh_copy(&dir);
        times.push(timed_move(&dir));
        assert_eq!(succeeded(&log(&dir, &["dump"]), "dump"), expected);
    }
    times.sort();
    // The median: one slow start (a busy machine) does not stretch the window.
    let move_time = times[1];
    eprintln!("the move took {times:?} from the spawn");
    assert_eq!(
        std::fs::read_to_string(dir.join("FORMAT")).expect("FORMAT"),
        "pos-hub data format 2\n"
    );

    phase("moves killed at random points, then finished by the next open");
    let window = move_time.as_micros() as u64 * 6 / 5;
    let mut seen = Vec::new();
    for round in 0..ROUNDS {
        fresh_copy(&dir);
        for _ in 0..KILLS_PER_ROUND {
            let log_path = tmp.path().join("killed.log");
            let log_file = std::fs::File::create(&log_path).expect("creates the log");
            let mut child = dump(&dir).stderr(log_file).spawn().expect("spawns");
            std::thread::sleep(Duration::from_micros(rng.below(window)));
            let killed = matches!(child.try_wait(), Ok(None));
            let _ = child.kill();
            let status = child.wait().expect("waits");
            if killed {
                seen.push(left(&dir));
            } else {
                assert!(
                    status.success(),
                    "a dump that ended on its own failed (seed {seed:#x}, after {:?}): {}",
                    seen,
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
        }
        let report = succeeded(&log(&dir, &["dump"]), "dump after the kills");
        assert!(
            report == expected,
            "round {round} (seed {seed:#x}): the dump after the kills differs from the old \
             release's ({} lines against {})",
            report.lines().count(),
            expected.lines().count()
        );
    }
    let count = |what: Left| seen.iter().filter(|l| **l == what).count();
    eprintln!(
        "{} kills: {} before anything moved, {} part way, {} after the move",
        seen.len(),
        count(Left::Nothing),
        count(Left::Part),
        count(Left::All)
    );
    assert!(
        count(Left::Part) >= 2,
        "too few kills fell inside the move to show anything (seed {seed:#x}): {seen:?}"
    );

    phase("the moved dir takes new events after the old ones, and knows the old ids");
    let file = tmp.path().join("new.jsonl");
    let old_first = std::fs::read_to_string(fixtures().join("data-format1.events.jsonl"))
        .expect("reads the fixture's events")
        .lines()
        .next()
        .map(str::to_owned)
        .expect("a first event");
    let old_first: serde_json::Value = serde_json::from_str(&old_first).expect("json");
    let mut new = old_first.clone();
    new["eventId"] = uuid_v7_now().into();
    new["aggregateId"] = "o-new".into();
    new["clock"]["lamport"] = 9_000.into();
    write_jsonl(&file, &[old_first, new]);
    let report = stdout(&log(&dir, &["append", file.to_str().expect("utf-8 path")]));
    assert!(report.contains("DUPLICATE"), "{report}");
    assert!(report.contains("ACCEPTED  seq=2251"), "{report}");
}

/// Moves the dir over undisturbed; returns how long after the spawn the move ended.
fn timed_move(dir: &Path) -> Duration {
    let started = Instant::now();
    let mut child = dump(dir).spawn().expect("spawns pos-hub");
    let stderr = child.stderr.take().expect("stderr");
    let mut move_time = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("a log line");
        if line.contains("the data dir is in format 2") {
            move_time = Some(started.elapsed());
        }
    }
    assert!(
        child.wait().expect("waits").success(),
        "an undisturbed dump"
    );
    move_time.expect("the move logs its end")
}

/// A UUIDv7 of now, as the devices make them.
fn uuid_v7_now() -> String {
    uuid::Uuid::now_v7().to_string()
}
