//! `pos.v1.Hub`: what tills, kitchen and bar screens call.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use openraft::ServerState;
use tonic::{Request, Response, Status};

use super::auth::{caller, check_admin_events, check_events};
use super::bootstrap;
use super::error::ApiError;
use super::limits::{RateLimiter, ReadLimiter, SubscriptionSlots};
use super::paging;
use super::subscribe;
use super::view::View;
use crate::auth::token::Claims;
use crate::domain::order::Order;
use crate::domain::ticket::Ticket;
use crate::menu::Menu;
use crate::proto::pb::hub_server::Hub;
use crate::proto::{convert, pb};
use crate::raft::node::Node;
use crate::wire::APPEND_EVENTS_MAX;

/// The least time a Hello from a device ahead of this node spends confirming with the
/// leader whether this node is only behind.
const HELLO_BARRIER_MIN_MS: u64 = 1_000;

pub struct HubService {
    pub node: Arc<Node>,
    pub limiter: Arc<RateLimiter>,
    pub reads: Arc<ReadLimiter>,
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
    /// The caller of a read, once it is within its device's read limit.
    fn read_caller<'r, T>(&self, request: &'r Request<T>) -> Result<Option<&'r Claims>, ApiError> {
        let claims = caller(request)?;
        self.reads.check(claims.map(|c| c.sub.as_str()))?;
        Ok(claims)
    }

    /// Waits for a linearizable view when asked for one; LOCAL reads answer at once.
    async fn read_barrier(&self, consistency: i32) -> Result<(), ApiError> {
        if convert::is_linearizable(consistency)? {
            self.node.read_barrier().await?;
        }
        Ok(())
    }
}

