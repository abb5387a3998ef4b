//! `pos-hub certs init|issue`: the store's certificate authority and node certificates for
//! mutual TLS on the peer port (replaces mkcert).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;

use crate::auth::tls;

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CertsCommand {
    /// Make the store CA (`ca.pem`, `ca.key.pem`); keep `ca.key.pem` off the hubs.
    Init {
        #[arg(long, default_value = "ca")]
        out_dir: PathBuf,
        /// Replace an existing CA in --out-dir. Every node certificate issued by the old
        /// one stops being trusted by nodes given the new `ca.pem`.
        #[arg(long)]
        force: bool,
    },
    /// Issue a node's certificate into its TLS dir (`ca.pem`, `node.pem`, `node.key.pem`),
    /// for `serve --peer-tls DIR`.
    Issue {
        #[arg(long, default_value = "ca")]
        ca_dir: PathBuf,
        #[arg(long)]
        node: u64,
        /// Names and IP addresses the node is reached at (repeat, or comma-separated).
        #[arg(long = "host", value_delimiter = ',', required = true)]
        hosts: Vec<String>,
        #[arg(long)]
        out_dir: PathBuf,
        /// Replace the files of an existing TLS dir in --out-dir.
        #[arg(long)]
        force: bool,
    },
}

fn existing(force: bool) -> tls::Existing {
    if force {
        tls::Existing::Replace
    } else {
        tls::Existing::Refuse
    }
}

pub fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        CertsCommand::Init { out_dir, force } => {
            tls::init_ca_with(&out_dir, existing(force))?;
            println!("{}", out_dir.join(tls::CA_CERT).display());
        }
        CertsCommand::Issue {
            ca_dir,
            node,
            hosts,
            out_dir,
            force,
        } => {
            if node == 0 {
                bail!("--node: node ids start at 1");
            }
            tls::issue_node_with(&ca_dir, node, &hosts, &out_dir, existing(force))?;
            println!("{}", out_dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
