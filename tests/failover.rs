//! Failover as a device sees it, against real 3-node groups on loopback: a Subscribe
//! stream with nothing to carry sends heartbeats (messages with no events); the client
//! SDK's `HubClient` moves an Append to the next node within the same call when its node
//! is paused (SIGSTOP: the connection stays open and says nothing); and a `Device` whose
//! stream's node is paused finds the dead stream by its silence, with no write of its own
//! to notice, and follows the log on another node; and a leader cut off from its
//! majority with an append open refuses it as soon as the majority has been silent for an
//! election timeout, rather than at the append's own timeout.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::*;
use common::phase;
use pos_hub::client::hub::HubClient as SdkHub;
use pos_hub::client::{Device, DeviceConfig, HubConfig};
use pos_hub::domain::Realm;
use pos_hub::proto::pb;

/// Generous bounds on waits that must end; never a measurement.
const WITHIN: Duration = Duration::from_secs(60);

/// Pauses a node's process (SIGSTOP) until the guard is dropped (SIGCONT), so a failing
/// assertion does not leave it stopped.
struct Paused(libc::pid_t);

impl Paused {
    fn new(c: &Cluster, id: u64) -> Paused {
        let pid = libc::pid_t::try_from(c.pid(id)).expect("a pid");
        // SAFETY: kill(2) on the pid of a child the harness started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
        // kill(2) returns once the stop is queued, not done: the kernel wakes one thread
        // to begin the group stop, and on a loaded machine the others go on running (and
        // may read and forward a request sent now) until it is scheduled. Wait until
        // every thread is stopped.
        let started = std::time::Instant::now();
        while !all_threads_stopped(pid) {
            assert!(started.elapsed() < WITHIN, "node {id} did not stop");
            std::thread::sleep(Duration::from_millis(1));
        }
        eprintln!("harness: node {id} paused");
        Paused(pid)
    }
}

