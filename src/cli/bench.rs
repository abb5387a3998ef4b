//! `pos-hub bench`: runs the bench, a program of its own (`pos-hub-bench`, the `bench/`
//! crate) so that the hub does not carry it. Every argument goes to it as it is, and its
//! exit code comes back; the nodes it starts run this executable.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};

use anyhow::{Context, bail};

/// The bench's executable, looked for next to this one, then on `PATH`.
const BENCH: &str = "pos-hub-bench";

#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct BenchArgs {
    /// Arguments of pos-hub-bench (`pos-hub bench --help` shows them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let me = std::env::current_exe().context("finding this executable")?;
    let name = format!("{BENCH}{}", std::env::consts::EXE_SUFFIX);
    let Some(bench) = locate(&name, me.parent(), std::env::var_os("PATH").as_deref()) else {
        bail!(
            "{BENCH} is neither next to {} nor on PATH: build it with \
             `cargo build --release -p pos-hub-bench`",
            me.display()
        );
    };
    let status = Command::new(&bench)
        .args(&args.args)
        .env("POS_HUB_BIN", &me)
        .status()
        .with_context(|| format!("running {}", bench.display()))?;
    Ok(exit_code(status))
}

/// The file `name` in `dir`, else in the first directory of `path` (a `PATH` value) that
/// has it.
fn locate(name: &str, dir: Option<&Path>, path: Option<&OsStr>) -> Option<PathBuf> {
    dir.map(Path::to_owned)
        .into_iter()
        .chain(path.into_iter().flat_map(std::env::split_paths))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The bench's exit code as this process's; killed by a signal, 128 + its number, as a
/// shell reports it.
fn exit_code(status: ExitStatus) -> ExitCode {
    if let Some(code) = status.code() {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return ExitCode::from(u8::try_from(128 + signal).unwrap_or(1));
    }
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_next_to_this_executable_comes_before_the_one_on_path() {
        let here = tempfile::tempdir().expect("tempdir");
        let on_path = tempfile::tempdir().expect("tempdir");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        std::fs::write(on_path.path().join(BENCH), "").expect("write");
        let path = std::env::join_paths([elsewhere.path(), on_path.path()]).expect("a PATH value");
        assert_eq!(
            locate(BENCH, Some(here.path()), Some(&path)),
            Some(on_path.path().join(BENCH)),
            "found on PATH when not next to this executable"
        );
        std::fs::write(here.path().join(BENCH), "").expect("write");
        assert_eq!(
            locate(BENCH, Some(here.path()), Some(&path)),
            Some(here.path().join(BENCH))
        );
        assert_eq!(locate(BENCH, Some(elsewhere.path()), None), None);
    }
}
