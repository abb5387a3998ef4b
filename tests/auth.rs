//! Device tokens and realms against a running node that has the store's public key: every
//! reason a call can be refused, over real gRPC, each with its status code, a message that
//! names the reason, and the log untouched.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::cluster::*;
use common::{claims, expect_status, now, phase, with_token};
use ed25519_dalek::SigningKey;
use hmac::{Hmac, Mac};
use pos_hub::auth::keys;
use pos_hub::auth::token::{self, Claims, Role};
use pos_hub::proto::pb;
use tonic::Code;

fn b64(json: serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(json.to_string())
}

struct Store {
    key: SigningKey,
    public_pem: String,
    cluster: Cluster,
}

impl Store {
    async fn start() -> Store {
        Self::start_nodes(1).await
    }

    async fn start_nodes(n: u64) -> Store {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let key = common::store_key(&dir);
        let options = Options {
            public_key: Some(key.public_path),
            ..Options::default()
        };
        let cluster = Cluster::start_with(n, options).await;
        Store {
            key: key.signing,
            public_pem: key.public_pem,
            cluster,
        }
    }

    fn token(&self, claims: &Claims) -> String {
        token::issue(&self.key, claims)
    }

    async fn last_seq(&self) -> u64 {
        let token = self.token(&claims("reader", Role::Till));
        let hello = pb::HelloRequest {
            device_id: "reader".into(),
            cursor: 0,
        };
        let reply = self
            .cluster
            .client(1)
            .hello(with_token(hello, Some(&token)))
            .await;
        reply
            .expect("Hello with a good token")
            .into_inner()
            .last_seq
    }

    async fn append(
        &self,
        token: Option<&str>,
        events: Vec<pb::Event>,
    ) -> Result<pb::AppendResponse, tonic::Status> {
        let request = with_token(pb::AppendRequest { events }, token);
        self.cluster
            .client(1)
            .append(request)
            .await
            .map(|r| r.into_inner())
    }

    /// The append is refused with `code` and a message containing `reason`; the log stays.
    async fn refused(&self, token: Option<&str>, events: Vec<pb::Event>, code: Code, reason: &str) {
        let before = self.last_seq().await;
        expect_status(self.append(token, events).await, code, reason);
        assert_eq!(self.last_seq().await, before, "nothing reached the log");
    }
}

