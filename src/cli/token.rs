//! `pos-hub keygen` and `pos-hub token issue|inspect`: the store's key pair and device tokens.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::auth::keys;
use crate::auth::token::{
    self, AUDIENCE, Claims, KeySet, LIFETIME_DEFAULT, LIFETIME_MAX_S, Role, Standing,
};
use crate::clock::now_s;

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
        /// Lifetime: seconds, or with a unit: 90s, 30m, 12h, 7d; at most 30d (hubs refuse
        /// longer tokens).
        #[arg(long, default_value = LIFETIME_DEFAULT)]
        ttl: String,
        /// A node's client URL, `http://HOST:PORT`: print the web app's pairing link
        /// `http://HOST:PORT/#/pair/TOKEN` instead of the bare token: opened on the device,
        /// it loads the app from that node, and the app keeps the token.
        #[arg(long, value_name = "URL")]
        pair_url: Option<String>,
    },
    /// Print a token's header algorithm, key id and claims; with --public-key, also
    /// verify it (give two keys during a rotation, as to `serve`).
    Inspect {
        token: String,
        #[arg(long, value_name = "FILE")]
        public_key: Vec<PathBuf>,
    },
    /// Print the key id (`kid`) of a store key, public or private: tokens name it in their
    /// header, and a hub logs the kids it accepts at start.
    Kid {
        /// `store.pub.pem` or `store.key.pem`.
        key: PathBuf,
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
    if seconds > LIFETIME_MAX_S {
        bail!("--ttl {ttl} is {seconds} s; hubs accept tokens of at most {LIFETIME_MAX_S} s (30d)");
    }
    Ok(seconds)
}

/// A checked `--pair-url`: a node's root, `http[s]://HOST[:PORT]` without a trailing `/`.
#[derive(Debug)]
pub struct PairUrl(String);

impl PairUrl {
    /// The web app's pairing link: the node's URL, then the app's `#/pair/TOKEN` route.
    pub fn link(&self, token: &str) -> String {
        format!("{}/#/pair/{token}", self.0)
    }
}

