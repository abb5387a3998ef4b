//! The till process itself is SIGKILLed at random points while it appends, at least 20
//! times: before its outbox opens, while it appends and flushes, while it sends, while it
//! waits for the answer. After every restart nothing it had confirmed to the caller (a
//! printed "queued … event ID" line, printed once the event is on disk) is lost or
//! duplicated: at the end every confirmed event is in the hub's log exactly once.
//!
//! The schedule comes from a seed; replay a failure with `POS_HUB_DEVICE_KILL_SEED`.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::cluster::*;
use common::{BIN, Rng};

const KILLS: usize = 20;
const ATTEMPTS_MAX: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_till_killed_at_random_points_loses_and_duplicates_nothing_it_confirmed() {
    let seed = std::env::var("POS_HUB_DEVICE_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7111_c0de_u64);
    eprintln!("seed {seed:#x} (POS_HUB_DEVICE_KILL_SEED)");
    let mut rng = Rng(seed.max(1));
    let mut c = Cluster::start(3).await;
    let hubs: Vec<String> = (1..=3).map(|n| c.url(n)).collect();
    let hubs = hubs.join(",");
    let data = tempfile::tempdir().expect("tempdir");
    let till = |args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("client")
            .args(["--device", "till-k", "--no-discovery", "--wait-s", "3"])
            .arg("--data-dir")
            .arg(data.path())
            .args(["--hub", &hubs])
            .args(args)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };

    let mut confirmed: BTreeMap<String, String> = BTreeMap::new(); // eventId → order
    let mut kills = 0;
    let mut attempts = 0;
    let mut longest: Option<Duration> = None;
    while kills < KILLS {
        attempts += 1;
        assert!(
            attempts <= ATTEMPTS_MAX,
            "only {kills} kills in {ATTEMPTS_MAX} runs"
        );
        let order = format!("o-{attempts}");
        let mut child = till(&["order", "new", "--id", &order, "--table", "4"])
            .spawn()
            .expect("spawns the till");
        // Anywhere from before the outbox opens to after the answer: within twice the
        // longest life of a till that queued its event and exited on its own (300 ms
        // until one has). A fixed 300 ms killed only 19 of 300 runs once the till's
        // store stopped being sled and a till lived 20-35 ms.
        let window = longest.map_or(300, |life: Duration| {
            u64::try_from(2 * life.as_millis()).map_or(300, |ms| ms.clamp(10, 300))
        });
        let delay = Duration::from_millis(rng.below(window));
        let started = std::time::Instant::now();
        let finished = loop {
            if child.try_wait().expect("polls the till").is_some() {
                break Some(started.elapsed());
            }
            if started.elapsed() >= delay {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if finished.is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        child.wait().expect("reaps the till");
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            stdout.read_to_string(&mut out).expect("reads its output");
        }
        for line in out.lines() {
            // "#N queued order o-K vV event ID"
            if line.contains(" queued order ")
                && let Some(id) = line.rsplit(' ').next()
            {
                confirmed.insert(id.to_owned(), order.clone());
                // Only a run that got as far as queueing sets the window: one that
                // failed early would shrink it to the start of a till's life.
                if let Some(life) = finished {
                    longest = longest.max(Some(life));
                }
            }
        }
    }
    eprintln!(
        "{kills} kills in {attempts} runs; {} events confirmed; longest unkilled run {longest:?}",
        confirmed.len()
    );
    assert!(!confirmed.is_empty(), "no run confirmed anything");

    // One more run that is not killed sends whatever the killed ones left queued.
    let output = till(&["sync"]).output().expect("runs sync");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "sync: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("unsent=0 dead=0"), "{text}");

    let last = c.hello(1).await.expect("Hello").last_seq;
    let log = c.log_ids(1, 0, last, Duration::from_secs(30)).await;
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, id) in &log {
        *count.entry(id.as_str()).or_default() += 1;
    }
    for (id, order) in &confirmed {
        assert_eq!(
            count.get(id.as_str()).copied().unwrap_or(0),
            1,
            "confirmed event {id} ({order}) is not in the log exactly once"
        );
    }
    assert!(
        count.values().all(|n| *n == 1),
        "an event is in the log twice"
    );
    // Each order was created at most once: no event was sent under a second id.
    assert!(
        log.len() <= attempts,
        "{} events from {attempts} runs",
        log.len()
    );
    c.check_alive();
}