fn order_created(device: &str, order: &str) -> pb::Event {
    let mut event = inventory_event("FRIES", 1, device, 1);
    event.aggregate_type = "order".into();
    event.aggregate_id = order.into();
    event.r#type = "order.created".into();
    event.payload = Some(prost_types::Struct::default());
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_token_works_for_every_rpc() {
    let store = Store::start().await;
    // A manager's: the event is a stock adjustment.
    let token = store.token(&claims("till-1", Role::Manager));
    let reply = store
        .append(Some(&token), vec![inventory_event("FRIES", 2, "till-1", 1)])
        .await
        .expect("appends");
    assert_eq!(
        reply.results[0].status,
        pb::AppendStatus::Accepted as i32,
        "{reply:?}"
    );
    let mut hub = store.cluster.client(1);
    let inventory = pb::GetInventoryRequest {
        sku: "FRIES".into(),
        ..Default::default()
    };
    let stocks = hub
        .get_inventory(with_token(inventory, Some(&token)))
        .await
        .expect("reads")
        .into_inner();
    assert_eq!(stocks.stocks[0].total, 2);
    let mut stream = hub
        .subscribe(with_token(pb::SubscribeRequest { cursor: 0 }, Some(&token)))
        .await
        .expect("subscribes")
        .into_inner();
    let first = stream.message().await.expect("healthy").expect("an event");
    assert_eq!(first.events[0].seq, 1);
    let admin = store.token(&claims("operator", Role::Admin));
    let status = store
        .cluster
        .cluster_client(1)
        .status(with_token(pb::ClusterStatusRequest {}, Some(&admin)))
        .await
        .expect("an admin reads the group")
        .into_inner();
    assert_eq!(status.last_seq, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_refused_with_its_reason() {
    let store = Store::start().await;
    let event = || vec![inventory_event("FRIES", 1, "till-1", 1)];
    let good = claims("till-1", Role::Till);

    phase("missing and malformed");
    store
        .refused(None, event(), Code::Unauthenticated, "no token")
        .await;
    store
        .refused(
            Some("not-a-jwt"),
            event(),
            Code::Unauthenticated,
            "three dot-separated parts",
        )
        .await;
    store
        .refused(
            Some("a.b.c"),
            event(),
            Code::Unauthenticated,
            "malformed token",
        )
        .await;

    phase("signed with another key (a forgery)");
    let forger = SigningKey::from_bytes(&[42u8; 32]);
    store
        .refused(
            Some(&token::issue(&forger, &good)),
            event(),
            Code::Unauthenticated,
            "bad token signature",
        )
        .await;

    phase("alg none, and HS256 with the public key as the HMAC secret");
    let claims_json = serde_json::to_value(&good).expect("json");
    let none = format!(
        "{}.{}.",
        b64(serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64(claims_json.clone())
    );
    store
        .refused(
            Some(&none),
            event(),
            Code::Unauthenticated,
            "algorithm \"none\"",
        )
        .await;
    let input = format!(
        "{}.{}",
        b64(serde_json::json!({"alg": "HS256", "typ": "JWT"})),
        b64(claims_json)
    );
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(store.public_pem.as_bytes()).expect("any key length");
    mac.update(input.as_bytes());
    let hs256 = format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );
    store
        .refused(
            Some(&hs256),
            event(),
            Code::Unauthenticated,
            "algorithm \"HS256\"",
        )
        .await;

    phase("audience, realm, validity window");
    let wrong_aud = store.token(&Claims {
        aud: "cloud-api".into(),
        ..good.clone()
    });
    store
        .refused(Some(&wrong_aud), event(), Code::Unauthenticated, "audience")
        .await;
    let other_store = store.token(&Claims {
        store_id: "s-999".into(),
        ..good.clone()
    });
    store
        .refused(
            Some(&other_store),
            event(),
            Code::PermissionDenied,
            "realm t-demo/s-999",
        )
        .await;
    let later = store.token(&Claims {
        nbf: now() + 3_600,
        ..good.clone()
    });
    store
        .refused(
            Some(&later),
            event(),
            Code::Unauthenticated,
            "not valid yet",
        )
        .await;
    let expired = store.token(&Claims {
        exp: now() - 10,
        ..good.clone()
    });
    store
        .refused(Some(&expired), event(), Code::Unauthenticated, "expired")
        .await;

    phase("a bad token is refused on reads and Subscribe too");
    let mut hub = store.cluster.client(1);
    let read = hub
        .get_order(with_token(
            pb::GetOrderRequest {
                order_id: "o-1".into(),
                consistency: 0,
            },
            None,
        ))
        .await;
    assert_eq!(read.expect_err("refused").code(), Code::Unauthenticated);
    let sub = hub
        .subscribe(with_token(
            pb::SubscribeRequest { cursor: 0 },
            Some(&expired),
        ))
        .await;
    assert_eq!(sub.expect_err("refused").code(), Code::Unauthenticated);
    let hello = hub
        .hello(with_token(pb::HelloRequest::default(), Some(&other_store)))
        .await;
    assert_eq!(hello.expect_err("refused").code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_writes_only_what_its_device_and_role_may() {
    let store = Store::start().await;

    phase("an event of another realm, even with a valid token");
    let till = store.token(&claims("till-1", Role::Till));
    let mut foreign = inventory_event("FRIES", 1, "till-1", 1);
    foreign.store_id = "s-999".into();
    store
        .refused(
            Some(&till),
            vec![foreign],
            Code::PermissionDenied,
            "realm t-demo/s-999",
        )
        .await;

    phase("impersonation: an event written as another device");
    let as_other = vec![
        order_created("till-1", "o-1"),
        order_created("till-2", "o-2"),
    ];
    store
        .refused(
            Some(&till),
            as_other,
            Code::PermissionDenied,
            "device \"till-2\"",
        )
        .await;

    phase("kitchen and bar screens write only their tickets");
    let kds = store.token(&claims("kds-1", Role::Kds));
    store
        .refused(
            Some(&kds),
            vec![order_created("kds-1", "o-9")],
            Code::PermissionDenied,
            "role kds",
        )
        .await;
    let bds = store.token(&claims("bds-1", Role::Bds));
    let mut kitchen_ticket = order_created("bds-1", "kt-9");
    kitchen_ticket.aggregate_type = "kds".into();
    kitchen_ticket.r#type = "kds.ticket.created".into();
    store
        .refused(
            Some(&bds),
            vec![kitchen_ticket],
            Code::PermissionDenied,
            "role bds",
        )
        .await;

    phase("a clock stamped by another device");
    let mut other_clock = order_created("till-1", "o-3");
    other_clock.clock = Some(pb::Clock {
        lamport: 1,
        device_id: "till-2".into(),
    });
    store
        .refused(
            Some(&till),
            vec![other_clock],
            Code::PermissionDenied,
            "clock.deviceId \"till-2\" but the token is for device \"till-1\"",
        )
        .await;

    phase("force (the manager's override) and stock adjustments are a manager's");
    let manager_till = store.token(&claims("till-1", Role::Manager));
    let created = store
        .append(Some(&till), vec![order_created("till-1", "o-4")])
        .await
        .expect("a till creates an order");
    assert_eq!(created.results[0].seq, 1, "{created:?}");
    let mut forced = order_created("till-1", "o-4");
    forced.r#type = "order.cancelled".into();
    forced.version = 2;
    forced.force = true;
    forced.clock = Some(pb::Clock {
        lamport: 2,
        device_id: "till-1".into(),
    });
    store
        .refused(
            Some(&till),
            vec![forced.clone()],
            Code::PermissionDenied,
            "role till may not force an event over a lock or a newer version",
        )
        .await;
    let accepted = store
        .append(Some(&manager_till), vec![forced])
        .await
        .expect("a manager may force");
    assert_eq!(
        (accepted.results[0].status, accepted.results[0].seq),
        (pb::AppendStatus::Accepted as i32, 2),
        "{accepted:?}"
    );
    store
        .refused(
            Some(&till),
            vec![inventory_event("FRIES", -3, "till-1", 3)],
            Code::PermissionDenied,
            "role till may not adjust inventory",
        )
        .await;
    let adjusted = store
        .append(
            Some(&manager_till),
            vec![inventory_event("FRIES", -3, "till-1", 3)],
        )
        .await
        .expect("a manager adjusts stock");
    assert_eq!(adjusted.results[0].seq, 3, "{adjusted:?}");

    phase("the group is administered by admins only");
    let manager = store.token(&claims("boss", Role::Manager));
    let mut cluster = store.cluster.cluster_client(1);
    let refused = cluster
        .remove_node(with_token(pb::RemoveNodeRequest { id: 1 }, Some(&manager)))
        .await;
    expect_status(refused, Code::PermissionDenied, "role manager");
    let status = cluster
        .status(with_token(pb::ClusterStatusRequest {}, Some(&till)))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(store.last_seq().await, 3);
}

#[test]
fn keygen_and_token_cli_make_a_token_the_node_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::succeeded(&common::keygen(dir.path()), "keygen");
    let key = dir.path().join("store.key.pem");
    let public = dir.path().join("store.pub.pem");
    assert!(
        !common::keygen(dir.path()).status.success(),
        "keygen never overwrites a store key"
    );

    let issue = common::token_issue(&key, "till-7", "till", &["--ttl", "1h"]);
    let token = common::succeeded(&issue, "token issue").trim().to_owned();
    let verifying = keys::load_verifying_key(&public).expect("loads");
    let claims = token::verify(&token, &verifying, now()).expect("a valid token");
    assert_eq!((claims.sub.as_str(), claims.role), ("till-7", Role::Till));
    assert!(claims.exp > now() + 3_500 && claims.exp <= now() + 3_600);

    let inspect = std::process::Command::new(common::BIN)
        .args(["token", "inspect", &token, "--public-key"])
        .arg(&public)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        inspect.status.success() && text.contains("alg EdDSA") && text.contains("valid: signed by"),
        "{text}"
    );
    let bad_role = common::token_issue(&key, "x", "root", &[]);
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("--role \"root\" is not one of"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_works_within_the_grace_only_for_a_device_the_log_knows() {
    let store = Store::start_nodes(3).await;
    const DAY: u64 = 86_400;
    let expired = |device: &str, ago: u64| Claims {
        exp: now() - ago,
        nbf: now() - ago - DAY,
        iat: now() - ago - DAY,
        // A manager's: the events are stock adjustments.
        ..claims(device, Role::Manager)
    };
    let append_on = |node: u64, token: String, event: pb::Event| {
        let mut hub = store.cluster.client(node);
        async move {
            hub.append(with_token(
                pb::AppendRequest {
                    events: vec![event],
                },
                Some(&token),
            ))
            .await
        }
    };

    phase("till-1 appends once with a valid token on node 1: the log now knows it");
    let valid = store.token(&claims("till-1", Role::Manager));
    let reply = append_on(1, valid, inventory_event("FRIES", 1, "till-1", 1))
        .await
        .expect("appends");
    assert_eq!(
        reply.into_inner().results[0].status,
        pb::AppendStatus::Accepted as i32
    );

    phase("its token expired an hour ago: accepted within the 7-day grace, on every node");
    for node in [2, 3, 1] {
        let token = store.token(&expired("till-1", 3_600));
        let event = inventory_event("FRIES", 1, "till-1", 10 + node);
        // A node learns of till-1 once it has applied its event (a follower may lag the
        // leader that acknowledged it by a heartbeat): retry a little.
        let mut reply = append_on(node, token.clone(), event.clone()).await;
        for _ in 0..200 {
            match &reply {
                Err(status) if status.code() == Code::Unauthenticated => {
                    tokio::time::sleep(POLL).await;
                    reply = append_on(node, token.clone(), event.clone()).await;
                }
                _ => break,
            }
        }
        let reply = reply
            .unwrap_or_else(|s| panic!("node {node}: within grace: {s:?}"))
            .into_inner();
        assert_eq!(
            reply.results[0].status,
            pb::AppendStatus::Accepted as i32,
            "node {node}"
        );
    }

    phase("expired 8 days ago: beyond the grace, refused");
    // Node 1 answers from its own applied state: wait until it has applied the four
    // accepted events (it may lag the leader that acknowledged the last one).
    poll_until(Duration::from_secs(10), async || {
        match store.last_seq().await {
            n if n >= 4 => Ok(()),
            n => Err(format!("it is at seq {n}")),
        }
    })
    .await
    .unwrap_or_else(|last| panic!("node 1 never applied the 4 events: {last}"));
    let before = store.last_seq().await;
    assert_eq!(before, 4, "one valid and three in-grace appends");
    let stale = append_on(
        1,
        store.token(&expired("till-1", 8 * DAY)),
        inventory_event("FRIES", 1, "till-1", 20),
    )
    .await;
    expect_status(stale, Code::Unauthenticated, "expired");

    phase("an unknown device's expired token gets no grace");
    let unknown = append_on(
        1,
        store.token(&expired("till-new", 60)),
        inventory_event("FRIES", 1, "till-new", 1),
    )
    .await;
    expect_status(unknown, Code::Unauthenticated, "expired");
    assert_eq!(
        store.last_seq().await,
        before,
        "nothing refused reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_may_hold_only_so_many_subscriptions_at_once() {
    let store = Store::start().await;
    let kds = store.token(&claims("kds-1", Role::Kds));
    let open = |token: String| {
        let mut hub = store.cluster.client(1);
        async move {
            hub.subscribe(with_token(pb::SubscribeRequest { cursor: 0 }, Some(&token)))
                .await
        }
    };

    phase("kds-1 opens the 4 streams it may hold; the 5th is refused");
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(
            open(kds.clone())
                .await
                .expect("within the cap")
                .into_inner(),
        );
    }
    let status = open(kds.clone()).await.expect_err("over the cap");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("\"kds-1\"") && status.message().contains("at most 4"),
        "{status:?}"
    );

    phase("another device is unaffected");
    let bds = store.token(&claims("bds-1", Role::Bds));
    open(bds).await.expect("bds-1 subscribes");

    phase("closing one stream frees its slot");
    drop(streams.pop());
    let mut reopened = open(kds.clone()).await;
    for _ in 0..100 {
        if reopened.is_ok() {
            break;
        }
        // The node notices the closed stream a moment later.
        tokio::time::sleep(POLL).await;
        reopened = open(kds.clone()).await;
    }
    reopened.expect("a freed slot can be used again");
}
