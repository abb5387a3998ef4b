//! Token lifecycle against running nodes over real gRPC: lifetime bound and leeway; the
//! replicated deny-list (`pos-hub cluster revoke-device`) refuses a device on every node,
//! through a snapshot install and a full restart and within its offline grace; a token
//! signed by a second store key is accepted once the nodes are configured with it; a node
//! restarted with its clock a day back still accepts valid tokens and honours leases.
//! Every refusal asserts its status, a message naming the reason, and the log unchanged.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::cluster::*;
use common::{claims, expect_status, now, phase, with_token};
use ed25519_dalek::SigningKey;
use pos_hub::auth::token::{self, Claims, Role};
use pos_hub::proto::pb;
use tonic::Code;

const DAY: u64 = 86_400;
const WAIT: Duration = Duration::from_secs(30);

struct Store {
    key: SigningKey,
    key_dir: PathBuf,
    cluster: Cluster,
}

impl Store {
    async fn start(n: u64, mut options: Options) -> Store {
        let key_dir = tempfile::tempdir().expect("tempdir").keep();
        let key = common::store_key(&key_dir);
        options.public_key = Some(key.public_path);
        let cluster = Cluster::start_with(n, options).await;
        Store {
            key: key.signing,
            key_dir,
            cluster,
        }
    }

    fn token(&self, claims: &Claims) -> String {
        token::issue(&self.key, claims)
    }

    /// The last seq node `id` has applied, by Hello with a reader's token.
    /// Node `id`'s last seq once it has applied everything committed so far (after a
    /// linearizable read), so that a follower still catching up is not taken for a log
    /// that moved.
    async fn last_seq(&self, id: u64) -> u64 {
        let barrier = pb::ListOrdersRequest {
            consistency: pb::Consistency::Linearizable as i32,
            limit: 1,
            ..Default::default()
        };
        let admin = self.token(&claims("reader", Role::Admin));
        poll_until(WAIT, async || {
            self.cluster
                .client(id)
                .list_orders(with_token(barrier.clone(), Some(&admin)))
                .await
                .map_err(|s| format!("{s:?}"))
        })
        .await
        .unwrap_or_else(|e| panic!("node {id}: no linearizable read: {e}"));
        self.hello(id, &self.token(&claims("reader", Role::Kds)))
            .await
            .unwrap_or_else(|s| panic!("node {id}: Hello with a good token: {s:?}"))
            .last_seq
    }

    async fn hello(&self, id: u64, token: &str) -> Result<pb::HelloResponse, tonic::Status> {
        let request = pb::HelloRequest {
            device_id: "reader".into(),
            cursor: 0,
        };
        self.cluster
            .client(id)
            .hello(with_token(request, Some(token)))
            .await
            .map(|r| r.into_inner())
    }

    async fn append(
        &self,
        id: u64,
        token: &str,
        events: Vec<pb::Event>,
    ) -> Result<Vec<pb::AppendResult>, tonic::Status> {
        self.cluster
            .client(id)
            .append(with_token(pb::AppendRequest { events }, Some(token)))
            .await
            .map(|r| r.into_inner().results)
    }

