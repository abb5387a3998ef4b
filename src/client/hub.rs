//! `HubClient`: one device's connection to its store's group. It knows several nodes
//! (given addresses, the group's members from Hello, hubs found by mDNS, and the last good
//! addresses cached on disk), talks to one of them at a time, and moves to the next when
//! that one stops answering. Any node serves: followers forward appends to the leader.

mod cache;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use super::ClientError;
use crate::discovery;
use crate::domain::Realm;
use crate::proto::pb;
use crate::proto::pb::hub_client::HubClient as Grpc;
use crate::wire::{
    PING_INTERVAL_MS, PING_TIMEOUT_MS, PINGED_CALL_DEADLINE_MS, RETRY_AFTER_METADATA,
};
use cache::{read_cache, write_cache};

/// How long one node may take to answer one call (Hello, Append, a read) before the next
/// node is tried, in the same call (`wire::PINGED_CALL_DEADLINE_MS`): a live node answers
/// within it even through a leader change. A paused, crashed or unplugged node is left
/// sooner, when it misses a ping (`PING_TIMEOUT`).
pub const CALL_DEADLINE: Duration = Duration::from_millis(PINGED_CALL_DEADLINE_MS);
/// While a call is open on a connection that has been silent this long, the device pings
/// the node (HTTP/2 PING)...
pub const PING_INTERVAL: Duration = Duration::from_millis(PING_INTERVAL_MS);
/// ...and drops the connection, failing the call over to the next node, when the answer
/// takes longer than this.
pub const PING_TIMEOUT: Duration = Duration::from_millis(PING_TIMEOUT_MS);
/// The longest the deadline grows to when every node answered too slowly in one round (a
/// hub under heavy load, a big batch on a slow Pi): the hub's own append timeout (5 s)
/// plus the trip. It doubles after each such round, and is back to `CALL_DEADLINE` after
/// the next answer.
pub const CALL_DEADLINE_MAX: Duration = Duration::from_secs(8);
/// How long a connection (TCP, and TLS where used) to a node may take: on a shop's network
/// a live node connects in milliseconds; a paused one completes TCP (its kernel answers)
/// but never TLS.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long mDNS browsing waits for hubs when no node is known or reachable.
pub const DISCOVERY_WAIT: Duration = Duration::from_millis(1500);
/// The least time between two mDNS browses while no hub answers.
pub const DISCOVERY_EVERY: Duration = Duration::from_secs(5);
/// Largest message the device accepts (a Subscribe batch after a long outage).
const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Name of the file, in the device's data dir, holding the last good hub addresses.
pub const HUB_CACHE_FILE: &str = "hubs.json";

/// Where a device finds its hubs.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Addresses given by hand (`HOST:PORT`): always tried first.
    pub addrs: Vec<String>,
    pub realm: Realm,
    /// `authorization: Bearer` on every call.
    pub token: Option<String>,
    /// The store CA to pin: the hubs serve TLS.
    pub tls: Option<ClientTlsConfig>,
    /// Browse mDNS for hubs of this realm when no known node answers.
    pub discovery: bool,
    /// Where to cache the last good addresses (`hubs.json`), if anywhere.
    pub cache_dir: Option<PathBuf>,
}

impl HubConfig {
    /// Hubs of `realm` at the given addresses, over plaintext, without a token, discovery
    /// or an address cache (a dev or test hub); set the other fields for a shop's.
    pub fn new(addrs: Vec<String>, realm: Realm) -> Self {
        HubConfig {
            addrs,
            realm,
            token: None,
            tls: None,
            discovery: false,
            cache_dir: None,
        }
    }
}

/// Why a call did not get an answer, and what the caller should do about it.
#[derive(Debug)]
pub enum CallError {
    /// No node answered, or the one asked failed in a way another node may not: retry
    /// later, elsewhere.
    Retry(String),
    /// The node is shedding this device's load: retry after the delay.
    RateLimited(Duration),
    /// The hub refused the call itself (bad token, bad request): retrying the same call
    /// will not help.
    Refused(Status),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Retry(why) => write!(f, "no hub answered: {why}"),
            CallError::RateLimited(delay) => write!(f, "rate limited for {delay:?}"),
            CallError::Refused(status) => {
                write!(f, "refused: {:?}: {}", status.code(), status.message())
            }
        }
    }
}

