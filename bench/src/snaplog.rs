//! Snapshot build and install times, read from the nodes' logs: the store logs, at INFO
//! under the target `pos_hub::store` (or a module below it), `built snapshot` and
//! `installed snapshot` with the fields `last_seq` and `elapsed_ms`, in tracing's default
//! text format:
//!
//! ```text
//! 2026-11-25T12:00:00.123456Z  INFO pos_hub::store::snapshot: built snapshot last_seq=123 elapsed_ms=45
//! ```
//!
//! A line without `elapsed_ms` still counts (its time is then "not logged"); one without
//! `last_seq`, at another level or from another target does not.

use std::path::Path;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    Built,
    Installed,
}

/// One `built snapshot` or `installed snapshot` line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotLine {
    pub kind: SnapshotKind,
    pub last_seq: u64,
    /// `None`: the line carries no `elapsed_ms`.
    pub elapsed_ms: Option<f64>,
    /// Of `elapsed_ms`, the time an install spent fetching the history it lacked from a
    /// peer (`history_ms`, logged by installs of live-state snapshots).
    pub history_ms: Option<f64>,
}

const TARGET: &str = "pos_hub::store";

/// The snapshot line `line` is, if it is one.
pub fn parse_line(line: &str) -> Option<SnapshotLine> {
    let line = strip_ansi(line);
    // The level comes first, after the timestamp if there is one.
    let level = line.find("INFO ")?;
    if line[..level].split_whitespace().count() > 1 {
        return None;
    }
    let after_level = &line[level + "INFO ".len()..];
    // Spans (`name{fields}:`) may come before the target; the target ends at ": ".
    let start = after_level
        .match_indices(TARGET)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || after_level[..i].ends_with([' ', ':']))?;
    let rest = &after_level[start..];
    let (target, message) = rest.split_once(": ")?;
    if target != TARGET && !target.starts_with("pos_hub::store::") {
        return None;
    }
    let (kind, fields) = if let Some(f) = message.strip_prefix("built snapshot") {
        (SnapshotKind::Built, f)
    } else if let Some(f) = message.strip_prefix("installed snapshot") {
        (SnapshotKind::Installed, f)
    } else {
        return None;
    };
    if !(fields.is_empty() || fields.starts_with(' ')) {
        return None;
    }
    let field = |name: &str| {
        fields
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
    };
    Some(SnapshotLine {
        kind,
        last_seq: field("last_seq")?.parse().ok()?,
        elapsed_ms: field("elapsed_ms").and_then(|v| v.parse().ok()),
        history_ms: field("history_ms").and_then(|v| v.parse().ok()),
    })
}

/// The last `built snapshot` and the last `installed snapshot` line of a log's text.
pub fn last_in(text: &str) -> (Option<SnapshotLine>, Option<SnapshotLine>) {
    let (mut built, mut installed) = (None, None);
    for line in text.lines().filter_map(parse_line) {
        match line.kind {
            SnapshotKind::Built => built = Some(line),
            SnapshotKind::Installed => installed = Some(line),
        }
    }
    (built, installed)
}

/// Every `built snapshot` line of a log file, in order; a file that cannot be read has none.
pub fn builds_in_file(path: &Path) -> Vec<SnapshotLine> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(parse_line)
            .filter(|l| l.kind == SnapshotKind::Built)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The same, of a log file; a file that cannot be read has none.
pub fn last_in_file(path: &Path) -> (Option<SnapshotLine>, Option<SnapshotLine>) {
    match std::fs::read(path) {
        Ok(bytes) => last_in(&String::from_utf8_lossy(&bytes)),
        Err(_) => (None, None),
    }
}