type BootstrapStream = Pin<Box<dyn Stream<Item = Result<pb::BootstrapResponse, Status>> + Send>>;
type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Hub for HubService {
    async fn hello(
        &self,
        request: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloResponse>, Status> {
        self.read_caller(&request)?;
        let request = request.into_inner();
        let mut applied = self.node.reader.applied().map_err(ApiError::from)?;
        if request.cursor > applied.last_seq {
            // A device ahead of this node: either the store's log was reset (the device
            // must start over) or this node is only behind (restarted, rebuilt, cut off).
            // Only a node that has applied everything the group committed can tell, and
            // telling a device to drop its copy because of a lagging node would make it
            // download the whole log again for nothing.
            let budget = Duration::from_millis(
                (self.node.timing.election_timeout_max_ms * 2).max(HELLO_BARRIER_MIN_MS),
            );
            if let Err(reason) = self.node.read_barrier_within(budget).await {
                return Err(ApiError::CannotTellIfBehind {
                    last_seq: applied.last_seq,
                    cursor: request.cursor,
                    reason,
                }
                .into());
            }
            applied = self.node.reader.applied().map_err(ApiError::from)?;
        }
        Ok(Response::new(pb::HelloResponse {
            leader_id: self.node.raft_metrics().current_leader.unwrap_or(0),
            nodes: node_infos(&self.node),
            last_seq: applied.last_seq,
            lamport: applied.lamport,
            hub_time: self.node.reader.clock().now_ms(),
            snapshot_needed: request.cursor > applied.last_seq,
        }))
    }

    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let claims = caller(&request)?.cloned();
        let events = request.into_inner().events;
        if events.is_empty() {
            return Err(ApiError::EmptyAppend.into());
        }
        if events.len() > APPEND_EVENTS_MAX {
            return Err(ApiError::TooManyEvents {
                count: events.len(),
            }
            .into());
        }
        let bytes = check_events(claims.as_ref(), &events)?;
        check_admin_events(claims.as_ref(), &events)?;
        // The token's device; without tokens, the device the first event claims to be.
        let device = match &claims {
            Some(claims) => claims.sub.clone(),
            None => events[0]
                .actor
                .as_ref()
                .map(|a| a.device_id.clone())
                .unwrap_or_default(),
        };
        self.limiter.check(&device, events.len(), bytes)?;
        let results = self.node.append(events).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::AppendResponse { results }))
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let claims = caller(&request)?;
        let view = View::of(claims);
        // Without tokens there is no device to count by; the cap needs authentication.
        let slot = match claims {
            Some(claims) => Some(self.subscriptions.acquire(&claims.sub)?),
            None => None,
        };
        let cursor = request.into_inner().cursor;
        let outbound = subscribe::start(self.node.clone(), cursor, slot, view);
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(outbound),
        )))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let view = View::of(self.read_caller(&request)?);
        let request = request.into_inner();
        self.read_barrier(request.consistency).await?;
        match self
            .node
            .reader
            .order(&request.order_id)
            .map_err(ApiError::from)?
        {
            Some(order) => Ok(Response::new(pb::GetOrderResponse {
                order: Some(view.order(order)),
            })),
            None => Err(ApiError::OrderNotFound(request.order_id).into()),
        }
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let view = View::of(self.read_caller(&request)?);
        let request = request.into_inner();
        let wanted = convert::order_status_filter(request.status).map_err(ApiError::from)?;
        self.read_barrier(request.consistency).await?;
        let page = paging::page(
            self.node.reader.orders_after(&request.after),
            request.limit,
            |o: &Order| wanted.is_none_or(|status| o.status == status),
            |o| view.order(o),
        )?;
        Ok(Response::new(pb::ListOrdersResponse {
            orders: page.items,
            next: page.next,
        }))
    }

    async fn get_inventory(
        &self,
        request: Request<pb::GetInventoryRequest>,
    ) -> Result<Response<pb::GetInventoryResponse>, Status> {
        self.read_caller(&request)?;
        let request = request.into_inner();
        self.read_barrier(request.consistency).await?;
        let reader = &self.node.reader;
        if !request.sku.is_empty() {
            let stock = reader.stock(&request.sku).map_err(ApiError::from)?;
            return Ok(Response::new(pb::GetInventoryResponse {
                stocks: stock.into_iter().map(convert::stock).collect(),
                next: String::new(),
            }));
        }
        let page = paging::page(
            reader.stocks_after(&request.after),
            request.limit,
            |_| true,
            convert::stock,
        )?;
        Ok(Response::new(pb::GetInventoryResponse {
            stocks: page.items,
            next: page.next,
        }))
    }

    async fn list_tickets(
        &self,
        request: Request<pb::ListTicketsRequest>,
    ) -> Result<Response<pb::ListTicketsResponse>, Status> {
        self.read_caller(&request)?;
        let request = request.into_inner();
        let kind = convert::ticket_kind_filter(request.kind).map_err(ApiError::from)?;
        let status = convert::ticket_status_filter(request.status).map_err(ApiError::from)?;
        self.read_barrier(request.consistency).await?;
        let page = paging::page(
            self.node.reader.tickets_after(&request.after),
            request.limit,
            |t: &Ticket| kind.is_none_or(|k| t.kind == k) && status.is_none_or(|s| t.status == s),
            convert::ticket,
        )?;
        Ok(Response::new(pb::ListTicketsResponse {
            tickets: page.items,
            next: page.next,
        }))
    }

    async fn get_menu(
        &self,
        request: Request<pb::GetMenuRequest>,
    ) -> Result<Response<pb::GetMenuResponse>, Status> {
        // Every role may read the menu: a kitchen screen shows the same names as the till.
        self.read_caller(&request)?;
        Ok(Response::new(convert::menu(&self.menu)))
    }

    type BootstrapStream = BootstrapStream;

    async fn bootstrap(
        &self,
        request: Request<pb::BootstrapRequest>,
    ) -> Result<Response<BootstrapStream>, Status> {
        let view = View::of(self.read_caller(&request)?);
        self.read_barrier(request.into_inner().consistency).await?;
        let live = self.node.reader.live_state().map_err(ApiError::from)?;
        let messages = bootstrap::messages(live, view);
        Ok(Response::new(Box::pin(futures::stream::iter(
            messages.into_iter().map(Ok),
        ))))
    }
}
