//! The workload: several devices creating and editing orders (their own, and a few shared
//! ones under lease locks), kitchen tickets, inventory adjustments, LOCAL and LINEARIZABLE
//! reads; a Subscribe stream on every node; and a till appending through the client SDK's
//! outbox. Every operation is recorded as invoke → ok | fail | info.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pos_hub::client::{Device, DeviceConfig, Draft, HubConfig};
use pos_hub::domain::Realm;
use pos_hub::proto::pb::hub_client::HubClient;
use pos_hub::proto::{convert, pb};
use serde_json::{Value, json};
use tokio::sync::watch;
use tonic::Code;
use tonic::transport::Channel;

use crate::group::{STORE, TENANT, channel};
use crate::history::{Answer, Call, Entry, Recorder, Reply, Sent, Status};
use crate::rng::Rng;

/// How long one operation may take before it is recorded as unknown.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);
pub const SHARED_ORDERS: usize = 3;
pub const SKUS: usize = 5;

/// What a device knows of an order it writes to.
#[derive(Debug, Clone)]
struct Known {
    id: String,
    /// `None` after an unknown or refused write: ask the hub before writing again.
    version: Option<u64>,
    closed: bool,
}

pub struct Workload {
    pub recorder: Recorder,
    /// Client addresses of the nodes, by id.
    pub nodes: Arc<Mutex<BTreeMap<u64, String>>>,
}

fn event(
    device: &str,
    aggregate_type: &str,
    aggregate: &str,
    version: u64,
    event_type: &str,
    payload: Value,
) -> pos_hub::domain::Event {
    pos_hub::domain::Event {
        event_id: uuid::Uuid::now_v7().to_string(),
        tenant_id: TENANT.into(),
        store_id: STORE.into(),
        aggregate_type: aggregate_type.into(),
        aggregate_id: aggregate.into(),
        version,
        event_type: event_type.into(),
        at: chrono_now(),
        actor: pos_hub::domain::Actor {
            device_id: device.into(),
            user_id: None,
        },
        clock: pos_hub::domain::Clock {
            lamport: 0,
            device_id: device.into(),
        },
        payload: payload.as_object().cloned().unwrap_or_default(),
        force: false,
        seq: None,
        hub_time: None,
    }
}

fn chrono_now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    // RFC 3339 with milliseconds, computed without a date library: the hub keeps `at` as
    // sent and only checks its shape.
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn items(quantity: u64) -> Value {
    json!({"items": [{"id": "li-1", "sku": "FRIES", "name": "Fries", "unitPrice": 350, "quantity": quantity}]})
}

