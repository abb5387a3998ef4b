//! `Device`: the SDK a till or screen uses. `append` checks an event against the device's
//! read model, writes it to the durable outbox and returns; two background tasks (started
//! by `start`) send the outbox to the hub in order and follow the committed log from the
//! persisted cursor, replacing optimistic state with the hub's truth.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::ClientError;
use super::hub::{CallError, HubClient, HubConfig};
use super::model::{Changes, ReadModel};
use super::outbox::{DeadLetter, Outbox, Queued};
use crate::domain::inventory::Stock;
use crate::domain::order::Order;
use crate::domain::ticket::{Ticket, TicketKind};
use crate::domain::{Actor, Clock, Event, Outcome, Realm};
use crate::proto::{convert, pb};

/// Events per Append the outbox sends.
pub const SEND_BATCH_MAX: usize = 256;
/// Backoff between failed sends or subscriptions: from the first delay, doubling, to the
/// cap, each drawn uniformly below the current bound (full jitter).
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A subscription that shows no committed event the outbox knows was acked for this
/// long is moved to another node (its node may be cut off from the leader).
pub const SUBSCRIPTION_STALL: Duration = Duration::from_secs(3);
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
    Rejected { code: String, message: String },
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The holder named in a LOCKED message ("… is locked by DEVICE until …").
fn holder_in(message: &str) -> Option<String> {
    let rest = message.split_once("locked by ")?.1;
    Some(rest.split_whitespace().next()?.to_owned())
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

    /// Appends one event: checked against the device's view, written to the outbox and
    /// on disk, applied to the view. Refused here (with the reason, and the lock holder
    /// for LOCKED) when the device's own view already rejects it.
    pub fn append(&self, draft: Draft) -> Result<Appended, ClientError> {
        let mut appended = self.append_all(vec![draft])?;
        appended
            .pop()
            .ok_or_else(|| ClientError::Config("nothing appended".into()))
    }

    /// Appends several events with one disk flush; all or none are queued.
    pub fn append_all(&self, drafts: Vec<Draft>) -> Result<Vec<Appended>, ClientError> {
        let mut state = self.state();
        state.fresh_model();
        let lamport_floor = self.inner.hub.lamport_seen();
        let mut lamport = state.lamport.max(lamport_floor);
        let mut next = state.next;
        let mut entries = Vec::with_capacity(drafts.len());
        let mut appended = Vec::with_capacity(drafts.len());
        let now = now_ms();
        for draft in drafts {
            let version = match draft.version {
                Some(v) => v,
                None => next_version(&state.model, &draft),
            };
            lamport += 1;
            let event_id = Uuid::now_v7().to_string();
            let event = Event {
                event_id: event_id.clone(),
                tenant_id: self.inner.realm.tenant_id.clone(),
                store_id: self.inner.realm.store_id.clone(),
                aggregate_type: draft.aggregate_type,
                aggregate_id: draft.aggregate_id,
                version,
                event_type: draft.event_type,
                at: now_rfc3339(),
                actor: Actor {
                    device_id: self.inner.device_id.clone(),
                    user_id: self.inner.user_id.clone(),
                },
                clock: Clock {
                    lamport,
                    device_id: self.inner.device_id.clone(),
                },
                payload: draft.payload,
                force: draft.force,
                seq: None,
                hub_time: None,
            };
            // The event must also survive the trip to protobuf.
            if let Err(err) = convert::event_to_pb(&event) {
                state.model.rebuild_needed();
                return Err(ClientError::Refused {
                    code: "MALFORMED_EVENT".into(),
                    message: err.to_string(),
                    lock_holder: None,
                });
            }
            match state.model.apply_local(&event, now) {
                Outcome::Accepted { .. } => {}
                Outcome::Duplicate { .. } => {}
                Outcome::Rejected { code, message } => {
                    let lock_holder = (code == crate::domain::RejectCode::Locked)
                        .then(|| {
                            state
                                .model
                                .order(&event.aggregate_id)
                                .and_then(|o| o.lock.as_ref())
                                .map(|l| l.holder.clone())
                                .or_else(|| holder_in(&message))
                        })
                        .flatten();
                    // Undo the earlier drafts of this call in the view.
                    state.model.rebuild_needed();
                    return Err(ClientError::Refused {
                        code: code.as_str().to_owned(),
                        message,
                        lock_holder,
                    });
                }
            }
            appended.push(Appended {
                number: next,
                event_id,
                version,
                lamport,
            });
            entries.push(Queued {
                number: next,
                event,
                seq: None,
            });
            next += 1;
        }
        if let Err(err) = self.inner.outbox.queue(&entries, lamport, next) {
            state.model.rebuild_needed();
            return Err(err.into());
        }
        state.lamport = lamport;
        state.next = next;
        for entry in entries {
            if let Ok(id) = Uuid::parse_str(&entry.event.event_id) {
                state.by_id.insert(id, entry.number);
            }
            state.queued.insert(entry.number, entry);
        }
        drop(state);
        self.inner.queued_tx.notify_one();
        self.publish(None, None);
        Ok(appended)
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

    /// Takes the lease lock on an order and waits up to `within` for the hub to confirm
    /// it. The guard renews it while held and releases it when dropped. Refused with the
    /// holder's device id when another device holds it.
    pub async fn lock(&self, order_id: &str, within: Duration) -> Result<LockGuard, ClientError> {
        let draft = Draft::order(order_id, "order.locked", json!({ "ttlMs": LOCK_TTL_MS }));
        let appended = self.append(draft)?;
        match self.wait_outcome(appended.number, within).await {
            Some(Final::Committed { .. }) => Ok(LockGuard::new(self.clone(), order_id)),
            Some(Final::Rejected { code, message }) => {
                // The caller gets the refusal itself: no dead letter to resolve as well.
                self.resolve(appended.number)?;
                let lock_holder = holder_in(&message);
                Err(ClientError::Refused {
                    code,
                    message,
                    lock_holder,
                })
            }
            None => Err(ClientError::Unconfirmed {
                event_id: appended.event_id,
            }),
        }
    }

    // ---------------------------------------------------------------------------------
    // Sending

    async fn send_loop(self) {
        let mut backoff = Backoff::new();
        loop {
            let batch = self.next_batch();
            if batch.is_empty() {
                let notified = self.inner.queued_tx.notified();
                // Re-check: an append may have landed between the two.
                if self.next_batch().is_empty() {
                    notified.await;
                }
                continue;
            }
            let mut events = Vec::with_capacity(batch.len());
            for entry in &batch {
                match convert::event_to_pb(&entry.event) {
                    Ok(event) => events.push(event),
                    Err(err) => {
                        // Checked at append; a store written by another version may differ.
                        let why = (entry, "MALFORMED_EVENT".to_owned(), err.to_string());
                        self.settle_answers(Vec::new(), vec![why]);
                        events.clear();
                        break;
                    }
                }
            }
            if events.is_empty() {
                continue;
            }
            match self.inner.hub.append(events).await {
                Ok(results) => {
                    backoff.reset();
                    self.record_results(&batch, results);
                    self.publish(Some(self.inner.hub.current()), Some(None));
                }
                Err(CallError::RateLimited(delay)) => {
                    self.publish(None, Some(Some(format!("rate limited for {delay:?}"))));
                    tokio::time::sleep(delay).await;
                }
                Err(CallError::Refused(status))
                    if refuses_the_request(status.code()) && batch.len() > 1 =>
                {
                    // Find the one event the hub refuses to even decode: send singly.
                    self.state().single = true;
                }
                Err(CallError::Refused(status)) if refuses_the_request(status.code()) => {
                    let code = format!("{:?}", status.code());
                    let why = (&batch[0], code, status.message().to_owned());
                    self.settle_answers(Vec::new(), vec![why]);
                }
                Err(err) => {
                    tracing::debug!(%err, "outbox: send failed; backing off");
                    self.publish(Some(None), Some(Some(err.to_string())));
                    tokio::time::sleep(backoff.next()).await;
                }
            }
        }
    }

    /// The first unanswered events, in outbox order.
    fn next_batch(&self) -> Vec<Queued> {
        let state = self.state();
        let max = if state.single { 1 } else { SEND_BATCH_MAX };
        state
            .queued
            .values()
            .filter(|q| q.seq.is_none())
            .take(max)
            .cloned()
            .collect()
    }

    fn record_results(&self, batch: &[Queued], results: Vec<pb::AppendResult>) {
        let mut acked = Vec::new();
        let mut dead = Vec::new();
        for (entry, result) in batch.iter().zip(results) {
            match pb::AppendStatus::try_from(result.status) {
                Ok(pb::AppendStatus::Accepted | pb::AppendStatus::Duplicate) => {
                    acked.push((entry, result.seq));
                }
                Ok(pb::AppendStatus::Rejected) => dead.push((entry, result.code, result.message)),
                _ => {
                    let status = result.status;
                    dead.push((
                        entry,
                        "UNKNOWN_STATUS".into(),
                        format!("the hub answered status {status}"),
                    ));
                }
            }
        }
        self.settle_answers(acked, dead);
        self.state().single = false;
    }

    /// Records answered events (their seqs) and refused ones (dead letters), on disk and
    /// in memory; a refusal makes the view replay without the refused events.
    fn settle_answers(&self, acked: Vec<(&Queued, u64)>, dead: Vec<(&Queued, String, String)>) {
        let mut state = self.state();
        let acked: Vec<Queued> = acked
            .into_iter()
            .filter(|(q, _)| state.queued.contains_key(&q.number))
            .map(|(q, seq)| Queued {
                seq: Some(seq),
                ..q.clone()
            })
            .collect();
        let letters: Vec<DeadLetter> = dead
            .into_iter()
            .filter(|(q, _, _)| state.queued.contains_key(&q.number))
            .map(|(q, code, message)| DeadLetter {
                number: q.number,
                event: q.event.clone(),
                code,
                message,
            })
            .collect();
        if let Err(err) = self.inner.outbox.answered(&acked, &letters) {
            // Unrecorded answers are asked for again: the hub answers DUPLICATE or the
            // same rejection, so nothing is lost.
            tracing::warn!(%err, "outbox: cannot record the hub's answers");
            return;
        }
        for entry in acked {
            let seq = entry.seq.unwrap_or(0);
            state.acked_seq = state.acked_seq.max(seq);
            // Already past it: the model has it, nothing left to settle.
            if seq <= state.model.cursor() {
                state.queued.remove(&entry.number);
                if let Ok(id) = Uuid::parse_str(&entry.event.event_id) {
                    state.by_id.remove(&id);
                }
                state.remember(entry.number, Final::Committed { seq });
            } else {
                state.queued.insert(entry.number, entry);
            }
        }
        if !letters.is_empty() {
            state.model.rebuild_needed();
        }
        for letter in letters {
            tracing::warn!(event = %letter.event.event_id, code = %letter.code, message = %letter.message, "outbox: the hub rejected an event");
            state.queued.remove(&letter.number);
            if let Ok(id) = Uuid::parse_str(&letter.event.event_id) {
                state.by_id.remove(&id);
            }
            state.remember(
                letter.number,
                Final::Rejected {
                    code: letter.code.clone(),
                    message: letter.message.clone(),
                },
            );
            state.dead.insert(letter.number, letter);
        }
    }

    // ---------------------------------------------------------------------------------
    // Following the committed log

    async fn follow_loop(self) {
        let mut backoff = Backoff::new();
        loop {
            let cursor = self.cursor();
            let mut subscription = match self.inner.hub.subscribe(cursor).await {
                Ok(subscription) => subscription,
                Err(err) => {
                    self.publish(None, Some(Some(err.to_string())));
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            };
            if subscription.hello.snapshot_needed {
                tracing::warn!(
                    cursor,
                    "the hub's log is behind this device's copy; starting over"
                );
                self.reset_model();
                continue;
            }
            self.publish(Some(Some(subscription.node.clone())), None);
            let mut last_progress = Instant::now();
            let mut seen_cursor = cursor;
            loop {
                let message = tokio::select! {
                    message = subscription.stream.message() => message,
                    _ = tokio::time::sleep(SUBSCRIPTION_STALL) => {
                        let (cursor, acked) = {
                            let state = self.state();
                            (state.model.cursor(), state.acked_seq)
                        };
                        if cursor > seen_cursor {
                            seen_cursor = cursor;
                            last_progress = Instant::now();
                        }
                        if acked > cursor && last_progress.elapsed() >= SUBSCRIPTION_STALL {
                            tracing::info!(node = %subscription.node, cursor, acked, "subscription stalled; moving to another node");
                            self.inner.hub.failed(&subscription.node);
                            break;
                        }
                        continue;
                    }
                };
                match message {
                    Ok(Some(batch)) => {
                        backoff.reset();
                        last_progress = Instant::now();
                        if let Err(err) = self.apply_committed(&batch.events) {
                            tracing::warn!(%err, "resetting the device's read model");
                            self.reset_model();
                            break;
                        }
                    }
                    Ok(None) => {
                        // The node ended the stream (shutting down): another one, after a pause.
                        self.inner.hub.failed(&subscription.node);
                        tokio::time::sleep(backoff.next()).await;
                        break;
                    }
                    Err(status) => {
                        tracing::debug!(%status, "subscription ended");
                        self.inner.hub.failed(&subscription.node);
                        self.publish(None, Some(Some(status.message().to_owned())));
                        tokio::time::sleep(backoff.next()).await;
                        break;
                    }
                }
            }
        }
    }

    fn reset_model(&self) {
        let mut state = self.state();
        if let Err(err) = self.inner.outbox.reset_committed() {
            tracing::error!(%err, "cannot reset the device's read model");
            return;
        }
        state.model.reset();
    }

    /// Applies a batch of committed events to the read model, settles the queued events
    /// they contain, and records it all in one write.
    fn apply_committed(&self, events: &[pb::Event]) -> Result<(), ClientError> {
        let mut state = self.state();
        let mut changes = Changes::default();
        let mut lamport = state.lamport;
        for event in events {
            let event =
                convert::event_from_pb(event).map_err(|e| ClientError::Diverged(e.to_string()))?;
            if event.seq.is_some_and(|seq| seq <= state.model.cursor()) {
                continue; // a resent batch: already applied
            }
            lamport = lamport.max(event.clock.lamport);
            state
                .model
                .apply_committed(&event, &mut changes)
                .map_err(|e| ClientError::Diverged(e.to_string()))?;
        }
        let cursor = state.model.cursor();
        // Settled: queued events now in the committed model, and answered ones it passed.
        let mut settled = Vec::new();
        for (id, seq) in &changes.event_ids {
            if let Some(number) = state.by_id.get(id).copied() {
                settled.push((number, *seq));
            }
        }
        for entry in state.queued.values() {
            if entry.seq.is_some_and(|seq| seq <= cursor)
                && !settled.iter().any(|(n, _)| *n == entry.number)
            {
                settled.push((entry.number, entry.seq.unwrap_or(0)));
            }
        }
        let numbers: Vec<u64> = settled.iter().map(|(n, _)| *n).collect();
        self.inner
            .outbox
            .committed(&changes, cursor, lamport, &numbers)?;
        state.lamport = lamport;
        for (number, seq) in settled {
            if let Some(entry) = state.queued.remove(&number)
                && let Ok(id) = Uuid::parse_str(&entry.event.event_id)
            {
                state.by_id.remove(&id);
            }
            state.acked_seq = state.acked_seq.max(seq);
            state.remember(number, Final::Committed { seq });
        }
        drop(state);
        self.publish(None, Some(None));
        Ok(())
    }
}

/// Codes by which the hub refuses a request for what it carries (it cannot be decoded,
/// or is too large): sent again unchanged it would be refused again.
fn refuses_the_request(code: tonic::Code) -> bool {
    matches!(code, tonic::Code::InvalidArgument | tonic::Code::OutOfRange)
}

/// The next version for a draft: one past the device's view of the aggregate (1 creates).
fn next_version(model: &ReadModel, draft: &Draft) -> u64 {
    let current = match draft.aggregate_type.as_str() {
        "order" => model.order(&draft.aggregate_id).map(|o| o.head.version),
        "kds" => model
            .ticket(TicketKind::Kds, &draft.aggregate_id)
            .map(|t| t.head.version),
        "bds" => model
            .ticket(TicketKind::Bds, &draft.aggregate_id)
            .map(|t| t.head.version),
        _ => None, // stock counters and payments take version 1
    };
    current.map_or(1, |v| v + 1)
}

/// Exponential backoff with full jitter.
struct Backoff {
    bound: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            bound: BACKOFF_FIRST,
        }
    }

    fn reset(&mut self) {
        self.bound = BACKOFF_FIRST;
    }

    fn next(&mut self) -> Duration {
        let bound_ms = self.bound.as_millis().max(1) as u64;
        let delay = Duration::from_millis(rand_below(bound_ms).max(10));
        self.bound = (self.bound * 2).min(BACKOFF_MAX);
        delay
    }
}

