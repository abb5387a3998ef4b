//! The workload: several devices creating and editing orders (their own, and a few shared
//! ones under lease locks), kitchen tickets, inventory adjustments, LOCAL and LINEARIZABLE
//! reads; a Subscribe stream on every node; and a till appending through the client SDK's
//! outbox. Every operation is recorded as invoke → ok | fail | info.
//!
//! This file holds the `Workload` (the recorder and the nodes' client addresses) and the
//! setup of the orders the devices share. Beside it:
//! - `events`: the events the devices send;
//! - `calls`: one recorded call to a node (Append, GetOrder) and how it ended;
//! - `device`: one device's loop of orders, lock dances, tickets, stock and reads;
//! - `stream`: a Subscribe stream on one node;
//! - `outbox`: a till appending through the client SDK's outbox.

mod calls;
mod device;
mod events;
mod outbox;
mod stream;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pos_hub::proto::pb::hub_client::HubClient;
use tonic::transport::Channel;

use crate::group::channel_with_timeout;
use crate::history::{Recorder, Status};
use events::{event, items};
pub use outbox::outbox_till;

/// How long one operation may take before it is recorded as unknown and the device moves
/// to another node: the call deadline of a device that pings, as the Rust SDK
/// (`pos_hub::wire::PINGED_CALL_DEADLINE_MS`). A node that misses a ping is left sooner
/// (see `channel_with_timeout`).
pub const OP_TIMEOUT: Duration = Duration::from_millis(pos_hub::wire::PINGED_CALL_DEADLINE_MS);
pub const SHARED_ORDERS: usize = 3;
pub const SKUS: usize = 5;

pub struct Workload {
    pub recorder: Recorder,
    /// Client addresses of the nodes, by id.
    pub nodes: Arc<Mutex<BTreeMap<u64, String>>>,
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
        HubClient::new(channel_with_timeout(
            &self.node_addr(node).unwrap_or_default(),
            OP_TIMEOUT,
        ))
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
}
