//! pos-hub-bench (also run as `pos-hub bench`): starts a group (or targets one) and
//! measures it; see the `pos_hub_bench` library. The command line lives here; `anyhow`
//! lives here only.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use pos_hub_bench::{self as bench, BenchPlan, load::Pacing};

/// Measure a group: append latency and throughput, propagation, process costs.
#[derive(Debug, Parser)]
#[command(name = "pos-hub-bench", version)]
struct BenchArgs {
    /// Nodes to start on loopback (1, 3 or 5), each with a fresh data dir.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Measure a running group instead: its nodes' client addresses (HOST:PORT,…). It must
    /// run without device tokens (`--insecure-no-auth`); process costs are then not read.
    #[arg(long, value_delimiter = ',')]
    target: Vec<String>,
    /// Concurrent appending clients (tills), spread over the nodes.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long the load runs.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Open loop: offer this many appends per second in total, on a fixed schedule. Without
    /// it, each client sends its next append when the last is acknowledged (closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Live subscribers (screens) besides the relay one, spread over the nodes.
    #[arg(long, default_value_t = 0)]
    subscribers: usize,
    /// SIGKILL the leader halfway through; report the time to the first acknowledged append
    /// after it, then restart it and report its catch-up time.
    #[arg(long)]
    failover: bool,
    /// After the load, read the whole log from cursor 0 and report events per second.
    #[arg(long)]
    catch_up: bool,
    /// Then run the same load against NATS JetStream and etcd, each a 3-node group on this
    /// machine at the same durability (install them with bench/peers.sh).
    #[arg(long)]
    compare: bool,
    /// Where the started nodes keep their data (and the fsync probe runs). Default: a new
    /// directory under the system's temporary directory, removed afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the data dirs and node logs.
    #[arg(long)]
    keep: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// First fill the started group with this many events of order flows (created, updated
    /// twice, paid; 0.5–2 KB each; from --clients clients) and measure it against issue
    /// 18's targets: RSS at 25% and at the end, data dir against the events' JSON, catch-up
    /// from cursor 0, the last snapshot build and install (from the nodes' logs), and a
    /// fresh node added with `pos-hub cluster add-node` until it serves reads.
    #[arg(long)]
    hold: Option<u64>,
    /// Events per Append while filling for --hold (a till flushing its outbox).
    #[arg(long, default_value_t = 50)]
    hold_batch: usize,
    /// Orders open at any time while filling for --hold, over all clients (each keeps at
    /// least one).
    #[arg(long, default_value_t = bench::hold::DEFAULT_OPEN_ORDERS)]
    hold_open: usize,
    /// The seed of the --hold order flows (decimal or 0x-hex): the same seed, clients and
    /// counts give the same events.
    #[arg(long, default_value_t = bench::hold::DEFAULT_SEED, value_parser = parse_seed)]
    seed: u64,
    /// Extra `serve` flags for the started nodes, e.g. `--serve-arg=--snapshot-every=100000`.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// The `pos-hub` executable the started nodes run. Default: the one next to this
    /// executable (`pos-hub bench` passes itself).
    #[arg(long, env = "POS_HUB_BIN")]
    hub_bin: Option<PathBuf>,
}

/// Parses the command line, runs the bench, and turns its result into an exit code.
fn main() -> ExitCode {
    let args = BenchArgs::parse();
    // The bench reports on stdout; only what goes wrong is logged.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.target.is_empty() && !(1..=5).contains(&args.nodes) {
        bail!("--nodes must be 1 to 5, got {}", args.nodes);
    }
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if args.seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    let pacing = match args.rate {
        None => Pacing::Closed,
        Some(rate) if rate.is_finite() && rate > 0.0 => Pacing::Open { per_second: rate },
        Some(rate) => bail!("--rate must be a positive number of appends per second, got {rate}"),
    };
    if args.compare && !args.target.is_empty() {
        bail!("--compare starts its own groups; it cannot be used with --target");
    }
    if args.failover && !args.target.is_empty() {
        bail!("--failover kills a node the bench started; it cannot be used with --target");
    }
    if args.failover && args.nodes < 3 {
        bail!("--failover needs --nodes 3 or 5 (a group that survives losing its leader)");
    }
    if args.hold.is_some() && !args.target.is_empty() {
        bail!("--hold measures nodes the bench started; it cannot be used with --target");
    }
    if args.hold == Some(0) {
        bail!("--hold must be at least 1 event");
    }
    if !(1..=1000).contains(&args.hold_batch) {
        bail!(
            "--hold-batch must be 1 to 1000 events per append, got {}",
            args.hold_batch
        );
    }
    if args.hold_open == 0 {
        bail!("--hold-open must be at least 1 order");
    }
    let hub_bin = match args.hub_bin.clone() {
        Some(path) => path,
        None => std::env::current_exe()
            .context("finding this executable")?
            .with_file_name(format!("pos-hub{}", std::env::consts::EXE_SUFFIX)),
    };
    if args.target.is_empty() && !hub_bin.is_file() {
        bail!(
            "{} does not exist: build it (`cargo build --release -p pos-hub`) or pass --hub-bin",
            hub_bin.display()
        );
    }
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("pos-hub-bench-{}", std::process::id()))
    });
    let plan = BenchPlan {
        nodes: args.nodes,
        hub_bin,
        targets: args.target.clone(),
        clients: args.clients,
        duration: Duration::from_secs(args.seconds),
        pacing,
        subscribers: args.subscribers,
        failover: args.failover,
        catch_up: args.catch_up,
        dir: dir.clone(),
        keep: args.keep,
        serve_args: args.serve_args.clone(),
        progress: !args.quiet,
        compare: args.compare,
        hold: args.hold.map(|events| bench::hold::HoldPlan {
            events,
            batch: args.hold_batch,
            open_orders: args.hold_open,
            seed: args.seed,
        }),
    };
    let report = bench::run(&plan).await;
    if !args.keep && args.target.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let report = report?;
    print!("{report}");
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).context("encoding the results")?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A seed in decimal or as 0x-prefixed hex.
fn parse_seed(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| format!("{text:?} is not a seed (decimal or 0x-hex): {e}"))
}
