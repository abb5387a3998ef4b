//! The load: appending clients (closed or open loop), a relay subscriber, live fan-out
//! subscribers, and the catch-up reader.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pos_hub::domain::{Actor, Clock, Event};
use pos_hub::proto::pb::hub_client::HubClient;
use pos_hub::proto::{convert, pb};
use prost::Message;

use super::cluster::channel;
use super::{BenchError, histogram, record};

pub const TENANT: &str = "t-demo";
pub const STORE: &str = "s-001";

/// How the appending clients pace themselves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// Each client sends its next append as soon as the last is acknowledged.
    Closed,
    /// All clients together offer this many appends per second, each on a fixed schedule;
    /// latency counts from the scheduled send time, so a stall cannot hide.
    Open { per_second: f64 },
}

/// One connection of an appending client to one node of the system under test.
pub trait Appender: Send + 'static {
    /// Appends one event; true once the system acknowledged it as durable.
    fn append(&mut self, event: &pb::Event) -> impl std::future::Future<Output = bool> + Send;
}

/// The system under test, as the appending clients see it: a number of nodes to connect to.
pub trait Target: Send + Sync + 'static {
    type Appender: Appender;
    fn nodes(&self) -> usize;
    fn connect(&self, node: usize) -> Result<Self::Appender, BenchError>;
}

/// pos-hub's client API.
pub struct PosHub {
    pub addrs: Vec<String>,
}

pub struct PosHubAppender(HubClient<tonic::transport::Channel>);

impl Appender for PosHubAppender {
    async fn append(&mut self, event: &pb::Event) -> bool {
        let request = pb::AppendRequest {
            events: vec![event.clone()],
        };
        let answer = tokio::time::timeout(Duration::from_secs(5), self.0.append(request)).await;
        matches!(&answer, Ok(Ok(r)) if r.get_ref().results.first()
            .is_some_and(|r| r.status == pb::AppendStatus::Accepted as i32))
    }
}

impl Target for PosHub {
    type Appender = PosHubAppender;

    fn nodes(&self) -> usize {
        self.addrs.len()
    }

    fn connect(&self, node: usize) -> Result<PosHubAppender, BenchError> {
        Ok(PosHubAppender(HubClient::new(channel(&self.addrs[node])?)))
    }
}

/// One inventory adjustment, as a till sends it.
pub fn event(client: usize, n: u64) -> Result<pb::Event, BenchError> {
    convert::event_to_pb(&domain_event(client, n))
        .map_err(|e| BenchError::Setup(format!("bench event: {e}")))
}

/// The same event in the domain's form (its JSON is the spec's wire format).
pub fn domain_event(client: usize, n: u64) -> Event {
    let device = format!("bench-{client}");
    let mut payload = serde_json::Map::new();
    payload.insert("sku".into(), format!("SKU-{client}").into());
    payload.insert("delta".into(), 1.into());
    Event {
        event_id: uuid::Uuid::now_v7().to_string(),
        tenant_id: TENANT.into(),
        store_id: STORE.into(),
        aggregate_type: "inventory".into(),
        aggregate_id: format!("SKU-{client}"),
        version: 1,
        event_type: "inventory.adjusted".into(),
        at: "2026-11-25T12:00:00.000Z".into(),
        actor: Actor {
            device_id: device.clone(),
            user_id: None,
        },
        clock: Clock {
            lamport: n,
            device_id: device,
        },
        payload,
        force: false,
        seq: None,
        hub_time: None,
        rules: None,
        redacted: false,
    }
}

/// The size of one bench event as the log stores it.
pub fn event_bytes() -> Result<usize, BenchError> {
    Ok(event(0, 0)?.encoded_len())
}

/// What the appending clients measured.
pub struct AppendStats {
    pub latency: Histogram<u64>,
    pub acked: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// Leader SIGKILL → first acknowledged append after it, if a failover was run.
    pub failover: Option<Duration>,
}

/// Shared between the clients, the relay subscriber and the failover trigger.
pub struct Shared {
    /// Send time of every event in flight, by eventId, for the relay subscriber.
    pub sent: Mutex<HashMap<String, (Instant, usize)>>,
    pub stop: AtomicBool,
    pub acked: AtomicU64,
    /// Nanoseconds since `epoch` of a leader kill, and of the first ack after it (0: none).
    pub killed_at: AtomicU64,
    pub first_ack_after_kill: AtomicU64,
    pub epoch: Instant,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            sent: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
            acked: AtomicU64::new(0),
            killed_at: AtomicU64::new(0),
            first_ack_after_kill: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn since_epoch(&self) -> u64 {
        self.epoch.elapsed().as_nanos().max(1) as u64
    }

    pub fn mark_kill(&self) {
        self.killed_at.store(self.since_epoch(), Ordering::SeqCst);
    }

