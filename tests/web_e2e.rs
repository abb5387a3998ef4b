//! The browser app end to end: `web/e2e/*.spec.ts` drive Debian's Chromium through
//! Playwright against real 3-node groups of this build's `pos-hub` (till → kitchen, a
//! node killed mid-edit, a reload with every node down, two tills on one order, refused
//! tokens, a till whose cursor the store's retention passed). Run by the README's test command, so the app cannot rot.
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
    let status = Command::new("npx")
        .args(["playwright", "test"])
        .current_dir(&web)
        .env("POS_HUB_BIN", BIN)
        .env("CHROMIUM", &chromium)
        .status()
        .unwrap_or_else(|err| panic!("cannot start the Playwright tests: {err}"));
    if !status.success() {
        let report = web.join("test-results").join("report.json");
        let failures = match std::fs::read_to_string(&report) {
            Ok(text) => failures(&text),
            Err(err) => format!("(no report at {}: {err})", report.display()),
        };
        panic!("the Playwright tests (web/e2e) failed ({status}):\n{failures}");
    }
}

/// Each failed test of a Playwright JSON report: its title, its errors and what it
/// printed, without terminal colours.
fn failures(report: &str) -> String {
    let report: serde_json::Value = match serde_json::from_str(report) {
        Ok(report) => report,
        Err(err) => return format!("(the report is not JSON: {err})"),
    };
    let mut out = String::new();
    let mut suites: Vec<&serde_json::Value> =
        report["suites"].as_array().into_iter().flatten().collect();
    while let Some(suite) = suites.pop() {
        suites.extend(suite["suites"].as_array().into_iter().flatten());
        for spec in suite["specs"].as_array().into_iter().flatten() {
            let results = spec["tests"].as_array().into_iter().flatten();
            for result in results.flat_map(|t| t["results"].as_array().into_iter().flatten()) {
                if matches!(result["status"].as_str(), Some("passed" | "skipped")) {
                    continue;
                }
                let title = spec["title"].as_str().unwrap_or("?");
                let file = spec["file"].as_str().unwrap_or("?");
                out.push_str(&format!("=== FAILED {file}: {title}\n"));
                for error in result["errors"].as_array().into_iter().flatten() {
                    let message = error["message"].as_str().unwrap_or("");
                    out.push_str(&uncoloured(message));
                    out.push('\n');
                }
                for line in result["stdout"].as_array().into_iter().flatten() {
                    out.push_str(&uncoloured(line["text"].as_str().unwrap_or("")));
                }
            }
        }
    }
    out
}

/// `text` without ANSI colour sequences (ESC [ … m).
fn uncoloured(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
