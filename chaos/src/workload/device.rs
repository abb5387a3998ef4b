//! One device's loop: it creates and edits its own orders, runs lock dances on the shared
//! ones, adjusts stock, sends kitchen tickets and reads orders, moving at once to another
//! node after a failure (no answer within the call deadline, or an error) as a till would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use super::events::{event, items};
use super::{SHARED_ORDERS, SKUS, Workload};
use crate::history::Status;
use crate::rng::Rng;

/// Orders a device keeps open at once. Past it, the device pays its oldest open order
/// instead of starting one, as a till does through a shift: a soak's live state then stays
/// a shop's (a few hundred orders open), not every order ever started.
const OPEN_PER_DEVICE: usize = 40;

/// What a device knows of an order it writes to.
#[derive(Debug, Clone)]
struct Known {
    id: String,
    /// `None` after an unknown or refused write: ask the hub before writing again.
    version: Option<u64>,
    closed: bool,
}

/// The node to move to after `node` failed: among the others, the one whose last failure
/// for this device is oldest (never: oldest of all), a random one among equals.
fn next_node(ids: &[u64], node: u64, failed_at: &BTreeMap<u64, f64>, rng: &mut Rng) -> u64 {
    let others: Vec<(f64, u64)> = ids
        .iter()
        .filter(|n| **n != node)
        .map(|n| (failed_at.get(n).copied().unwrap_or(f64::NEG_INFINITY), *n))
        .collect();
    let Some(oldest) = others.iter().map(|(t, _)| *t).reduce(f64::min) else {
        return node;
    };
    let best: Vec<u64> = others
        .iter()
        .filter(|(t, _)| *t == oldest)
        .map(|(_, n)| *n)
        .collect();
    best[rng.below(best.len() as u64) as usize]
}

impl Workload {
    /// One device's loop until `stop`.
    pub async fn device(self: Arc<Self>, process: u32, seed: u64, mut stop: watch::Receiver<bool>) {
        let mut rng = Rng::new(seed ^ (u64::from(process) << 32) ^ 0x5eed);
        let device = format!("dev-{process}");
        let ids = self.node_ids();
        let mut node = ids[process as usize % ids.len()];
        let mut own: Vec<Known> = Vec::new();
        let mut tickets = 0u64;
        let mut failed_at: BTreeMap<u64, f64> = BTreeMap::new();
        while !*stop.borrow() {
            let roll = rng.below(100);
            let open: Vec<usize> = (0..own.len()).filter(|i| !own[*i].closed).collect();
            let ok = if roll < 22 && open.len() >= OPEN_PER_DEVICE {
                // A till with its hands full settles its oldest order first.
                self.edit_own(process, node, &device, &mut own[open[0]], &mut rng, true)
                    .await
            } else if roll < 22 || own.is_empty() {
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
                let i = if open.is_empty() {
                    rng.below(own.len() as u64) as usize
                } else {
                    open[rng.below(open.len() as u64) as usize]
                };
                self.edit_own(process, node, &device, &mut own[i], &mut rng, false)
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
                // The next node at once, as a till would: the one that failed this device
                // longest ago (or never), so a dead node is not tried again before the others.
                failed_at.insert(node, self.recorder.now());
                node = next_node(&ids, node, &failed_at, &mut rng);
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
        pay: bool,
    ) -> bool {
        if order.closed {
            return true;
        }
        let version = match order.version {
            Some(v) => v,
            None => match self.read(process, node, &order.id, true).await {
                None => return false,
                Some(0) => {
                    // Its creation was refused or never committed: nothing to settle.
                    order.closed = true;
                    return true;
                }
                Some(v) => {
                    order.version = Some(v);
                    v
                }
            },
        };
        let (event_type, payload) = if pay || rng.below(10) == 0 {
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
}