    /// An append sent at `sent` (nanoseconds since `epoch`) was acknowledged. Only an
    /// append sent after a kill can show that the group recovered from it.
    fn note_ack(&self, sent: u64) {
        self.acked.fetch_add(1, Ordering::Relaxed);
        let killed = self.killed_at.load(Ordering::SeqCst);
        if killed != 0 && sent >= killed {
            let _ = self.first_ack_after_kill.compare_exchange(
                0,
                self.since_epoch(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
    }

    fn sent_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, usize)>> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A subscriber on node `here` saw these events now: records, for each one sent
    /// through another node, its propagation time.
    pub fn seen<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
        here: usize,
        latency: &mut Histogram<u64>,
    ) {
        let now = Instant::now();
        let mut sent = self.sent_map();
        for id in ids {
            if let Some((at, from)) = sent.remove(id)
                && from != here
            {
                record(latency, now.duration_since(at));
            }
        }
    }
}

/// Runs `clients` appending clients against `target` (client i starts on node i mod n and
/// moves to the next node on an error) until `duration` has passed.
pub async fn append_load<T: Target>(
    target: Arc<T>,
    clients: usize,
    pacing: Pacing,
    duration: Duration,
    shared: Arc<Shared>,
) -> Result<AppendStats, BenchError> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for client in 0..clients {
        let target = target.clone();
        let shared = shared.clone();
        let interval = match pacing {
            Pacing::Closed => None,
            Pacing::Open { per_second } => Some(Duration::from_secs_f64(
                clients as f64 / per_second.max(f64::MIN_POSITIVE),
            )),
        };
        // Open loop: the clients' schedules are spread over one interval.
        let first = interval.map(|i| started + i.mul_f64(client as f64 / clients as f64));
        tasks.push(tokio::spawn(async move {
            one_client(client, &*target, (interval, first), deadline, &shared).await
        }));
    }
    let mut latency = histogram();
    let (mut acked, mut failed) = (0, 0);
    for task in tasks {
        let (h, a, f) = task
            .await
            .map_err(|e| BenchError::Setup(format!("a client task failed: {e}")))??;
        latency
            .add(&h)
            .map_err(|e| BenchError::Setup(format!("merging histograms: {e}")))?;
        acked += a;
        failed += f;
    }
    let killed = shared.killed_at.load(Ordering::SeqCst);
    let first = shared.first_ack_after_kill.load(Ordering::SeqCst);
    Ok(AppendStats {
        latency,
        acked,
        failed,
        elapsed: started.elapsed(),
        failover: (killed != 0 && first >= killed).then(|| Duration::from_nanos(first - killed)),
    })
}

async fn one_client<T: Target>(
    client: usize,
    target: &T,
    (interval, mut next_send): (Option<Duration>, Option<Instant>),
    deadline: Instant,
    shared: &Shared,
) -> Result<(Histogram<u64>, u64, u64), BenchError> {
    let mut latency = histogram();
    let (mut acked, mut failed) = (0u64, 0u64);
    let mut node = client % target.nodes();
    let mut conn = target.connect(node)?;
    let mut n = 0u64;
    loop {
        let intended = match (interval, next_send) {
            (Some(interval), Some(at)) => {
                if at >= deadline {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                next_send = Some(at + interval);
                at
            }
            _ => {
                let now = Instant::now();
                if now >= deadline || shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                now
            }
        };
        n += 1;
        let event = event(client, n)?;
        let id = event.event_id.clone();
        let sent_ns = shared.since_epoch();
        shared.sent_map().insert(id.clone(), (Instant::now(), node));
        if conn.append(&event).await {
            record(&mut latency, intended.elapsed());
            acked += 1;
            shared.note_ack(sent_ns);
        } else {
            failed += 1;
            shared.sent_map().remove(&id);
            // Another node, as a till's SDK would; a short pause so a dead node is not
            // hammered.
            node = (node + 1) % target.nodes();
            conn = target.connect(node)?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok((latency, acked, failed))
}

/// Follows the log on `addr` from `cursor` and measures, for every event a client sent
/// through another node, the time from its send to its arrival here (the spec's
/// propagation between devices). Ends when `shared.stop` is set.
pub async fn relay(
    addr: String,
    node_index: usize,
    cursor: u64,
    shared: Arc<Shared>,
) -> Result<(Histogram<u64>, u64), BenchError> {
    let mut hub = HubClient::new(channel(&addr)?).max_decoding_message_size(64 << 20);
    let mut stream = hub
        .subscribe(pb::SubscribeRequest { cursor })
        .await
        .map_err(|e| BenchError::Setup(format!("Subscribe on {addr}: {e}")))?
        .into_inner();
    let mut latency = histogram();
    let mut seen = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok(message) = tokio::time::timeout(Duration::from_millis(200), stream.message()).await
        else {
            continue;
        };
        let Ok(Some(batch)) = message else { break };
        seen += batch.events.len() as u64;
        shared.seen(
            batch.events.iter().map(|e| e.event_id.as_str()),
            node_index,
            &mut latency,
        );
    }
    Ok((latency, seen))
}

/// A live subscriber (a kitchen screen) that checks the seqs it receives and counts them.
/// When its node goes away it resubscribes on the next one from where it was.
pub async fn follower(
    addrs: Vec<String>,
    first: usize,
    cursor: u64,
    shared: Arc<Shared>,
) -> Result<u64, BenchError> {
    let mut last = cursor;
    let mut node = first;
    while !shared.stop.load(Ordering::Relaxed) {
        let addr = &addrs[node % addrs.len()];
        node += 1;
        let mut hub = HubClient::new(channel(addr)?).max_decoding_message_size(64 << 20);
        let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_secs(2),
            hub.subscribe(pb::SubscribeRequest { cursor: last }),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut stream = stream.into_inner();
        while !shared.stop.load(Ordering::Relaxed) {
            let Ok(message) =
                tokio::time::timeout(Duration::from_millis(200), stream.message()).await
            else {
                continue;
            };
            let Ok(Some(batch)) = message else { break };
            follow(
                batch.events.iter().map(|e| e.seq),
                &mut last,
                &format!("a subscriber on {addr}"),
            )?;
        }
    }
    Ok(last - cursor)
}

/// How much of each event the catch-up reader decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decode {
    /// Its seq and eventId, which it checks; prost skips the rest. This measures how fast
    /// the hub serves catch-up, not how fast the reader parses payloads.
    Heads,
    /// The whole event, its `Struct` payload included, as a device's SDK does.
    Full,
}

/// The two fields of an event the `Decode::Heads` reader reads.
#[derive(Clone, PartialEq, prost::Message)]
struct EventHead {
    #[prost(string, tag = "1")]
    event_id: String,
    #[prost(uint64, tag = "13")]
    seq: u64,
}

/// A `SubscribeResponse` as the `Decode::Heads` reader decodes it.
#[derive(Clone, PartialEq, prost::Message)]
struct HeadsPage {
    #[prost(message, repeated, tag = "1")]
    events: Vec<EventHead>,
}

/// A Subscribe message as one kind of reader decodes it: the seqs it carries, in order.
trait Page: Message + Default + Send + 'static {
    fn seqs(&self) -> Vec<u64>;
}

