//! SIGKILL a process that is appending through the store, at random points, many times.
//! After every kill the data dir must reopen cleanly, and every append the process had
//! reported (an ACCEPTED or DUPLICATE line is printed only after the entry is durable,
//! committed and applied) must be in the log exactly once, at the seq it was reported with.
//!
//! Replay a failure with `POS_HUB_CRASH_SEED=<seed printed by the failing run>`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// Processes that must actually die by SIGKILL mid-work; the issue asks for at least 20.
const KILLS_MIN: u64 = 24;
/// A bound on rounds, for when a process finishes before its kill point.
const ROUNDS_MAX: u64 = 80;
/// Fresh events offered per round (more than a round usually gets through).
const EVENTS_PER_ROUND: u64 = 400;
/// Small, so that snapshot building and log purging are among the things a kill interrupts.
const SNAPSHOT_EVERY_ENTRIES: u64 = 40;
const DEFAULT_SEED: u64 = 0x5eed_0fc0_ffee;

/// SplitMix64: a tiny deterministic generator, so a seed replays the same kill schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A round's events: an order created and edited, and inventory adjustments, all with fresh
/// ids; plus a few events of earlier rounds sent again (they must come back DUPLICATE).
fn round_events(
    round: u64,
    rng: &mut Rng,
    earlier: &[serde_json::Value],
) -> Vec<serde_json::Value> {
    let id = |n: u64| format!("0193b000-{round:04x}-7000-8000-{n:012x}");
    let order = format!("o-{round}");
    let mut events = vec![event(
        &id(0),
        ("order", &order),
        1,
        "order.created",
        "till-1",
        1,
        serde_json::json!({"items": []}),
    )];
    for n in 1..EVENTS_PER_ROUND {
        if n % 4 == 0 {
            let version = n / 4 + 1;
            let items = serde_json::json!([{"id": "li-1", "sku": "FRIES", "name": "Fries", "unitPrice": 350, "quantity": n}]);
            events.push(event(
                &id(n),
                ("order", &order),
                version,
                "order.updated",
                "till-1",
                n + 1,
                serde_json::json!({ "items": items }),
            ));
        } else {
            let sku = if n % 2 == 0 { "FRIES" } else { "LEMONADE" };
            let delta = if rng.below(3) == 0 { -1 } else { 1 };
            events.push(event(
                &id(n),
                ("inventory", sku),
                1,
                "inventory.adjusted",
                "till-2",
                n + 1,
                serde_json::json!({"sku": sku, "delta": delta}),
            ));
        }
    }
    for _ in 0..earlier.len().min(5) {
        let resend = earlier[rng.below(earlier.len() as u64) as usize].clone();
        let at = rng.below(events.len() as u64) as usize;
        events.insert(at, resend);
    }
    events
}

#[derive(Debug, PartialEq)]
enum Reported {
    Accepted(u64),
    Duplicate(u64),
}

fn parse_report(line: &str) -> Option<(String, Reported)> {
    let mut words = line.split_whitespace();
    let status = words.next()?;
    let seq = words.next()?.strip_prefix("seq=")?.parse().ok()?;
    let event_id = words.next()?.to_owned();
    match status {
        "ACCEPTED" => Some((event_id, Reported::Accepted(seq))),
        "DUPLICATE" => Some((event_id, Reported::Duplicate(seq))),
        _ => None,
    }
}

