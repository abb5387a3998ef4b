//! The soak (`run --store-days N`): N days of a store put through in the run's minutes,
//! with the faults on. Every node's wall clock runs `rate` times as fast from the run's
//! start (`serve --clock-rate`, `--clock-epoch-ms`), and so do the devices' event ids and
//! times, so lock leases, hub times and retention see days go by. An archiver, the cloud
//! bridge's stand-in, keeps every committed event (the checker reads the history the hubs
//! deleted from it) and moves the store's archive mark through what it holds every
//! quarter day, keeping one day: the hubs delete history files as a shop's would. Each
//! node's RSS, data dir and history files are sampled every quarter day, for the report's
//! table and picture.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pos_hub::domain::Event;
use pos_hub::proto::pb::hub_client::HubClient;
use pos_hub::proto::{convert, pb};
use tokio::sync::watch;

use crate::group::{STORE, TENANT, channel_with_timeout};
use crate::workload::OP_TIMEOUT;

pub const DAY_MS: u64 = 86_400_000;
/// Days the hubs keep behind the archive mark: the least a store may keep (the eventId
/// dedupe window). A history file goes a day after that (`ID_CLOCK_AHEAD_MS`), so a soak
/// shows retention deleting from day 9 on.
pub const RETAIN_DAYS: u64 = pos_hub::domain::rules::RETAIN_DAYS_MIN;
/// The first day whose end the history should stay level from.
const LEVEL_FROM_DAY: u32 =
    RETAIN_DAYS as u32 + (pos_hub::domain::rules::ID_CLOCK_AHEAD_MS / DAY_MS) as u32 + 1;
/// How many times a day the archive mark moves and the nodes are sampled.
pub const TICKS_PER_DAY: u32 = 4;
/// The archiver's device id.
const ARCHIVER: &str = "archiver";

/// (epoch ms, rate) of the run's clock, once a soak sets it.
static CLOCK: OnceLock<(u64, u32)> = OnceLock::new();

/// Makes the workload's clock run `rate` times as fast from `epoch_ms` on, as the nodes'.
pub fn set_clock(epoch_ms: u64, rate: u32) {
    let _ = CLOCK.set((epoch_ms, rate));
}

/// The run's time now (ms since the Unix epoch): the wall clock, or in a soak the same
/// faster clock as the nodes'.
pub fn now_ms() -> u64 {
    let wall = pos_hub::clock::now_ms();
    match CLOCK.get() {
        Some(&(epoch_ms, rate)) => pos_hub::clock::dilated_ms(epoch_ms, rate, wall),
        None => wall,
    }
}

/// A UUIDv7 made at the run's time now.
pub fn event_id() -> String {
    let ms = now_ms();
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        ms / 1_000,
        u32::try_from(ms % 1_000).unwrap_or(0) * 1_000_000,
    );
    uuid::Uuid::new_v7(ts).to_string()
}

/// The soak's shape: how many days, and how long a day lasts in real time.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub days: u32,
    pub epoch_ms: u64,
    pub rate: u32,
}

impl Plan {
    /// `days` in `minutes` of real time, from now.
    pub fn new(days: u32, minutes: f64) -> anyhow::Result<Plan> {
        anyhow::ensure!(days >= 2, "a soak needs at least 2 store-days");
        let day_real_ms = minutes * 60_000.0 / f64::from(days);
        anyhow::ensure!(
            day_real_ms >= 20_000.0,
            "a store-day needs at least 20 s of real time"
        );
        let rate = (DAY_MS as f64 / day_real_ms).round() as u32;
        Ok(Plan {
            days,
            epoch_ms: pos_hub::clock::now_ms(),
            rate: rate.max(2),
        })
    }

    /// The `serve` flags that put a node on this plan's clock.
    pub fn hub_args(&self) -> Vec<String> {
        vec![
            format!("--clock-rate={}", self.rate),
            format!("--clock-epoch-ms={}", self.epoch_ms),
        ]
    }

    /// Real time between two ticks (a quarter day).
    pub fn tick(&self) -> Duration {
        Duration::from_millis(DAY_MS / u64::from(self.rate) / u64::from(TICKS_PER_DAY))
    }

    /// Store-days gone by now.
    pub fn day(&self) -> f64 {
        now_ms().saturating_sub(self.epoch_ms) as f64 / DAY_MS as f64
    }
}

/// Every committed event the archiver has kept, in seq order from seq 1, and the marks
/// it set.
#[derive(Default)]
pub struct Archive {
    pub events: Mutex<Vec<Event>>,
    pub marks: Mutex<Vec<(f64, u64)>>,
}

impl Archive {
    fn len(&self) -> u64 {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).len() as u64
    }

    /// The kept events of seqs 1..=`through`, if it holds them all.
    pub fn prefix(&self, through: u64) -> Option<Vec<Event>> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events
            .get(..usize::try_from(through).ok()?)
            .map(<[Event]>::to_vec)
    }
}

