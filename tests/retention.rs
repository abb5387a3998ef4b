//! Retention against running nodes (rules V4): `pos-hub cluster archive-mark` records the
//! store's archive mark, admins only, forward only, over committed seqs; from then on an
//! event whose eventId (a UUIDv7) was made before the retention horizon is refused
//! `EVENT_BEYOND_RETENTION` on every node, while a resend of an event the history holds is
//! still answered as the duplicate it is. Every refusal asserts its code and message, and
//! that nothing reached the log.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::{claims, with_token};
use pos_hub::auth::token::{self, Role};
use pos_hub::client::{Device, Draft, Final};
use pos_hub::proto::pb;

const DAY_MS: u64 = 86_400_000;
const WAIT: Duration = Duration::from_secs(30);

/// `pos-hub cluster archive-mark ARGS…` against `hub` with `token` (none if empty), to
/// completion.
async fn archive_mark(hub: String, token: String, args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(common::BIN);
        command.args(["cluster", "--hub", &format!("http://{hub}")]);
        if !token.is_empty() {
            command.args(["--token", &token]);
        }
        command
            .arg("archive-mark")
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("pos-hub runs")
    })
    .await
    .expect("the CLI thread")
}

/// A new order by till-1 whose eventId is a UUIDv7 made `age_ms` ago.
fn made_ago(age_ms: u64, lamport: u64) -> pb::Event {
    let made = pos_hub::clock::now_ms() - age_ms;
    let mut event = inventory_event("X", 1, "till-1", lamport);
    let salt = lamport.to_be_bytes();
    let random = [0, 0, 0, 0, 0, 0, 0, 0, salt[6], salt[7]];
    event.event_id = uuid::Builder::from_unix_timestamp_millis(made, &random)
        .into_uuid()
        .to_string();
    event.aggregate_type = "order".into();
    event.aggregate_id = format!("o-{}", event.event_id);
    event.r#type = "order.created".into();
    event.payload = Some(prost_types::Struct::default());
    event
}

