//! A device appending ten times faster than its rate limit gets RESOURCE_EXHAUSTED (with a
//! retry delay) for the excess, while another device's appends on the same node go through.

mod common;

use common::cluster::*;
use common::phase;
use pos_hub::proto::pb;
use tonic::Code;

const RATE_PER_S: u64 = 5;
const BURST: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_device_is_limited_and_the_others_are_not() {
    let options = Options {
        extra_args: vec![
            "--rate-events-per-s".into(),
            RATE_PER_S.to_string(),
            "--rate-burst-events".into(),
            BURST.to_string(),
        ],
        ..Options::default()
    };
    let c = Cluster::start_with(1, options).await;
    let mut hub = c.client(1);

    phase("till-1 sends 10x its burst at once, one event per call");
    let (mut accepted, mut limited) = (0, 0);
    for n in 0..BURST * 10 {
        let event = inventory_event("FRIES", 1, "till-1", n + 1);
        match hub
            .append(pb::AppendRequest {
                events: vec![event],
            })
            .await
        {
            Ok(reply) => {
                assert_eq!(
                    reply.into_inner().results[0].status,
                    pb::AppendStatus::Accepted as i32
                );
                accepted += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    status.message().contains("\"till-1\"")
                        && status.message().contains("retry after"),
                    "{status:?}"
                );
                let delay: u64 = status
                    .metadata()
                    .get("retry-after-ms")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .expect("a retry delay in milliseconds");
                assert!(
                    (1..=1_000 / RATE_PER_S * BURST).contains(&delay),
                    "delay {delay} ms"
                );
                limited += 1;
            }
        }
    }
    // The burst, plus whatever refilled while the calls ran (they take a few ms each).
    assert!(
        (BURST..BURST * 5).contains(&accepted),
        "{accepted} accepted of {}",
        BURST * 10
    );
    assert!(limited >= BURST * 5, "{limited} limited");

    phase("till-2 on the same node is unaffected");
    for n in 0..BURST {
        let event = inventory_event("FRIES", 1, "till-2", n + 1);
        let reply = hub
            .append(pb::AppendRequest {
                events: vec![event],
            })
            .await
            .expect("not limited");
        assert_eq!(
            reply.into_inner().results[0].status,
            pb::AppendStatus::Accepted as i32
        );
    }

    phase("only accepted appends reached the log");
    let hello = hub
        .hello(pb::HelloRequest::default())
        .await
        .expect("hello")
        .into_inner();
    assert_eq!(hello.last_seq, accepted + BURST);
}