/// The archiver: follows the committed log on one node after another (whichever answers),
/// keeping every event, and every tick appends the archive mark through what it holds.
pub async fn archiver(
    nodes: Arc<Mutex<BTreeMap<u64, String>>>,
    plan: Plan,
    archive: Arc<Archive>,
    mut stop: watch::Receiver<bool>,
) {
    let mut turn = 0usize;
    let mut next_mark = tokio::time::Instant::now() + plan.tick();
    while !*stop.borrow() {
        let addrs: Vec<String> = nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let Some(addr) = addrs.get(turn % addrs.len().max(1)).cloned() else {
            return;
        };
        turn += 1;
        let mut client = HubClient::new(channel_with_timeout(&addr, OP_TIMEOUT))
            .max_decoding_message_size(64 << 20);
        let request = pb::SubscribeRequest {
            cursor: archive.len(),
        };
        let mut stream = match tokio::time::timeout(OP_TIMEOUT, client.subscribe(request)).await {
            Ok(Ok(reply)) => reply.into_inner(),
            _ => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                m = stream.message() => m,
                _ = stop.changed() => return,
                () = tokio::time::sleep_until(next_mark) => {
                    next_mark += plan.tick();
                    mark(&mut client, &archive, plan).await;
                    continue;
                }
                () = tokio::time::sleep(Duration::from_millis(pos_hub::wire::SUBSCRIBE_SILENCE_MS)) => break,
            };
            match message {
                Ok(Some(batch)) => {
                    let mut events = archive.events.lock().unwrap_or_else(|p| p.into_inner());
                    for event in &batch.events {
                        // A batch resent from before the cursor: already kept.
                        if event.seq != events.len() as u64 + 1 {
                            continue;
                        }
                        match convert::event_from_pb(event) {
                            Ok(event) => events.push(event),
                            Err(err) => {
                                tracing::error!(seq = event.seq, %err, "archiver: an event it cannot read");
                                break;
                            }
                        }
                    }
                }
                _ => break,
            }
        }
    }
}

/// Appends the archive mark through every event the archive holds (admin's
/// `store.archived`, on a hub without tokens), keeping `RETAIN_DAYS`.
async fn mark(client: &mut HubClient<tonic::transport::Channel>, archive: &Archive, plan: Plan) {
    let through = archive.len();
    if through == 0 {
        return;
    }
    let hello = client
        .hello(pb::HelloRequest {
            device_id: ARCHIVER.into(),
            cursor: 0,
        })
        .await;
    let Ok(hello) = hello.map(tonic::Response::into_inner) else {
        return;
    };
    let mut payload = serde_json::Map::new();
    payload.insert("throughSeq".into(), through.into());
    payload.insert("retainDays".into(), RETAIN_DAYS.into());
    let event = Event {
        event_id: event_id(),
        tenant_id: TENANT.into(),
        store_id: STORE.into(),
        aggregate_type: pos_hub::api::auth::STORE_AGGREGATE.into(),
        aggregate_id: STORE.into(),
        version: 1,
        event_type: "store.archived".into(),
        at: pos_hub::clock::rfc3339_at(now_ms()),
        actor: pos_hub::domain::Actor {
            device_id: ARCHIVER.into(),
            user_id: None,
        },
        clock: pos_hub::domain::Clock {
            lamport: hello.lamport.saturating_add(1),
            device_id: ARCHIVER.into(),
        },
        payload,
        ..Event::default()
    };
    let Ok(event) = convert::event_to_pb(&event) else {
        return;
    };
    let answer = tokio::time::timeout(
        OP_TIMEOUT,
        client.append(pb::AppendRequest {
            events: vec![event],
        }),
    )
    .await;
    match answer {
        Ok(Ok(reply)) => match reply.into_inner().results.first() {
            // DUPLICATE: an earlier send of this mark went in.
            Some(r)
                if r.status == pb::AppendStatus::Accepted as i32
                    || r.status == pb::AppendStatus::Duplicate as i32 =>
            {
                archive
                    .marks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((plan.day(), through));
            }
            other => tracing::warn!(?other, "archiver: the mark was refused"),
        },
        // Not this tick: the next one marks further.
        other => tracing::info!(?other, "archiver: the mark did not go in"),
    }
}

/// Why the soak did not show what it is for: a run long enough for retention to delete
/// (past `LEVEL_FROM_DAY`) in which no node deleted any history. `first_held`: each
/// node's first seq held at the end.
pub fn retention_unexercised(plan: Plan, first_held: &BTreeMap<u64, u64>) -> Option<String> {
    let long_enough = plan.days > LEVEL_FROM_DAY;
    let deleted = first_held.values().any(|first| *first > 1);
    (long_enough && !deleted).then(|| {
        format!(
            "{} store-days, but no node deleted any history (first seqs held: {first_held:?})",
            plan.days
        )
    })
}