async fn append(cluster: &Cluster, node: u64, token: &str, event: pb::Event) -> pb::AppendResult {
    let results = poll_until(WAIT, async || {
        cluster
            .client(node)
            .append(with_token(
                pb::AppendRequest {
                    events: vec![event.clone()],
                },
                Some(token),
            ))
            .await
            .map(|r| r.into_inner().results)
            .map_err(|s| format!("{s:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("node {node}: no answer: {e}"));
    results.into_iter().next().expect("one result")
}

async fn last_seq(cluster: &Cluster, node: u64, token: &str) -> u64 {
    let hello = pb::HelloRequest {
        device_id: "reader".into(),
        cursor: 0,
    };
    cluster
        .client(node)
        .hello(with_token(hello, Some(token)))
        .await
        .expect("Hello")
        .into_inner()
        .last_seq
}

/// The last seq every node of the three answers alike, once they do (within 10 s).
async fn same_last_seq(cluster: &Cluster, token: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut seqs = Vec::new();
        for node in 1..=3 {
            seqs.push(last_seq(cluster, node, token).await);
        }
        if seqs.iter().all(|s| *s == seqs[0]) {
            return seqs[0];
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the nodes did not agree on a last seq within 10 s: {seqs:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_mark_is_an_admins_and_then_events_older_than_retention_are_refused() {
    let key_dir = tempfile::tempdir().expect("tempdir");
    let key = common::store_key(key_dir.path());
    let options = Options {
        public_key: Some(key.public_path),
        ..Options::default()
    };
    let cluster = Cluster::start_with(3, options).await;
    let till = token::issue(&key.signing, &claims("till-1", Role::Till));
    let admin = token::issue(&key.signing, &claims("operator", Role::Admin));

    // Before any mark, an event of any age goes in.
    let ancient = append(&cluster, 1, &till, made_ago(400 * DAY_MS, 1)).await;
    assert_eq!(
        ancient.status,
        pb::AppendStatus::Accepted as i32,
        "{ancient:?}"
    );
    let recent = append(&cluster, 2, &till, made_ago(DAY_MS, 2)).await;
    assert_eq!(
        recent.status,
        pb::AppendStatus::Accepted as i32,
        "{recent:?}"
    );

    // Only an admin marks the archive; a bad mark is refused by name; nothing is written.
    let before = last_seq(&cluster, 1, &admin).await;
    let refusals: [(&str, &[&str], &str); 4] = [
        (
            till.as_str(),
            &["1"],
            "role till may not write store.archived",
        ),
        (
            admin.as_str(),
            &["99", "--retain-days", "7"],
            "past the end of the log",
        ),
        (
            admin.as_str(),
            &["1", "--retain-days", "3"],
            "between 7 and 3650",
        ),
        (admin.as_str(), &["0"], "throughSeq must be between 1"),
    ];
    for (token, args, reason) in refusals {
        let out = archive_mark(cluster.client_addr(1), token.to_owned(), args).await;
        common::refused(&out, &format!("archive-mark {args:?}"), reason);
    }
    assert_eq!(
        last_seq(&cluster, 1, &admin).await,
        before,
        "nothing reached the log"
    );

    // The admin's mark, through a follower or not.
    let out = archive_mark(
        cluster.client_addr(3),
        admin.clone(),
        &["2", "--retain-days", "7"],
    )
    .await;
    let said = common::succeeded(&out, "cluster archive-mark");
    assert!(said.contains("archived through seq 2"), "{said}");
    let out = archive_mark(cluster.client_addr(1), admin.clone(), &["1"]).await;
    common::refused(&out, "a mark moving back", "never moves back");

    // From now on, events made before the horizon are refused on every node; others go in;
    // a resend of one the history holds is its duplicate, however old.
    for node in 1..=3 {
        // Every node has applied what was accepted so far (a follower's Hello reads its
        // own applied seq), so that "unchanged" below is about the refused event alone.
        let before = same_last_seq(&cluster, &admin).await;
        let old = append(&cluster, node, &till, made_ago(8 * DAY_MS, 10 + node)).await;
        assert_eq!(
            old.status,
            pb::AppendStatus::Rejected as i32,
            "node {node}: {old:?}"
        );
        assert_eq!(old.code, "EVENT_BEYOND_RETENTION", "node {node}: {old:?}");
        assert!(old.message.contains("more than 7 days"), "{}", old.message);
        assert_eq!(
            last_seq(&cluster, node, &admin).await,
            before,
            "node {node}: log unchanged"
        );
        let young = append(&cluster, node, &till, made_ago(6 * DAY_MS, 20 + node)).await;
        assert_eq!(
            young.status,
            pb::AppendStatus::Accepted as i32,
            "node {node}: {young:?}"
        );
    }
    let mut resend = made_ago(0, 1);
    resend.event_id = uuid_of(&cluster, &admin, ancient.seq).await;
    let again = append(&cluster, 2, &till, resend).await;
    assert_eq!(
        again.status,
        pb::AppendStatus::Duplicate as i32,
        "{again:?}"
    );
    assert_eq!(again.seq, ancient.seq);
}

/// The eventId of the event at `seq`, read back with Subscribe.
async fn uuid_of(cluster: &Cluster, token: &str, seq: u64) -> String {
    let mut stream = cluster
        .client(1)
        .subscribe(with_token(
            pb::SubscribeRequest { cursor: seq - 1 },
            Some(token),
        ))
        .await
        .expect("Subscribe")
        .into_inner();
    loop {
        let message = stream
            .message()
            .await
            .expect("a message")
            .expect("the stream");
        if let Some(event) = message.events.into_iter().find(|e| e.seq == seq) {
            return event.event_id;
        }
    }
}

/// `.hist` files in node `id`'s history.
fn history_files(cluster: &Cluster, id: u64) -> usize {
    std::fs::read_dir(cluster.node(id).data_dir.join("history"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "hist"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_after_retention_deleted_history_serves_every_cursor_inside_it() {
    // Small history files, and a clock ten days back while the events go in: ten days
    // later (the clock set right), they are past a 7-day retention.
    let ten_days_back = format!("--clock-offset-ms=-{}", 10 * DAY_MS);
    // Snapshots often and a short log, so that a node added later catches up by snapshot
    // (and fetches the history it lacks from a peer), not by replaying the log.
    let options = Options {
        snapshot_every: Some(5),
        extra_args: vec![
            "--keep-log-entries".into(),
            "10".into(),
            "--history-segment-kib".into(),
            "64".into(),
            ten_days_back.clone(),
        ],
        ..Options::default()
    };
    let mut cluster = Cluster::start_with(3, options).await;
    let mut client = cluster.client(1);
    for batch in 0..20u64 {
        let events = (0..100)
            .map(|i| inventory_event("FRIES", 1, &format!("till-{}", i % 4), batch * 100 + i + 1))
            .collect();
        append_accepted(&mut client, events, WAIT).await;
    }
    let last = 2000;
    cluster.wait_same_last_seq(&[1, 2, 3], last, WAIT).await;
    let all = subscribe_ids(&mut cluster.client(2), 0, last, WAIT)
        .await
        .expect("the whole log");
    let files = history_files(&cluster, 2);
    assert!(files > 4, "{files} history files");

    // The clock set right: every node restarts ten days later.
    cluster.options_mut().extra_args = vec![
        "--keep-log-entries".into(),
        "10".into(),
        "--history-segment-kib".into(),
        "64".into(),
    ];
    for id in 1..=3 {
        cluster.kill(id);
        cluster.restart(id);
    }
    cluster.wait_leader(&[1, 2, 3], WAIT).await;

    // Archived through seq 1500, kept 7 days: every file wholly behind 1500 goes.
    let out = archive_mark(
        cluster.client_addr(1),
        String::new(),
        &["1500", "--retain-days", "7"],
    )
    .await;
    let said = common::succeeded(&out, "cluster archive-mark");
    assert!(said.contains("archived through seq 1500"), "{said}");
    for id in 1..=3 {
        poll_until(Duration::from_secs(40), async || {
            let now = history_files(&cluster, id);
            if now < files {
                Ok(now)
            } else {
                Err(format!("node {id}: {now} history files"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("retention deleted nothing: {e}"));
    }
    // The files stop at the mark: no file past 1500 went.
    let first = first_held(&cluster, 2).await;
    assert!(first > 1 && first <= 1501, "node 2 holds from seq {first}");
    eprintln!(
        "retention: node 2 holds seqs {first}..={last} in {} of its {files} files",
        history_files(&cluster, 2)
    );

    // Node 2 restarts on what retention left, and serves every cursor inside it, whole.
    cluster.kill(2);
    cluster.restart(2);
    cluster.wait_same_last_seq(&[1, 2, 3], last + 1, WAIT).await;
    let mut client = cluster.client(2);
    let mut cursor = first - 1;
    while cursor <= last {
        let got = subscribe_ids(&mut client, cursor, last, WAIT)
            .await
            .unwrap_or_else(|e| panic!("cursor {cursor}: {e}"));
        assert_eq!(got, all[cursor as usize..].to_vec(), "from cursor {cursor}");
        cursor += if cursor < first + 40 || cursor > last - 40 {
            1
        } else {
            37
        };
    }
    // Below it: a clear code, not a silent jump.
    let below = client
        .subscribe(pb::SubscribeRequest { cursor: first - 2 })
        .await;
    let status = match below {
        Err(status) => status,
        Ok(stream) => stream
            .into_inner()
            .message()
            .await
            .expect_err("no event below retention"),
    };
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("CURSOR_BELOW_RETENTION")
            && status
                .message()
                .contains(&format!("up to seq {}", first - 1)),
        "{}",
        status.message()
    );
    // A blank node added now gets the live state and the history its peers still hold: it
    // begins where theirs does, and serves every cursor inside it.
    cluster.spawn_blank_node(4);
    poll_until(WAIT, async || cluster.hello(4).await.map(drop))
        .await
        .unwrap_or_else(|e| panic!("blank node 4 does not answer: {e}"));
    let leader = cluster.leader_id().await;
    let add = pb::AddNodeRequest {
        id: 4,
        peer_addr: cluster.peer_addr(4),
        client_addr: cluster.client_addr(4),
    };
    tokio::time::timeout(
        Duration::from_secs(120),
        cluster.cluster_client(leader).add_node(add),
    )
    .await
    .expect("AddNode answers")
    .unwrap_or_else(|s| panic!("AddNode failed: {s:?}"));
    poll_until(WAIT, async || match cluster.hello(4).await {
        Ok(h) if h.last_seq > last => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await
    .unwrap_or_else(|e| panic!("node 4 never caught up: {e}"));
    let first4 = first_held(&cluster, 4).await;
    assert!(
        first4 > 1 && first4 <= 1501,
        "node 4 holds from seq {first4}"
    );
    let got = subscribe_ids(&mut cluster.client(4), first4 - 1, last, WAIT)
        .await
        .expect("node 4 streams from its first seq");
    assert_eq!(got, all[(first4 - 1) as usize..].to_vec());
    eprintln!("retention: node 4, added after it, holds from seq {first4}");
}

/// The first seq node `id` serves: where Subscribe from cursor 0 is refused, the seq it
/// names plus one.
async fn first_held(cluster: &Cluster, id: u64) -> u64 {
    let status = match cluster
        .client(id)
        .subscribe(pb::SubscribeRequest { cursor: 0 })
        .await
    {
        Err(status) => status,
        Ok(stream) => match stream.into_inner().message().await {
            Err(status) => status,
            Ok(_) => return 1,
        },
    };
    let words = status.message();
    let through: u64 = words
        .split("up to seq ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no seq in {words:?}"));
    through + 1
}

/// Waits until `device`'s committed cursor reaches `seq`.
async fn followed_to(device: &Device, seq: u64, within: Duration) {
    poll_until(within, async || match device.cursor() {
        cursor if cursor >= seq => Ok(()),
        cursor => Err(format!(
            "{} at cursor {cursor} of {seq}",
            device.device_id()
        )),
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Asserts that `device`'s committed copy is the hub's live state at the same seq.
async fn holds_the_hubs_state(cluster: &mut Cluster, device: &Device) {
    let live = bootstrap(&mut cluster.client(1), pb::Consistency::Linearizable).await;
    let (orders, tickets, stocks) = as_sent(device.committed(), live.seq);
    assert_eq!(orders, live.orders, "{}: orders", device.device_id());
    assert_eq!(
        tickets,
        sorted_tickets(live.tickets),
        "{}: tickets",
        device.device_id()
    );
    assert_eq!(stocks, live.stocks, "{}: stock", device.device_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_cursor_retention_passed_bootstraps_from_the_live_state_and_follows_on() {
    let segments = ["--history-segment-kib".to_owned(), "64".to_owned()];
    let mut args = segments.to_vec();
    args.push(format!("--clock-offset-ms=-{}", 10 * DAY_MS));
    let options = Options {
        extra_args: args,
        ..Options::default()
    };
    let mut cluster = Cluster::start_with(3, options).await;
    let dirs = tempfile::tempdir().expect("tempdir");

    common::phase("till-1 follows the first 40 orders, then is switched off");
    let till = device(&cluster, dirs.path(), "till-1");
    let running = till.start();
    let mut client = cluster.client(1);
    let mut lamport = 1;
    let mut order = 0;
    let mut flows = async |client: &mut _, orders: u64| {
        for _ in 0..orders {
            let events = order_flow(&format!("o-{order}"), "till-9", lamport, order % 3 != 0);
            lamport += 10;
            order += 1;
            append_accepted(client, events, WAIT).await;
        }
    };
    flows(&mut client, 40).await;
    let first_part = same_last_seq(&cluster, "").await;
    followed_to(&till, first_part, WAIT).await;
    drop(running);
    let switched_off_at = till.cursor();
    drop(till);

    common::phase("the store goes on: 2,000 stock counts and 40 more orders");
    for batch in 0..20u64 {
        let events = (0..100)
            // A counting device per hundred: each stays under the per-device rate limit.
            .map(|i| {
                let device = format!("stock-{batch}");
                inventory_event("FRIES", 1, &device, 10_000 + batch * 100 + i)
            })
            .collect();
        append_accepted(&mut client, events, WAIT).await;
        flows(&mut client, 2).await;
    }
    let last = same_last_seq(&cluster, "").await;

    common::phase("ten days later, the history past till-1's cursor is archived and deleted");
    cluster.options_mut().extra_args = segments.to_vec();
    for id in 1..=3 {
        cluster.kill(id);
        cluster.restart(id);
    }
    cluster.wait_leader(&[1, 2, 3], WAIT).await;
    let through = (last - 100).to_string();
    let out = archive_mark(
        cluster.client_addr(1),
        String::new(),
        &[&through, "--retain-days", "7"],
    )
    .await;
    common::succeeded(&out, "cluster archive-mark");
    for id in 1..=3 {
        poll_until(Duration::from_secs(40), async || {
            match first_held(&cluster, id).await {
                first if first > switched_off_at + 1 => Ok(()),
                first => Err(format!("node {id} still holds from seq {first}")),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("retention did not pass till-1's cursor: {e}"));
    }
    let last = same_last_seq(&cluster, "").await;

    common::phase("till-1 comes back below retention: it bootstraps, and holds the hub's state");
    let till = device(&cluster, dirs.path(), "till-1");
    assert_eq!(
        till.cursor(),
        switched_off_at,
        "the copy it was switched off with"
    );
    let _running = till.start();
    followed_to(&till, last, WAIT).await;
    holds_the_hubs_state(&mut cluster, &till).await;

    common::phase("a new till starts from the live state too, with no history to replay");
    let fresh = device(&cluster, dirs.path(), "till-2");
    let _fresh_running = fresh.start();
    followed_to(&fresh, last, WAIT).await;
    holds_the_hubs_state(&mut cluster, &fresh).await;

    common::phase("and both follow what comes next");
    let appended = till
        .append(Draft::order(
            "o-new",
            "order.created",
            serde_json::json!({"tableNumber": "3", "guestCount": 1, "currency": "EUR", "items": []}),
        ))
        .expect("queued");
    let outcome = till.wait_outcome(appended.number, WAIT).await;
    assert!(
        matches!(outcome, Some(Final::Committed { seq }) if seq == last + 1),
        "{outcome:?}"
    );
    followed_to(&fresh, last + 1, WAIT).await;
    assert!(fresh.committed_order("o-new").is_some());
    assert!(till.dead_letters().is_empty() && fresh.dead_letters().is_empty());
}
