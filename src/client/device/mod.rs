//! `Device`: the SDK a till or screen uses. `append` checks an event against the device's
//! read model, writes it to the durable outbox and returns; two background tasks (started
//! by `start`) send the outbox to the hub in order and follow the committed log from the
//! persisted cursor, replacing optimistic state with the hub's truth.
//!
//! This file holds the handle, its state and its reads; the rest, by concern:
//! - `append`: checking drafts against the view and queueing them;
//! - `send`: the send loop (outbox → hub, answers → settled or dead letters);
//! - `follow`: the follow loop (committed log → read model, settling queued events);
//! - `lock`: order lease locks (`lock`, `LockGuard`);
//! - `backoff`: exponential backoff with full jitter, shared by both loops.

mod append;
mod backoff;
mod follow;
mod lock;
mod send;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use lock::LockGuard;

use super::hub::{HubClient, HubConfig};
use super::model::ReadModel;
use super::outbox::{DeadLetter, Outbox, Queued};
use super::{ClientError, RefusalCode};
use crate::clock::now_ms;
use crate::domain::inventory::Stock;
use crate::domain::order::Order;
use crate::domain::ticket::{Ticket, TicketKind};
use crate::domain::{Event, Realm};

/// Events per Append the outbox sends.
pub const SEND_BATCH_MAX: usize = 256;
/// Backoff between failed sends or subscriptions: from the first delay, doubling, to the
/// cap, each drawn uniformly below the current bound (full jitter).
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A subscription that shows no committed event the outbox knows was acked for this
/// long is moved to another node (its node may be cut off from the leader).
pub const SUBSCRIPTION_STALL: Duration = Duration::from_secs(3);
/// How often the follow loop checks for a stall.
const STALL_CHECK_EVERY: Duration = Duration::from_secs(1);
/// A subscription with no message at all, not even a heartbeat, for this long is dead (a
/// paused node, a link gone without closing): the device moves to the next node at once.
pub const SUBSCRIPTION_SILENCE: Duration = Duration::from_millis(crate::wire::SUBSCRIBE_SILENCE_MS);
/// The ttl a device asks for its order locks, and how often it renews them.
pub const LOCK_TTL_MS: u64 = 45_000;
pub const LOCK_RENEW_EVERY: Duration = Duration::from_secs(15);
/// How many recent final outcomes are remembered for `outcome()`.
const RECENT_OUTCOMES: usize = 4096;

#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// The device's data dir: outbox, read model, cached hub addresses.
    pub data_dir: PathBuf,
    pub device_id: String,
    /// The person signed in on the device, stamped into `actor.userId`.
    pub user_id: Option<String>,
    pub hub: HubConfig,
}

/// Where the device is: what the app shows in its status bar.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Events queued and not yet answered by a hub.
    pub unsent: usize,
    /// Answered events the committed model has not reached yet.
    pub unsettled: usize,
    pub dead_letters: usize,
    /// The seq of the last committed event in the read model.
    pub cursor: u64,
    /// The highest seq a hub reported for one of this device's events.
    pub acked_seq: u64,
    /// The node the outbox talks to, when one answers.
    pub node: Option<String>,
    /// Why the last send or subscription failed, until one succeeds.
    pub last_error: Option<String>,
}

/// What became of an appended event.
#[derive(Debug, Clone, PartialEq)]
pub enum Final {
    /// In the log at this seq (ACCEPTED, or DUPLICATE of an earlier send).
    Committed { seq: u64 },
    /// Refused by the hub: now a dead letter.
    Rejected {
        code: RefusalCode,
        message: String,
        /// `LOCKED` only: the device holding the order.
        lock_holder: Option<String>,
    },
}

/// The event the device queued, as `append` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    pub number: u64,
    pub event_id: String,
    pub version: u64,
    pub lamport: u64,
}

/// What the app asks to append; the device fills in the envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub event_type: String,
    pub payload: Map<String, Value>,
    /// `None`: the next version after the device's view of the aggregate.
    pub version: Option<u64>,
    pub force: bool,
}

