//! `pos-hub client`: try a hub from a shell, over the same gRPC API the tills use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::log::{append_batches, check_batch, read_events, summarize};
use crate::proto::pb::hub_client::HubClient;
use crate::proto::{convert, pb};
use crate::raft::node::outcome_from_result;

#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The hub's client address.
    #[arg(long, env = "POS_HUB", default_value = "http://127.0.0.1:4001")]
    hub: String,
    /// This device's token (`pos-hub token issue`), sent as `authorization: Bearer …`.
    #[arg(long, env = "POS_HUB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The store CA (PEM) to pin when the hub serves TLS (`--hub https://…`).
    #[arg(long, env = "POS_HUB_CA")]
    ca: Option<PathBuf>,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ClientCommand {
    /// Append the events of a JSON-lines file (`-`: standard input); one line per outcome.
    Append {
        file: PathBuf,
        /// Events per Append call (1..=1024).
        #[arg(long, default_value_t = 64)]
        batch: usize,
    },
    /// Print committed events as JSON lines, from after --cursor, then live.
    Tail {
        #[arg(long, default_value_t = 0)]
        cursor: u64,
        /// Exit after this many events.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Print one order as JSON.
    Order {
        id: String,
        /// Confirm with the leader first instead of answering from this node's state.
        #[arg(long)]
        linearizable: bool,
    },
    /// Print the group: leader, members, indexes.
    Status,
}

/// Adds `authorization: Bearer <token>` to every call when a token is given.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> anyhow::Result<Self> {
        match token {
            None => Ok(Bearer(None)),
            Some(token) => {
                let value = format!("Bearer {}", token.trim())
                    .parse()
                    .context("--token contains characters a header cannot carry")?;
                Ok(Bearer(Some(value)))
            }
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel to a hub's client port. With `ca` (the store CA, pinned: no other root is
/// trusted) the hub must be an `https://` URL and TLS is used; without, `http://`.
pub async fn connect(hub: &str, ca: Option<&Path>) -> anyhow::Result<Channel> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(hub.to_owned())
        .with_context(|| format!("--hub {hub:?} is not a URL like http://127.0.0.1:4001"))?;
    let https = hub.starts_with("https://");
    match ca {
        Some(ca) if https => {
            endpoint = endpoint
                .tls_config(crate::auth::tls::device_client_config(ca)?)
                .context("TLS configuration")?;
        }
        Some(_) => bail!("--ca is given, so --hub must be an https:// URL, got {hub:?}"),
        None if https => {
            bail!("--hub {hub:?} uses TLS: pin the store CA with --ca FILE (its ca.pem)")
        }
        None => {}
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach the hub at {hub}"))
}

pub async fn run(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let channel = connect(&args.hub, args.ca.as_deref()).await?;
    let bearer = Bearer::new(args.token.as_deref())?;
    let mut hub = HubClient::with_interceptor(channel.clone(), bearer.clone());
    match args.command {
        ClientCommand::Append { file, batch } => {
            check_batch(batch)?;
            let events = read_events(&file)?;
            let tally = append_batches(events, batch, |chunk| {
                let mut hub = hub.clone();
                async move {
                    let reply = hub
                        .append(pb::AppendRequest { events: chunk })
                        .await?
                        .into_inner();
                    Ok(reply.results.iter().map(outcome_from_result).collect())
                }
            })
            .await?;
            Ok(summarize(tally))
        }
        ClientCommand::Tail { cursor, limit } => {
            let mut stream = hub
                .subscribe(pb::SubscribeRequest { cursor })
                .await?
                .into_inner();
            let mut printed = 0;
            while let Some(message) = stream.message().await? {
                for event in message.events {
                    if limit.is_some_and(|l| printed >= l) {
                        return Ok(ExitCode::SUCCESS);
                    }
                    println!(
                        "{}",
                        serde_json::to_string(&convert::event_from_pb(&event)?)?
                    );
                    printed += 1;
                }
                if limit.is_some_and(|l| printed >= l) {
                    break;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Order { id, linearizable } => {
            let consistency = if linearizable {
                pb::Consistency::Linearizable
            } else {
                pb::Consistency::Local
            };
            let request = pb::GetOrderRequest {
                order_id: id,
                consistency: consistency as i32,
            };
            let Some(order) = hub.get_order(request).await?.into_inner().order else {
                bail!("the hub answered without an order");
            };
            println!("{}", order_json(&order));
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Status => super::cluster::print_status(channel, bearer).await,
    }
}

fn name<T: std::fmt::Debug>(
    value: Result<T, prost::UnknownEnumValue>,
    prefix_len: usize,
) -> String {
    match value {
        Ok(v) => format!("{v:?}")
            .chars()
            .skip(prefix_len)
            .collect::<String>()
            .to_lowercase(),
        Err(_) => "unknown".into(),
    }
}

/// An order as camelCase JSON, the shape the spec's clients use.
pub fn order_json(order: &pb::Order) -> Value {
    json!({
        "id": order.id,
        "status": name(pb::OrderStatus::try_from(order.status), 0),
        "tableNumber": order.table_number,
        "guestCount": order.guest_count,
        "currency": order.currency,
        "items": order.items.iter().map(|i| json!({
            "id": i.id, "sku": i.sku, "name": i.name, "unitPrice": i.unit_price,
            "quantity": i.quantity, "category": i.category,
            "modifiers": i.modifiers.iter().map(|m| json!({"id": m.id, "name": m.name, "price": m.price})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "total": order.total,
        "payments": order.payments.iter().map(|p| json!({"method": p.method, "amount": p.amount})).collect::<Vec<_>>(),
        "version": order.version,
        "lamport": order.lamport,
        "lock": order.lock.as_ref().map(|l| json!({"holder": l.holder, "userId": l.user_id, "expiresAtMs": l.expires_at_ms})),
        "tickets": order.tickets.iter().map(|t| json!({
            "kind": name(pb::TicketKind::try_from(t.kind), 0),
            "id": t.id,
            "status": name(pb::TicketStatus::try_from(t.status), 0),
        })).collect::<Vec<_>>(),
        "lastSeq": order.last_seq,
    })
}