impl Workload {
    fn node_addr(&self, id: u64) -> Option<String> {
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    fn node_ids(&self) -> Vec<u64> {
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    fn client(&self, node: u64) -> HubClient<Channel> {
        HubClient::new(channel(&self.node_addr(node).unwrap_or_default()))
    }

    /// Appends `events` through `node`, recording the call and its answer. Returns the
    /// answers, or `None` when the outcome is unknown or the call definitely failed.
    async fn append(
        &self,
        process: u32,
        node: u64,
        events: Vec<pos_hub::domain::Event>,
    ) -> Option<Vec<Answer>> {
        let op = self.recorder.next_op();
        let sent: Vec<Sent> = events
            .iter()
            .map(|e| Sent {
                id: e.event_id.clone(),
                aggregate: format!("{}/{}", e.aggregate_type, e.aggregate_id),
                version: e.version,
                event_type: e.event_type.clone(),
                device: e.actor.device_id.clone(),
            })
            .collect();
        let pb_events: Result<Vec<pb::Event>, _> =
            events.iter().map(convert::event_to_pb).collect();
        self.recorder.record(Entry::Invoke {
            op,
            process,
            t: self.recorder.now(),
            node,
            call: Call::Append { events: sent },
        });
        let pb_events = match pb_events {
            Ok(events) => events,
            Err(err) => {
                self.recorder.record(Entry::Fail {
                    op,
                    t: self.recorder.now(),
                    error: format!("not sent: {err}"),
                });
                return None;
            }
        };
        let mut client = self.client(node);
        let call = client.append(pb::AppendRequest { events: pb_events });
        match tokio::time::timeout(OP_TIMEOUT, call).await {
            Ok(Ok(reply)) => {
                let answers: Vec<Answer> = reply
                    .into_inner()
                    .results
                    .into_iter()
                    .map(|r| Answer {
                        id: r.event_id,
                        status: match pb::AppendStatus::try_from(r.status) {
                            Ok(pb::AppendStatus::Accepted) => Status::Accepted,
                            Ok(pb::AppendStatus::Duplicate) => Status::Duplicate,
                            _ => Status::Rejected,
                        },
                        seq: r.seq,
                        code: r.code,
                    })
                    .collect();
                self.recorder.record(Entry::Ok {
                    op,
                    t: self.recorder.now(),
                    reply: Reply::Append {
                        answers: answers.clone(),
                    },
                });
                Some(answers)
            }
            Ok(Err(status)) if definite(status.code()) => {
                self.recorder.record(Entry::Fail {
                    op,
                    t: self.recorder.now(),
                    error: format!("{:?}: {}", status.code(), status.message()),
                });
                None
            }
            Ok(Err(status)) => {
                self.recorder.record(Entry::Info {
                    op,
                    t: self.recorder.now(),
                    error: format!("{:?}: {}", status.code(), status.message()),
                });
                None
            }
            Err(_) => {
                self.recorder.record(Entry::Info {
                    op,
                    t: self.recorder.now(),
                    error: format!("no answer within {OP_TIMEOUT:?}"),
                });
                None
            }
        }
    }

    /// Reads an order; returns its version (0: not found) when the read succeeded.
    async fn read(&self, process: u32, node: u64, order: &str, linearizable: bool) -> Option<u64> {
        let op = self.recorder.next_op();
        self.recorder.record(Entry::Invoke {
            op,
            process,
            t: self.recorder.now(),
            node,
            call: Call::Read {
                order: order.to_owned(),
                linearizable,
            },
        });
        let consistency = if linearizable {
            pb::Consistency::Linearizable
        } else {
            pb::Consistency::Local
        };
        let request = pb::GetOrderRequest {
            order_id: order.to_owned(),
            consistency: consistency as i32,
        };
        let mut client = self.client(node);
        let reply = tokio::time::timeout(OP_TIMEOUT, client.get_order(request)).await;
        let (version, last_seq) = match reply {
            Ok(Ok(reply)) => match reply.into_inner().order {
                Some(o) => (o.version, o.last_seq),
                None => (0, 0),
            },
            Ok(Err(status)) if status.code() == Code::NotFound => (0, 0),
            Ok(Err(status)) => {
                self.recorder.record(Entry::Fail {
                    op,
                    t: self.recorder.now(),
                    error: format!("{:?}: {}", status.code(), status.message()),
                });
                return None;
            }
            Err(_) => {
                self.recorder.record(Entry::Info {
                    op,
                    t: self.recorder.now(),
                    error: "timeout".into(),
                });
                return None;
            }
        };
        self.recorder.record(Entry::Ok {
            op,
            t: self.recorder.now(),
            reply: Reply::Read { version, last_seq },
        });
        Some(version)
    }

    /// Creates the shared orders the devices contend for.
    pub async fn setup(&self) -> anyhow::Result<()> {
        let nodes = self.node_ids();
        for k in 1..=SHARED_ORDERS {
            let created = event(
                "setup",
                "order",
                &format!("o-shared-{k}"),
                1,
                "order.created",
                items(1),
            );
            let mut done = false;
            for attempt in 0..20 {
                let node = nodes[attempt % nodes.len()];
                if let Some(answers) = self.append(0, node, vec![created.clone()]).await
                    && answers.iter().all(|a| a.status != Status::Rejected)
                {
                    done = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            anyhow::ensure!(done, "could not create the shared orders");
        }
        Ok(())
    }

    /// One device's loop until `stop`.
    pub async fn device(self: Arc<Self>, process: u32, seed: u64, mut stop: watch::Receiver<bool>) {
        let mut rng = Rng::new(seed ^ (u64::from(process) << 32) ^ 0x5eed);
        let device = format!("dev-{process}");
        let ids = self.node_ids();
        let mut node = ids[process as usize % ids.len()];
        let mut own: Vec<Known> = Vec::new();
        let mut tickets = 0u64;
        while !*stop.borrow() {
            let roll = rng.below(100);
            let ok = if roll < 22 || own.is_empty() {
                let id = format!("o-{process}-{}", own.len() + 1);
                let e = event(&device, "order", &id, 1, "order.created", items(1));
                let answers = self.append(process, node, vec![e]).await;
                let version = answers
                    .as_ref()
                    .and_then(|a| (a[0].status != Status::Rejected).then_some(1));
                own.push(Known {
                    id,
                    version,
                    closed: false,
                });
                answers.is_some()
            } else if roll < 50 {
                let i = rng.below(own.len() as u64) as usize;
                self.edit_own(process, node, &device, &mut own[i], &mut rng)
                    .await
            } else if roll < 60 {
                let sku = format!("SKU-{}", rng.below(SKUS as u64));
                let delta = rng.below(5) as i64 - 2;
                let delta = if delta == 0 { 1 } else { delta };
                let e = event(
                    &device,
                    "inventory",
                    &sku,
                    1,
                    "inventory.adjusted",
                    json!({"sku": sku, "delta": delta}),
                );
                self.append(process, node, vec![e]).await.is_some()
            } else if roll < 70 {
                let k = 1 + rng.below(SHARED_ORDERS as u64);
                self.lock_dance(process, node, &device, &format!("o-shared-{k}"))
                    .await
            } else if roll < 85 {
                let order = self.pick_order(&own, &mut rng);
                self.read(process, node, &order, true).await.is_some()
            } else if roll < 92 {
                let order = self.pick_order(&own, &mut rng);
                self.read(process, node, &order, false).await.is_some()
            } else {
                tickets += 1;
                let order = own[rng.below(own.len() as u64) as usize].id.clone();
                self.ticket(
                    process,
                    node,
                    &device,
                    &format!("kt-{process}-{tickets}"),
                    &order,
                )
                .await
            };
            if !ok {
                // Try another node next time, as a till would.
                let others: Vec<u64> = ids.iter().copied().filter(|n| *n != node).collect();
                if !others.is_empty() {
                    node = others[rng.below(others.len() as u64) as usize];
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let pause = Duration::from_millis(5 + rng.below(20));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {}
            }
        }
    }

    fn pick_order(&self, own: &[Known], rng: &mut Rng) -> String {
        if own.is_empty() || rng.below(3) == 0 {
            format!("o-shared-{}", 1 + rng.below(SHARED_ORDERS as u64))
        } else {
            own[rng.below(own.len() as u64) as usize].id.clone()
        }
    }

    async fn edit_own(
        &self,
        process: u32,
        node: u64,
        device: &str,
        order: &mut Known,
        rng: &mut Rng,
    ) -> bool {
        if order.closed {
            return true;
        }
        let version = match order.version {
            Some(v) => v,
            None => match self.read(process, node, &order.id, true).await {
                Some(0) | None => return false,
                Some(v) => {
                    order.version = Some(v);
                    v
                }
            },
        };
        let (event_type, payload) = if rng.below(10) == 0 {
            (
                "order.paid",
                json!({"payments": [{"method": "cash", "amount": 350 * (version % 7 + 1)}], "total": 350 * (version % 7 + 1)}),
            )
        } else {
            ("order.updated", items(version % 7 + 1))
        };
        let e = event(device, "order", &order.id, version + 1, event_type, payload);
        match self.append(process, node, vec![e]).await {
            Some(answers) if answers[0].status == Status::Accepted => {
                order.version = Some(version + 1);
                if event_type == "order.paid" {
                    order.closed = true;
                }
                true
            }
            Some(answers) => {
                if answers[0].code == "ORDER_CLOSED" {
                    order.closed = true;
                }
                order.version = None;
                true
            }
            None => {
                order.version = None;
                false
            }
        }
    }

    /// Read, lock, edit, release a shared order; stops at the first refusal.
    async fn lock_dance(&self, process: u32, node: u64, device: &str, order: &str) -> bool {
        let Some(version) = self.read(process, node, order, true).await else {
            return false;
        };
        if version == 0 {
            return true;
        }
        let steps = [
            ("order.locked", json!({"ttlMs": 30_000})),
            ("order.updated", items(version % 5 + 1)),
            ("order.lock.released", json!({})),
        ];
        for (i, (event_type, payload)) in steps.into_iter().enumerate() {
            let e = event(
                device,
                "order",
                order,
                version + 1 + i as u64,
                event_type,
                payload,
            );
            match self.append(process, node, vec![e]).await {
                Some(answers) if answers[0].status == Status::Accepted => {}
                Some(_) => return true,
                None => return false,
            }
        }
        true
    }

    async fn ticket(
        &self,
        process: u32,
        node: u64,
        device: &str,
        ticket: &str,
        order: &str,
    ) -> bool {
        let created = event(
            device,
            "kds",
            ticket,
            1,
            "kds.ticket.created",
            json!({"orderId": order, "items": [{"sku": "FRIES", "name": "Fries", "quantity": 1}]}),
        );
        match self.append(process, node, vec![created]).await {
            Some(a) if a[0].status == Status::Accepted => {}
            Some(_) => return true,
            None => return false,
        }
        let ack = event(
            device,
            "kds",
            ticket,
            2,
            "kds.ticket.ack",
            json!({"orderId": order}),
        );
        let done = event(
            device,
            "kds",
            ticket,
            3,
            "kds.ticket.done",
            json!({"orderId": order}),
        );
        // Both in one Append: they land in one entry, in this order.
        self.append(process, node, vec![ack, done]).await.is_some()
    }

    /// A Subscribe stream on one node, reopened from the last seq seen after every error.
    pub async fn stream(self: Arc<Self>, stream: u32, node: u64, mut stop: watch::Receiver<bool>) {
        let mut cursor = 0;
        while !*stop.borrow() {
            let request = pb::SubscribeRequest { cursor };
            let mut client = self.client(node);
            let opened = tokio::time::timeout(OP_TIMEOUT, client.subscribe(request)).await;
            let mut messages = match opened {
                Ok(Ok(reply)) => reply.into_inner(),
                _ => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            };
            loop {
                let message = tokio::select! {
                    m = messages.message() => m,
                    _ = stop.changed() => return,
                };
                match message {
                    Ok(Some(batch)) => {
                        let events: Vec<(u64, String)> = batch
                            .events
                            .iter()
                            .map(|e| (e.seq, e.event_id.clone()))
                            .collect();
                        let from = cursor;
                        if let Some((last, _)) = events.last() {
                            cursor = *last;
                        }
                        self.recorder.record(Entry::Deliver {
                            stream,
                            node,
                            t: self.recorder.now(),
                            from,
                            events,
                        });
                    }
                    _ => break,
                }
            }
        }
    }
}

/// Codes by which the hub refuses a call before anything is proposed.
fn definite(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated | Code::NotFound
    )
}

/// A till appending through the client SDK's durable outbox; returns the ids of the
/// events `append` confirmed (saved), which must all end up in the log exactly once.
pub async fn outbox_till(
    dir: std::path::PathBuf,
    addrs: Vec<String>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(Device, Vec<String>)> {
    let device = Device::open(DeviceConfig {
        data_dir: dir,
        device_id: "till-outbox".into(),
        user_id: None,
        hub: HubConfig {
            addrs,
            realm: Realm::new(TENANT, STORE),
            token: None,
            tls: None,
            discovery: false,
            cache_dir: None,
        },
    })?;
    let running = device.start();
    let mut confirmed = Vec::new();
    let mut n = 0u64;
    while !*stop.borrow() {
        n += 1;
        let sku = format!("SKU-OB-{}", n % 3);
        let draft = Draft::new(
            "inventory",
            &sku,
            "inventory.adjusted",
            json!({"sku": sku, "delta": 1}),
        );
        match device.append(draft) {
            Ok(appended) => confirmed.push(appended.event_id),
            Err(err) => tracing::warn!(%err, "outbox till: append refused"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => {}
        }
    }
    drop(running);
    Ok((device, confirmed))
}