impl Draft {
    pub fn new(aggregate_type: &str, aggregate_id: &str, event_type: &str, payload: Value) -> Self {
        let payload = match payload {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Draft {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            event_type: event_type.to_owned(),
            payload,
            version: None,
            force: false,
        }
    }

    pub fn order(order_id: &str, event_type: &str, payload: Value) -> Self {
        Draft::new("order", order_id, event_type, payload)
    }
}

struct Inner {
    realm: Realm,
    device_id: String,
    user_id: Option<String>,
    outbox: Outbox,
    hub: HubClient,
    state: Mutex<DeviceState>,
    /// Wakes the sender: something was queued.
    queued_tx: Notify,
    progress: watch::Sender<Progress>,
}

struct DeviceState {
    model: ReadModel,
    queued: BTreeMap<u64, Queued>,
    by_id: BTreeMap<Uuid, u64>,
    dead: BTreeMap<u64, DeadLetter>,
    lamport: u64,
    next: u64,
    acked_seq: u64,
    recent: VecDeque<(u64, Final)>,
    /// Send one event per Append: the last batch was refused as a whole.
    single: bool,
}

impl DeviceState {
    fn remember(&mut self, number: u64, outcome: Final) {
        if self.recent.len() == RECENT_OUTCOMES {
            self.recent.pop_front();
        }
        self.recent.push_back((number, outcome));
    }

    /// Drops settled queued entries (number, seq): committed at that seq.
    fn settle(&mut self, settled: Vec<(u64, u64)>) {
        for (number, seq) in settled {
            if let Some(entry) = self.queued.remove(&number)
                && let Ok(id) = Uuid::parse_str(&entry.event.event_id)
            {
                self.by_id.remove(&id);
            }
            self.acked_seq = self.acked_seq.max(seq);
            self.remember(number, Final::Committed { seq });
        }
    }

    /// The view, rebuilt if the committed layer or the outbox changed under it.
    fn fresh_model(&mut self) -> &ReadModel {
        if self.model.is_stale() {
            let events: Vec<Event> = self.queued.values().map(|q| q.event.clone()).collect();
            self.model.rebuild(events.iter(), now_ms());
        }
        &self.model
    }
}

/// The device SDK handle; cheap to clone.
#[derive(Clone)]
pub struct Device {
    inner: Arc<Inner>,
}

/// The background tasks; they stop when this is dropped.
pub struct Running {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
impl Device {
    /// Opens (or creates) the device's store in `config.data_dir`. Nothing is sent until
    /// `start`.
    pub fn open(config: DeviceConfig) -> Result<Device, ClientError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ClientError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        if config.device_id.trim().is_empty() {
            return Err(ClientError::Config("the device id is empty".into()));
        }
        let (outbox, loaded) = Outbox::open(&config.data_dir)?;
        let realm = config.hub.realm.clone();
        let mut hub_config = config.hub;
        hub_config.cache_dir = Some(config.data_dir.clone());
        let hub = HubClient::new(hub_config)?;
        let mut by_id = BTreeMap::new();
        let mut acked_seq = 0;
        for (number, entry) in &loaded.queued {
            if let Ok(id) = Uuid::parse_str(&entry.event.event_id) {
                by_id.insert(id, *number);
            }
            acked_seq = acked_seq.max(entry.seq.unwrap_or(0));
        }
        let state = DeviceState {
            model: ReadModel::new(realm.clone(), loaded.committed),
            queued: loaded.queued,
            by_id,
            dead: loaded.dead,
            lamport: loaded.lamport,
            next: loaded.next,
            acked_seq,
            recent: VecDeque::new(),
            single: false,
        };
        let (progress, _) = watch::channel(Progress::default());
        let device = Device {
            inner: Arc::new(Inner {
                realm,
                device_id: config.device_id,
                user_id: config.user_id,
                outbox,
                hub,
                state: Mutex::new(state),
                queued_tx: Notify::new(),
                progress,
            }),
        };
        device.publish(None, None);
        Ok(device)
    }

    pub fn device_id(&self) -> &str {
        &self.inner.device_id
    }

    pub fn realm(&self) -> &Realm {
        &self.inner.realm
    }

    pub fn hub(&self) -> &HubClient {
        &self.inner.hub
    }

