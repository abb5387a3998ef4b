//! The client SDK against real 3-node groups: the durable outbox takes appends while every
//! node is down and drains exactly once when they return; a leader SIGKILLed while the
//! outbox flushes 10,000 events loses and duplicates nothing; order locks refuse a second
//! device with the holder's id until released; a hub rejection lands in the dead-letter
//! list and the device's view rolls back to the hub's truth.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::*;
use common::phase;
use pos_hub::client::{ClientError, Device, DeviceConfig, Draft, Final, HubConfig};
use pos_hub::domain::{Realm, RejectCode};
use pos_hub::proto::pb;
use serde_json::json;

/// An order as the hub has it, confirmed with the leader.
async fn hub_order(c: &Cluster, node: u64, order_id: &str) -> pb::Order {
    c.client(node)
        .get_order(pb::GetOrderRequest {
            order_id: order_id.into(),
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .expect("GetOrder")
        .into_inner()
        .order
        .expect("an order")
}

fn items(n: usize) -> serde_json::Value {
    json!([{ "id": "li-1", "sku": "FRIES", "name": "Fries", "unitPrice": 350, "quantity": n }])
}

/// Every event of the log from seq 1 to its end (as the given node streams it), checking
/// it is gap-free; returns `(seq, eventId)`.
/// The whole log as `node` has it, once it reaches at least seq `at_least` (a node
/// restarted a moment ago may still be catching up, and reading it early saw an empty log).
async fn whole_log(c: &mut Cluster, node: u64, at_least: u64) -> Vec<(u64, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let last = loop {
        let last = c.hello(node).await.expect("Hello").last_seq;
        if last >= at_least || tokio::time::Instant::now() > deadline {
            break last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    c.log_ids(node, 0, last, Duration::from_secs(60)).await
}

/// Asserts each of `appended` (in the device's append order, with its aggregate) is in
/// `log` exactly once, and that each aggregate's events are in the device's order.
fn assert_exactly_once_in_order(log: &[(u64, String)], appended: &[(String, String)]) {
    let mut seen: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (seq, id) in log {
        seen.entry(id.as_str()).or_default().push(*seq);
    }
    let mut last_seq_of: BTreeMap<&str, u64> = BTreeMap::new();
    for (aggregate, id) in appended {
        let seqs = seen.get(id.as_str()).cloned().unwrap_or_default();
        assert_eq!(
            seqs.len(),
            1,
            "event {id} of {aggregate} is in the log {} times",
            seqs.len()
        );
        let previous = last_seq_of.insert(aggregate, seqs[0]).unwrap_or(0);
        assert!(
            seqs[0] > previous,
            "{aggregate}: event {id} at seq {} is not after its predecessor at {previous}",
            seqs[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_takes_1000_appends_with_every_node_down_and_drains_them_once() {
    let mut c = Cluster::start(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let till = device(&c, dir.path(), "till-1");
    let _running = till.start();
    c.stop_all();

    // 20 orders, each created and then edited 49 times, appended round-robin.
    let mut appended = Vec::new();
    for round in 0..50 {
        for o in 0..20 {
            let order = format!("o-{o}");
            let draft = if round == 0 {
                Draft::order(
                    &order,
                    "order.created",
                    json!({"tableNumber": o.to_string(), "items": []}),
                )
            } else {
                Draft::order(&order, "order.updated", json!({"items": items(round)}))
            };
            let a = till
                .append(draft)
                .unwrap_or_else(|e| panic!("append {round}/{o} with every node down: {e}"));
            appended.push((order, a.event_id));
        }
    }
    assert_eq!(appended.len(), 1000);
    let progress = till.progress().borrow().clone();
    assert_eq!(
        progress.unsent, 1000,
        "nothing can have been sent: {progress:?}"
    );
    let view = till.order("o-7").expect("the device sees its own order");
    assert_eq!(view.head.version, 50);
    assert_eq!(view.total, 49 * 350);

    for id in 1..=3 {
        c.restart(id);
    }
    c.wait_leader(&[1, 2, 3], LEADER_TIMEOUT).await;
    assert!(
        till.settle(Duration::from_secs(120)).await,
        "the outbox did not drain: {:?}",
        till.progress().borrow()
    );
    let log = whole_log(&mut c, 1, till.cursor()).await;
    assert_eq!(log.len(), 1000, "the log holds exactly the device's events");
    assert_exactly_once_in_order(&log, &appended);

    // The device's committed view is the hub's.
    let hub = hub_order(&c, 2, "o-7").await;
    let committed = till.committed_order("o-7").expect("committed o-7");
    assert_eq!(
        (committed.head.version, committed.total),
        (hub.version, hub.total)
    );
    assert!(till.dead_letters().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_while_the_outbox_flushes_10k_events_loses_and_duplicates_nothing() {
    let mut c = Cluster::start(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let till = device(&c, dir.path(), "till-2");
    let mut appended = Vec::new();
    for chunk in 0..20 {
        let drafts: Vec<Draft> = (0..500)
            .map(|i| {
                let sku = format!("SKU-{}", (chunk * 500 + i) % 40);
                Draft::new(
                    "inventory",
                    &sku,
                    "inventory.adjusted",
                    json!({"sku": sku, "delta": 1}),
                )
            })
            .collect();
        let skus: Vec<String> = drafts.iter().map(|d| d.aggregate_id.clone()).collect();
        let done = till.append_all(drafts).expect("queues 500 events");
        appended.extend(skus.into_iter().zip(done.into_iter().map(|a| a.event_id)));
    }
    assert_eq!(appended.len(), 10_000);

    let running = till.start();
    // Kill the leader once the flush is well under way.
    let mut progress = till.progress();
    let started = tokio::time::Instant::now();
    while progress.borrow_and_update().acked_seq < 2_000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the flush did not start: {:?}",
            progress.borrow()
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), progress.changed()).await;
    }
    let leader = c.leader_id().await;
    c.kill(leader);
    let acked_at_kill = till.progress().borrow().acked_seq;
    eprintln!("killed leader {leader} with {acked_at_kill} events acked");
    assert!(
        acked_at_kill < 10_000,
        "the flush was over before the kill; nothing was tested"
    );

    assert!(
        till.settle(Duration::from_secs(180)).await,
        "the outbox did not drain after the leader died: {:?}",
        till.progress().borrow()
    );
    drop(running);
    let survivor = c.running()[0];
    let log = whole_log(&mut c, survivor, till.cursor()).await;
    assert_eq!(
        log.len(),
        10_000,
        "the log holds each event once and nothing else"
    );
    assert_exactly_once_in_order(&log, &appended);
    assert!(till.dead_letters().is_empty());
    let total: i64 = (0..40)
        .map(|s| till.stock(&format!("SKU-{s}")).map_or(0, |st| st.total()))
        .sum();
    assert_eq!(
        total, 10_000,
        "the device's stock view counts every adjustment once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_order_refuses_the_other_device_with_the_holder_until_released() {
    let c = Cluster::start(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = device(&c, dir.path(), "till-a");
    let b = device(&c, dir.path(), "till-b");
    let _ra = a.start();
    let _rb = b.start();
    a.append(Draft::order("o-1", "order.created", json!({"items": []})))
        .expect("creates o-1");
    assert!(a.settle(Duration::from_secs(30)).await);

    let guard = a
        .lock("o-1", Duration::from_secs(10))
        .await
        .expect("A locks o-1");
    assert!(a.settle(Duration::from_secs(30)).await);
    // B catches up with the log, then its edit and its lock are refused, naming A.
    let lock_seq = a.progress().borrow().acked_seq;
    wait_cursor(&b, lock_seq).await;
    let edit = Draft::order("o-1", "order.updated", json!({"items": items(1)}));
    match b.append(edit.clone()) {
        Err(ClientError::Refused {
            code, lock_holder, ..
        }) => {
            assert_eq!(code, RejectCode::Locked);
            assert_eq!(lock_holder.as_deref(), Some("till-a"));
        }
        other => panic!("B's edit while A holds the lock: {other:?}"),
    }
    match b.lock("o-1", Duration::from_secs(10)).await {
        Err(ClientError::Refused {
            code, lock_holder, ..
        }) => {
            assert_eq!(code, RejectCode::Locked);
            assert_eq!(lock_holder.as_deref(), Some("till-a"));
        }
        other => panic!(
            "B's lock while A holds it: {:?}",
            other.map(|g| g.order_id().to_owned())
        ),
    }

    // The hub names the holder in its own field too, on every node (a follower passes the
    // leader's result on): a device whose view is behind, or a program, needs no parsing.
    let version = b.order("o-1").expect("B sees o-1").head.version + 1;
    for node in 1..=3 {
        let id = uuid::Uuid::now_v7().to_string();
        let raw = common::event(
            &id,
            ("order", "o-1"),
            version,
            "order.updated",
            "till-b",
            1_000 + node,
            json!({"items": items(7)}),
        );
        let results = append(
            &mut c.client(node),
            vec![to_pb(&raw)],
            Duration::from_secs(10),
        )
        .await
        .expect("the hub answers");
        let result = &results[0];
        assert_eq!(
            result.status,
            pb::AppendStatus::Rejected as i32,
            "{result:?}"
        );
        assert_eq!(result.code, "LOCKED", "{result:?}");
        assert_eq!(result.lock_holder, "till-a", "node {node}: {result:?}");
    }

    // The hub refuses it too when B's view is behind: a forced-stale device sends anyway.
    drop(guard);
    assert!(a.settle(Duration::from_secs(30)).await);
    let released_seq = a.progress().borrow().acked_seq;
    wait_cursor(&b, released_seq).await;
    let _b_lock = b
        .lock("o-1", Duration::from_secs(10))
        .await
        .expect("B locks o-1 after the release");
    let edited = b.append(edit).expect("B edits o-1");
    assert_eq!(
        b.wait_outcome(edited.number, Duration::from_secs(30)).await,
        Some(Final::Committed {
            seq: released_seq + 2
        })
    );
}

async fn wait_cursor(device: &Device, seq: u64) {
    let mut progress = device.progress();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while progress.borrow_and_update().cursor < seq {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} did not reach seq {seq}: {:?}",
            device.device_id(),
            progress.borrow()
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), progress.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_edit_becomes_a_dead_letter_and_the_view_rolls_back_to_the_hub() {
    let mut c = Cluster::start(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = device(&c, dir.path(), "till-a");
    let _ra = a.start();
    a.append(Draft::order("o-9", "order.created", json!({"items": []})))
        .expect("creates o-9");
    assert!(a.settle(Duration::from_secs(30)).await);

    // B has seen o-9 at version 1, then edits it while offline (not started).
    let b = device(&c, dir.path(), "till-b");
    {
        let _rb = b.start();
        wait_cursor(&b, 1).await;
    }
    let stale = b
        .append(Draft::order(
            "o-9",
            "order.updated",
            json!({"items": items(5)}),
        ))
        .expect("B's view accepts its edit");
    assert_eq!(stale.version, 2);
    assert_eq!(
        b.order("o-9").expect("o-9").total,
        5 * 350,
        "optimistic view"
    );

    // A edits o-9 first.
    a.append(Draft::order(
        "o-9",
        "order.updated",
        json!({"items": items(2)}),
    ))
    .expect("A edits o-9");
    assert!(a.settle(Duration::from_secs(30)).await);

    let _rb = b.start();
    let outcome = b.wait_outcome(stale.number, Duration::from_secs(30)).await;
    match outcome {
        Some(Final::Rejected { code, message, .. }) => {
            assert_eq!(code, RejectCode::StaleVersion, "{message}");
        }
        other => panic!("B's stale edit: {other:?}"),
    }
    let dead = b.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].code, RejectCode::StaleVersion);
    assert_eq!(dead[0].event.event_id, stale.event_id);
    assert!(dead[0].message.contains("version"), "{}", dead[0].message);

    assert!(b.settle(Duration::from_secs(30)).await);
    let hub = hub_order(&c, 3, "o-9").await;
    let view = b.order("o-9").expect("o-9");
    assert_eq!((view.head.version, view.total), (hub.version, hub.total));
    assert_eq!(
        view.total,
        2 * 350,
        "B's rejected edit is rolled back in its view"
    );

    // Resolving the dead letter removes it for good.
    assert!(b.resolve(dead[0].number).expect("resolves"));
    assert!(b.dead_letters().is_empty());
    c.check_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_refused_for_a_clock_that_ran_ahead_are_restamped_not_dead_lettered() {
    let c = Cluster::start(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // The device's clock ran two million past the store's (a store reset, a bug).
        let (outbox, _) =
            pos_hub::client::outbox::Outbox::open(&dir.path().join("till-r")).expect("opens");
        outbox.queue(&[], 2_000_000, 1).expect("sets the clock");
    }
    let d = device(&c, dir.path(), "till-r");
    let appended = d
        .append(Draft::order(
            "o-r",
            "order.created",
            json!({"items": items(1)}),
        ))
        .expect("queued");
    assert_eq!(
        appended.lamport, 2_000_001,
        "stamped from the device's clock"
    );
    let _run = d.start();
    match d
        .wait_outcome(appended.number, Duration::from_secs(30))
        .await
    {
        Some(Final::Committed { seq }) => assert_eq!(seq, 1),
        other => panic!("the re-stamped event: {other:?}"),
    }
    assert!(d.dead_letters().is_empty(), "{:?}", d.dead_letters());
    let hello = c.hello(1).await.expect("Hello");
    assert!(
        (1..=10).contains(&hello.lamport),
        "the event went in re-stamped near the store's clock, not at {}",
        hello.lamport
    );
    assert_eq!(hub_order(&c, 1, "o-r").await.version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_store_reset_a_refused_clock_is_restamped_from_the_new_stores_clock() {
    phase("store A's clock is at 1,800,000; store B (the same realm, reset) is at 0");
    let mut a = Cluster::start(1).await;
    let b = Cluster::start_beside(&a, 1, Options::default()).await;
    for lamport in [900_000, 1_800_000] {
        append_accepted(
            &mut a.client(1),
            vec![inventory_event("FRIES", 1, "till-x", lamport)],
            Duration::from_secs(30),
        )
        .await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Device::open(DeviceConfig {
        data_dir: dir.path().join("till-r"),
        device_id: "till-r".into(),
        user_id: None,
        hub: HubConfig::new(
            vec![a.client_addr(1), b.client_addr(1)],
            Realm::new(TENANT, STORE),
        ),
    })
    .expect("opens the device");
    let _run = d.start();

    phase("the device writes through A and takes A's clock");
    let first = d
        .append(Draft::order(
            "o-a",
            "order.created",
            json!({"items": items(1)}),
        ))
        .expect("queued");
    match d.wait_outcome(first.number, Duration::from_secs(30)).await {
        Some(Final::Committed { seq }) => assert_eq!(seq, 3),
        other => panic!("the first event: {other:?}"),
    }
    let mut progress = d.progress();
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while progress.borrow_and_update().cursor < 3 {
        assert!(
            tokio::time::Instant::now() < until,
            "the device did not follow A"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), progress.changed()).await;
    }

    phase("A is gone; the next event, stamped past A's clock, goes to B");
    a.kill(1);
    let second = d
        .append(Draft::order(
            "o-b",
            "order.created",
            json!({"items": items(1)}),
        ))
        .expect("queued");
    assert!(
        second.lamport > 1_800_000,
        "stamped from A's clock: {}",
        second.lamport
    );
    // B refuses the stamp (more than 10^6 past its clock); re-stamped from the clock B
    // reported, not from A's (then B would refuse it again and it would be a dead letter).
    match d.wait_outcome(second.number, Duration::from_secs(60)).await {
        // B's log may hold the device's first event too (B's log is behind the device's
        // copy: the device starts over and its outbox may send o-a again), so o-b's seq
        // is 1 or 2; what matters is that it committed on B, not as a dead letter.
        Some(Final::Committed { seq }) => assert!((1..=2).contains(&seq), "on B at seq {seq}"),
        other => panic!(
            "the second event: {other:?}; dead letters {:?}",
            d.dead_letters()
        ),
    }
    assert!(d.dead_letters().is_empty(), "{:?}", d.dead_letters());
    assert_eq!(hub_order(&b, 1, "o-b").await.version, 1, "o-b is on B");
    let hello = b.hello(1).await.expect("Hello");
    assert!(
        (1..=10).contains(&hello.lamport),
        "re-stamped near B's clock, not at {}",
        hello.lamport
    );
}