#[test]
fn appends_reported_durable_survive_sigkill_exactly_once() {
    let seed = std::env::var("POS_HUB_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    eprintln!("crash test seed {seed} (replay with POS_HUB_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    // Every eventId ever reported, with the seq it was reported at.
    let mut reported: BTreeMap<String, u64> = BTreeMap::new();
    let mut sent: Vec<serde_json::Value> = Vec::new();
    let mut total_reported_in_rounds = 0;
    let mut kills = 0;

    for round in 0..ROUNDS_MAX {
        if kills >= KILLS_MIN {
            break;
        }
        let events = round_events(round, &mut rng, &sent);
        let file = dir.path().join(format!("round-{round}.jsonl"));
        write_jsonl(&file, &events);
        sent.extend(events.iter().cloned());

        let batch = 1 + rng.below(8);
        let mut child = Command::new(BIN)
            .args(["log", "--data-dir"])
            .arg(&data_dir)
            .arg("append")
            .arg(&file)
            .args(["--batch", &batch.to_string()])
            // Snapshots and log purges happen many times between and during the kills.
            .args(["--snapshot-every", &SNAPSHOT_EVERY_ENTRIES.to_string()])
            .env("RUST_LOG", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("pos-hub starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        // Half the rounds kill after a random number of reported lines (mid-stream), the
        // other half after a random delay (often during start-up or recovery).
        let mut lines = Vec::new();
        if rng.below(2) == 0 {
            let kill_after = 1 + rng.below(EVENTS_PER_ROUND / 2);
            while (lines.len() as u64) < kill_after {
                match rx.recv_timeout(Duration::from_secs(60)) {
                    Ok(line) => lines.push(line),
                    Err(_) => break, // finished (or stalled) before reaching the kill point
                }
            }
        } else {
            std::thread::sleep(Duration::from_millis(rng.below(300)));
        }
        let _ = child.kill(); // SIGKILL
        let status = child.wait().expect("child is reaped");
        if std::os::unix::process::ExitStatusExt::signal(&status) == Some(9) {
            kills += 1;
        }
        reader.join().expect("reader thread");
        // Lines printed before the kill count as reported, even if we read them only now.
        lines.extend(rx.try_iter());

        let mut this_round = 0;
        for line in &lines {
            let Some((event_id, report)) = parse_report(line) else {
                continue;
            };
            this_round += 1;
            let seq = match report {
                Reported::Accepted(seq) => {
                    assert!(
                        !reported.contains_key(&event_id),
                        "round {round}: {event_id} accepted a second time (seed {seed})"
                    );
                    seq
                }
                Reported::Duplicate(seq) => {
                    // An earlier round may have had it accepted but been killed before saying so.
                    if let Some(first) = reported.get(&event_id) {
                        assert_eq!(
                            *first, seq,
                            "round {round}: {event_id} duplicate of another seq (seed {seed})"
                        );
                    }
                    seq
                }
            };
            reported.insert(event_id, seq);
        }
        total_reported_in_rounds += this_round;

        // The store reopens cleanly and holds every reported append exactly once.
        let log = dump_json(&data_dir);
        let seqs: Vec<u64> = log
            .iter()
            .map(|e| e["seq"].as_u64().expect("seq"))
            .collect();
        assert_eq!(
            seqs,
            (1..=log.len() as u64).collect::<Vec<_>>(),
            "round {round}: seqs not 1..n (seed {seed})"
        );
        let mut in_log: BTreeMap<String, u64> = BTreeMap::new();
        for e in &log {
            let event_id = e["eventId"].as_str().expect("eventId").to_owned();
            let seq = e["seq"].as_u64().expect("seq");
            assert!(
                in_log.insert(event_id.clone(), seq).is_none(),
                "round {round}: {event_id} twice in the log (seed {seed})"
            );
        }
        for (event_id, seq) in &reported {
            assert_eq!(
                in_log.get(event_id),
                Some(seq),
                "round {round}: reported {event_id} at seq {seq} is lost (seed {seed})"
            );
        }
        eprintln!(
            "round {round}: batch {batch}, {this_round} reported before {status}, log holds {} events",
            log.len()
        );
    }
    assert!(
        kills >= KILLS_MIN,
        "only {kills} processes died by SIGKILL in {ROUNDS_MAX} rounds (seed {seed})"
    );
    assert!(
        total_reported_in_rounds > 0,
        "no round got any append through: the test proved nothing"
    );
}