/// Codes after which another node, or the same one a little later, may answer.
fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::Aborted
            | Code::FailedPrecondition
    )
}

fn classify(status: Status) -> CallError {
    if status.code() == Code::ResourceExhausted {
        let delay = status
            .metadata()
            .get(RETRY_AFTER_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(ms) = delay {
            return CallError::RateLimited(Duration::from_millis(ms));
        }
    }
    if is_transient(status.code()) {
        CallError::Retry(format!("{:?}: {}", status.code(), status.message()))
    } else {
        CallError::Refused(status)
    }
}

#[derive(Debug, Default)]
struct Targets {
    /// Every address known, in the order they are tried.
    known: Vec<String>,
    /// The node answering now.
    current: Option<(String, Channel)>,
}

/// A subscription stream and what Hello said before it was opened.
pub struct Subscription {
    pub node: String,
    pub hello: pb::HelloResponse,
    pub stream: tonic::Streaming<pb::SubscribeResponse>,
}

pub struct HubClient {
    config: HubConfig,
    bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    targets: Mutex<Targets>,
    /// The highest Lamport clock any Hello reported.
    lamport_seen: AtomicU64,
    /// The Lamport clock the last Hello reported: lower than `lamport_seen` after the
    /// store was reset, or from a node that is behind.
    lamport_last: AtomicU64,
    /// The deadline of one call to one node now, in ms (`CALL_DEADLINE`, grown up to
    /// `CALL_DEADLINE_MAX` while every node answers too slowly).
    deadline_ms: AtomicU64,
    /// The addresses last written to the cache; also serializes the writes.
    cached: Mutex<Vec<String>>,
    /// When mDNS was last browsed: at most once per `DISCOVERY_EVERY`.
    browsed: Mutex<Option<std::time::Instant>>,
}

/// How one attempt of a call on one node ended, when it did not answer.
enum Attempt {
    /// No answer within the deadline.
    TimedOut(String),
    Failed(CallError),
}

impl HubClient {
    pub fn new(config: HubConfig) -> Result<HubClient, ClientError> {
        let bearer = match &config.token {
            None => None,
            Some(token) => Some(format!("Bearer {}", token.trim()).parse().map_err(|_| {
                ClientError::Config("the token contains characters a header cannot carry".into())
            })?),
        };
        let mut known = config.addrs.clone();
        for addr in read_cache(&config) {
            if !known.contains(&addr) {
                known.push(addr);
            }
        }
        Ok(HubClient {
            config,
            bearer,
            targets: Mutex::new(Targets {
                known,
                current: None,
            }),
            lamport_seen: AtomicU64::new(0),
            lamport_last: AtomicU64::new(0),
            deadline_ms: AtomicU64::new(PINGED_CALL_DEADLINE_MS),
            cached: Mutex::new(Vec::new()),
            browsed: Mutex::new(None),
        })
    }

    pub fn realm(&self) -> &Realm {
        &self.config.realm
    }

    /// The highest Lamport clock a hub has reported in Hello.
    pub fn lamport_seen(&self) -> u64 {
        self.lamport_seen.load(Ordering::Relaxed)
    }

    /// The Lamport clock the last Hello reported.
    pub fn lamport_reported(&self) -> u64 {
        self.lamport_last.load(Ordering::Relaxed)
    }

    /// The node answering now, if any.
    pub fn current(&self) -> Option<String> {
        self.lock_targets().current.as_ref().map(|(a, _)| a.clone())
    }

    /// Every node address known, in the order they are tried.
    pub fn known(&self) -> Vec<String> {
        self.lock_targets().known.clone()
    }

    /// The deadline of one call to one node now.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms.load(Ordering::Relaxed))
    }

    fn lock_targets(&self) -> std::sync::MutexGuard<'_, Targets> {
        self.targets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn request<T>(&self, message: T, timeout: Option<Duration>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(timeout) = timeout {
            // The node stops working on it too once the device has given up.
            request.set_timeout(timeout);
        }
        if let Some(value) = &self.bearer {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        request
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("{addr}: not an address: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(PING_INTERVAL)
            .keep_alive_timeout(PING_TIMEOUT)
            .keep_alive_while_idle(false)
            .tcp_nodelay(true);
        if let Some(tls) = &self.config.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("{addr}: TLS: {e}"))?;
        }
        Ok(endpoint.connect_lazy())
    }

    fn grpc(channel: Channel) -> Grpc<Channel> {
        Grpc::new(channel)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    }

    /// The node that answers now: the current one, or the first known (then discovered)
    /// one whose Hello succeeds. Hello's member list joins the known addresses. With
    /// `hello`, the current node is asked Hello too (a subscription needs its answer).
    async fn node(
        &self,
        cursor: u64,
        hello: bool,
    ) -> Result<(String, Channel, Option<pb::HelloResponse>), CallError> {
        let current = self.lock_targets().current.clone();
        if let Some((addr, channel)) = current {
            if !hello {
                return Ok((addr, channel, None));
            }
            match self.hello(&channel, cursor).await {
                Ok(reply) => return Ok((addr, channel, Some(reply))),
                Err(_) => self.failed(&addr),
            }
        }
        let mut tried = Vec::new();
        let mut last_error = if self.config.discovery {
            format!(
                "no hub known: none given, none cached, and no hub of {} answered on mDNS",
                self.config.realm
            )
        } else {
            String::from("no hub address known: give one (discovery is off)")
        };
        for round in 0..2 {
            if round == 1 {
                if !self.config.discovery {
                    break;
                }
                self.discover().await;
            }
            let candidates = self.known();
            for addr in candidates {
                if tried.contains(&addr) {
                    continue;
                }
                tried.push(addr.clone());
                let channel = match self.channel(&addr) {
                    Ok(channel) => channel,
                    Err(err) => {
                        last_error = err;
                        continue;
                    }
                };
                match self.hello(&channel, cursor).await {
                    Ok(reply) => {
                        self.adopt(&addr, channel.clone(), &reply);
                        return Ok((addr, channel, Some(reply)));
                    }
                    Err(err) => {
                        // A node that does not answer Hello goes to the back of the list.
                        self.failed(&addr);
                        last_error = format!("{addr}: {err}");
                    }
                }
            }
        }
        if self.config.discovery && !tried.is_empty() {
            last_error.push_str(" (and no other hub of this store answered on mDNS)");
        }
        Err(CallError::Retry(last_error))
    }

    async fn hello(&self, channel: &Channel, cursor: u64) -> Result<pb::HelloResponse, String> {
        let request = pb::HelloRequest {
            device_id: String::new(),
            cursor,
        };
        let deadline = self.deadline();
        let mut grpc = Self::grpc(channel.clone());
        let call = grpc.hello(self.request(request, Some(deadline)));
        let reply = tokio::time::timeout(deadline, call)
            .await
            .map_err(|_| format!("no answer to Hello within {deadline:?}"))?
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        self.lamport_seen
            .fetch_max(reply.lamport, Ordering::Relaxed);
        self.lamport_last.store(reply.lamport, Ordering::Relaxed);
        Ok(reply)
    }

    /// Makes `addr` the current node, learns the group's members, and caches them.
    fn adopt(&self, addr: &str, channel: Channel, hello: &pb::HelloResponse) {
        let known = {
            let mut targets = self.lock_targets();
            targets.current = Some((addr.to_owned(), channel));
            for node in &hello.nodes {
                if !node.client_addr.is_empty() && !targets.known.contains(&node.client_addr) {
                    targets.known.push(node.client_addr.clone());
                }
            }
            targets.known.clone()
        };
        let mut good = vec![addr.to_owned()];
        good.extend(known.into_iter().filter(|a| a != addr));
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *cached != good {
            write_cache(&self.config, &good);
            *cached = good;
        }
    }

    /// `addr` stopped answering: drop it as current and try it last from now on.
    pub fn failed(&self, addr: &str) {
        let mut targets = self.lock_targets();
        if targets.current.as_ref().is_some_and(|(a, _)| a == addr) {
            targets.current = None;
        }
        if let Some(i) = targets.known.iter().position(|a| a == addr) {
            let addr = targets.known.remove(i);
            targets.known.push(addr);
        }
    }

    /// Browses mDNS and adds the hubs of this realm to the known addresses.
    async fn discover(&self) {
        {
            let mut browsed = self
                .browsed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if browsed.is_some_and(|at| at.elapsed() < DISCOVERY_EVERY) {
                return;
            }
            *browsed = Some(std::time::Instant::now());
        }
        let found = match discovery::browse(DISCOVERY_WAIT).await {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(%err, "mDNS discovery failed");
                return;
            }
        };
        let mut targets = self.lock_targets();
        for hub in found {
            if hub.realm != self.config.realm {
                tracing::debug!(realm = %hub.realm, addr = %hub.addr, "ignoring a hub of another realm");
                continue;
            }
            if !targets.known.contains(&hub.addr) {
                tracing::info!(addr = %hub.addr, node = hub.node_id, "found a hub by mDNS");
                targets.known.push(hub.addr);
            }
        }
    }

    /// Runs `call` on the current node and, when that node does not answer (no answer
    /// within the deadline, or a code another node may not give), at once on the next
    /// one, until every known node was tried once. Each node gets `deadline()`; after a
    /// round in which every node timed out the deadline doubles (to `CALL_DEADLINE_MAX`),
    /// and an answer sets it back. Safe for appends: a resent event keeps its eventId
    /// and is answered DUPLICATE.
    async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, CallError>
    where
        F: FnMut(Grpc<Channel>, String, Duration) -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let deadline = self.deadline();
        let mut tried: Vec<String> = Vec::new();
        let mut all_timed_out = true;
        let mut last_error = None;
        loop {
            let (addr, channel, _) = match self.node(0, false).await {
                Ok(node) => node,
                Err(err) => {
                    all_timed_out = false;
                    last_error = Some(err);
                    break;
                }
            };
            if tried.contains(&addr) {
                break;
            }
            tried.push(addr.clone());
            let attempt =
                tokio::time::timeout(deadline, call(Self::grpc(channel), addr.clone(), deadline))
                    .await;
            let why = match attempt {
                Ok(Ok(answer)) => {
                    self.deadline_ms
                        .store(PINGED_CALL_DEADLINE_MS, Ordering::Relaxed);
                    return Ok(answer);
                }
                Ok(Err(Attempt::Failed(CallError::Retry(why)))) => {
                    all_timed_out = false;
                    why
                }
                Ok(Err(Attempt::Failed(other))) => return Err(other),
                Ok(Err(Attempt::TimedOut(why))) => why,
                Err(_) => format!("{addr}: no answer within {deadline:?}"),
            };
            tracing::debug!(node = %addr, %why, "no answer; trying the next node");
            self.failed(&addr);
            last_error = Some(CallError::Retry(why));
        }
        if all_timed_out && !tried.is_empty() {
            let grown = (deadline * 2).min(CALL_DEADLINE_MAX);
            self.deadline_ms
                .store(grown.as_millis() as u64, Ordering::Relaxed);
        }
        Err(last_error.unwrap_or_else(|| CallError::Retry("no hub answered".into())))
    }

    /// Appends, failing over from node to node (see `call`); one result per event, in
    /// order.
    pub async fn append(&self, events: Vec<pb::Event>) -> Result<Vec<pb::AppendResult>, CallError> {
        let count = events.len();
        self.call(|mut grpc, addr, deadline| {
            let request = self.request(
                pb::AppendRequest {
                    events: events.clone(),
                },
                Some(deadline),
            );
            async move {
                let results = grpc
                    .append(request)
                    .await
                    .map_err(attempt_failed)?
                    .into_inner()
                    .results;
                if results.len() != count {
                    return Err(Attempt::Failed(CallError::Retry(format!(
                        "{addr} answered {} results for {count} events",
                        results.len()
                    ))));
                }
                Ok(results)
            }
        })
        .await
    }

    /// Hello, then Subscribe from `cursor`, on the current node (or the next that
    /// answers Hello).
    pub async fn subscribe(&self, cursor: u64) -> Result<Subscription, CallError> {
        let (addr, channel, hello) = match self.node(cursor, true).await? {
            (addr, channel, Some(hello)) => (addr, channel, hello),
            (addr, _, None) => return Err(CallError::Retry(format!("{addr}: no Hello"))),
        };
        // No deadline on the stream itself: it lives as long as the device follows.
        let request = self.request(pb::SubscribeRequest { cursor }, None);
        let deadline = self.deadline();
        let mut grpc = Self::grpc(channel);
        let opened = tokio::time::timeout(deadline, grpc.subscribe(request)).await;
        match opened {
            Ok(Ok(stream)) => Ok(Subscription {
                node: addr,
                hello,
                stream: stream.into_inner(),
            }),
            Ok(Err(status)) => {
                let error = classify(status);
                if matches!(error, CallError::Retry(_)) {
                    self.failed(&addr);
                }
                Err(error)
            }
            Err(_) => {
                self.failed(&addr);
                Err(CallError::Retry(format!(
                    "{addr}: Subscribe not opened within {deadline:?}"
                )))
            }
        }
    }

    /// An order as the hub has it; `linearizable` confirms with the leader first. Fails
    /// over from node to node (see `call`).
    pub async fn get_order(
        &self,
        order_id: &str,
        linearizable: bool,
    ) -> Result<pb::Order, CallError> {
        self.call(|mut grpc, addr, deadline| {
            let request = self.request(
                crate::proto::convert::get_order_request(order_id, linearizable),
                Some(deadline),
            );
            async move {
                grpc.get_order(request)
                    .await
                    .map_err(attempt_failed)?
                    .into_inner()
                    .order
                    .ok_or_else(|| {
                        Attempt::Failed(CallError::Retry(format!(
                            "{addr} answered without an order"
                        )))
                    })
            }
        })
        .await
    }
}