/// Checks `--pair-url`: it must be a node's root, where every node serves the app (a
/// trailing `/` is dropped); anything after it would make a link that does not open.
pub fn pair_url(url: &str) -> anyhow::Result<PairUrl> {
    let Some((scheme, rest)) = ["http://", "https://"]
        .into_iter()
        .find_map(|scheme| Some((scheme, url.strip_prefix(scheme)?)))
    else {
        bail!("--pair-url {url:?} must start with http:// or https://");
    };
    let authority = rest.trim_end_matches('/');
    let usage = "give a node's client URL, http://HOST:PORT";
    if authority
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "/?#@".contains(c))
    {
        bail!("--pair-url {url:?} has more than HOST:PORT after the scheme: {usage}");
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, port)) => (host, port),
            None => bail!("--pair-url {url:?}: an IPv6 address needs its closing `]`"),
        },
        None => match authority.find(':') {
            Some(colon) => authority.split_at(colon),
            None => (authority, ""),
        },
    };
    if host.is_empty() {
        bail!("--pair-url {url:?} has no host: {usage}");
    }
    if !port.is_empty() {
        let valid = port
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .is_some_and(|p| p != 0);
        if !valid {
            bail!("--pair-url {url:?}: the port must be a number from 1 to 65535");
        }
    }
    Ok(PairUrl(format!("{scheme}{authority}")))
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
            pair_url,
        } => {
            let Some(role) = Role::parse(&role) else {
                bail!("--role {role:?} is not one of till, kds, bds, manager, admin");
            };
            if device.is_empty() || tenant_id.is_empty() || store_id.is_empty() {
                bail!("--device, --tenant and --store must not be empty");
            }
            // Checked before signing, so a typo in the URL costs no token.
            let pair = pair_url.as_deref().map(self::pair_url).transpose()?;
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
            let token = token::issue(&key, &claims);
            match pair {
                Some(url) => println!("{}", url.link(&token)),
                None => println!("{token}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Inspect { token, public_key } => {
            let token = token.trim();
            let header = token::decode_unverified(token)?;
            println!("alg {}", header.alg);
            println!("kid {}", header.kid.as_deref().unwrap_or("(none)"));
            println!("{}", serde_json::to_string_pretty(&header.claims)?);
            if !public_key.is_empty() {
                let keys = public_key
                    .iter()
                    .map(|path| keys::load_verifying_key(path))
                    .collect::<Result<Vec<_>, _>>()?;
                let keys = KeySet::new(keys)?;
                // Offline: no log to say whether the device is revoked or known.
                match token::verify_with_grace(token, &keys, now_s(), 0, |_| Ok(Standing::Unknown))
                {
                    Ok(_) => println!("valid: signed by a key with kid in {:?}", keys.kids()),
                    Err(err) => {
                        println!("NOT VALID: {err}");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Kid { key } => {
            let text = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            let what = key.display().to_string();
            let public = match keys::verifying_key_from_pem(&text, &what) {
                Ok(public) => public,
                Err(_) => keys::signing_key_from_pem(&text, &what)
                    .with_context(|| format!("{what} is neither a public nor a private store key"))?
                    .verifying_key(),
            };
            println!("{}", token::kid_of(&public));
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{pair_url, parse_ttl};

    #[test]
    fn pairing_links_put_the_token_in_the_app_s_hash_route() {
        let token = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ0aWxsLTEifQ.c2ln";
        for (url, want) in [
            ("http://10.0.0.2:4001", "http://10.0.0.2:4001"),
            ("http://10.0.0.2:4001/", "http://10.0.0.2:4001"),
            ("https://hub-1.local:4001//", "https://hub-1.local:4001"),
            ("http://[fd00::5]:4001", "http://[fd00::5]:4001"),
            ("http://[::1]", "http://[::1]"),
            ("http://till-hub.local", "http://till-hub.local"),
        ] {
            assert_eq!(
                pair_url(url).expect(url).link(token),
                format!("{want}/#/pair/{token}"),
                "{url}"
            );
        }
    }

    #[test]
    fn bad_pairing_urls_are_refused_with_the_reason() {
        for (url, reason) in [
            ("10.0.0.2:4001", "must start with http:// or https://"),
            ("ftp://10.0.0.2:4001", "must start with http:// or https://"),
            (
                "HTTP://10.0.0.2:4001",
                "must start with http:// or https://",
            ),
            ("", "must start with http:// or https://"),
            ("http://", "has no host"),
            ("http:///", "has no host"),
            ("http://:4001", "has no host"),
            ("http://[]:4001", "has no host"),
            ("http://10.0.0.2:4001/app", "more than HOST:PORT"),
            ("http://10.0.0.2:4001/#/pair/x", "more than HOST:PORT"),
            ("http://10.0.0.2:4001?x=1", "more than HOST:PORT"),
            ("http://user@10.0.0.2:4001", "more than HOST:PORT"),
            ("http://10.0.0.2 :4001", "more than HOST:PORT"),
            ("http://10.0.0.2:4001\n", "more than HOST:PORT"),
            ("http://10.0.0.2:", "the port must be"),
            ("http://10.0.0.2:0", "the port must be"),
            ("http://10.0.0.2:65536", "the port must be"),
            ("http://10.0.0.2:40x1", "the port must be"),
            ("http://10.0.0.2:1:2", "the port must be"),
            ("http://[fd00::5:4001", "closing `]`"),
            ("http://[fd00::5]4001", "the port must be"),
        ] {
            let err = pair_url(url).expect_err(url).to_string();
            assert!(err.contains(reason), "{url:?}: {err}");
            assert!(err.contains(&format!("{url:?}")), "{url:?}: {err}");
        }
    }

    #[test]
    fn ttls_take_units_and_refuse_nonsense() {
        assert_eq!(parse_ttl("90").expect("ok"), 90);
        assert_eq!(parse_ttl("30m").expect("ok"), 1_800);
        assert_eq!(parse_ttl("12h").expect("ok"), 43_200);
        assert_eq!(parse_ttl("7d").expect("ok"), 604_800);
        assert_eq!(parse_ttl("30d").expect("the longest"), 30 * 86_400);
        for bad in ["", "d", "7w", "-1d", "0s", "31d", "2592001"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
        let err = parse_ttl("365d").expect_err("too long").to_string();
        assert!(err.contains("at most 2592000 s (30d)"), "{err}");
    }
}
