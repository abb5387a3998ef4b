//! `pos.v1.Hub`: what tills, kitchen and bar screens call.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use openraft::ServerState;
use tonic::{Request, Response, Status};

use super::auth::AccessPolicy;
use super::limits::{RateLimiter, SubscriptionSlots};
use super::{APPEND_EVENTS_MAX, convert, store_status, subscribe};
use crate::domain::ticket::{TicketKind, TicketStatus};
use crate::menu::Menu;
use crate::proto::pb;
use crate::proto::pb::hub_server::Hub;
use crate::raft::local::now_ms;
use crate::raft::node::{Node, append_response, event_ids};

/// The least time a Hello from a device ahead of this node spends confirming with the
/// leader whether this node is only behind.
const HELLO_BARRIER_MIN_MS: u64 = 1_000;

pub struct HubService {
    pub node: Arc<Node>,
    pub access: AccessPolicy,
    pub limiter: Arc<RateLimiter>,
    pub subscriptions: Arc<SubscriptionSlots>,
    /// The menu this node was started with (`serve --menu`); empty without one.
    pub menu: Arc<Menu>,
}

/// The members of the group with their roles, as Hello and cluster status report them.
pub fn node_infos(node: &Node) -> Vec<pb::NodeInfo> {
    let metrics = node.raft_metrics();
    let membership = metrics.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, member)| {
            let role = if metrics.current_leader == Some(*id) {
                if *id == node.id && metrics.state == ServerState::Candidate {
                    pb::Role::Candidate
                } else {
                    pb::Role::Leader
                }
            } else if *id == node.id && metrics.state == ServerState::Candidate {
                pb::Role::Candidate
            } else if voters.contains(id) {
                pb::Role::Follower
            } else {
                pb::Role::Learner
            };
            pb::NodeInfo {
                id: *id,
                client_addr: member.client_addr.clone(),
                peer_addr: member.peer_addr.clone(),
                role: role as i32,
            }
        })
        .collect()
}

impl HubService {
    /// Waits for a linearizable view when asked for one; LOCAL reads answer at once.
    async fn read_barrier(&self, consistency: i32) -> Result<(), Status> {
        match pb::Consistency::try_from(consistency) {
            Ok(pb::Consistency::Local) => Ok(()),
            Ok(pb::Consistency::Linearizable) => Ok(self.node.read_barrier().await?),
            Err(_) => Err(Status::invalid_argument(format!(
                "unknown consistency {consistency}"
            ))),
        }
    }
}

fn ticket_kind_filter(kind: i32) -> Result<Option<TicketKind>, Status> {
    match pb::TicketKind::try_from(kind) {
        Ok(pb::TicketKind::Unspecified) => Ok(None),
        Ok(pb::TicketKind::Kds) => Ok(Some(TicketKind::Kds)),
        Ok(pb::TicketKind::Bds) => Ok(Some(TicketKind::Bds)),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown ticket kind {kind}"
        ))),
    }
}

