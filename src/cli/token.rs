//! `pos-hub keygen` and `pos-hub token issue|inspect`: the store's key pair and device tokens.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::auth::keys;
use crate::auth::token::{self, AUDIENCE, Claims, Role};

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write `store.key.pem` (private; keep it off the hubs) and `store.pub.pem`.
    #[arg(long, default_value = ".")]
    out_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TokenCommand {
    /// Sign a device token and print it.
    Issue {
        /// The store's private key (PEM), from `pos-hub keygen`.
        #[arg(long)]
        key: PathBuf,
        #[arg(long = "tenant", env = "TENANT_ID")]
        tenant_id: String,
        #[arg(long = "store", env = "STORE_ID")]
        store_id: String,
        /// The device's id: events it writes must carry it as actor.deviceId.
        #[arg(long)]
        device: String,
        /// till | kds | bds | manager | admin
        #[arg(long)]
        role: String,
        /// Lifetime: seconds, or with a unit: 90s, 30m, 12h, 7d.
        #[arg(long, default_value = "30d")]
        ttl: String,
    },
    /// Print a token's header algorithm and claims; with --public-key, also verify it.
    Inspect {
        token: String,
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
}

/// Parses `90`, `90s`, `30m`, `12h`, `7d` into seconds.
pub fn parse_ttl(ttl: &str) -> anyhow::Result<u64> {
    let ttl = ttl.trim();
    let (number, unit) = match ttl.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => ttl.split_at(i),
        None => (ttl, "s"),
    };
    let n: u64 = number
        .parse()
        .with_context(|| format!("--ttl {ttl:?} is not a number with s, m, h or d"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3_600),
        "d" => n.saturating_mul(86_400),
        _ => bail!("--ttl {ttl:?}: the unit must be s, m, h or d"),
    };
    if seconds == 0 {
        bail!("--ttl must be longer than zero");
    }
    Ok(seconds)
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let (private, public) = keys::generate()?;
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let key_path = args.out_dir.join("store.key.pem");
    let pub_path = args.out_dir.join("store.pub.pem");
    if key_path.exists() {
        bail!(
            "{} exists; refusing to overwrite a store key",
            key_path.display()
        );
    }
    write_private(&key_path, &private)?;
    std::fs::write(&pub_path, public).with_context(|| format!("writing {}", pub_path.display()))?;
    println!("{}\n{}", key_path.display(), pub_path.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes the private key readable by its owner only.
fn write_private(path: &std::path::Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(pem.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        TokenCommand::Issue {
            key,
            tenant_id,
            store_id,
            device,
            role,
            ttl,
        } => {
            let Some(role) = Role::parse(&role) else {
                bail!("--role {role:?} is not one of till, kds, bds, manager, admin");
            };
            if device.is_empty() || tenant_id.is_empty() || store_id.is_empty() {
                bail!("--device, --tenant and --store must not be empty");
            }
            let key = keys::load_signing_key(&key)?;
            let now = now_s();
            let claims = Claims {
                aud: AUDIENCE.into(),
                sub: device,
                tenant_id,
                store_id,
                role,
                exp: now.saturating_add(parse_ttl(&ttl)?),
                nbf: now,
                iat: now,
            };
            println!("{}", token::issue(&key, &claims));
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Inspect { token, public_key } => {
            let (alg, claims) = token::decode_unverified(&token)?;
            println!("alg {alg}");
            println!("{}", serde_json::to_string_pretty(&claims)?);
            if let Some(path) = public_key {
                let key = keys::load_verifying_key(&path)?;
                match token::verify(&token, &key, now_s()) {
                    Ok(_) => println!("valid: signed by {}", path.display()),
                    Err(err) => {
                        println!("NOT VALID: {err}");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttls_take_units_and_refuse_nonsense() {
        assert_eq!(parse_ttl("90").expect("ok"), 90);
        assert_eq!(parse_ttl("30m").expect("ok"), 1_800);
        assert_eq!(parse_ttl("12h").expect("ok"), 43_200);
        assert_eq!(parse_ttl("7d").expect("ok"), 604_800);
        for bad in ["", "d", "7w", "-1d", "0s"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }
}
