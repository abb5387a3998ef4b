//! Found by the chaos harness's disk-full fault: a node whose disk filled up kept running
//! with its Raft core stopped, answering Hello and LOCAL reads from a state that no longer
//! moved, and never recovered when space came back. Now the node stops with the storage
//! error (its supervisor restarts it); restarted once there is space, it catches up, and
//! the group never stopped committing meanwhile.
//!
//! Needs root (it mounts a tmpfs for one node's data dir), as CI has.

mod common;

use std::io::Write;
use std::time::Duration;

use common::cluster::*;

const TMPFS_MB: u64 = 64;

/// Writes `path` until the file system is full.
fn fill(path: &std::path::Path) {
    let mut file = std::fs::File::create(path).expect("creates the filler");
    let chunk = vec![0u8; 1 << 20];
    while file.write_all(&chunk).is_ok() {}
    let small = vec![0u8; 4096];
    while file.write_all(&small).is_ok() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_out_of_disk_stops_with_the_error_and_catches_up_once_restarted_with_space() {
    let mut c = Cluster::start_with(
        3,
        Options {
            tmpfs: Some((3, TMPFS_MB)),
            ..Options::default()
        },
    )
    .await;
    let mut clients: Vec<_> = (1..=3).map(|n| c.client(n)).collect();
    let mut next = 0;
    let first: Vec<_> = (0..20)
        .map(|i| inventory_event("FRIES", 1, "till-1", i))
        .collect();
    append_retrying(&mut clients, &mut next, &first, 50, Duration::from_secs(5))
        .await
        .expect("appends before the disk fills");

    let filler = c.node(3).data_dir.join("filler");
    fill(&filler);
    // The group goes on committing on nodes 1 and 2; node 3 fails to store the entries.
    let mut majority: Vec<_> = (1..=2).map(|n| c.client(n)).collect();
    for round in 0..10u64 {
        let batch: Vec<_> = (0..10)
            .map(|i| inventory_event("FRIES", 1, "till-1", 100 + round * 10 + i))
            .collect();
        append_retrying(
            &mut majority,
            &mut next,
            &batch,
            100,
            Duration::from_secs(5),
        )
        .await
        .expect("the majority commits while node 3's disk is full");
        if !c.is_running(3) {
            break;
        }
    }
    let status = c.wait_exit(3, Duration::from_secs(30)).await;
    assert!(
        !status.success(),
        "node 3 must stop with an error, got {status}"
    );
    let log = c.log_tail(3, 40);
    assert!(
        log.contains("No space left on device"),
        "the node names the storage error: {log}"
    );

    std::fs::remove_file(&filler).expect("frees the space");
    c.restart(3);
    let last = c.hello(1).await.expect("Hello").last_seq;
    c.wait_same_last_seq(&[1, 2, 3], last, Duration::from_secs(60))
        .await;
    let on_1 = c.log_ids(1, 0, last, Duration::from_secs(30)).await;
    let on_3 = c.log_ids(3, 0, last, Duration::from_secs(30)).await;
    assert_eq!(on_1, on_3, "node 3 caught up to the same log");
    assert_eq!(last, 120);
}
