//! The appending side of `--hold`: each client (a till) appends its own order flows in
//! batches of `--hold-batch` events and checks every answer; the first event the group
//! does not accept stops the fill with its code and message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pos_hub::proto::pb::hub_client::HubClient;
use pos_hub::proto::{convert, pb};
use prost::Message;

use super::super::BenchError;
use super::super::cluster::channel;
use super::super::orders::OrderFlows;

/// What the fill appended so far, over all clients and phases.
#[derive(Debug)]
pub struct Counters {
    pub acked: AtomicU64,
    /// Events answered DUPLICATE: stored once already, by a send the hub itself repeated
    /// (a follower resends a forward when leadership moves) or by a batch the fill resent.
    pub duplicates: AtomicU64,
    pub json_bytes: AtomicU64,
    pub protobuf_bytes: AtomicU64,
    pub json_min: AtomicU64,
    pub json_max: AtomicU64,
}

impl Counters {
    pub fn new() -> Arc<Counters> {
        Arc::new(Counters {
            acked: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            json_bytes: AtomicU64::new(0),
            protobuf_bytes: AtomicU64::new(0),
            json_min: AtomicU64::new(u64::MAX),
            json_max: AtomicU64::new(0),
        })
    }
}

/// Client `c`'s part of `total` split over `clients`: the first `total % clients` clients
/// take one more.
pub fn share(total: u64, clients: usize, c: usize) -> u64 {
    let clients = clients.max(1) as u64;
    total / clients + u64::from((c as u64) < total % clients)
}

/// Appends `events` more events, client `c` (its flows `flows[c]`) through node
/// `c mod nodes`; gives the flows back to continue from where they stopped.
pub async fn fill(
    addrs: &[String],
    flows: Vec<OrderFlows>,
    events: u64,
    batch: usize,
    counters: &Arc<Counters>,
) -> Result<Vec<OrderFlows>, BenchError> {
    let clients = flows.len();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (c, mut flow) in flows.into_iter().enumerate() {
        let addr = addrs[c % addrs.len()].clone();
        let count = share(events, clients, c);
        let (counters, stop) = (counters.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let done = one_client(&addr, &mut flow, count, batch, &counters, &stop).await;
            if done.is_err() {
                // One refusal stops the others: the fill has failed.
                stop.store(true, Ordering::SeqCst);
            }
            (flow, done)
        }));
    }
    let mut flows = Vec::with_capacity(clients);
    let mut first_error = None;
    for task in tasks {
        let (flow, done) = task
            .await
            .map_err(|e| BenchError::Setup(format!("a fill task failed: {e}")))?;
        if let (Err(e), None) = (done, &first_error) {
            first_error = Some(e);
        }
        flows.push(flow);
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(flows),
    }
}

async fn one_client(
    addr: &str,
    flow: &mut OrderFlows,
    count: u64,
    batch: usize,
    counters: &Counters,
    stop: &AtomicBool,
) -> Result<(), BenchError> {
    let mut hub = HubClient::new(channel(addr)?);
    let mut left = count;
    while left > 0 && !stop.load(Ordering::Relaxed) {
        let n = left.min(batch as u64);
        let mut request = pb::AppendRequest::default();
        let (mut json, mut protobuf) = (0u64, 0u64);
        for _ in 0..n {
            let made = flow.next_event();
            let event = convert::event_to_pb(&made.event)
                .map_err(|e| BenchError::Setup(format!("an order event as protobuf: {e}")))?;
            json += made.json_bytes as u64;
            protobuf += event.encoded_len() as u64;
            counters
                .json_min
                .fetch_min(made.json_bytes as u64, Ordering::Relaxed);
            counters
                .json_max
                .fetch_max(made.json_bytes as u64, Ordering::Relaxed);
            request.events.push(event);
        }
        let duplicates = append(&mut hub, addr, &request).await?;
        counters.acked.fetch_add(n, Ordering::Relaxed);
        counters.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        counters.json_bytes.fetch_add(json, Ordering::Relaxed);
        counters
            .protobuf_bytes
            .fetch_add(protobuf, Ordering::Relaxed);
        left -= n;
    }
    Ok(())
}