impl HubClient {
    /// The live state as of one seq (`Hub/Bootstrap`), every page of it gathered into one
    /// answer; a stream that breaks off before its last page, or whose pages name two
    /// seqs, is an attempt failed, and the next node is tried. So is a node whose state is
    /// behind `at_least` (the seq the device already holds: a node just back from days off
    /// would otherwise take the device's screens back in time). Fails over like `call`.
    ///
    /// Asked with LOCAL consistency, so a device cut off with one node can still start.
    pub async fn bootstrap(&self, at_least: u64) -> Result<pb::BootstrapResponse, CallError> {
        self.call(|mut grpc, addr, deadline| {
            let request = self.request(
                pb::BootstrapRequest {
                    consistency: pb::Consistency::Local as i32,
                },
                Some(deadline),
            );
            async move {
                let mut stream = grpc
                    .bootstrap(request)
                    .await
                    .map_err(attempt_failed)?
                    .into_inner();
                let mut whole: Option<pb::BootstrapResponse> = None;
                while let Some(page) = stream.message().await.map_err(attempt_failed)? {
                    let last = page.last;
                    let all = whole.get_or_insert_with(|| pb::BootstrapResponse {
                        seq: page.seq,
                        lamport: page.lamport,
                        ..pb::BootstrapResponse::default()
                    });
                    if all.seq < at_least {
                        return Err(Attempt::Failed(CallError::Retry(format!(
                            "{addr} is behind this device: its live state is at seq {}, \
                             the device holds seq {at_least}",
                            all.seq
                        ))));
                    }
                    if page.seq != all.seq {
                        return Err(Attempt::Failed(CallError::Retry(format!(
                            "{addr}: bootstrap pages name seqs {} and {}",
                            all.seq, page.seq
                        ))));
                    }
                    all.orders.extend(page.orders);
                    all.tickets.extend(page.tickets);
                    all.stocks.extend(page.stocks);
                    if last {
                        all.last = true;
                        break;
                    }
                }
                match whole {
                    Some(whole) if whole.last => Ok(whole),
                    _ => Err(Attempt::Failed(CallError::Retry(format!(
                        "{addr}: the bootstrap stream ended before its last page"
                    )))),
                }
            }
        })
        .await
    }
}

/// A status as an attempt's end: the deadline passing (on either side), or an answer.
fn attempt_failed(status: Status) -> Attempt {
    let timed_out = status.code() == Code::DeadlineExceeded
        || (status.code() == Code::Cancelled && status.message().contains("Timeout expired"));
    if timed_out {
        Attempt::TimedOut(format!("{:?}: {}", status.code(), status.message()))
    } else {
        Attempt::Failed(classify(status))
    }
}
