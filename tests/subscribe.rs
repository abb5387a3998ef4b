//! A subscriber that stops reading while the log moves on is neither dropped nor made to
//! skip events: once it reads again it gets every event once, in seq order (from storage
//! where the live feed left it behind).

mod common;

use std::time::Duration;

use common::cluster::*;
use common::phase;
use pos_hub::proto::pb;

/// The node keeps this few recent batches for live subscribers (`--feed-batches`).
const FEED_BATCHES: u64 = 8;
/// Far more appends (one feed batch each) than the feed keeps, so a stalled subscriber
/// must fall behind it.
const APPENDS: u64 = 120;
const EVENTS_PER_APPEND: u64 = 16;
/// The test's client grants the server this little HTTP/2 window, so an unread stream
/// really stalls the server instead of being absorbed by buffers.
const WINDOW_BYTES: u32 = 65_535;
const EVENTS: u64 = APPENDS * EVENTS_PER_APPEND;

fn adjustment(n: u64) -> pb::Event {
    inventory_event("FRIES", 1, "till-1", n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_catches_up_from_storage_without_gaps_or_repeats() {
    let options = Options {
        feed_batches: Some(FEED_BATCHES),
        ..Options::default()
    };
    let c = Cluster::start_with(1, options).await;
    let mut hub = c.client(1);

    eprintln!(
        "--- open a Subscribe stream from 0 on a connection with a small window; do not read it"
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", c.client_addr(1)))
        .expect("a URL")
        .initial_stream_window_size(WINDOW_BYTES)
        .initial_connection_window_size(WINDOW_BYTES)
        .connect()
        .await
        .expect("connects");
    let mut stream = pb::hub_client::HubClient::new(channel)
        .subscribe(pb::SubscribeRequest { cursor: 0 })
        .await
        .expect("subscribes")
        .into_inner();

    phase(&format!(
        "{APPENDS} appends of {EVENTS_PER_APPEND} events (one feed batch each)"
    ));
    for a in 0..APPENDS {
        let first = a * EVENTS_PER_APPEND + 1;
        let events = (first..first + EVENTS_PER_APPEND).map(adjustment).collect();
        let reply = hub
            .append(pb::AppendRequest { events })
            .await
            .expect("appends")
            .into_inner();
        let seqs: Vec<u64> = reply.results.iter().map(|r| r.seq).collect();
        assert_eq!(
            seqs,
            (first..first + EVENTS_PER_APPEND).collect::<Vec<_>>(),
            "{:?}",
            reply.results[0]
        );
    }

    phase("read the stream: every seq once, in order");
    let mut seqs = Vec::new();
    while (seqs.len() as u64) < EVENTS {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("the stream keeps delivering")
            .expect("the stream is healthy")
            .expect("the stream stays open");
        seqs.extend(message.events.iter().map(|e| e.seq));
    }
    assert_eq!(seqs.len() as u64, EVENTS);
    assert!(
        seqs.iter().copied().eq(1..=EVENTS),
        "every seq once, in order"
    );

    phase("and it is live again: the next append arrives on the same stream");
    hub.append(pb::AppendRequest {
        events: vec![adjustment(EVENTS + 1)],
    })
    .await
    .expect("appends");
    let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("live event arrives")
        .expect("healthy")
        .expect("open");
    assert_eq!(
        message.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![EVENTS + 1]
    );
}