/// One node at one moment of the soak.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub day: f64,
    pub node: u64,
    pub rss_kib: u64,
    pub data_bytes: u64,
    pub history_files: usize,
}

/// Below this RSS a node's process has only just been started (not yet the hub): such a
/// sample is left out.
const RSS_STARTED_KIB: u64 = 4 * 1024;

/// A node's sample now: its RSS (`/proc`), its data dir's bytes and its history files;
/// `None` while its process is only starting.
pub fn sample(day: f64, node: u64, pid: u32, data_dir: &Path) -> Option<Sample> {
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    let history_files = std::fs::read_dir(data_dir.join("history"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "hist"))
                .count()
        })
        .unwrap_or(0);
    (rss_kib >= RSS_STARTED_KIB).then(|| Sample {
        day,
        node,
        rss_kib,
        data_bytes: dir_bytes(data_dir),
        history_files,
    })
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The report's soak section: per store-day, each node's RSS, data dir and history files
/// at the day's last sample, the marks set, and whether they stayed flat after day 1.
pub fn markdown(
    plan: Plan,
    samples: &[Sample],
    archive: &Archive,
    log_len: u64,
    first_held: &BTreeMap<u64, u64>,
) -> String {
    let mut md = format!(
        "\n## Soak: {} store-days at {}× ({} s of real time a day)\n\n",
        plan.days,
        plan.rate,
        DAY_MS / u64::from(plan.rate) / 1_000
    );
    let marks = archive
        .marks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    md.push_str(&format!(
        "{log_len} events in the log; the archiver kept {} and set the archive mark {} times \
         (last through seq {}), keeping {RETAIN_DAYS} day.\n\n",
        archive.len(),
        marks.len(),
        marks.last().map_or(0, |m| m.1)
    ));
    let held: Vec<String> = first_held
        .iter()
        .map(|(node, first)| format!("node {node} from seq {first}"))
        .collect();
    md.push_str(&format!(
        "At the end, after retention: {} (the checker read the seqs before from the \
         archive).\n\n",
        held.join(", ")
    ));
    md.push_str(
        "| end of day | node | RSS MiB (the day's peak) | data dir MiB | history files |\n\
         |---|---|---|---|---|\n",
    );
    for (day, node, s) in day_ends(plan, samples) {
        md.push_str(&format!(
            "| {day} | {node} | {:.1} | {:.1} | {} |\n",
            s.rss_kib as f64 / 1024.0,
            s.data_bytes as f64 / 1_048_576.0,
            s.history_files
        ));
    }
    md.push_str(&flatness(plan, samples));
    md
}

/// Each node's last sample of each whole day, with the day's peak RSS (a node the faults
/// just restarted has not grown back yet): (day, node, sample).
fn day_ends(plan: Plan, samples: &[Sample]) -> Vec<(u32, u64, Sample)> {
    let mut ends: BTreeMap<(u32, u64), Sample> = BTreeMap::new();
    for s in samples {
        let day = (s.day.ceil() as u32).clamp(1, plan.days);
        let peak = ends.get(&(day, s.node)).map_or(0, |e| e.rss_kib);
        let mut end = s.clone();
        end.rss_kib = end.rss_kib.max(peak);
        ends.insert((day, s.node), end);
    }
    ends.into_iter().map(|((d, n), s)| (d, n, s)).collect()
}

/// Each node's highest RSS and data dir at the end of a day from day 2 on, against its
/// level at the end of day 2; and from `LEVEL_FROM_DAY` on (retention deleting by then),
/// against that day's.
fn flatness(plan: Plan, samples: &[Sample]) -> String {
    let ends = day_ends(plan, samples);
    let mut out = String::from("\n");
    let nodes: std::collections::BTreeSet<u64> = ends.iter().map(|e| e.1).collect();
    for from in [2, LEVEL_FROM_DAY] {
        for node in &nodes {
            let of = |from: u32| ends.iter().filter(move |e| e.1 == *node && e.0 >= from);
            let Some(base) = of(from).next().map(|e| e.2.clone()) else {
                continue;
            };
            let rss_max = of(from).map(|e| e.2.rss_kib).max().unwrap_or(0);
            let data_max = of(from).map(|e| e.2.data_bytes).max().unwrap_or(0);
            out.push_str(&format!(
                "- node {node}: from the end of day {from} on, RSS at most {:.2}× and the data \
                 dir at most {:.2}× their level then\n",
                rss_max as f64 / base.rss_kib.max(1) as f64,
                data_max as f64 / base.data_bytes.max(1) as f64,
            ));
        }
    }
    out
}

/// What a panel of the picture plots of a sample.
type Measure = fn(&Sample) -> f64;

