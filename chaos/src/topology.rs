//! Where the nodes run. With network namespaces (root, `ip` from iproute2): each node in
//! its own namespace `<prefix>-n<i>`, joined by a bridge in a switch namespace
//! `<prefix>-sw` where the harness itself runs, addresses 10.77.0.0/24 that exist only
//! inside these namespaces. Partitions are packet drops (blackhole
//! routes in the node's namespace) and netem is real delay, loss and reordering of the
//! packets towards a node: `tc netem` where the kernel has it, else netfilter
//! (`netfilter.rs`).
//! Without namespaces, every node listens on 127.0.0.1 and the network faults are skipped
//! (the report says so).

use std::process::Command;

use anyhow::{Context, bail};

use crate::netfilter::{self, Impairment};

/// How links are impaired for the `netem` fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetemKind {
    /// The kernel's `sch_netem` on the switch's side of each link.
    Qdisc,
    /// iptables and an NFQUEUE delay thread in the node's namespace.
    Netfilter,
}

pub const SUBNET: &str = "10.77.0";
pub const SWITCH_IP: &str = "10.77.0.254";
pub const CLIENT_PORT: u16 = 4001;
pub const PEER_PORT: u16 = 4002;

#[derive(Debug, Clone)]
pub enum Topology {
    Netns { prefix: String, nodes: Vec<u64> },
    Loopback { base_port: u16 },
}

/// Runs `ip ARGS` (also `ip netns exec NS PROGRAM …`), failing with its stderr.
pub(crate) fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn tc_in(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["netns", "exec", ns, "tc"];
    all.extend_from_slice(args);
    ip(&all)
}

impl Topology {
    /// Creates the namespaces, the bridge and one link per node.
    pub fn create_netns(prefix: &str, nodes: &[u64]) -> anyhow::Result<Topology> {
        let topology = Topology::Netns {
            prefix: prefix.to_owned(),
            nodes: nodes.to_vec(),
        };
        topology.destroy();
        let sw = format!("{prefix}-sw");
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &sw,
            "addr",
            "add",
            &format!("{SWITCH_IP}/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for &n in nodes {
            topology.add_node_link(n)?;
        }
        Ok(topology)
    }

