//! `pos-hub log append FILE` and `pos-hub log dump`: the event log of one data dir, through
//! a single-node Raft group.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::StoreArgs;
use crate::domain::Event;
use crate::proto::convert::{self, UNKNOWN_STATUS};
use crate::proto::pb;
use crate::raft::local::LocalNode;

/// Events per Raft entry when appending a file; bounded so one entry stays small.
pub const APPEND_BATCH_EVENTS_MAX: usize = 1024;
/// Events read from the store per page while dumping.
const DUMP_PAGE_EVENTS: usize = 512;

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: LogCommand,
}

#[derive(Debug, clap::Subcommand)]
enum LogCommand {
    /// Append the events of a JSON-lines file (`-` for standard input) and print one outcome
    /// line per event. Nothing is appended if any line is not a valid event. Exits 1 when any
    /// event was rejected.
    Append {
        file: PathBuf,
        /// Events per Raft log entry (1..=1024).
        #[arg(long, default_value_t = 64)]
        batch: usize,
    },
    /// Print every committed event in seq order, then the orders and the stock.
    Dump {
        /// One JSON event per line (the spec's camelCase shape with seq and hubTime) instead.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: LogArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        LogCommand::Append { file, batch } => append(&args.store, &file, batch).await,
        LogCommand::Dump { json } => dump(&args.store, json).await,
    }
}

/// Reads and checks every line before anything is appended, so a bad file changes nothing.
pub(super) fn read_events(file: &Path) -> anyhow::Result<Vec<pb::Event>> {
    let mut text = String::new();
    if file == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
    } else {
        text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    }
    let mut events = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", file.display(), index + 1);
        let event: Event =
            serde_json::from_str(line).with_context(|| format!("{}: not an event", at()))?;
        events.push(convert::event_to_pb(&event).with_context(at)?);
    }
    Ok(events)
}

/// Checks a `--batch` value against the bound of one Raft entry.
pub(super) fn check_batch(batch: usize) -> anyhow::Result<()> {
    if !(1..=APPEND_BATCH_EVENTS_MAX).contains(&batch) {
        bail!("--batch must be between 1 and {APPEND_BATCH_EVENTS_MAX}, got {batch}");
    }
    Ok(())
}

/// Prints the summary line; exit code 1 when any event was rejected.
pub(super) fn summarize((accepted, duplicate, rejected): (usize, usize, usize)) -> ExitCode {
    println!(
        "{} events: {accepted} accepted, {duplicate} duplicate, {rejected} rejected",
        accepted + duplicate + rejected
    );
    if rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn append(store: &StoreArgs, file: &Path, batch: usize) -> anyhow::Result<ExitCode> {
    check_batch(batch)?;
    let events = read_events(file)?;
    let node = LocalNode::start(&store.data_dir, &store.realm(), store.snapshot_every).await?;
    let result = append_batches(events, batch, |chunk| async {
        let ids: Vec<String> = chunk.iter().map(|e| e.event_id.clone()).collect();
        let outcomes = node.append(chunk).await?;
        Ok(convert::append_results(&ids, &outcomes)?)
    })
    .await;
    node.shutdown().await;
    Ok(summarize(result?))
}

/// Sends the events in batches through `send` and prints one line per result as each
/// batch is answered; returns (accepted, duplicate, rejected). Shared by `log append`
/// (local group) and `client append` (a hub over gRPC). Results are read in their wire
/// form, so a reject code this build does not know is printed as the hub wrote it.
pub(super) async fn append_batches<F, Fut>(
    events: Vec<pb::Event>,
    batch: usize,
    mut send: F,
) -> anyhow::Result<(usize, usize, usize)>
where
    F: FnMut(Vec<pb::Event>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<pb::AppendResult>>>,
{
    let (mut accepted, mut duplicate, mut rejected) = (0, 0, 0);
    for chunk in events.chunks(batch) {
        let results = send(chunk.to_vec()).await?;
        let mut stdout = std::io::stdout().lock();
        if results.len() != chunk.len() {
            bail!(
                "the hub answered {} results for {} events",
                results.len(),
                chunk.len()
            );
        }
        // Each line is printed only once its entry is durable, committed and applied.
        for (event, result) in chunk.iter().zip(&results) {
            let (id, kind, seq) = (&event.event_id, &event.r#type, result.seq);
            match pb::AppendStatus::try_from(result.status) {
                Ok(pb::AppendStatus::Accepted) => {
                    accepted += 1;
                    writeln!(stdout, "ACCEPTED  seq={seq} {id} {kind}")?;
                }
                Ok(pb::AppendStatus::Duplicate) => {
                    duplicate += 1;
                    writeln!(stdout, "DUPLICATE seq={seq} {id} {kind}")?;
                }
                Ok(pb::AppendStatus::Rejected) => {
                    rejected += 1;
                    let (code, message) = (&result.code, &result.message);
                    writeln!(stdout, "REJECTED  {id} {kind} {code}: {message}")?;
                }
                Ok(pb::AppendStatus::Unspecified) | Err(_) => {
                    rejected += 1;
                    let status = result.status;
                    writeln!(
                        stdout,
                        "REJECTED  {id} {kind} {UNKNOWN_STATUS}: the hub answered append status {status}"
                    )?;
                }
            }
        }
        stdout.flush()?;
    }
    Ok((accepted, duplicate, rejected))
}

async fn dump(store: &StoreArgs, json: bool) -> anyhow::Result<ExitCode> {
    let node = LocalNode::start(&store.data_dir, &store.realm(), store.snapshot_every).await?;
    let result = print_dump(&node, json);
    node.shutdown().await;
    result?;
    Ok(ExitCode::SUCCESS)
}

fn print_dump(node: &LocalNode, json: bool) -> anyhow::Result<()> {
    let reader = node.reader();
    let mut stdout = std::io::stdout().lock();
    let mut after = 0;
    loop {
        let page = reader.events_after(after, DUMP_PAGE_EVENTS, usize::MAX)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for event in &page {
            if json {
                let event = convert::event_from_pb(event)?;
                writeln!(stdout, "{}", serde_json::to_string(&event)?)?;
            } else {
                writeln!(
                    stdout,
                    "seq={} hubTime={} {} {}/{} v{} {} by {}",
                    event.seq,
                    event.hub_time,
                    event.event_id,
                    event.aggregate_type,
                    event.aggregate_id,
                    event.version,
                    event.r#type,
                    event
                        .actor
                        .as_ref()
                        .map(|a| a.device_id.as_str())
                        .unwrap_or(""),
                )?;
            }
        }
    }
    if json {
        return Ok(());
    }
    let applied = reader.applied()?;
    writeln!(
        stdout,
        "realm {}: {} events",
        reader.realm(),
        applied.last_seq
    )?;
    for order in reader.orders()? {
        let tickets: Vec<String> = order
            .tickets
            .iter()
            .map(|t| format!("{}:{}={}", t.kind.as_str(), t.id, t.status.as_str()))
            .collect();
        writeln!(
            stdout,
            "order {} {} total={} version={} items={} tickets=[{}]",
            order.id,
            order.status.as_str(),
            order.total,
            order.head.version,
            order.items.len(),
            tickets.join(" "),
        )?;
    }
    for stock in reader.stocks()? {
        writeln!(stdout, "stock {} {:+}", stock.sku, stock.total())?;
    }
    Ok(())
}
