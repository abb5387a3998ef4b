//! `pos-hub-chaos`: runs real `pos-hub serve` groups under a workload and a nemesis, records
//! the history, and checks it. See `chaos/README.md`.

mod cgroup;
mod checker;
mod group;
mod history;
mod nemesis;
mod netfilter;
mod powerfs;
mod report;
mod rng;
mod soak;
mod topology;
mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use pos_hub::proto::pb::hub_client::HubClient;
use pos_hub::proto::{convert, pb};

use crate::checker::NodeState;
use crate::group::Group;
use crate::history::Recorder;
use crate::nemesis::{NETWORK_FAULTS, Nemesis};
use crate::rng::Rng;
use crate::topology::Topology;
use crate::workload::Workload;

#[derive(Debug, Parser)]
#[command(
    name = "pos-hub-chaos",
    about = "Fault injection and history checking for pos-hub"
)]
enum Cli {
    /// Run a group under load and faults, then check the history.
    Run(RunArgs),
    /// Check a recorded run again (its history and final node states in DIR) and redraw
    /// its timeline.
    Check { dir: PathBuf },
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=5))]
    nodes: u64,
    /// Length of the faulty phase, in minutes (fractions allowed: 0.5).
    #[arg(long, default_value_t = 3.0)]
    minutes: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Comma-separated faults, or `all`.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Where the history, node logs and the report go.
    #[arg(long, default_value = "chaos-out")]
    out: PathBuf,
    /// The `pos-hub` binary; defaults to the one beside this one.
    #[arg(long)]
    hub_bin: Option<PathBuf>,
    /// How long each fault lasts, in seconds.
    #[arg(long, default_value_t = 4)]
    fault_seconds: u64,
    /// Quiet time between faults, in seconds.
    #[arg(long, default_value_t = 3)]
    quiet_seconds: u64,
    /// Concurrent devices in the workload.
    #[arg(long, default_value_t = 4)]
    devices: u32,
    /// Extra flags for every `pos-hub serve`, e.g. the deliberately broken
    /// `--unsafe-no-fsync`, to show the checker catching what a power cut then loses.
    #[arg(long, allow_hyphen_values = true, value_delimiter = ' ')]
    hub_args: Vec<String>,
    /// A soak: put this many store-days through in `--minutes` (the nodes' and devices'
    /// clocks run that much faster; an archiver keeps the log and moves the archive mark,
    /// so retention deletes history as in a shop). 0: no soak.
    #[arg(long, default_value_t = 0)]
    store_days: u32,
    /// Run on loopback even where network namespaces are available.
    #[arg(long)]
    no_netns: bool,
    /// Internal: the namespaces are made; run inside them with this prefix.
    #[arg(long, hide = true)]
    inner_netns: Option<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse() {
        Cli::Run(args) => run(args),
        Cli::Check { dir } => recheck(&dir),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pos-hub-chaos: {err:#}");
            ExitCode::from(3)
        }
    }
}

fn can_use_netns() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
    let ids: Vec<u64> = (1..=args.nodes).collect();
    if let Some(prefix) = &args.inner_netns {
        let topology = Topology::Netns {
            prefix: prefix.clone(),
            nodes: ids,
        };
        return inner(args.clone(), topology);
    }
    if args.no_netns || !can_use_netns() {
        tracing::warn!(
            "no network namespaces (needs root and iproute2): running on loopback; partition and netem are skipped"
        );
        return inner(args, Topology::Loopback { base_port: 47_000 });
    }
    // Make the namespaces, then run this same command inside the switch namespace, where
    // the bridge reaches every node; tear everything down however it ends.
    let prefix = format!("pc{}", std::process::id() % 100_000);
    let topology = Topology::create_netns(&prefix, &ids)?;
    let me = std::env::current_exe()?;
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &format!("{prefix}-sw")])
        .arg(me)
        .arg("run");
    cmd.args(std::env::args().skip(2))
        .args(["--inner-netns", &prefix]);
    let status = cmd.status();
    // Add-node may have made namespaces for extra ids; destroy() removes 1..=9.
    topology.destroy();
    let status = status.context("running inside the namespaces")?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(3)),
        None => ExitCode::from(3),
    })
}

