//! `HubClient`: one device's connection to its store's group. It knows several nodes
//! (given addresses, the group's members from Hello, hubs found by mDNS, and the last good
//! addresses cached on disk), talks to one of them at a time, and moves to the next when
//! that one stops answering. Any node serves: followers forward appends to the leader.

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
use crate::wire::RETRY_AFTER_METADATA;

/// How long a node may take to answer Hello before the next one is tried.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an Append may take: the hub's own append timeout (5 s) plus the trip.
pub const APPEND_TIMEOUT: Duration = Duration::from_secs(8);
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
    /// The addresses last written to the cache; also serializes the writes.
    cached: Mutex<Vec<String>>,
    /// When mDNS was last browsed: at most once per `DISCOVERY_EVERY`.
    browsed: Mutex<Option<std::time::Instant>>,
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

    /// The node answering now, if any.
    pub fn current(&self) -> Option<String> {
        self.lock_targets().current.as_ref().map(|(a, _)| a.clone())
    }

    /// Every node address known, in the order they are tried.
    pub fn known(&self) -> Vec<String> {
        self.lock_targets().known.clone()
    }

    fn lock_targets(&self) -> std::sync::MutexGuard<'_, Targets> {
        self.targets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
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
            .connect_timeout(HELLO_TIMEOUT)
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
                    Err(err) => last_error = format!("{addr}: {err}"),
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
        let reply = Self::grpc(channel.clone())
            .hello(self.request(request, HELLO_TIMEOUT))
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        self.lamport_seen
            .fetch_max(reply.lamport, Ordering::Relaxed);
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

    /// Appends through the current node; one result per event, in order.
    pub async fn append(&self, events: Vec<pb::Event>) -> Result<Vec<pb::AppendResult>, CallError> {
        let (addr, channel, _) = self.node(0, false).await?;
        let count = events.len();
        let reply = Self::grpc(channel)
            .append(self.request(pb::AppendRequest { events }, APPEND_TIMEOUT))
            .await;
        match reply {
            Ok(reply) => {
                let results = reply.into_inner().results;
                if results.len() != count {
                    self.failed(&addr);
                    return Err(CallError::Retry(format!(
                        "{addr} answered {} results for {count} events",
                        results.len()
                    )));
                }
                Ok(results)
            }
            Err(status) => {
                let error = classify(status);
                if matches!(error, CallError::Retry(_)) {
                    self.failed(&addr);
                }
                Err(error)
            }
        }
    }

    /// Hello, then Subscribe from `cursor`, on the current node.
    pub async fn subscribe(&self, cursor: u64) -> Result<Subscription, CallError> {
        let (addr, channel, hello) = match self.node(cursor, true).await? {
            (addr, channel, Some(hello)) => (addr, channel, hello),
            (addr, _, None) => return Err(CallError::Retry(format!("{addr}: no Hello"))),
        };
        let mut request = tonic::Request::new(pb::SubscribeRequest { cursor });
        if let Some(value) = &self.bearer {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        match Self::grpc(channel).subscribe(request).await {
            Ok(stream) => Ok(Subscription {
                node: addr,
                hello,
                stream: stream.into_inner(),
            }),
            Err(status) => {
                let error = classify(status);
                if matches!(error, CallError::Retry(_)) {
                    self.failed(&addr);
                }
                Err(error)
            }
        }
    }

    /// An order as the hub has it; `linearizable` confirms with the leader first.
    pub async fn get_order(
        &self,
        order_id: &str,
        linearizable: bool,
    ) -> Result<pb::Order, CallError> {
        let (addr, channel, _) = self.node(0, false).await?;
        let request = crate::proto::convert::get_order_request(order_id, linearizable);
        match Self::grpc(channel)
            .get_order(self.request(request, APPEND_TIMEOUT))
            .await
        {
            Ok(reply) => reply
                .into_inner()
                .order
                .ok_or_else(|| CallError::Retry(format!("{addr} answered without an order"))),
            Err(status) => {
                let error = classify(status);
                if matches!(error, CallError::Retry(_)) {
                    self.failed(&addr);
                }
                Err(error)
            }
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Cache {
    #[serde(rename = "tenantId")]
    tenant_id: String,
    #[serde(rename = "storeId")]
    store_id: String,
    addrs: Vec<String>,
}

fn read_cache(config: &HubConfig) -> Vec<String> {
    let Some(dir) = &config.cache_dir else {
        return Vec::new();
    };
    let Ok(text) = std::fs::read_to_string(dir.join(HUB_CACHE_FILE)) else {
        return Vec::new();
    };
    match serde_json::from_str::<Cache>(&text) {
        Ok(cache)
            if cache.tenant_id == config.realm.tenant_id
                && cache.store_id == config.realm.store_id =>
        {
            cache.addrs
        }
        Ok(_) => Vec::new(),
        Err(err) => {
            tracing::warn!(%err, "ignoring an unreadable {HUB_CACHE_FILE}");
            Vec::new()
        }
    }
}

fn write_cache(config: &HubConfig, addrs: &[String]) {
    let Some(dir) = &config.cache_dir else {
        return;
    };
    let cache = Cache {
        tenant_id: config.realm.tenant_id.clone(),
        store_id: config.realm.store_id.clone(),
        addrs: addrs.to_vec(),
    };
    let Ok(text) = serde_json::to_string_pretty(&cache) else {
        return;
    };
    // Write a sibling and rename: a crash leaves the old cache or the new one.
    let tmp = dir.join(format!("{HUB_CACHE_FILE}.tmp"));
    let result =
        std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, dir.join(HUB_CACHE_FILE)));
    if let Err(err) = result {
        tracing::warn!(%err, "cannot cache the hub addresses");
    }
}