    /// The namespace and link of one node (also for a node added later).
    pub fn add_node_link(&self, n: u64) -> anyhow::Result<()> {
        let Topology::Netns { prefix, .. } = self else {
            return Ok(());
        };
        let sw = format!("{prefix}-sw");
        let ns = format!("{prefix}-n{n}");
        if Command::new("ip")
            .args(["netns", "exec", &ns, "true"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(());
        }
        ip(&["netns", "add", &ns])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let veth = format!("v{n}");
        ip(&[
            "-n", &sw, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["-n", &sw, "link", "set", &veth, "master", "br0", "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", self.node_ip(n)),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        Ok(())
    }

    /// Removes every namespace this topology made (and any left by a crashed run).
    pub fn destroy(&self) {
        if let Topology::Netns { prefix, nodes } = self {
            for n in nodes.iter().copied().chain(1..=9) {
                let _ = Command::new("ip")
                    .args(["netns", "del", &format!("{prefix}-n{n}")])
                    .output();
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("{prefix}-sw")])
                .output();
        }
    }

    pub fn is_netns(&self) -> bool {
        matches!(self, Topology::Netns { .. })
    }

    pub fn switch_ns(&self) -> Option<String> {
        match self {
            Topology::Netns { prefix, .. } => Some(format!("{prefix}-sw")),
            Topology::Loopback { .. } => None,
        }
    }

    pub fn node_ns(&self, n: u64) -> Option<String> {
        match self {
            Topology::Netns { prefix, .. } => Some(format!("{prefix}-n{n}")),
            Topology::Loopback { .. } => None,
        }
    }

    pub fn node_ip(&self, n: u64) -> String {
        match self {
            Topology::Netns { .. } => format!("{SUBNET}.{}", 10 + n),
            Topology::Loopback { .. } => "127.0.0.1".into(),
        }
    }

    pub fn client_addr(&self, n: u64) -> String {
        match self {
            Topology::Netns { .. } => format!("{}:{CLIENT_PORT}", self.node_ip(n)),
            Topology::Loopback { base_port } => format!("127.0.0.1:{}", base_port + 2 * n as u16),
        }
    }

    pub fn peer_addr(&self, n: u64) -> String {
        match self {
            Topology::Netns { .. } => format!("{}:{PEER_PORT}", self.node_ip(n)),
            Topology::Loopback { base_port } => {
                format!("127.0.0.1:{}", base_port + 2 * n as u16 + 1)
            }
        }
    }

    /// Splits the nodes into groups that cannot reach each other; clients still reach
    /// all of them. Each node gets a blackhole route to every node outside its group, so
    /// its packets to them are dropped (a real partition: no error, just silence).
    pub fn partition(&self, groups: &[Vec<u64>], all: &[u64]) -> anyhow::Result<()> {
        if !self.is_netns() {
            bail!("partitions need network namespaces");
        }
        for group in groups {
            for &n in group {
                let ns = self.node_ns(n).unwrap_or_default();
                for other in all.iter().filter(|o| !group.contains(o)) {
                    let dst = format!("{}/32", self.node_ip(*other));
                    ip(&["-n", &ns, "route", "add", "blackhole", &dst])?;
                }
            }
        }
        Ok(())
    }

    pub fn heal_partition(&self, all: &[u64]) {
        for &n in all {
            let Some(ns) = self.node_ns(n) else { continue };
            for other in all.iter().filter(|o| **o != n) {
                let dst = format!("{}/32", self.node_ip(*other));
                let _ = ip(&["-n", &ns, "route", "del", "blackhole", &dst]);
            }
        }
    }

    /// How this machine can impair links: `tc netem` where the kernel has `sch_netem`,
    /// else netfilter (iptables `statistic` and NFQUEUE, see `netfilter.rs`), else not.
    pub fn netem_kind(&self) -> Option<NetemKind> {
        let (Some(sw), Topology::Netns { nodes, .. }) = (self.switch_ns(), self) else {
            return None;
        };
        let n = *nodes.first()?;
        let dev = format!("v{n}");
        if tc_in(
            &sw,
            &["qdisc", "add", "dev", &dev, "root", "netem", "delay", "1ms"],
        )
        .is_ok()
        {
            let _ = tc_in(&sw, &["qdisc", "del", "dev", &dev, "root"]);
            return Some(NetemKind::Qdisc);
        }
        let ns = self.node_ns(n)?;
        crate::netfilter::available(&ns).then_some(NetemKind::Netfilter)
    }

    /// Delay (40±20 ms, which reorders), 10% loss on the traffic towards `nodes`. The
    /// netfilter kind returns the impairments to heal.
    pub fn netem(
        &self,
        kind: NetemKind,
        nodes: &[u64],
        seed: u64,
    ) -> anyhow::Result<Vec<Impairment>> {
        let Some(sw) = self.switch_ns() else {
            bail!("netem needs network namespaces");
        };
        let mut impairments = Vec::new();
        for &n in nodes {
            match kind {
                NetemKind::Qdisc => tc_in(
                    &sw,
                    &[
                        "qdisc",
                        "add",
                        "dev",
                        &format!("v{n}"),
                        "root",
                        "netem",
                        "delay",
                        &format!("{}ms", netfilter::DELAY_MS),
                        &format!("{}ms", netfilter::JITTER_MS),
                        "loss",
                        &format!("{}%", netfilter::LOSS_PERCENT),
                        "reorder",
                        "25%",
                        "50%",
                    ],
                )?,
                NetemKind::Netfilter => {
                    let ns = self.node_ns(n).context("no namespace for the node")?;
                    let queue = u16::try_from(n).context("node id too large for a queue")?;
                    impairments.push(Impairment::start(&ns, "eth0", queue, seed ^ n)?);
                }
            }
        }
        Ok(impairments)
    }

    /// Ends netem on `nodes`; returns how many packets the netfilter kind delayed.
    pub fn heal_netem(&self, nodes: &[u64], impairments: Vec<Impairment>) -> u64 {
        if let Some(sw) = self.switch_ns() {
            for n in nodes {
                let _ = tc_in(&sw, &["qdisc", "del", "dev", &format!("v{n}"), "root"]);
            }
        }
        impairments.into_iter().map(|mut i| i.heal()).sum()
    }

    /// The command that runs `program` inside node `n`'s namespace.
    pub fn command_for(&self, n: u64, program: &std::path::Path) -> Command {
        match self.node_ns(n) {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &ns]).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }
}