fn rand_below(bound: u64) -> u64 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u64() % bound.max(1)
}

/// A held order lock: renewed every `LOCK_RENEW_EVERY` while held, released on drop.
pub struct LockGuard {
    device: Device,
    order_id: String,
    renew: JoinHandle<()>,
}

impl LockGuard {
    fn new(device: Device, order_id: &str) -> LockGuard {
        let renewer = device.clone();
        let id = order_id.to_owned();
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LOCK_RENEW_EVERY).await;
                let draft = Draft::order(&id, "order.lock.renew", json!({ "ttlMs": LOCK_TTL_MS }));
                if let Err(err) = renewer.append(draft) {
                    tracing::warn!(order = %id, %err, "cannot renew the order lock");
                    return;
                }
            }
        });
        LockGuard {
            device,
            order_id: order_id.to_owned(),
            renew,
        }
    }

    pub fn order_id(&self) -> &str {
        &self.order_id
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.renew.abort();
        let draft = Draft::order(&self.order_id, "order.lock.released", json!({}));
        if let Err(err) = self.device.append(draft) {
            // Paid or cancelled orders drop their lock by themselves; otherwise it lapses.
            tracing::debug!(order = %self.order_id, %err, "order lock not released (it lapses)");
        }
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn the_lock_holder_is_read_from_the_hubs_message() {
        let message = "order o-1 is locked by till-a until hub time 1800000045000 ms";
        assert_eq!(holder_in(message).as_deref(), Some("till-a"));
        assert_eq!(holder_in("version 2 is stale"), None);
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_below_the_bound_and_resets() {
        let mut backoff = Backoff::new();
        let mut bounds = Vec::new();
        for _ in 0..12 {
            let bound = backoff.bound;
            let delay = backoff.next();
            assert!(
                delay <= bound.max(Duration::from_millis(10)),
                "{delay:?} > {bound:?}"
            );
            bounds.push(bound);
        }
        assert_eq!(bounds[0], BACKOFF_FIRST);
        assert_eq!(bounds[1], BACKOFF_FIRST * 2);
        assert_eq!(*bounds.last().expect("bounds"), BACKOFF_MAX);
        backoff.reset();
        assert_eq!(backoff.bound, BACKOFF_FIRST);
    }
}