impl Page for pb::SubscribeResponse {
    fn seqs(&self) -> Vec<u64> {
        self.events.iter().map(|e| e.seq).collect()
    }
}

impl Page for HeadsPage {
    fn seqs(&self) -> Vec<u64> {
        // An event without its id is not one the hub committed.
        self.events
            .iter()
            .map(|e| if e.event_id.is_empty() { 0 } else { e.seq })
            .collect()
    }
}

/// Reads the whole log from cursor 0 up to `last_seq`, checking that the seqs follow each
/// other, and returns how long it took.
pub async fn catch_up(addr: &str, last_seq: u64, decode: Decode) -> Result<Duration, BenchError> {
    match decode {
        Decode::Heads => read_from_zero::<HeadsPage>(addr, last_seq).await,
        Decode::Full => read_from_zero::<pb::SubscribeResponse>(addr, last_seq).await,
    }
}

async fn read_from_zero<P: Page>(addr: &str, last_seq: u64) -> Result<Duration, BenchError> {
    let setup = |e: &dyn std::fmt::Display| BenchError::Setup(format!("Subscribe on {addr}: {e}"));
    let mut grpc = tonic::client::Grpc::new(channel(addr)?).max_decoding_message_size(256 << 20);
    let started = Instant::now();
    grpc.ready().await.map_err(|e| setup(&e))?;
    let codec = tonic_prost::ProstCodec::<pb::SubscribeRequest, P>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/pos.v1.Hub/Subscribe");
    let mut stream = grpc
        .server_streaming(
            tonic::Request::new(pb::SubscribeRequest { cursor: 0 }),
            path,
            codec,
        )
        .await
        .map_err(|e| setup(&e))?
        .into_inner();
    let mut read = 0u64;
    while read < last_seq {
        let page = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .map_err(|_| BenchError::Setup(format!("catch-up stalled at {read} on {addr}")))?
            .map_err(|e| BenchError::Setup(format!("catch-up on {addr}: {e}")))?
            .ok_or_else(|| BenchError::Setup(format!("catch-up stream ended at {read}")))?;
        follow(page.seqs(), &mut read, &format!("catch-up on {addr}"))?;
    }
    Ok(started.elapsed())
}

/// Moves `last` along `seqs`, each of which must be the next; `who` read them.
fn follow(
    seqs: impl IntoIterator<Item = u64>,
    last: &mut u64,
    who: &str,
) -> Result<(), BenchError> {
    for seq in seqs {
        if seq != *last + 1 {
            return Err(BenchError::Setup(format!(
                "{who}: got seq {seq} after {last}"
            )));
        }
        *last = seq;
    }
    Ok(())
}

/// The last seq a node reports.
pub async fn last_seq(addr: &str) -> Result<u64, BenchError> {
    let mut hub = HubClient::new(channel(addr)?);
    let hello = tokio::time::timeout(
        Duration::from_secs(2),
        hub.hello(pb::HelloRequest::default()),
    )
    .await
    .map_err(|_| BenchError::Setup(format!("Hello on {addr} timed out")))?
    .map_err(|e| BenchError::Setup(format!("Hello on {addr}: {e}")))?;
    Ok(hello.into_inner().last_seq)
}
