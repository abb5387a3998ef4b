//! The command line: clap parsing, then calls into the library. `anyhow` lives here only.

mod bench;
mod certs;
mod client;
mod cluster;
mod log;
mod serve;
mod till;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::domain::Realm;

#[derive(Debug, Parser)]
#[command(
    name = "pos-hub",
    version,
    about = "The in-store hub of an offline-first point of sale"
)]
struct Cli {
    /// Log format on stderr: `text` for people, `json` for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a hub node (`--dev`: one node on this machine).
    Serve(Box<serve::ServeArgs>),
    /// Talk to a hub over its client API: append, tail, orders, status.
    Client(client::ClientArgs),
    /// Look at and change the group's membership and leadership.
    Cluster(cluster::ClusterArgs),
    /// Append events to, or read, the event log in a data dir (through a one-node Raft group).
    Log(log::LogArgs),
    /// Make the store's Ed25519 key pair (PEM) for signing device tokens.
    Keygen(token::KeygenArgs),
    /// Issue or inspect device tokens.
    Token(token::TokenArgs),
    /// Make the store CA and node certificates for mutual TLS between nodes.
    Certs(certs::CertsArgs),
    /// Measure a group: append latency and throughput, propagation, process costs (runs
    /// pos-hub-bench).
    Bench(bench::BenchArgs),
}

/// Which store's log, and where it lives on disk.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Directory holding this node's database and snapshots.
    #[arg(long, global = true, default_value = "data")]
    pub data_dir: PathBuf,
    /// Tenant of this store's realm.
    #[arg(
        long = "tenant",
        global = true,
        env = "TENANT_ID",
        default_value = "t-demo"
    )]
    pub tenant_id: String,
    /// Store of this realm.
    #[arg(
        long = "store",
        global = true,
        env = "STORE_ID",
        default_value = "s-001"
    )]
    pub store_id: String,
    /// Take a Raft snapshot (after which older log entries may be purged) every N entries.
    #[arg(long, global = true, default_value_t = crate::raft::local::SNAPSHOT_EVERY_LOG_ENTRIES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: u64,
}

impl StoreArgs {
    pub fn realm(&self) -> Realm {
        Realm::new(self.tenant_id.clone(), self.store_id.clone())
    }
}

/// Parses the command line, runs the command, and turns its result into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The local one-shot commands die quietly when the reader of their output goes away
    // (`pos-hub log dump | head`), as shell tools do. Everything that talks over sockets
    // keeps Rust's default of ignoring SIGPIPE: with the default disposition, a write to a
    // connection the other side has reset kills the process, which is how the chaos
    // harness found nodes dying when a partition healed (and a till hanging up mid-stream
    // could do the same).
    if matches!(
        cli.command,
        Command::Log(_) | Command::Keygen(_) | Command::Token(_) | Command::Certs(_)
    ) {
        #[cfg(unix)]
        // SAFETY: called before the runtime or any other thread exists; resetting a
        // signal's disposition to its default has no other effect on the program.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if matches!(cli.command, Command::Serve(_)) {
        // Before the runtime's threads: fixed heap thresholds, so a node's freed memory
        // goes back to the kernel (`crate::memory`).
        crate::memory::configure();
    }
    // A node reports what it does; one-shot commands only what goes wrong.
    let default_filter = match cli.command {
        Command::Serve(_) => "pos_hub=info,warn",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Client(args) => client::run(args).await,
            Command::Cluster(args) => cluster::run(args).await,
            Command::Log(args) => log::run(args).await,
            Command::Keygen(args) => token::keygen(args),
            Command::Token(args) => token::run(args),
            Command::Certs(args) => certs::run(args),
            Command::Bench(args) => bench::run(args),
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