/// Whether every thread of `pid` is in the stopped state (`T` in /proc's stat).
fn all_threads_stopped(pid: libc::pid_t) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            // The state follows the command name, which is in parentheses.
            .map(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
            })
            .unwrap_or(false)
    })
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as above; the child is still not reaped.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// A follower of the group, and every client address with that follower's first.
async fn follower_first(c: &mut Cluster) -> (u64, u64, Vec<String>) {
    let leader = c.leader_id().await;
    let follower = c
        .members()
        .into_iter()
        .find(|n| *n != leader)
        .expect("a follower");
    let mut addrs = vec![c.client_addr(follower)];
    addrs.extend(
        c.members()
            .into_iter()
            .filter(|n| *n != follower)
            .map(|n| c.client_addr(n)),
    );
    (leader, follower, addrs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_subscribe_stream_sends_heartbeats_that_carry_no_events() {
    let c = Cluster::start(1).await;
    let mut hub = c.client(1);
    let seqs = append_accepted(
        &mut hub,
        (1..=2)
            .map(|n| inventory_event("FRIES", 1, "till-1", n))
            .collect(),
        WITHIN,
    )
    .await;
    assert_eq!(seqs, vec![1, 2]);

    phase("subscribe from 0: the two events, then heartbeats while nothing happens");
    let mut stream = hub
        .subscribe(pb::SubscribeRequest { cursor: 0 })
        .await
        .expect("subscribes")
        .into_inner();
    let mut delivered = Vec::new();
    let mut heartbeats = 0;
    while heartbeats < 3 {
        let message = tokio::time::timeout(WITHIN, stream.message())
            .await
            .expect("an idle stream still sends something")
            .expect("the stream is healthy")
            .expect("the stream stays open");
        if message.events.is_empty() {
            assert_eq!(
                delivered,
                vec![1, 2],
                "a heartbeat comes only once the log is delivered"
            );
            heartbeats += 1;
        } else {
            delivered.extend(message.events.iter().map(|e| e.seq));
        }
    }
    assert_eq!(
        delivered,
        vec![1, 2],
        "nothing but heartbeats after the log"
    );

    phase("an event appended now still arrives after the heartbeats, at the next seq");
    append_accepted(
        &mut hub,
        vec![inventory_event("FRIES", 1, "till-1", 3)],
        WITHIN,
    )
    .await;
    loop {
        let message = tokio::time::timeout(WITHIN, stream.message())
            .await
            .expect("the new event arrives")
            .expect("the stream is healthy")
            .expect("the stream stays open");
        if let Some(first) = message.events.first() {
            assert_eq!(first.seq, 3);
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_node_is_paused_moves_to_the_next_node_within_the_call() {
    let mut c = Cluster::start(3).await;
    let (_leader, follower, addrs) = follower_first(&mut c).await;
    let hub = SdkHub::new(HubConfig::new(addrs, Realm::new(TENANT, STORE))).expect("a client");

    phase("the client talks to the follower");
    let results = hub
        .append(vec![inventory_event("FRIES", 1, "till-1", 1)])
        .await
        .expect("the follower answers");
    assert_eq!(results[0].status, pb::AppendStatus::Accepted as i32);
    assert_eq!(hub.current(), Some(c.client_addr(follower)));

    phase("pause the follower: the next Append is answered by another node, in one call");
    let paused = Paused::new(&c, follower);
    let event = inventory_event("FRIES", 1, "till-1", 2);
    let results = tokio::time::timeout(WITHIN, hub.append(vec![event.clone()]))
        .await
        .expect("the call ends")
        .unwrap_or_else(|err| panic!("the call failed instead of moving on: {err}"));
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].event_id, event.event_id);
    assert_eq!(results[0].status, pb::AppendStatus::Accepted as i32);
    let now = hub.current().expect("a current node");
    assert_ne!(now, c.client_addr(follower), "moved off the paused node");
    assert_eq!(
        hub.known().last(),
        Some(&c.client_addr(follower)),
        "the paused node is tried last from now on"
    );
    drop(paused);
}

fn device(dir: &Path, addrs: Vec<String>) -> Device {
    Device::open(DeviceConfig {
        data_dir: dir.join("kds-1"),
        device_id: "kds-1".into(),
        user_id: None,
        hub: HubConfig::new(addrs, Realm::new(TENANT, STORE)),
    })
    .expect("opens the device")
}

async fn wait_cursor(device: &Device, seq: u64) {
    let mut progress = device.progress();
    let deadline = tokio::time::Instant::now() + WITHIN;
    while progress.borrow_and_update().cursor < seq {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the device did not reach seq {seq}: {:?}",
            progress.borrow()
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), progress.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_stream_node_is_paused_finds_the_silence_and_follows_another_node() {
    let mut c = Cluster::start(3).await;
    let (leader, follower, addrs) = follower_first(&mut c).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let device = device(dir.path(), addrs);
    let _running = device.start();
    let mut hub = c.client(leader);

    phase("the device follows the log on the follower");
    let seqs = append_accepted(
        &mut hub,
        vec![inventory_event("FRIES", 1, "till-1", 1)],
        WITHIN,
    )
    .await;
    wait_cursor(&device, seqs[0]).await;
    assert_eq!(
        device.progress().borrow().node,
        Some(c.client_addr(follower)),
        "the device's stream is on the follower it was given first"
    );

    phase("pause the follower; another device appends through the leader");
    let paused = Paused::new(&c, follower);
    let seqs = append_accepted(
        &mut hub,
        vec![inventory_event("FRIES", 1, "till-1", 2)],
        WITHIN,
    )
    .await;
    // The device writes nothing: only the stream's silence can tell it to move.
    wait_cursor(&device, seqs[0]).await;
    let node = device.progress().borrow().node.clone();
    assert!(
        node.is_some() && node != Some(c.client_addr(follower)),
        "the device follows another node now: {node:?}"
    );
    drop(paused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_with_an_append_open_refuses_it_once_the_majority_is_silent() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader_id().await;
    let mut hub = c.client(leader);
    append_accepted(
        &mut hub,
        vec![inventory_event("FRIES", 1, "till-1", 1)],
        WITHIN,
    )
    .await;

    phase("pause both followers; append on the leader at once, while its quorum is fresh");
    let paused: Vec<Paused> = c
        .members()
        .into_iter()
        .filter(|n| *n != leader)
        .map(|n| Paused::new(&c, n))
        .collect();
    let result = append(
        &mut hub,
        vec![inventory_event("FRIES", 1, "till-1", 2)],
        WITHIN,
    )
    .await;
    // Without the check, the open append waits out the node's append timeout and says the
    // commit did not come ("not committed within"); with it, the leader names the silent
    // majority, and the device knows to go elsewhere.
    match result {
        Ok(results) => panic!("a leader with no majority answered {results:?}"),
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert!(
                status.message().contains("no quorum")
                    && status.message().contains(&format!("node {leader} leads")),
                "{status:?}"
            );
        }
    }
    drop(paused);
}