    /// An append on node `id` that must be accepted (retried while the node has no leader
    /// yet, after a restart); returns its seq.
    async fn accepted(&self, id: u64, token: &str, event: pb::Event) -> u64 {
        let outcome = poll_until(WAIT, async || {
            match self.append(id, token, vec![event.clone()]).await {
                Ok(results) => Ok(results),
                Err(status) if status.code() == Code::Unavailable => Err(format!("{status:?}")),
                Err(status) => panic!("node {id}: append refused: {status:?}"),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("node {id}: no answer: {e}"));
        assert_eq!(
            outcome[0].status,
            pb::AppendStatus::Accepted as i32,
            "node {id}: {outcome:?}"
        );
        outcome[0].seq
    }

    /// The append is refused on node `id` with `code` and a message containing `reason`,
    /// and node `id`'s log stays where it was.
    async fn refused(&self, id: u64, token: &str, event: pb::Event, code: Code, reason: &str) {
        let before = self.last_seq(id).await;
        let status = expect_status(self.append(id, token, vec![event]).await, code, reason);
        eprintln!("node {id} refuses: {}", status.message());
        assert_eq!(
            self.last_seq(id).await,
            before,
            "node {id}: nothing reached the log"
        );
    }

    /// Node `id` refuses each of `tokens` (till-1's) as a revoked device's.
    async fn refuses_revoked(&self, id: u64, tokens: [&str; 2], n: u64) {
        for token in tokens {
            self.refused(
                id,
                token,
                sale("till-1", n),
                Code::Unauthenticated,
                "device \"till-1\" was revoked",
            )
            .await;
        }
    }

    /// Waits until node `id` has applied at least `seq`.
    async fn applied(&self, id: u64, seq: u64) {
        poll_until(WAIT, async || {
            match self
                .hello(id, &self.token(&claims("reader", Role::Kds)))
                .await
            {
                Ok(h) if h.last_seq >= seq => Ok(()),
                Ok(h) => Err(format!("at seq {}", h.last_seq)),
                Err(s) => Err(format!("{s:?}")),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("node {id} never applied seq {seq}: {e}"));
    }
}

/// `pos-hub cluster revoke-device DEVICE` against `hub` with `token`, to completion.
async fn revoke_cli(hub: String, token: String, device: &str) -> std::process::Output {
    let device = device.to_owned();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(common::BIN)
            .args([
                "cluster",
                "--hub",
                &format!("http://{hub}"),
                "--token",
                &token,
            ])
            .args([
                "revoke-device",
                &device,
                "--reason",
                "stolen from the counter",
            ])
            .env("RUST_LOG", "warn")
            .output()
            .expect("pos-hub runs")
    })
    .await
    .expect("the CLI thread")
}

/// A new order (`order.created`, its own id) by `device`: any till may write one.
fn sale(device: &str, lamport: u64) -> pb::Event {
    let mut event = inventory_event("X", 1, device, lamport);
    event.aggregate_type = "order".into();
    event.aggregate_id = format!("o-{}", event.event_id);
    event.r#type = "order.created".into();
    event.payload = Some(prost_types::Struct::default());
    event
}

/// A `device.revoked` event for `device`, written as `writer`.
fn revocation(device: &str, writer: &str) -> pb::Event {
    let mut event = inventory_event("X", 1, writer, 1);
    event.aggregate_type = "device".into();
    event.aggregate_id = device.into();
    event.r#type = "device.revoked".into();
    event.payload = Some(prost_types::Struct::default());
    event
}

/// `till`'s token that expired an hour ago: within the 7-day offline grace.
fn in_grace(device: &str) -> Claims {
    Claims {
        exp: now() - 3_600,
        nbf: now() - 3_600 - DAY,
        iat: now() - 3_600 - DAY,
        ..claims(device, Role::Till)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_refused_on_every_node_through_a_snapshot_a_full_restart_and_its_grace()
{
    let options = Options {
        snapshot_every: Some(4),
        extra_args: vec!["--keep-log-entries".into(), "1".into()],
        ..Options::default()
    };
    let mut store = Store::start(3, options).await;
    let valid = store.token(&claims("till-1", Role::Till));
    let grace = store.token(&in_grace("till-1"));
    let till2 = store.token(&claims("till-2", Role::Till));
    let admin = store.token(&claims("operator", Role::Admin));

    phase("till-1 writes, so the log knows it: its expired token works within the grace");
    let first = store.accepted(1, &valid, sale("till-1", 1)).await;
    // Node 2 grants the grace from its own applied state: wait until it knows till-1.
    store.applied(2, first).await;
    let seq = store.accepted(2, &grace, sale("till-1", 2)).await;
    store.applied(3, seq).await;

    phase("only an admin writes the deny-list");
    for writer in [("till-2", Role::Till), ("boss", Role::Manager)] {
        let token = store.token(&claims(writer.0, writer.1));
        store
            .refused(
                1,
                &token,
                revocation("till-1", writer.0),
                Code::PermissionDenied,
                "only an admin revokes devices",
            )
            .await;
    }

    let before = store.last_seq(1).await;
    let out = revoke_cli(store.cluster.client_addr(1), till2.clone(), "till-1").await;
    common::refused(
        &out,
        "revoke-device with a till's token",
        "role till may not write device.revoked",
    );
    assert_eq!(store.last_seq(1).await, before, "nothing reached the log");

    phase("node 3 goes down; the admin revokes till-1 through node 2 (a follower or not)");
    let node3_applied = store.cluster.status_json(3).await["appliedIndex"]
        .as_u64()
        .expect("appliedIndex");
    store.cluster.kill(3);
    let out = revoke_cli(store.cluster.client_addr(2), admin.clone(), "till-1").await;
    let said = common::succeeded(&out, "cluster revoke-device");
    assert!(said.contains("revoked device \"till-1\" at seq"), "{said}");
    let revoked_by = now();

    phase("nodes 1 and 2 refuse till-1, valid token or in grace; others still write");
    for id in [1, 2] {
        let last = store.accepted(id, &till2, sale("till-2", 10 + id)).await;
        store.applied(id, last).await;
        store.refuses_revoked(id, [&valid, &grace], 20).await;
    }
    // Reads are refused too, not only writes.
    expect_status(
        store.hello(1, &valid).await,
        Code::Unauthenticated,
        "was revoked",
    );

    phase("entries until snapshots purge, on nodes 1 and 2, every entry node 3 lacks");
    let mut n = 0;
    let last = loop {
        let last = store.accepted(1, &till2, sale("till-2", 30 + n)).await;
        n += 1;
        let mut purged = Vec::new();
        for id in [1, 2] {
            let status = store.cluster.status_json(id).await;
            purged.push(status["purgedIndex"].as_u64().unwrap_or(0));
        }
        if purged.iter().all(|&p| p > node3_applied) {
            break last;
        }
        assert!(
            n < 200,
            "the log was never purged past node 3's {node3_applied}: {purged:?}"
        );
    };

    phase("node 3 comes back: it can only catch up by snapshot, and refuses till-1 too");
    store.cluster.restart(3);
    store.applied(3, last).await;
    let status = store.cluster.status_json(3).await;
    assert!(
        status["snapshotIndex"]
            .as_u64()
            .is_some_and(|i| i > node3_applied),
        "node 3 installed a snapshot: {status}"
    );
    store.refuses_revoked(3, [&valid, &grace], 40).await;

    phase("a full restart of every node: still refused everywhere");
    store.cluster.stop_all();
    for id in 1..=3 {
        store.cluster.restart(id);
    }
    store.cluster.wait_leader(&[1, 2, 3], WAIT).await;
    for id in 1..=3 {
        store.applied(id, last).await;
        store.refuses_revoked(id, [&valid, &grace], 50).await;
    }

    phase("a token issued after the revocation (past the leeway) lets till-1 back in");
    // Minted 60 s ahead (within the leeway), it is past the revocation plus the leeway once
    // the second of the revocation is over.
    poll_until(WAIT, async || {
        if now() > revoked_by {
            Ok(())
        } else {
            tokio::time::sleep(POLL).await;
            Err("the revocation's second".to_owned())
        }
    })
    .await
    .expect("time passes");
    let reissued = store.token(&Claims {
        iat: now() + 60,
        nbf: now() + 60,
        ..claims("till-1", Role::Till)
    });
    store.accepted(1, &reissued, sale("till-1", 60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_with_the_second_key_is_accepted_once_it_is_configured() {
    let mut store = Store::start(3, Options::default()).await;
    let next_dir = store.key_dir.join("next");
    std::fs::create_dir_all(&next_dir).expect("creates the next key's dir");
    let next = common::store_key(&next_dir);
    let old_token = store.token(&claims("till-1", Role::Till));
    let new_token = token::issue(&next.signing, &claims("till-1", Role::Till));
    let kid = token::kid_of(&next.signing.verifying_key());

    phase("before it is configured, every node refuses the second key's token");
    for id in 1..=3 {
        store
            .refused(
                id,
                &new_token,
                sale("till-1", 1),
                Code::Unauthenticated,
                &format!("key id (kid) \"{kid}\" is not one of this hub's keys"),
            )
            .await;
    }

    phase("rolling restart with both keys; each restarted node accepts both tokens");
    store.cluster.options_mut().extra_args.extend([
        "--public-key".to_owned(),
        next.public_path.display().to_string(),
    ]);
    for id in 1..=3 {
        store.cluster.kill(id);
        store.cluster.restart(id);
        store.cluster.wait_healthy(id, WAIT).await;
        store
            .accepted(id, &new_token, sale("till-1", 10 + id))
            .await;
        store
            .accepted(id, &old_token, sale("till-1", 20 + id))
            .await;
    }

    phase("a key that is neither is still refused");
    let stranger = SigningKey::from_bytes(&[42u8; 32]);
    store
        .refused(
            1,
            &token::issue(&stranger, &claims("till-1", Role::Till)),
            sale("till-1", 30),
            Code::Unauthenticated,
            "is not one of this hub's keys",
        )
        .await;
}

fn order_event(
    kind: &str,
    order: &str,
    version: u64,
    device: &str,
    payload: serde_json::Value,
) -> pb::Event {
    let mut event = inventory_event("X", 1, device, version + 100);
    event.aggregate_type = "order".into();
    event.aggregate_id = order.into();
    event.version = version;
    event.r#type = kind.into();
    let json: pos_hub::domain::Event = serde_json::from_value(serde_json::json!({
        "eventId": event.event_id, "tenantId": TENANT, "storeId": STORE,
        "aggregateType": "order", "aggregateId": order, "version": version, "type": kind,
        "at": "2026-11-25T12:00:00.000Z", "actor": {"deviceId": device},
        "clock": {"lamport": version + 100, "deviceId": device}, "payload": payload,
    }))
    .expect("an event");
    event.payload = pos_hub::proto::convert::event_to_pb(&json)
        .expect("converts")
        .payload;
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_its_clock_a_day_back_still_accepts_valid_tokens_and_leases() {
    let mut store = Store::start(1, Options::default()).await;
    let till1 = store.token(&claims("till-1", Role::Till));
    let till2 = store.token(&claims("till-2", Role::Till));

    phase("till-1 creates an order and takes its lease lock for 30 s");
    store
        .accepted(
            1,
            &till1,
            order_event("order.created", "o-1", 1, "till-1", serde_json::json!({})),
        )
        .await;
    let locked = order_event(
        "order.locked",
        "o-1",
        2,
        "till-1",
        serde_json::json!({"ttlMs": 30_000}),
    );
    store.accepted(1, &till1, locked).await;
    // The group's last committed hub time: the lock's, as the log stamped it.
    let mut stream = store
        .cluster
        .client(1)
        .subscribe(with_token(pb::SubscribeRequest { cursor: 1 }, Some(&till1)))
        .await
        .expect("subscribes")
        .into_inner();
    let before = loop {
        let page = stream.message().await.expect("healthy").expect("a page");
        if let Some(locked) = page.events.iter().find(|e| e.seq == 2) {
            break locked.hub_time;
        }
    };
    drop(stream);
    assert!(before > 0);

    phase("power cut: the node comes back with its clock a day behind");
    store.cluster.kill(1);
    store
        .cluster
        .options_mut()
        .extra_args
        .extend(["--clock-offset-ms".to_owned(), format!("-{}", DAY * 1_000)]);
    store.cluster.restart(1);
    store.cluster.wait_healthy(1, WAIT).await;
    let log = std::fs::read_to_string(&store.cluster.node(1).log_path).unwrap_or_default();
    assert!(
        log.contains("wall clock is behind the group's last committed hub time"),
        "the node says its clock is behind"
    );

    phase("the tokens minted before the cut still work; hub time is not behind the log's");
    let hello = store
        .hello(1, &till1)
        .await
        .expect("a valid token is accepted");
    assert!(hello.hub_time >= before, "{} < {before}", hello.hub_time);
    assert!(
        hello.hub_time > now() * 1_000 - DAY * 500,
        "not a day behind"
    );

    phase("the lease still binds: till-2 is LOCKED out, till-1 renews");
    let results = poll_until(WAIT, async || {
        store
            .append(
                1,
                &till2,
                vec![order_event(
                    "order.parked",
                    "o-1",
                    3,
                    "till-2",
                    serde_json::json!({}),
                )],
            )
            .await
            .map_err(|s| format!("{s:?}"))
    })
    .await
    .expect("answered");
    assert_eq!(results[0].code, "LOCKED", "{results:?}");
    assert_eq!(
        store.last_seq(1).await,
        2,
        "the LOCKED edit left the log as it was"
    );
    store
        .accepted(
            1,
            &till1,
            order_event(
                "order.lock.renew",
                "o-1",
                3,
                "till-1",
                serde_json::json!({"ttlMs": 30_000}),
            ),
        )
        .await;

    phase("and hub time moves on: once the lease lapses, till-2 takes the lock");
    let taken = poll_until(Duration::from_secs(120), async || {
        let event = order_event(
            "order.locked",
            "o-1",
            4,
            "till-2",
            serde_json::json!({"ttlMs": 30_000}),
        );
        match store.append(1, &till2, vec![event]).await {
            Ok(r) if r[0].status == pb::AppendStatus::Accepted as i32 => Ok(r[0].seq),
            Ok(r) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Err(format!("{}: {}", r[0].code, r[0].message))
            }
            Err(s) => Err(format!("{s:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("the lease never lapsed on the node a day behind: {e}"));
    assert_eq!(taken, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetimes_are_bounded_and_a_minute_of_clock_difference_is_forgiven() {
    let store = Store::start(1, Options::default()).await;

    phase("minted 5 s 'early' by a laptop whose clock runs ahead: accepted");
    let early = store.token(&Claims {
        iat: now() + 5,
        nbf: now() + 5,
        ..claims("till-1", Role::Till)
    });
    store.accepted(1, &early, sale("till-1", 1)).await;

    phase("expired 30 s ago: within the leeway, accepted (no grace involved: unknown device)");
    let just_expired = store.token(&Claims {
        exp: now() - 30,
        nbf: now() - 3_600,
        iat: now() - 3_600,
        ..claims("till-new", Role::Till)
    });
    store.accepted(1, &just_expired, sale("till-new", 1)).await;

    phase("beyond the leeway, and longer than 30 days: refused with the reason");
    let refusals = [
        (
            Claims {
                iat: now() + 600,
                nbf: now() + 600,
                ..claims("till-1", Role::Till)
            },
            "issued in the future",
        ),
        (
            Claims {
                nbf: now() + 600,
                ..claims("till-1", Role::Till)
            },
            "not valid yet",
        ),
        (
            Claims {
                exp: now() + 31 * DAY,
                ..claims("till-1", Role::Till)
            },
            "this hub accepts at most 2592000 s (30 days)",
        ),
    ];
    for (refused, reason) in refusals {
        let token = store.token(&refused);
        store
            .refused(1, &token, sale("till-1", 2), Code::Unauthenticated, reason)
            .await;
    }

    phase("the CLI mints 7-day tokens by default, naming their key; refuses over 30 days");
    let dir = tempfile::tempdir().expect("tempdir");
    common::succeeded(&common::keygen(dir.path()), "keygen");
    let key = dir.path().join("store.key.pem");
    let issued = common::succeeded(&common::token_issue(&key, "till-7", "till", &[]), "issue");
    let header = token::decode_unverified(issued.trim()).expect("a token");
    assert_eq!(header.claims.exp - header.claims.iat, 7 * DAY);
    let kid = std::process::Command::new(common::BIN)
        .args(["token", "kid"])
        .arg(dir.path().join("store.pub.pem"))
        .output()
        .expect("runs");
    assert_eq!(
        header.kid.as_deref(),
        Some(common::succeeded(&kid, "token kid").trim())
    );
    common::refused(
        &common::token_issue(&key, "till-7", "till", &["--ttl", "31d"]),
        "token issue --ttl 31d",
        "hubs accept tokens of at most 2592000 s (30d)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_grace_applies_only_while_the_hub_cannot_reach_its_wan() {
    // The "internet": a listener the node's WAN probe connects to while it exists.
    let wan = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let wan_addr = wan.local_addr().expect("address").to_string();
    let options = Options {
        extra_args: vec!["--wan-probe".into(), wan_addr.clone()],
        ..Options::default()
    };
    let store = Store::start(1, options).await;
    let valid = store.token(&claims("till-1", Role::Till));
    let grace = store.token(&in_grace("till-1"));
    store.accepted(1, &valid, sale("till-1", 1)).await;

    phase("online: an expired token of a known device gets no grace");
    poll_until(WAIT, async || {
        match store.append(1, &grace, vec![sale("till-1", 2)]).await {
            Err(status) if status.message().contains("this hub is online") => Ok(()),
            other => {
                tokio::time::sleep(POLL).await;
                Err(format!("{other:?}"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("the node never saw its WAN: {e}"));
    store
        .refused(
            1,
            &grace,
            sale("till-1", 3),
            Code::Unauthenticated,
            &format!(
                "this hub is online (it reaches {wan_addr}), so expired tokens get no offline grace"
            ),
        )
        .await;

    phase("the WAN goes away: the grace applies again");
    drop(wan);
    poll_until(WAIT, async || {
        match store.append(1, &grace, vec![sale("till-1", 4)]).await {
            Ok(results) if results[0].status == pb::AppendStatus::Accepted as i32 => Ok(()),
            other => {
                tokio::time::sleep(POLL).await;
                Err(format!("{other:?}"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("the grace never came back offline: {e}"));
}