/// A picture of the soak: each node's RSS and data dir over the store-days.
pub fn svg(plan: Plan, samples: &[Sample]) -> String {
    let (w, h, pad) = (720.0, 240.0, 40.0);
    let days = f64::from(plan.days);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n",
        2.0 * h + 20.0
    );
    let panels: [(&str, Measure); 2] = [
        ("RSS (MiB)", |s| s.rss_kib as f64 / 1024.0),
        ("data dir (MiB)", |s| s.data_bytes as f64 / 1_048_576.0),
    ];
    let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
    for (p, (title, value)) in panels.iter().enumerate() {
        let top = p as f64 * (h + 20.0);
        let max = samples.iter().map(value).fold(1.0_f64, f64::max) * 1.1;
        out.push_str(&format!(
            "<text x=\"{pad}\" y=\"{}\">{title}, max {max:.0}</text>\n",
            top + 14.0
        ));
        out.push_str(&format!(
            "<rect x=\"{pad}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\n",
            top + 20.0,
            w - 2.0 * pad,
            h - 40.0
        ));
        for d in 0..=plan.days {
            let x = pad + f64::from(d) / days * (w - 2.0 * pad);
            out.push_str(&format!(
                "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">day {d}</text>\n",
                top + h - 6.0
            ));
        }
        let nodes: std::collections::BTreeSet<u64> = samples.iter().map(|s| s.node).collect();
        for (i, node) in nodes.iter().enumerate() {
            let points: Vec<String> = samples
                .iter()
                .filter(|s| s.node == *node)
                .map(|s| {
                    let x = pad + s.day.min(days) / days * (w - 2.0 * pad);
                    let y = top + 20.0 + (h - 40.0) * (1.0 - value(s) / max);
                    format!("{x:.1},{y:.1}")
                })
                .collect();
            out.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{}\" points=\"{}\"/>\n",
                colours[i % colours.len()],
                points.join(" ")
            ));
            out.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" fill=\"{}\">node {node}</text>\n",
                w - pad - 50.0,
                top + 34.0 + 12.0 * i as f64,
                colours[i % colours.len()]
            ));
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(day: f64, node: u64, rss_mib: u64, data_mib: u64) -> Sample {
        Sample {
            day,
            node,
            rss_kib: rss_mib * 1024,
            data_bytes: data_mib << 20,
            history_files: 1,
        }
    }

    #[test]
    fn a_day_in_five_minutes_is_288_times_as_fast() {
        let plan = Plan::new(7, 35.0).expect("a plan");
        assert_eq!(plan.rate, 288);
        assert_eq!(plan.tick(), Duration::from_secs(75));
        assert!(Plan::new(1, 35.0).is_err());
        assert!(Plan::new(7, 2.0).is_err(), "a day under 20 s");
    }

    #[test]
    fn the_report_takes_each_days_last_sample_and_compares_with_day_two() {
        let plan = Plan {
            days: 3,
            epoch_ms: 0,
            rate: 288,
        };
        let samples = [
            s(0.5, 1, 10, 5),
            s(1.0, 1, 20, 10),
            s(1.75, 1, 25, 15),
            s(2.0, 1, 30, 20),
            s(2.5, 1, 33, 22),
            s(3.0, 1, 30, 20),
        ];
        let ends = day_ends(plan, &samples);
        let days: Vec<(u32, u64)> = ends.iter().map(|e| (e.0, e.2.rss_kib / 1024)).collect();
        assert_eq!(days, [(1, 20), (2, 30), (3, 33)], "each day's peak");
        let data: Vec<u64> = ends.iter().map(|e| e.2.data_bytes >> 20).collect();
        assert_eq!(data, [10, 20, 20], "each day's last");
        let text = flatness(plan, &samples);
        assert!(text.contains("RSS at most 1.10×"), "{text}");
        let svg = svg(plan, &samples);
        assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    }

    #[test]
    fn a_long_soak_in_which_nothing_was_deleted_is_a_finding() {
        let plan = |days| Plan {
            days,
            epoch_ms: 0,
            rate: 480,
        };
        let none: BTreeMap<u64, u64> = [(1, 1), (2, 1)].into();
        let some: BTreeMap<u64, u64> = [(1, 1), (2, 5_000)].into();
        assert!(retention_unexercised(plan(14), &none).is_some());
        assert!(retention_unexercised(plan(14), &some).is_none());
        assert!(
            retention_unexercised(plan(7), &none).is_none(),
            "too short to delete"
        );
    }

    #[test]
    fn event_ids_follow_the_runs_clock() {
        // Without a soak's clock: the wall clock's time.
        let id = uuid::Uuid::parse_str(&event_id()).expect("a uuid");
        let (secs, _) = id.get_timestamp().expect("v7").to_unix();
        assert!(secs.abs_diff(pos_hub::clock::now_s()) < 5);
    }
}