fn ticket_status_filter(status: i32) -> Result<Option<TicketStatus>, Status> {
    match pb::TicketStatus::try_from(status) {
        Ok(pb::TicketStatus::Unspecified) => Ok(None),
        Ok(pb::TicketStatus::Created) => Ok(Some(TicketStatus::Created)),
        Ok(pb::TicketStatus::Acked) => Ok(Some(TicketStatus::Acked)),
        Ok(pb::TicketStatus::Done) => Ok(Some(TicketStatus::Done)),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown ticket status {status}"
        ))),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Hub for HubService {
    async fn hello(
        &self,
        request: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloResponse>, Status> {
        self.access.caller(&request)?;
        let request = request.into_inner();
        let mut applied = self.node.reader.applied().map_err(store_status)?;
        if request.cursor > applied.last_seq {
            // A device ahead of this node: either the store's log was reset (the device
            // must start over) or this node is only behind (restarted, rebuilt, cut off).
            // Only a node that has applied everything the group committed can tell, and
            // telling a device to drop its copy because of a lagging node would make it
            // download the whole log again for nothing.
            let budget = Duration::from_millis(
                (self.node.timing.election_timeout_max_ms * 2).max(HELLO_BARRIER_MIN_MS),
            );
            if let Err(err) = self.node.read_barrier_within(budget).await {
                return Err(Status::unavailable(format!(
                    "this node's log ends at seq {}, before the device's cursor {}, and it \
                     cannot tell whether it is only behind ({err}): ask another node",
                    applied.last_seq, request.cursor
                )));
            }
            applied = self.node.reader.applied().map_err(store_status)?;
        }
        Ok(Response::new(pb::HelloResponse {
            leader_id: self.node.raft_metrics().current_leader.unwrap_or(0),
            nodes: node_infos(&self.node),
            last_seq: applied.last_seq,
            lamport: applied.lamport,
            hub_time: now_ms(),
            snapshot_needed: request.cursor > applied.last_seq,
        }))
    }

    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let caller = self.access.caller(&request)?;
        let events = request.into_inner().events;
        if events.is_empty() {
            return Err(Status::invalid_argument("Append needs at least one event"));
        }
        if events.len() > APPEND_EVENTS_MAX {
            return Err(Status::invalid_argument(format!(
                "Append carries {} events; at most {APPEND_EVENTS_MAX} are allowed per call",
                events.len()
            )));
        }
        self.access.check_events(caller.as_ref(), &events)?;
        // The token's device; without tokens, the device the first event claims to be.
        let device = match &caller {
            Some(claims) => claims.sub.clone(),
            None => events[0]
                .actor
                .as_ref()
                .map(|a| a.device_id.clone())
                .unwrap_or_default(),
        };
        self.limiter.check(&device, events.len())?;
        let ids = event_ids(&events);
        let outcomes = self.node.append(events).await?;
        let response = append_response(&ids, &outcomes)?;
        Ok(Response::new(response))
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        // Without tokens there is no device to count by; the cap needs authentication.
        let slot = match self.access.caller(&request)? {
            Some(claims) => Some(self.subscriptions.acquire(&claims.sub)?),
            None => None,
        };
        let outbound = subscribe::start(self.node.clone(), request.into_inner().cursor, slot);
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(outbound),
        )))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        self.access.caller(&request)?;
        let request = request.into_inner();
        self.read_barrier(request.consistency).await?;
        match self
            .node
            .reader
            .order(&request.order_id)
            .map_err(store_status)?
        {
            Some(order) => Ok(Response::new(pb::GetOrderResponse {
                order: Some(convert::order(order)),
            })),
            None => Err(Status::not_found(format!(
                "order {:?} does not exist",
                request.order_id
            ))),
        }
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        self.access.caller(&request)?;
        let request = request.into_inner();
        let wanted = pb::OrderStatus::try_from(request.status).map_err(|_| {
            Status::invalid_argument(format!("unknown order status {}", request.status))
        })?;
        self.read_barrier(request.consistency).await?;
        let orders = self
            .node
            .reader
            .orders()
            .map_err(store_status)?
            .into_iter()
            .filter(|o| {
                wanted == pb::OrderStatus::Unspecified || convert::order_status(o.status) == wanted
            })
            .map(convert::order)
            .collect();
        Ok(Response::new(pb::ListOrdersResponse { orders }))
    }

    async fn get_inventory(
        &self,
        request: Request<pb::GetInventoryRequest>,
    ) -> Result<Response<pb::GetInventoryResponse>, Status> {
        self.access.caller(&request)?;
        let request = request.into_inner();
        self.read_barrier(request.consistency).await?;
        let stocks = if request.sku.is_empty() {
            self.node.reader.stocks().map_err(store_status)?
        } else {
            self.node
                .reader
                .stock(&request.sku)
                .map_err(store_status)?
                .into_iter()
                .collect()
        };
        Ok(Response::new(pb::GetInventoryResponse {
            stocks: stocks.into_iter().map(convert::stock).collect(),
        }))
    }

    async fn list_tickets(
        &self,
        request: Request<pb::ListTicketsRequest>,
    ) -> Result<Response<pb::ListTicketsResponse>, Status> {
        self.access.caller(&request)?;
        let request = request.into_inner();
        let kind = ticket_kind_filter(request.kind)?;
        let status = ticket_status_filter(request.status)?;
        self.read_barrier(request.consistency).await?;
        let tickets = self
            .node
            .reader
            .tickets()
            .map_err(store_status)?
            .into_iter()
            .filter(|t| kind.is_none_or(|k| t.kind == k) && status.is_none_or(|s| t.status == s))
            .map(convert::ticket)
            .collect();
        Ok(Response::new(pb::ListTicketsResponse { tickets }))
    }

    async fn get_menu(
        &self,
        request: Request<pb::GetMenuRequest>,
    ) -> Result<Response<pb::GetMenuResponse>, Status> {
        // Every role may read the menu: a kitchen screen shows the same names as the till.
        self.access.caller(&request)?;
        Ok(Response::new(convert::menu(&self.menu)))
    }
}