    fn state(&self) -> MutexGuard<'_, DeviceState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts sending the outbox and following the committed log.
    pub fn start(&self) -> Running {
        let sender = tokio::spawn(self.clone().send_loop());
        let follower = tokio::spawn(self.clone().follow_loop());
        Running {
            tasks: vec![sender, follower],
        }
    }

    /// Updates the published progress; `node`/`error` of `None` keep the last values.
    fn publish(&self, node: Option<Option<String>>, error: Option<Option<String>>) {
        let snapshot = {
            let state = self.state();
            let unsent = state.queued.values().filter(|q| q.seq.is_none()).count();
            (
                unsent,
                state.queued.len() - unsent,
                state.dead.len(),
                state.model.cursor(),
                state.acked_seq,
            )
        };
        self.inner.progress.send_modify(|p| {
            p.unsent = snapshot.0;
            p.unsettled = snapshot.1;
            p.dead_letters = snapshot.2;
            p.cursor = snapshot.3;
            p.acked_seq = snapshot.4;
            if let Some(node) = node {
                p.node = node;
            }
            if let Some(error) = error {
                p.last_error = error;
            }
        });
    }

    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.inner.progress.subscribe()
    }

    /// An order as the device sees it (committed, with its own queued edits on top).
    pub fn order(&self, order_id: &str) -> Option<Order> {
        self.state().fresh_model().order(order_id).cloned()
    }

    pub fn orders(&self) -> Vec<Order> {
        self.state()
            .fresh_model()
            .orders()
            .into_iter()
            .cloned()
            .collect()
    }

    pub fn ticket(&self, kind: TicketKind, ticket_id: &str) -> Option<Ticket> {
        self.state().fresh_model().ticket(kind, ticket_id).cloned()
    }

    pub fn stock(&self, sku: &str) -> Option<Stock> {
        self.state().fresh_model().stock(sku).cloned()
    }

    /// The committed read model whole (a copy): the hub's truth up to `cursor()`.
    pub fn committed(&self) -> super::model::Layer {
        self.state().model.committed().clone()
    }

    /// The committed part of the read model only: the hub's truth up to `cursor()`.
    pub fn committed_order(&self, order_id: &str) -> Option<Order> {
        self.state().model.committed().orders.get(order_id).cloned()
    }

    pub fn cursor(&self) -> u64 {
        self.state().model.cursor()
    }

    /// Queued events in order (answered ones included until the model passes them).
    pub fn queued(&self) -> Vec<Queued> {
        self.state().queued.values().cloned().collect()
    }

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.state().dead.values().cloned().collect()
    }

    /// Drops a dead letter the app has shown and dealt with.
    pub fn resolve(&self, number: u64) -> Result<bool, ClientError> {
        let mut state = self.state();
        let removed = self.inner.outbox.resolve(number)?;
        state.dead.remove(&number);
        drop(state);
        self.publish(None, None);
        Ok(removed)
    }

    /// What became of an appended event, if it is known yet.
    pub fn outcome(&self, number: u64) -> Option<Final> {
        let state = self.state();
        if let Some(letter) = state.dead.get(&number) {
            return Some(Final::Rejected {
                code: letter.code.clone(),
                message: letter.message.clone(),
                lock_holder: letter.lock_holder.clone(),
            });
        }
        if let Some(entry) = state.queued.get(&number) {
            return entry.seq.map(|seq| Final::Committed { seq });
        }
        state
            .recent
            .iter()
            .rev()
            .find(|(n, _)| *n == number)
            .map(|(_, f)| f.clone())
    }

    /// Waits up to `within` for the final outcome of an appended event.
    pub async fn wait_outcome(&self, number: u64, within: Duration) -> Option<Final> {
        let mut progress = self.progress();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(outcome) = self.outcome(number) {
                return Some(outcome);
            }
            match tokio::time::timeout_at(deadline, progress.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.outcome(number),
            }
        }
    }

    /// Waits up to `within` until every queued event is answered and the read model has
    /// caught up with them. True when it did.
    pub async fn settle(&self, within: Duration) -> bool {
        let mut progress = self.progress();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let done = {
                let p = progress.borrow_and_update();
                p.unsent == 0 && p.unsettled == 0 && p.cursor >= p.acked_seq
            };
            if done {
                return true;
            }
            match tokio::time::timeout_at(deadline, progress.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }
}
