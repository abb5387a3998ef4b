//! `pos-hub client order|lock|outbox|sync|discover`: a usable till in a shell, on the client
//! SDK. Every edit goes through the device's durable outbox in `--data-dir`: it is checked
//! against the device's view and saved first, then sent; a hub that does not answer within
//! `--wait-s` leaves it queued, and the next command that reaches a hub sends it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::client::{ClientArgs, ClientCommand, order_json};
use crate::client::{ClientError, Device, DeviceConfig, Draft, Final, HubConfig};
use crate::discovery;
use crate::domain::Realm;
use crate::domain::order::{LineItem, Order};

#[derive(Debug, clap::Subcommand)]
pub enum OrderCommand {
    /// Open a new order; prints its id.
    New {
        /// The order id; a fresh `o-…` id when omitted.
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        table: Option<String>,
        #[arg(long)]
        guests: Option<i64>,
        #[arg(long, default_value = "USD")]
        currency: String,
    },
    /// Add a line item.
    Add {
        order: String,
        #[arg(long)]
        sku: String,
        #[arg(long)]
        name: String,
        /// Unit price in minor units (cents).
        #[arg(long)]
        price: i64,
        #[arg(long, default_value_t = 1)]
        qty: i64,
        #[arg(long)]
        category: Option<String>,
        /// A modifier as NAME=PRICE (repeatable), e.g. --modifier "extra cheese=150".
        #[arg(long = "modifier")]
        modifiers: Vec<String>,
    },
    /// Park the order (guests still eating).
    Park {
        order: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Recall a parked order.
    Recall { order: String },
    /// Pay the order in full.
    Pay {
        order: String,
        /// cash or card.
        #[arg(long)]
        method: String,
        /// Minor units; defaults to the order's total.
        #[arg(long)]
        amount: Option<i64>,
    },
    /// Cancel the order.
    Cancel {
        order: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Print the order as the device sees it (committed plus its own queued edits).
    Show {
        order: String,
        /// Ask the hub instead (no device needed), confirmed with the leader.
        #[arg(long)]
        linearizable: bool,
    },
    /// Print every order the device knows, one JSON line each.
    List,
}

/// The device's identity and realm from the flags and the token's claims.
fn device_config(args: &ClientArgs) -> anyhow::Result<DeviceConfig> {
    let claims = match &args.token {
        Some(token) => Some(
            crate::auth::token::decode_unverified(token.trim())
                .context("--token is not a pos-hub token")?
                .claims,
        ),
        None => None,
    };
    let device_id = match (&args.device, &claims) {
        (Some(device), _) => device.clone(),
        (None, Some(claims)) => claims.sub.clone(),
        (None, None) => bail!("say which device this is: --device ID (or give its --token)"),
    };
    let tenant = args
        .tenant
        .clone()
        .or_else(|| claims.as_ref().map(|c| c.tenant_id.clone()))
        .unwrap_or_else(|| "t-demo".into());
    let store = args
        .store
        .clone()
        .or_else(|| claims.as_ref().map(|c| c.store_id.clone()))
        .unwrap_or_else(|| "s-001".into());
    let mut addrs = Vec::new();
    let mut https = None;
    for hub in &args.hub {
        let (tls, addr) = match (hub.strip_prefix("https://"), hub.strip_prefix("http://")) {
            (Some(addr), _) => (true, addr),
            (None, Some(addr)) => (false, addr),
            (None, None) => (args.ca.is_some(), hub.as_str()),
        };
        if https.is_some_and(|h| h != tls) {
            bail!("--hub mixes http:// and https:// addresses");
        }
        https = Some(tls);
        let addr = addr.trim_end_matches('/');
        if !addr.contains(':') || addr.contains('/') || addr.contains(' ') {
            bail!("--hub {hub:?} is not a URL like http://127.0.0.1:4001 or HOST:PORT");
        }
        addrs.push(addr.to_owned());
    }
    // Like the other client commands, a device given no hub tries the dev hub (`serve
    // --dev`, which listens on loopback and so does not advertise on mDNS), then its cached
    // addresses, then mDNS. Where no dev hub runs, the connection is refused at once.
    if args.hub.is_empty() && args.ca.is_none() {
        addrs.push(super::serve::DEV_CLIENT_ADDR.to_owned());
    }
    let tls = match (&args.ca, https) {
        (Some(ca), Some(true) | None) => Some(crate::auth::tls::device_client_config(ca)?),
        (Some(_), Some(false)) => {
            bail!("--ca is given, so --hub must be an https:// URL")
        }
        (None, Some(true)) => bail!("--hub uses TLS: pin the store CA with --ca FILE (its ca.pem)"),
        (None, _) => None,
    };
    Ok(DeviceConfig {
        data_dir: args.data_dir.clone(),
        device_id,
        user_id: args.user.clone(),
        hub: HubConfig {
            addrs,
            realm: Realm::new(tenant, store),
            token: args.token.clone(),
            tls,
            discovery: !args.no_discovery,
            cache_dir: None,
        },
    })
}

fn item_json(item: &LineItem) -> Value {
    let mut value = json!({
        "id": item.id, "sku": item.sku, "name": item.name,
        "unitPrice": item.unit_price, "quantity": item.quantity,
    });
    if let Some(category) = &item.category {
        value["category"] = json!(category);
    }
    if !item.modifiers.is_empty() {
        value["modifiers"] = item
            .modifiers
            .iter()
            .map(|m| {
                let mut v = json!({"name": m.name, "price": m.price});
                if let Some(id) = &m.id {
                    v["id"] = json!(id);
                }
                v
            })
            .collect();
    }
    value
}

fn parse_modifier(text: &str, n: usize) -> anyhow::Result<Value> {
    let (name, price) = text
        .rsplit_once('=')
        .with_context(|| format!("--modifier {text:?} is not NAME=PRICE"))?;
    let price: i64 = price
        .trim()
        .parse()
        .with_context(|| format!("--modifier {text:?}: the price is not a whole number"))?;
    Ok(json!({"id": format!("m-{n}"), "name": name.trim(), "price": price}))
}

fn known_order(device: &Device, order_id: &str) -> anyhow::Result<Order> {
    device.order(order_id).with_context(|| {
        format!("order {order_id} is not known to this device (run `sync` to catch up)")
    })
}

fn reason_payload(reason: &Option<String>) -> Value {
    match reason {
        Some(reason) => json!({ "reason": reason }),
        None => json!({}),
    }
}

/// The events an order command appends.
fn order_drafts(device: &Device, command: &OrderCommand) -> anyhow::Result<(String, Vec<Draft>)> {
    Ok(match command {
        OrderCommand::New {
            id,
            table,
            guests,
            currency,
        } => {
            let id = id
                .clone()
                .unwrap_or_else(|| format!("o-{}", uuid::Uuid::now_v7().simple()));
            let mut payload = json!({"currency": currency, "items": []});
            if let Some(table) = table {
                payload["tableNumber"] = json!(table);
            }
            if let Some(guests) = guests {
                payload["guestCount"] = json!(guests);
            }
            let draft = Draft::order(&id, "order.created", payload);
            (id, vec![draft])
        }
        OrderCommand::Add {
            order,
            sku,
            name,
            price,
            qty,
            category,
            modifiers,
        } => {
            let current = known_order(device, order)?;
            let mut items: Vec<Value> = current.items.iter().map(item_json).collect();
            let mut item = json!({
                "id": format!("li-{}", uuid::Uuid::now_v7().simple()),
                "sku": sku, "name": name, "unitPrice": price, "quantity": qty,
            });
            if let Some(category) = category {
                item["category"] = json!(category);
            }
            if !modifiers.is_empty() {
                item["modifiers"] = modifiers
                    .iter()
                    .enumerate()
                    .map(|(n, m)| parse_modifier(m, n + 1))
                    .collect::<anyhow::Result<Vec<_>>>()?
                    .into();
            }
            items.push(item);
            let draft = Draft::order(order, "order.updated", json!({ "items": items }));
            (order.clone(), vec![draft])
        }
        OrderCommand::Park { order, reason } => {
            let payload = reason_payload(reason);
            (
                order.clone(),
                vec![Draft::order(order, "order.parked", payload)],
            )
        }
        OrderCommand::Recall { order } => (
            order.clone(),
            vec![Draft::order(order, "order.reparked", json!({}))],
        ),
        OrderCommand::Pay {
            order,
            method,
            amount,
        } => {
            let current = known_order(device, order)?;
            let amount = amount.unwrap_or(current.total);
            let mut payload = json!({
                "payments": [{"method": method, "amount": amount}],
                "total": current.total,
            });
            if let Some(currency) = &current.currency {
                payload["currency"] = json!(currency);
            }
            (
                order.clone(),
                vec![Draft::order(order, "order.paid", payload)],
            )
        }
        OrderCommand::Cancel { order, reason } => {
            let payload = reason_payload(reason);
            (
                order.clone(),
                vec![Draft::order(order, "order.cancelled", payload)],
            )
        }
        OrderCommand::Show { .. } | OrderCommand::List => (String::new(), Vec::new()),
    })
}

fn print_order(order: Order) {
    println!("{}", order_json(&crate::proto::convert::order(order)));
}

/// Prints what became of queued events; exit 2 when the hub rejected one.
async fn report(device: &Device, numbers: &[u64], wait: Duration) -> ExitCode {
    let settled = device.settle(wait).await;
    let mut rejected = false;
    for number in numbers {
        match device.outcome(*number) {
            Some(Final::Committed { seq }) => println!("#{number} COMMITTED seq={seq}"),
            Some(Final::Rejected { code, message, .. }) => {
                rejected = true;
                println!("#{number} REJECTED {code}: {message} (kept as dead letter #{number})");
            }
            None => println!("#{number} QUEUED: no hub answered yet; it stays in the outbox"),
        }
    }
    if !settled {
        let progress = device.progress().borrow().clone();
        if let Some(error) = progress.last_error {
            eprintln!("not caught up with the hub: {error}");
        }
    }
    if rejected {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn refused(err: ClientError) -> anyhow::Result<ExitCode> {
    match err {
        ClientError::Refused {
            code,
            message,
            lock_holder,
        } => {
            match lock_holder {
                Some(holder) => eprintln!("refused ({code}): {message} [held by {holder}]"),
                None => eprintln!("refused ({code}): {message}"),
            }
            Ok(ExitCode::FAILURE)
        }
        other => Err(other.into()),
    }
}

pub async fn run(args: ClientArgs) -> anyhow::Result<ExitCode> {
    if let ClientCommand::Discover { wait_ms } = args.command {
        return discover(wait_ms).await;
    }
    let wait = Duration::from_secs(args.wait_s);
    let device = Device::open(device_config(&args)?)?;
    let _running = device.start();
    match &args.command {
        ClientCommand::Order(OrderCommand::Show { order, .. }) => {
            device.settle(wait).await;
            print_order(known_order(&device, order)?);
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Order(OrderCommand::List) => {
            device.settle(wait).await;
            for order in device.orders() {
                print_order(order);
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Order(command) => {
            // Edits start from the freshest view the hub can give within the wait.
            device.settle(wait).await;
            let (order_id, drafts) = order_drafts(&device, command)?;
            let appended = match device.append_all(drafts) {
                Ok(appended) => appended,
                Err(err) => return refused(err),
            };
            for a in &appended {
                println!(
                    "#{} queued order {order_id} v{} event {}",
                    a.number, a.version, a.event_id
                );
            }
            let numbers: Vec<u64> = appended.iter().map(|a| a.number).collect();
            Ok(report(&device, &numbers, wait).await)
        }
        ClientCommand::Lock { order, hold_s } => {
            device.settle(wait).await;
            let guard = match device.lock(order, wait).await {
                Ok(guard) => guard,
                Err(err) => return refused(err),
            };
            println!("locked order {order}");
            tokio::time::sleep(Duration::from_secs(*hold_s)).await;
            drop(guard);
            device.settle(wait).await;
            println!("released order {order}");
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Outbox { resolve, json } => {
            device.settle(wait).await;
            if let Some(number) = resolve {
                if !device.resolve(*number)? {
                    bail!("there is no dead letter #{number}");
                }
                println!("dead letter #{number} resolved");
            }
            print_outbox(&device, *json)?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Sync => {
            let done = device.settle(wait).await;
            let progress = device.progress().borrow().clone();
            println!(
                "cursor={} unsent={} dead={} node={}",
                progress.cursor,
                progress.unsent,
                progress.dead_letters,
                progress.node.as_deref().unwrap_or("-")
            );
            if done {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "not caught up within {}s: {}",
                    args.wait_s,
                    progress.last_error.as_deref().unwrap_or("no hub answered")
                );
                Ok(ExitCode::FAILURE)
            }
        }
        ClientCommand::Append { .. }
        | ClientCommand::Tail { .. }
        | ClientCommand::Status
        | ClientCommand::Discover { .. } => bail!("not a device command"),
    }
}

fn print_outbox(device: &Device, as_json: bool) -> anyhow::Result<()> {
    let queued = device.queued();
    let dead = device.dead_letters();
    if as_json {
        for q in &queued {
            println!(
                "{}",
                json!({"state": if q.seq.is_some() { "answered" } else { "pending" },
                       "number": q.number, "seq": q.seq, "event": q.event})
            );
        }
        for d in &dead {
            println!(
                "{}",
                json!({"state": "dead", "number": d.number, "code": d.code,
                       "message": d.message, "event": d.event})
            );
        }
        return Ok(());
    }
    let pending = queued.iter().filter(|q| q.seq.is_none()).count();
    println!("pending: {pending}");
    for q in queued.iter().filter(|q| q.seq.is_none()) {
        println!(
            "  #{} {} {} v{}",
            q.number, q.event.event_type, q.event.aggregate_id, q.event.version
        );
    }
    println!("dead letters: {}", dead.len());
    for d in &dead {
        println!(
            "  #{} {} {} v{}: {} {}",
            d.number, d.event.event_type, d.event.aggregate_id, d.event.version, d.code, d.message
        );
    }
    Ok(())
}

async fn discover(wait_ms: u64) -> anyhow::Result<ExitCode> {
    let hubs = discovery::browse(Duration::from_millis(wait_ms)).await?;
    if hubs.is_empty() {
        println!("no hubs answered on mDNS within {wait_ms} ms");
    }
    for hub in hubs {
        println!(
            "{} node={} realm={} version={}{}",
            hub.addr,
            hub.node_id,
            hub.realm,
            hub.version,
            if hub.tls { " tls" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}
