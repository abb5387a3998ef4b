//! `pos-hub client`: try a hub from a shell, over the same gRPC API the tills use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::log::{append_batches, check_batch, read_events, summarize};
use crate::proto::pb::hub_client::HubClient;
use crate::proto::{convert, pb};

#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// Hub client addresses, comma-separated (`http://HOST:PORT`, `https://…` with --ca, or
    /// `HOST:PORT`). Without, every command asks the dev hub at http://127.0.0.1:4001, and
    /// the device commands also their cached hub addresses and hubs found by mDNS.
    #[arg(long, env = "POS_HUB", value_delimiter = ',')]
    pub hub: Vec<String>,
    /// This device's token (`pos-hub token issue`), sent as `authorization: Bearer …`.
    #[arg(long, env = "POS_HUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The store CA (PEM) to pin when the hub serves TLS (`--hub https://…`).
    #[arg(long, env = "POS_HUB_CA")]
    pub ca: Option<PathBuf>,
    /// This device's id; defaults to the token's subject.
    #[arg(long, env = "POS_HUB_DEVICE")]
    pub device: Option<String>,
    /// The person using the device, stamped into each event's actor.
    #[arg(long)]
    pub user: Option<String>,
    /// The device's data dir: its outbox, read model and last good hub addresses.
    #[arg(long, env = "POS_HUB_DEVICE_DIR", default_value = "device")]
    pub data_dir: PathBuf,
    /// The store's realm; defaults to the token's, else t-demo/s-001.
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub store: Option<String>,
    /// Do not browse mDNS for hubs: use --hub and the cached addresses only.
    #[arg(long)]
    pub no_discovery: bool,
    /// How long a device command waits for the hub to answer before leaving its events
    /// in the outbox (they are sent by the next command that reaches a hub).
    #[arg(long, default_value_t = 5)]
    pub wait_s: u64,
    #[command(subcommand)]
    pub command: ClientCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Append the events of a JSON-lines file (`-`: standard input) straight to the hub,
    /// without the outbox; one line per outcome.
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
    /// Print the group: leader, members, indexes.
    Status,
    /// Orders, through the device's outbox: new, add, park, recall, pay, cancel, show, list.
    #[command(subcommand)]
    Order(super::till::OrderCommand),
    /// Take an order's lock, hold it (renewing) for --hold-s, then release it.
    Lock {
        order: String,
        #[arg(long, default_value_t = 0)]
        hold_s: u64,
    },
    /// The outbox: queued events and the dead-letter list.
    Outbox {
        /// Drop dead letter N after dealing with it.
        #[arg(long)]
        resolve: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Send the outbox and catch up with the log, waiting up to --wait-s.
    Sync,
    /// List the hubs that answer on mDNS (`_poshub._tcp.local.`), of every realm.
    Discover {
        #[arg(long, default_value_t = 2000)]
        wait_ms: u64,
    },
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

/// The one hub the direct commands talk to.
fn direct_hub(args: &ClientArgs) -> String {
    args.hub
        .first()
        .cloned()
        .unwrap_or_else(|| format!("http://{}", super::serve::DEV_CLIENT_ADDR))
}

pub async fn run(args: ClientArgs) -> anyhow::Result<ExitCode> {
    if !matches!(
        args.command,
        ClientCommand::Append { .. }
            | ClientCommand::Tail { .. }
            | ClientCommand::Status
            | ClientCommand::Order(super::till::OrderCommand::Show {
                linearizable: true,
                ..
            })
    ) {
        return super::till::run(args).await;
    }
    let channel = connect(&direct_hub(&args), args.ca.as_deref()).await?;
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
                    Ok(reply.results)
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
        ClientCommand::Status => super::cluster::print_status(channel, bearer).await,
        ClientCommand::Order(super::till::OrderCommand::Show { order, .. }) => {
            let request = convert::get_order_request(&order, true);
            let Some(order) = hub.get_order(request).await?.into_inner().order else {
                bail!("the hub answered without an order");
            };
            println!("{}", order_json(&order));
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("{other:?} is a device command, not a direct one"),
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