/// Sends one batch until it is answered, and checks the answer; returns how many of its
/// events were answered DUPLICATE. A batch that got no answer is sent again (its eventIds
/// make that safe: what was stored answers DUPLICATE); one the per-device rate limit
/// refused waits for its tokens.
async fn append(
    hub: &mut HubClient<tonic::transport::Channel>,
    addr: &str,
    request: &pb::AppendRequest,
) -> Result<u64, BenchError> {
    let rate_limited_until = Instant::now() + Duration::from_secs(120);
    let mut tries = 0;
    loop {
        tries += 1;
        let answer =
            tokio::time::timeout(Duration::from_secs(10), hub.append(request.clone())).await;
        match answer {
            Ok(Ok(response)) => return check_results(request, &response.get_ref().results),
            Ok(Err(status))
                if status.code() == tonic::Code::ResourceExhausted
                    && Instant::now() < rate_limited_until =>
            {
                tries -= 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ if tries < 20 => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(Err(status)) => {
                return Err(BenchError::Setup(format!(
                    "appending a batch on {addr} failed {tries} times: {}: {}",
                    status.code(),
                    status.message()
                )));
            }
            Err(_) => {
                return Err(BenchError::Setup(format!(
                    "appending a batch on {addr} got no answer {tries} times"
                )));
            }
        }
    }
}

/// Every event of `request` must be ACCEPTED or DUPLICATE (stored once already: the fill
/// or the hub sent it again); anything else names the first event refused, its code and
/// the hub's message. Returns the number of DUPLICATE answers. (That no two events of the
/// fill share an eventId is checked after it: the group must hold every event sent.)
pub fn check_results(
    request: &pb::AppendRequest,
    results: &[pb::AppendResult],
) -> Result<u64, BenchError> {
    if results.len() != request.events.len() {
        return Err(BenchError::Refused(format!(
            "the group answered {} results for an Append of {} events",
            results.len(),
            request.events.len()
        )));
    }
    let mut duplicates = 0;
    for (event, result) in request.events.iter().zip(results) {
        let status = pb::AppendStatus::try_from(result.status);
        match status {
            Ok(pb::AppendStatus::Accepted) => continue,
            Ok(pb::AppendStatus::Duplicate) => {
                duplicates += 1;
                continue;
            }
            _ => {}
        }
        let status = status.map_or_else(
            |_| format!("status {}", result.status),
            |s| {
                s.as_str_name()
                    .trim_start_matches("APPEND_STATUS_")
                    .to_owned()
            },
        );
        return Err(BenchError::Refused(format!(
            "{} {} v{} of {} (eventId {}): {status}: {} {}",
            event.r#type,
            event.aggregate_type,
            event.version,
            event.aggregate_id,
            event.event_id,
            result.code,
            result.message
        )));
    }
    Ok(duplicates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: usize) -> pb::AppendRequest {
        let mut flows = OrderFlows::new(1, 0, 2, 1_790_000_000_000);
        pb::AppendRequest {
            events: (0..n)
                .map(|_| convert::event_to_pb(&flows.next_event().event).expect("protobuf"))
                .collect(),
        }
    }

    fn answer(request: &pb::AppendRequest, status: pb::AppendStatus) -> Vec<pb::AppendResult> {
        request
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| pb::AppendResult {
                event_id: e.event_id.clone(),
                status: status as i32,
                seq: i as u64 + 1,
                ..pb::AppendResult::default()
            })
            .collect()
    }

    #[test]
    fn accepted_and_duplicate_answers_pass_and_duplicates_are_counted() {
        let request = request(3);
        let accepted = answer(&request, pb::AppendStatus::Accepted);
        assert_eq!(check_results(&request, &accepted).ok(), Some(0));
        let mut some = accepted.clone();
        some[1].status = pb::AppendStatus::Duplicate as i32;
        assert_eq!(check_results(&request, &some).ok(), Some(1));
        let duplicate = answer(&request, pb::AppendStatus::Duplicate);
        assert_eq!(check_results(&request, &duplicate).ok(), Some(3));
    }

    #[test]
    fn the_first_rejection_is_named_with_its_code_and_message() {
        let request = request(3);
        let mut results = answer(&request, pb::AppendStatus::Accepted);
        for (i, code) in [(1, "STALE_VERSION"), (2, "PAYMENT_MISMATCH")] {
            results[i].status = pb::AppendStatus::Rejected as i32;
            results[i].code = code.into();
            results[i].message = format!("the {code} message");
        }
        let err = check_results(&request, &results)
            .expect_err("rejected")
            .to_string();
        let second = &request.events[1];
        for part in [
            "REJECTED",
            "STALE_VERSION",
            "the STALE_VERSION message",
            second.r#type.as_str(),
            second.aggregate_id.as_str(),
            second.event_id.as_str(),
        ] {
            assert!(err.contains(part), "{part:?} missing from {err}");
        }
        assert!(!err.contains("PAYMENT_MISMATCH"), "only the first: {err}");
    }

    #[test]
    fn unknown_statuses_and_missing_results_are_refused() {
        let request = request(2);
        let mut results = answer(&request, pb::AppendStatus::Accepted);
        results[0].status = pb::AppendStatus::Unspecified as i32;
        let err = check_results(&request, &results)
            .expect_err("unspecified")
            .to_string();
        assert!(err.contains("UNSPECIFIED"), "{err}");
        results[0].status = 99;
        let err = check_results(&request, &results)
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("status 99"), "{err}");
        let short = answer(&request, pb::AppendStatus::Accepted)[..1].to_vec();
        let err = check_results(&request, &short)
            .expect_err("short")
            .to_string();
        assert!(err.contains("1 results for an Append of 2 events"), "{err}");
    }

    #[test]
    fn a_total_is_shared_over_the_clients_to_the_event() {
        for (total, clients) in [(0, 3), (10, 3), (1_000_000, 64), (5, 8)] {
            let shares: Vec<u64> = (0..clients).map(|c| share(total, clients, c)).collect();
            assert_eq!(shares.iter().sum::<u64>(), total, "{shares:?}");
            let (min, max) = (shares.iter().min(), shares.iter().max());
            assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{shares:?}");
        }
    }
}