fn inner(args: RunArgs, topology: Topology) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args, topology))
}

async fn run_async(args: RunArgs, topology: Topology) -> anyhow::Result<ExitCode> {
    let faults = nemesis::parse_faults(&args.faults)?;
    let netem = topology.netem_kind();
    let (faults, skipped): (Vec<String>, Vec<String>) = faults.into_iter().partition(|f| {
        if !topology.is_netns() {
            !NETWORK_FAULTS.contains(&f.as_str())
        } else {
            f != "netem" || netem.is_some()
        }
    });
    for fault in &skipped {
        tracing::warn!(
            fault,
            "skipped: needs network namespaces and, for netem, sch_netem or iptables"
        );
    }
    if faults.is_empty() {
        bail!("no fault left to inject (the network faults need namespaces)");
    }
    let hub_bin = match &args.hub_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the chaos binary has no directory")?
            .join("pos-hub"),
    };
    if !hub_bin.exists() {
        bail!(
            "{} does not exist: build it (`cargo build`) or pass --hub-bin",
            hub_bin.display()
        );
    }
    let out = args.out.canonicalize()?;
    let nodes_dir = out.join("nodes");
    let _ = std::fs::remove_dir_all(&nodes_dir);
    let ids: Vec<u64> = (1..=args.nodes).collect();
    let mut group = Group::new(topology.clone(), hub_bin, &nodes_dir, &ids)?;
    group.hub_args = args
        .hub_args
        .iter()
        .filter(|a| !a.is_empty())
        .cloned()
        .collect();
    let plan = match args.store_days {
        0 => None,
        days => Some(soak::Plan::new(days, args.minutes)?),
    };
    if let Some(plan) = plan {
        soak::set_clock(plan.epoch_ms, plan.rate);
        group.hub_args.extend(plan.hub_args());
        // History files of 1 MiB: retention deletes a day's events in several steps.
        group.hub_args.push("--history-segment-kib=1024".into());
        tracing::info!(
            days = plan.days,
            rate = plan.rate,
            "soak: the clocks run faster"
        );
    }
    if faults.iter().any(|f| f == "disk-full") {
        let last = *ids.last().context("no nodes")?;
        group.mount_tmpfs(last, nemesis::TMPFS_MEGABYTES)?;
    }
    if faults.iter().any(|f| f == "lose-unsynced") {
        for id in &ids {
            if group.tmpfs_node != Some(*id) {
                group.mount_powerfs(*id)?;
            }
        }
    }
    for id in &ids {
        group.start(*id)?;
    }
    group
        .wait_leader(Duration::from_secs(30))
        .await
        .context("the group elected no leader")?;
    tracing::info!(nodes = args.nodes, topology = ?topology, "group up");

    let recorder = Recorder::create(&out.join("history.jsonl"))?;
    let addrs: BTreeMap<u64, String> = ids.iter().map(|n| (*n, group.client_addr(*n))).collect();
    let workload = Arc::new(Workload {
        recorder: recorder.clone(),
        nodes: Arc::new(Mutex::new(addrs.clone())),
    });
    workload.setup().await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for p in 1..=args.devices {
        tasks.push(tokio::spawn(workload.clone().device(
            p,
            args.seed,
            stop_rx.clone(),
        )));
    }
    for (i, id) in ids.iter().enumerate() {
        tasks.push(tokio::spawn(workload.clone().stream(
            i as u32 + 1,
            *id,
            stop_rx.clone(),
        )));
    }
    // The SDK stamps event ids with the wall clock: in a soak, a day later the hubs would
    // refuse them as older than retention. The soak leaves the outbox till out.
    let outbox = plan.is_none().then(|| {
        tokio::spawn(workload::outbox_till(
            out.join("outbox-till"),
            addrs.values().cloned().collect(),
            stop_rx.clone(),
        ))
    });
    let archive = Arc::new(soak::Archive::default());
    if let Some(plan) = plan {
        tasks.push(tokio::spawn(soak::archiver(
            workload.nodes.clone(),
            plan,
            archive.clone(),
            stop_rx.clone(),
        )));
    }
    let mut samples = Vec::new();
    let mut next_sample = tokio::time::Instant::now();

    // The nemesis: faults in a seeded order, one at a time, until the time is up.
    let mut rng = Rng::new(args.seed);
    let mut order = faults.clone();
    rng.shuffle(&mut order);
    let mut nemesis = Nemesis {
        recorder: recorder.clone(),
        rng,
        hold: Duration::from_secs(args.fault_seconds),
        step: 0,
        netem,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);
    let mut harness_error = None;
    let mut i = 0;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(args.quiet_seconds)).await;
        let fault = order[i % order.len()].clone();
        i += 1;
        if let Err(err) = nemesis.run(&fault, &mut group).await {
            harness_error = Some(format!("fault {fault}: {err:#}"));
            break;
        }
        if let Some(plan) = plan
            && tokio::time::Instant::now() >= next_sample
        {
            next_sample += plan.tick();
            sample_nodes(&group, plan, &mut samples);
        }
    }

    // Heal, stop the workload, let everything converge.
    group.topology.heal_partition(&group.ids());
    group.topology.heal_netem(&group.ids(), Vec::new());
    for id in group.members.clone() {
        if group.nodes.get(&id).is_some_and(|n| n.paused) {
            let _ = group.resume(id);
        }
        if !group.is_running(id) {
            group.start(id)?;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let (confirmed, stuck) = match outbox {
        Some(outbox) => {
            let (device, confirmed) = outbox.await??;
            let running = device.start();
            let drained = device.settle(Duration::from_secs(90)).await;
            drop(running);
            // A till whose confirmed events never settle is a broken promise, not a harness
            // failure: a hub that lost acknowledged events leaves it waiting for them forever.
            let stuck = (!drained).then(|| {
                format!(
                    "the outbox till did not drain within 90 s of healing: {:?}",
                    *device.progress().borrow()
                )
            });
            (confirmed, stuck)
        }
        None => (Vec::new(), None),
    };
    if let Some(plan) = plan {
        sample_nodes(&group, plan, &mut samples);
    }
    // Nodes that never converge are still read, each up to its own last seq, so that the
    // checker names what differs.
    let last_seq = match group.wait_converged(Duration::from_secs(120)).await {
        Ok(seq) => seq,
        Err(err) => {
            harness_error.get_or_insert_with(|| format!("{err:#}"));
            0
        }
    };
    let mut states = BTreeMap::new();
    let mut first_held_by = BTreeMap::new();
    let mut unreadable = Vec::new();
    for id in group.members.clone() {
        let own = if last_seq > 0 {
            last_seq
        } else {
            group.hello(id).await.map_or(0, |h| h.last_seq)
        };
        match read_node(&group.client_addr(id), own, &archive).await {
            Ok((state, first_held)) => {
                states.insert(id, state);
                first_held_by.insert(id, first_held);
            }
            // A node that cannot even be read is itself a finding: report it with the rest.
            Err(err) => unreadable.push((id, format!("{err:#}"))),
        }
    }
    let last_seq = states
        .values()
        .map(|s| s.log.len() as u64)
        .max()
        .unwrap_or(0);
    save_states(&out, &states, &confirmed)?;
    let history = recorder.entries();
    let mut outcome = checker::check(&history, &states, &confirmed);
    for (node, err) in &unreadable {
        outcome.violations.push(checker::Violation {
            check: "unreadable",
            detail: format!("node {node} could not be read after healing: {err}"),
        });
    }
    if let Some(detail) = stuck {
        outcome.violations.push(checker::Violation {
            check: "outbox-stuck",
            detail,
        });
    }
    if let Some(plan) = plan
        && let Some(detail) = soak::retention_unexercised(plan, &first_held_by)
    {
        outcome.violations.push(checker::Violation {
            check: "soak-retention",
            detail,
        });
    }
    for (node, status) in &group.unexpected_exits {
        outcome.violations.push(checker::Violation {
            check: "crash",
            detail: format!(
                "node {node} exited without being killed: {status} (see nodes/node{node}/node.log)"
            ),
        });
    }
    let info = report::RunInfo {
        seed: args.seed,
        nodes: args.nodes as usize,
        seconds: (args.minutes * 60.0) as u64,
        faults: faults.clone(),
        topology: if topology.is_netns() {
            "one network namespace per node, joined by a bridge (partitions drop real packets)"
                .into()
        } else {
            "loopback (no network namespaces)".into()
        },
        skipped,
        log_len: last_seq,
        outbox_confirmed: confirmed.len(),
        command: format!(
            "pos-hub-chaos run --nodes {} --minutes {} --seed {} --faults {}{}",
            args.nodes,
            args.minutes,
            args.seed,
            args.faults,
            match args.store_days {
                0 => String::new(),
                days => format!(" --store-days {days}"),
            }
        ),
    };
    let mut md = report::markdown(&info, &outcome);
    if let Some(plan) = plan {
        md.push_str(&soak::markdown(
            plan,
            &samples,
            &archive,
            last_seq,
            &first_held_by,
        ));
        std::fs::write(out.join("soak.svg"), soak::svg(plan, &samples))?;
        std::fs::write(
            out.join("soak-samples.json"),
            serde_json::to_vec_pretty(&samples)?,
        )?;
    }
    if let Some(err) = &harness_error {
        md.push_str(&format!("\n**The harness itself failed:** {err}\n"));
    }
    std::fs::write(out.join("report.md"), &md)?;
    std::fs::write(out.join("timeline.svg"), report::svg(&history))?;
    println!("{md}");
    println!("report: {}", out.join("report.md").display());
    // A violation outranks a harness failure: the run found what it is for.
    match (outcome.violations.is_empty(), harness_error) {
        (false, harness) => {
            if let Some(err) = harness {
                eprintln!("pos-hub-chaos: the harness also failed: {err}");
            }
            Ok(ExitCode::FAILURE)
        }
        (true, Some(err)) => bail!("{err}"),
        (true, None) => Ok(ExitCode::SUCCESS),
    }
}

/// Subscribe from `cursor`, with its first message (a refusal of the cursor comes as the
/// call's or the first message's error).
async fn first_message(
    client: &mut HubClient<tonic::transport::Channel>,
    cursor: u64,
) -> Result<
    (
        Option<pb::SubscribeResponse>,
        tonic::Streaming<pb::SubscribeResponse>,
    ),
    tonic::Status,
> {
    let mut stream = client
        .subscribe(pb::SubscribeRequest { cursor })
        .await?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no first message within 30 s"))??;
    Ok((first, stream))
}

/// Samples every running node (RSS, data dir, history files) for the soak's report.
fn sample_nodes(group: &Group, plan: soak::Plan, samples: &mut Vec<soak::Sample>) {
    let day = plan.day();
    for id in group.ids() {
        if let (Some(pid), Some(dir)) = (group.pid(id), group.data_dir(id)) {
            samples.extend(soak::sample(day, id, pid, dir));
        }
    }
}

/// A node's whole log (Subscribe from 0 to `last_seq`) and its order read models, and the
/// first seq the node still holds. Where retention deleted the node's oldest history (a
/// soak), the events before it come from the archive, which must hold them.
async fn read_node(
    addr: &str,
    last_seq: u64,
    archive: &soak::Archive,
) -> anyhow::Result<(NodeState, u64)> {
    let mut client =
        HubClient::new(group::channel(addr)).max_decoding_message_size(256 * 1024 * 1024);
    let (mut log, (mut pending, mut stream)) = match first_message(&mut client, 0).await {
        Ok(opened) => (Vec::new(), opened),
        Err(status) if status.code() == tonic::Code::OutOfRange => {
            let through = status
                .message()
                .split("up to seq ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .with_context(|| format!("{addr}: {}", status.message()))?;
            let prefix = archive.prefix(through).with_context(|| {
                format!("{addr} deleted the history through seq {through}, which the archive does not hold")
            })?;
            let stream = first_message(&mut client, through)
                .await
                .map_err(|s| anyhow::anyhow!("Subscribe({through}) on {addr}: {s}"))?;
            (prefix, stream)
        }
        Err(status) => bail!("Subscribe on {addr}: {status}"),
    };
    let prefix_len = log.len() as u64;
    while (log.len() as u64) < last_seq {
        let batch = match pending.take() {
            Some(batch) => batch,
            None => tokio::time::timeout(Duration::from_secs(30), stream.message())
                .await
                .with_context(|| format!("{addr}: the log stopped at {}", log.len()))??
                .with_context(|| format!("{addr}: the stream ended at {}", log.len()))?,
        };
        for event in &batch.events {
            log.push(convert::event_from_pb(event)?);
        }
    }
    log.truncate(last_seq as usize);
    // What came from the archive, the node no longer holds.
    let first_held = prefix_len + 1;
    // Every page of the listing.
    let mut orders = Vec::new();
    let mut after = String::new();
    loop {
        let page = client
            .list_orders(pb::ListOrdersRequest {
                status: 0,
                consistency: pb::Consistency::Local as i32,
                limit: 1_000,
                after,
            })
            .await?
            .into_inner();
        orders.extend(
            page.orders
                .into_iter()
                .map(|o| (o.id, o.version, o.total, o.last_seq)),
        );
        if page.next.is_empty() {
            break;
        }
        after = page.next;
    }
    Ok((NodeState { log, orders }, first_held))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedNode {
    log: Vec<pos_hub::domain::Event>,
    orders: Vec<(String, u64, i64, u64)>,
}

fn save_states(
    out: &Path,
    states: &BTreeMap<u64, NodeState>,
    confirmed: &[String],
) -> anyhow::Result<()> {
    for (id, state) in states {
        let saved = SavedNode {
            log: state.log.clone(),
            orders: state.orders.clone(),
        };
        std::fs::write(
            out.join(format!("node{id}.final.json")),
            serde_json::to_vec(&saved)?,
        )?;
    }
    std::fs::write(
        out.join("outbox-confirmed.json"),
        serde_json::to_vec(confirmed)?,
    )?;
    Ok(())
}

fn recheck(dir: &Path) -> anyhow::Result<ExitCode> {
    let history = history::read(&dir.join("history.jsonl"))?;
    let mut states = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(id) = name
            .strip_prefix("node")
            .and_then(|r| r.strip_suffix(".final.json"))
        {
            let saved: SavedNode = serde_json::from_slice(&std::fs::read(&path)?)?;
            states.insert(
                id.parse::<u64>()?,
                NodeState {
                    log: saved.log,
                    orders: saved.orders,
                },
            );
        }
    }
    if states.is_empty() {
        bail!("{}: no node*.final.json", dir.display());
    }
    let confirmed: Vec<String> = match std::fs::read(dir.join("outbox-confirmed.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes)?,
        Err(_) => Vec::new(),
    };
    let outcome = checker::check(&history, &states, &confirmed);
    std::fs::write(dir.join("timeline.svg"), report::svg(&history))?;
    for v in &outcome.violations {
        println!("{}: {}", v.check, v.detail);
    }
    println!("{} violations", outcome.violations.len());
    Ok(if outcome.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