/// `text` without terminal colour sequences (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(last_seq: u64, elapsed_ms: Option<f64>) -> Option<SnapshotLine> {
        Some(SnapshotLine {
            kind: SnapshotKind::Built,
            last_seq,
            elapsed_ms,
            history_ms: None,
        })
    }

    #[test]
    fn build_and_install_lines_give_their_seq_and_time() {
        assert_eq!(
            parse_line(
                "2026-11-25T12:00:00.123456Z  INFO pos_hub::store: built snapshot last_seq=123 elapsed_ms=45"
            ),
            built(123, Some(45.0))
        );
        assert_eq!(
            parse_line(
                "2026-11-25T12:00:01.000001Z  INFO pos_hub::store::state_machine::install: installed snapshot snapshot=1-2-3 last_seq=250000 receive_ms=12 history_ms=700 elapsed_ms=812.5"
            ),
            Some(SnapshotLine {
                kind: SnapshotKind::Installed,
                last_seq: 250_000,
                elapsed_ms: Some(812.5),
                history_ms: Some(700.0),
            })
        );
        // With spans before the target, and with colours.
        assert_eq!(
            parse_line(
                "2026-11-25T12:00:00Z  INFO raft{id=1 role=\"leader\"}:pos_hub::store::snapshot: built snapshot elapsed_ms=7 last_seq=9"
            ),
            built(9, Some(7.0))
        );
        assert_eq!(
            parse_line(
                "\u{1b}[2m2026-11-25T12:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mpos_hub::store\u{1b}[0m\u{1b}[2m:\u{1b}[0m built snapshot \u{1b}[3mlast_seq\u{1b}[0m\u{1b}[2m=\u{1b}[0m5 \u{1b}[3melapsed_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m6"
            ),
            built(5, Some(6.0))
        );
    }

    #[test]
    fn a_line_without_its_time_counts_with_the_time_not_logged() {
        // Today's store: the snapshot id and last_seq, no elapsed_ms.
        assert_eq!(
            parse_line(
                "2026-11-25T12:00:00.1Z  INFO pos_hub::store::snapshot: built snapshot snapshot=3-4-5000 last_seq=5000"
            ),
            built(5000, None)
        );
        assert_eq!(
            parse_line(
                "2026-11-25T12:00:00Z  INFO pos_hub::store: built snapshot last_seq=5 elapsed_ms=soon"
            ),
            built(5, None)
        );
    }

    #[test]
    fn other_lines_are_not_snapshot_lines() {
        for line in [
            "",
            "garbage",
            // Another level, another target, another message.
            "2026-11-25T12:00:00Z  WARN pos_hub::store: built snapshot last_seq=1 elapsed_ms=2",
            "2026-11-25T12:00:00Z DEBUG pos_hub::store: built snapshot last_seq=1 elapsed_ms=2",
            "2026-11-25T12:00:00Z  INFO pos_hub::raft: built snapshot last_seq=1 elapsed_ms=2",
            "2026-11-25T12:00:00Z  INFO pos_hub::storefront: built snapshot last_seq=1 elapsed_ms=2",
            "2026-11-25T12:00:00Z  INFO openraft::core: built snapshot last_seq=1 elapsed_ms=2",
            "2026-11-25T12:00:00Z  INFO pos_hub::store: building snapshot last_seq=1",
            "2026-11-25T12:00:00Z  INFO pos_hub::store: built snapshots last_seq=1",
            "2026-11-25T12:00:00Z  INFO pos_hub::store: dropping a state machine generation",
            // No seq, or not a number.
            "2026-11-25T12:00:00Z  INFO pos_hub::store: built snapshot elapsed_ms=2",
            "2026-11-25T12:00:00Z  INFO pos_hub::store: built snapshot last_seq=x elapsed_ms=2",
            "2026-11-25T12:00:00Z  INFO pos_hub::store: built snapshot my_last_seq=4",
            // The words in another line's message.
            "2026-11-25T12:00:00Z  INFO pos_hub::api: a client said built snapshot last_seq=1",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn the_last_build_and_the_last_install_of_a_log_are_found() {
        let log = "\
2026-11-25T12:00:00Z  INFO pos_hub::store: built snapshot last_seq=100 elapsed_ms=10
2026-11-25T12:00:01Z  WARN pos_hub::raft: slow
2026-11-25T12:00:02Z  INFO pos_hub::store: installed snapshot last_seq=150 elapsed_ms=30
2026-11-25T12:00:03Z  INFO pos_hub::store: built snapshot last_seq=200 elapsed_ms=20
not a log line
";
        let (b, i) = last_in(log);
        assert_eq!(b, built(200, Some(20.0)));
        assert_eq!(
            i.map(|i| (i.kind, i.last_seq)),
            Some((SnapshotKind::Installed, 150))
        );
        assert_eq!(
            last_in("2026-11-25T12:00:01Z  WARN pos_hub::raft: slow\n"),
            (None, None)
        );
        assert_eq!(
            last_in_file(Path::new("/nonexistent/node9.log")),
            (None, None)
        );
    }
}
