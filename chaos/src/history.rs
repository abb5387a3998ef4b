//! The history of a run: every operation the workload invoked and what came back, every
//! batch a Subscribe stream delivered, and every fault the nemesis started and ended, as
//! JSON lines (`history.jsonl`), in the order they happened. Times are milliseconds since
//! the run started.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// One event of an Append as the workload sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    pub id: String,
    pub aggregate: String,
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub device: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Accepted,
    Duplicate,
    Rejected,
}

/// The hub's answer for one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub id: String,
    pub status: Status,
    /// ACCEPTED: its seq; DUPLICATE: the seq of its first acceptance.
    pub seq: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub code: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Call {
    Append { events: Vec<Sent> },
    Read { order: String, linearizable: bool },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Reply {
    Append {
        answers: Vec<Answer>,
    },
    /// `last_seq` is the seq of the last event applied to the order (0: not found).
    Read {
        version: u64,
        last_seq: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Start,
    End,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    Invoke {
        op: u64,
        process: u32,
        t: f64,
        node: u64,
        call: Call,
    },
    Ok {
        op: u64,
        t: f64,
        reply: Reply,
    },
    /// Definitely did not happen (refused before anything was proposed).
    Fail {
        op: u64,
        t: f64,
        error: String,
    },
    /// Unknown: a timeout or a lost connection; it may or may not have happened.
    Info {
        op: u64,
        t: f64,
        error: String,
    },
    /// A Subscribe stream delivered these `(seq, eventId)`s; `from` is the last seq the
    /// stream had delivered before them (across reconnects, which reopen from it).
    Deliver {
        stream: u32,
        node: u64,
        t: f64,
        from: u64,
        events: Vec<(u64, String)>,
    },
    Fault {
        t: f64,
        name: String,
        phase: Phase,
        detail: String,
        /// Whether a majority of voters could still talk to each other during the fault.
        majority_up: bool,
    },
}

/// Appends entries to `history.jsonl` and keeps them in memory; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<RecorderInner>>,
    start: Instant,
}

struct RecorderInner {
    file: std::io::BufWriter<std::fs::File>,
    entries: Vec<Entry>,
    next_op: u64,
}

impl Recorder {
    pub fn create(path: &Path) -> std::io::Result<Recorder> {
        let file = std::fs::File::create(path)?;
        Ok(Recorder {
            inner: Arc::new(Mutex::new(RecorderInner {
                file: std::io::BufWriter::new(file),
                entries: Vec::new(),
                next_op: 1,
            })),
            start: Instant::now(),
        })
    }

    /// Milliseconds since the run started.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecorderInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn next_op(&self) -> u64 {
        let mut inner = self.lock();
        let op = inner.next_op;
        inner.next_op += 1;
        op
    }

    pub fn record(&self, entry: Entry) {
        let mut inner = self.lock();
        if let Ok(line) = serde_json::to_string(&entry) {
            let _ = writeln!(inner.file, "{line}");
        }
        inner.entries.push(entry);
    }

    pub fn entries(&self) -> Vec<Entry> {
        let mut inner = self.lock();
        let _ = inner.file.flush();
        inner.entries.clone()
    }
}

/// Reads a history file back.
pub fn read(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let file = std::fs::File::open(path)?;
    let mut entries = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{}: line {}: {e}", path.display(), n + 1))?;
        entries.push(entry);
    }
    Ok(entries)
}
