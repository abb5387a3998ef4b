//! The browser app end to end: `web/e2e/*.spec.ts` drive Debian's Chromium through
//! Playwright against real 3-node groups of this build's `pos-hub` (till → kitchen, a
//! node killed mid-edit, a reload with every node down, two tills on one order, refused
//! tokens). Run by the README's test command, so the app cannot rot.
//!
//! It first checks that the committed `web/src/gen` and `web/dist` are what `web/`'s
//! sources build: the binary serves `web/dist`, so a stale bundle would be tested and
//! shipped. Needs Node.js and `/usr/bin/chromium` (`.ci/run` installs what is missing);
//! `web/node_modules` is installed with `npm ci` when absent.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_pos-hub");

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

fn run(what: &str, command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|err| panic!("{what}: cannot start {command:?}: {err}"));
    assert!(status.success(), "{what} failed ({status})");
}

#[test]
fn the_browser_app_works_against_a_real_group_in_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "the browser tests need Chromium at {chromium} (Debian: `apt-get install chromium`; \
         `.ci/run` installs it), or CHROMIUM=/path/to/chromium"
    );
    let web = web_dir();
    if !web.join("node_modules").join(".package-lock.json").exists() {
        run(
            "npm ci (web/)",
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&web),
        );
    }
    run(
        "web/src/gen and web/dist up to date with web/ (npm run check)",
        Command::new("node")
            .arg("scripts/check-built.mjs")
            .current_dir(&web),
    );
    run(
        "the Playwright tests (web/e2e)",
        Command::new("npx")
            .args(["playwright", "test"])
            .current_dir(&web)
            .env("POS_HUB_BIN", BIN)
            .env("CHROMIUM", &chromium),
    );
}
