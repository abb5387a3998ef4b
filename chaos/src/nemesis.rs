//! The nemesis: named faults, each a start and an end recorded in the history, run one at a
//! time on a seeded schedule.

use std::time::Duration;

use anyhow::{Context, bail};
use pos_hub::proto::pb;

use crate::group::{ELECTION_TIMEOUT_MS, Group};
use crate::history::{Entry, Phase, Recorder};
use crate::rng::Rng;

/// Every fault this harness can inject.
pub const FAULTS: [&str; 10] = [
    "kill",
    "pause",
    "partition",
    "netem",
    "restart-all",
    "membership",
    "slow-node",
    "disk-full",
    "corrupt",
    "lose-unsynced",
];

/// Size of the tmpfs the disk-full node keeps its data on.
pub const TMPFS_MEGABYTES: u64 = 512;

/// Faults that need network namespaces.
pub const NETWORK_FAULTS: [&str; 2] = ["partition", "netem"];

pub fn parse_faults(list: &str) -> anyhow::Result<Vec<String>> {
    if list.trim() == "all" {
        return Ok(FAULTS.iter().map(|f| f.to_string()).collect());
    }
    let mut faults = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !FAULTS.contains(&name) {
            bail!(
                "unknown fault {name:?}; this harness injects: {} (or `all`)",
                FAULTS.join(", ")
            );
        }
        faults.push(name.to_owned());
    }
    if faults.is_empty() {
        bail!("--faults is empty");
    }
    Ok(faults)
}

pub struct Nemesis {
    pub recorder: Recorder,
    pub rng: Rng,
    /// How long each fault lasts.
    pub hold: Duration,
    /// The next free node id, for the membership fault's replacements.
    pub step: u64,
    /// How `netem` impairs links here (None: it is not in the schedule).
    pub netem: Option<crate::topology::NetemKind>,
}

impl Nemesis {
    fn start(&self, name: &str, detail: String, majority_up: bool) {
        tracing::info!(fault = name, %detail, "fault starts");
        self.recorder.record(Entry::Fault {
            t: self.recorder.now(),
            name: name.to_owned(),
            phase: Phase::Start,
            detail,
            majority_up,
        });
    }

    fn end(&self, name: &str, detail: String, majority_up: bool) {
        tracing::info!(fault = name, %detail, "fault ends");
        self.recorder.record(Entry::Fault {
            t: self.recorder.now(),
            name: name.to_owned(),
            phase: Phase::End,
            detail,
            majority_up,
        });
    }

    async fn target(
        &mut self,
        group: &mut Group,
        prefer_leader: bool,
    ) -> anyhow::Result<(u64, bool)> {
        self.step += 1;
        if prefer_leader && let Some(leader) = group.leader().await {
            return Ok((leader, true));
        }
        let members = group.members.clone();
        anyhow::ensure!(!members.is_empty(), "no members");
        Ok((
            members[self.rng.below(members.len() as u64) as usize],
            false,
        ))
    }

