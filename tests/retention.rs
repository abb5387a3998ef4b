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
use pos_hub::proto::pb;

const DAY_MS: u64 = 86_400_000;
const WAIT: Duration = Duration::from_secs(30);

/// `pos-hub cluster archive-mark ARGS…` against `hub` with `token`, to completion.
async fn archive_mark(hub: String, token: String, args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(common::BIN)
            .args([
                "cluster",
                "--hub",
                &format!("http://{hub}"),
                "--token",
                &token,
            ])
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
        let before = last_seq(&cluster, node, &admin).await;
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
