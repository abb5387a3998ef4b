//! The command line: clap parsing, then calls into the library. `anyhow` lives here only.

mod log;

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Append events to, or read, the event log in a data dir (through a one-node Raft group).
    Log(log::LogArgs),
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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Log(args) => log::run(args).await,
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