    /// Runs one fault: start it, hold it, end it (heal).
    pub async fn run(&mut self, name: &str, group: &mut Group) -> anyhow::Result<()> {
        let majority =
            |dead: usize, group: &Group| group.members.len() - dead > group.members.len() / 2;
        match name {
            "kill" => {
                let (victim, leader) = self.target(group, self.step.is_multiple_of(2)).await?;
                let role = if leader { "leader" } else { "a random node" };
                let up = majority(1, group);
                self.start(name, format!("SIGKILL node {victim} ({role})"), up);
                group.kill(victim);
                tokio::time::sleep(self.hold).await;
                group.start(victim)?;
                self.end(name, format!("node {victim} restarted"), up);
            }
            "pause" => {
                let (victim, _) = self.target(group, true).await?;
                let up = majority(1, group);
                self.start(name, format!("SIGSTOP node {victim} (the leader)"), up);
                group.pause(victim)?;
                // Well past the election timeout: the others elect a new leader.
                let hold = self
                    .hold
                    .max(Duration::from_millis(ELECTION_TIMEOUT_MS * 10));
                tokio::time::sleep(hold).await;
                group.resume(victim)?;
                self.end(name, format!("SIGCONT node {victim}"), up);
            }
            "partition" => {
                let all = group.members.clone();
                let groups = if all.len() >= 5 && self.rng.below(2) == 0 {
                    let mut shuffled = all.clone();
                    self.rng.shuffle(&mut shuffled);
                    let (a, b) = shuffled.split_at(all.len() / 2 + 1);
                    vec![a.to_vec(), b.to_vec()]
                } else {
                    let (leader, _) = self.target(group, true).await?;
                    let rest: Vec<u64> = all.iter().copied().filter(|n| *n != leader).collect();
                    vec![vec![leader], rest]
                };
                self.start(name, format!("partition {groups:?}"), true);
                group.topology.partition(&groups, &all)?;
                tokio::time::sleep(self.hold).await;
                group.topology.heal_partition(&all);
                self.end(name, "healed".into(), true);
            }
            "netem" => {
                let kind = self.netem.context("netem is not available here")?;
                let all = group.members.clone();
                let links = if self.rng.below(2) == 0 {
                    all.clone()
                } else {
                    vec![all[self.rng.below(all.len() as u64) as usize]]
                };
                let how = match kind {
                    crate::topology::NetemKind::Qdisc => "tc netem",
                    crate::topology::NetemKind::Netfilter => "iptables statistic + NFQUEUE",
                };
                self.start(
                    name,
                    format!(
                        "delay {}±{} ms (reordering), {}% loss towards nodes {links:?} ({how})",
                        crate::netfilter::DELAY_MS,
                        crate::netfilter::JITTER_MS,
                        crate::netfilter::LOSS_PERCENT
                    ),
                    true,
                );
                let seed = self.rng.next();
                let impairments = group.topology.netem(kind, &links, seed)?;
                tokio::time::sleep(self.hold).await;
                let delayed = group.topology.heal_netem(&links, impairments);
                let detail = match kind {
                    crate::topology::NetemKind::Qdisc => "healed".to_owned(),
                    crate::topology::NetemKind::Netfilter => {
                        format!("healed; {delayed} packets delayed")
                    }
                };
                self.end(name, detail, true);
            }
            "restart-all" => {
                self.start(name, "SIGKILL every node at once".into(), false);
                group.kill_all();
                tokio::time::sleep(Duration::from_secs(1)).await;
                for id in group.members.clone() {
                    group.start(id)?;
                }
                self.end(name, "every node restarted".into(), false);
            }
            "lose-unsynced" => {
                let mut on: Vec<u64> = group
                    .powerfs
                    .keys()
                    .copied()
                    .filter(|n| group.members.contains(n))
                    .collect();
                anyhow::ensure!(!on.is_empty(), "no node runs on the power-cut layer");
                if self.rng.below(2) == 0 {
                    on = vec![on[self.rng.below(on.len() as u64) as usize]];
                }
                let up = majority(on.len(), group);
                self.start(
                    name,
                    format!("power cut on nodes {on:?}: SIGKILL, unsynced writes dropped"),
                    up,
                );
                let mut lost = 0;
                for n in &on {
                    group.kill(*n);
                }
                for n in &on {
                    if let Some((fs, _)) = group.powerfs.get(n) {
                        lost += fs.cut();
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                for n in &on {
                    group.start(*n)?;
                }
                self.end(
                    name,
                    format!("{lost} unsynced bytes dropped; nodes {on:?} restarted"),
                    up,
                );
            }
            "membership" => self.membership(group).await?,
            "corrupt" => self.corrupt(group).await?,
            "slow-node" => {
                let (victim, _) = self.target(group, true).await?;
                let pid = group.pid(victim).context("the node is not running")?;
                self.start(
                    name,
                    format!("node {victim} capped at 10% of one CPU"),
                    true,
                );
                let cgroup =
                    crate::cgroup::CpuCap::apply(&format!("pos-hub-chaos-{victim}"), pid, 10)?;
                tokio::time::sleep(self.hold).await;
                cgroup.release();
                self.end(name, format!("node {victim} uncapped"), true);
            }
            "disk-full" => {
                let victim = group.tmpfs_node.context("no node is on a tmpfs")?;
                let dir = group
                    .data_dir(victim)
                    .context("unknown node")?
                    .to_path_buf();
                self.start(
                    name,
                    format!("node {victim}'s data dir filled to the last byte"),
                    true,
                );
                let filler = dir.join("chaos-filler");
                let before =
                    std::fs::metadata(group.log_path(victim)?).map_or(0, |m| m.len() as usize);
                let written = fill(&filler)?;
                tokio::time::sleep(self.hold).await;
                std::fs::remove_file(&filler)?;
                // A node that hit the full disk stops with the storage error, by design;
                // as its supervisor would, restart it now that there is space.
                let mut detail = format!("{written} MiB of filler removed from node {victim}");
                let log = std::fs::read_to_string(group.log_path(victim)?).unwrap_or_default();
                if log
                    .get(before..)
                    .unwrap_or("")
                    .contains("No space left on device")
                {
                    // It hit the full disk: it stops (within its shutdown grace), then its
                    // supervisor, here the harness, starts it again.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
                    while group.is_running(victim) && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    if !group.is_running(victim) {
                        group.unexpected_exits.retain(|(n, _)| *n != victim);
                        detail.push_str(
                            "; it had stopped on 'No space left on device' and was restarted",
                        );
                        group.start(victim)?;
                    }
                }
                self.end(name, detail, true);
            }
            other => bail!("unknown fault {other:?}"),
        }
        Ok(())
    }

    /// Removes a follower from the group under load, wipes it, and adds it back as a new
    /// learner that catches up (by snapshot if needed) before it votes again.
    async fn membership(&mut self, group: &mut Group) -> anyhow::Result<()> {
        let victim = self.follower(group).await?;
        self.start(
            "membership",
            format!("remove node {victim}, wipe it, add it back"),
            true,
        );
        self.rejoin(group, victim).await?;
        self.end(
            "membership",
            format!("node {victim} is a voter again"),
            true,
        );
        Ok(())
    }

    /// A random follower of the current leader.
    async fn follower(&mut self, group: &mut Group) -> anyhow::Result<u64> {
        let leader = group
            .wait_leader(Duration::from_secs(10))
            .await
            .context("no leader to change the membership")?;
        let followers: Vec<u64> = group
            .members
            .iter()
            .copied()
            .filter(|n| *n != leader)
            .collect();
        anyhow::ensure!(!followers.is_empty(), "no follower");
        Ok(followers[self.rng.below(followers.len() as u64) as usize])
    }

    /// Removes `victim` from the group, wipes its data, starts it blank with `--join` and
    /// adds it back: it catches up from its peers (by snapshot if needed) before it votes.
    async fn rejoin(&mut self, group: &mut Group, victim: u64) -> anyhow::Result<()> {
        // Leadership may move (or the victim may lead) while we ask: ask again, each time
        // of the leader the group agrees on, a bounded number of times.
        let mut removed = false;
        let mut last = String::new();
        for _ in 0..10 {
            let Some(leader) = group.wait_leader(Duration::from_secs(10)).await else {
                last = "no leader".into();
                continue;
            };
            let mut admin = group.cluster_client(leader);
            let request = pb::RemoveNodeRequest { id: victim };
            match tokio::time::timeout(Duration::from_secs(20), admin.remove_node(request)).await {
                Ok(Ok(_)) => {
                    removed = true;
                    break;
                }
                Ok(Err(status)) => last = status.message().to_owned(),
                Err(_) => last = "RemoveNode timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::ensure!(removed, "could not remove node {victim}: {last}");
        group.members.retain(|n| *n != victim);
        group.kill(victim);
        group.add_blank(victim)?;
        group.start(victim)?;
        tokio::time::sleep(self.hold / 2).await;
        let request = pb::AddNodeRequest {
            id: victim,
            peer_addr: group.topology.peer_addr(victim),
            client_addr: group.topology.client_addr(victim),
        };
        let mut added = false;
        let mut last = String::new();
        for _ in 0..10 {
            let Some(leader) = group.wait_leader(Duration::from_secs(10)).await else {
                continue;
            };
            let mut admin = group.cluster_client(leader);
            match tokio::time::timeout(Duration::from_secs(120), admin.add_node(request.clone()))
                .await
            {
                Ok(Ok(_)) => {
                    added = true;
                    break;
                }
                Ok(Err(status)) => last = status.message().to_owned(),
                Err(_) => last = "AddNode timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::ensure!(added, "could not add node {victim} back: {last}");
        group.members.push(victim);
        group.members.sort_unstable();
        Ok(())
    }

    /// While a follower is down, damages one of its data files (bit flips or a
    /// truncation), then restarts it. A node that detects the damage and refuses to start
    /// is rebuilt from its peers; one that starts must hold the same log as the others
    /// (the final checks compare every node's log and read models).
    async fn corrupt(&mut self, group: &mut Group) -> anyhow::Result<()> {
        let victim = self.follower(group).await?;
        let data = group
            .data_dir(victim)
            .context("unknown node")?
            .to_path_buf();
        group.kill(victim);
        // The live state machine's file (read models), the meta tree's (commit index,
        // purge point), the vote, the snapshot, the newest log segment and the newest
        // history segment.
        let newest = |dir: &str| {
            let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(data.join(dir))
                .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            files.sort();
            files.pop()
        };
        let live_tree = std::fs::read_dir(data.join("state"))
            .map(|dir| {
                dir.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
                    let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                    name.is_some_and(|n| {
                        n.starts_with("sm.") && n.ends_with(".kv") && n != "sm.meta.kv"
                    })
                })
            })
            .ok()
            .flatten();
        let candidates = [
            live_tree,
            Some(data.join("state").join("raft.meta.kv")),
            Some(data.join("raft.vote")),
            Some(data.join("snapshots").join("current.snap")),
            newest("log"),
            newest("history"),
        ];
        let existing: Vec<&std::path::PathBuf> =
            candidates.iter().flatten().filter(|p| p.exists()).collect();
        anyhow::ensure!(
            !existing.is_empty(),
            "node {victim} has no data file to damage"
        );
        let file = existing[self.rng.below(existing.len() as u64) as usize].clone();
        let damage = damage(&file, &mut self.rng)?;
        let before = std::fs::metadata(group.log_path(victim)?).map_or(0, |m| m.len() as usize);
        self.start(
            "corrupt",
            format!("node {victim} down; {damage}; restarted"),
            true,
        );
        group.start(victim)?;
        // Give it time to find the damage: it either refuses to start or keeps running.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
        while group.is_running(victim) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let outcome = if group.is_running(victim) {
            // It did not notice at start. What it served meanwhile is checked (its
            // Subscribe stream against the final log); damage in a file's unsynced tail is
            // cut at open as a torn write, so rebuild it now rather than reason about it.
            tokio::time::sleep(self.hold).await;
            group.unexpected_exits.retain(|(n, _)| *n != victim);
            self.rejoin(group, victim).await?;
            "it started and served; then it was rebuilt from its peers".to_owned()
        } else {
            group.unexpected_exits.retain(|(n, _)| *n != victim);
            let log = std::fs::read_to_string(group.log_path(victim)?).unwrap_or_default();
            let said = log
                .get(before..)
                .unwrap_or("")
                .lines()
                .rev()
                .find(|l| l.starts_with("error:"))
                .unwrap_or("(no error line)")
                .chars()
                .take(200)
                .collect::<String>();
            self.rejoin(group, victim).await?;
            format!("it refused to start ({said}) and was rebuilt from its peers")
        };
        self.end("corrupt", outcome, true);
        Ok(())
    }
}

/// Writes `path` until the file system is full; returns the MiB written.
fn fill(path: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0;
    loop {
        match file.write_all(&chunk) {
            Ok(()) => written += 1,
            Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(err) => return Err(err.into()),
        }
    }
    // Also the last partial chunk's worth.
    let mut small = vec![0u8; 4096];
    while file.write_all(&small).is_ok() {
        small.truncate(4096);
    }
    Ok(written)
}

/// Flips eight bytes at seeded offsets, or truncates the file to a seeded fraction.
fn damage(path: &std::path::Path, rng: &mut Rng) -> anyhow::Result<String> {
    let mut bytes = std::fs::read(path)?;
    anyhow::ensure!(!bytes.is_empty(), "{} is empty", path.display());
    let what = if rng.below(2) == 0 {
        let mut offsets = Vec::new();
        for _ in 0..8 {
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] ^= 1 << rng.below(8);
            offsets.push(at);
        }
        format!(
            "flipped a bit at 8 offsets of {} ({offsets:?})",
            path.display()
        )
    } else {
        let keep = bytes.len() as u64 * (1 + rng.below(9)) / 10;
        bytes.truncate(keep as usize);
        format!("truncated {} to {keep} bytes", path.display())
    };
    std::fs::write(path, &bytes)?;
    Ok(what)
}
