//! A CPU cap on one process through cgroups (v2 `cpu.max`, or v1 `cpu.cfs_quota_us`), for
//! the slow-node fault: a Pi among tablets.

use std::path::PathBuf;

use anyhow::Context;

const ROOT: &str = "/sys/fs/cgroup";
const PERIOD_US: u64 = 100_000;

pub struct CpuCap {
    dir: PathBuf,
    parent_procs: PathBuf,
    pid: u32,
}

fn write(path: &std::path::Path, value: &str) -> anyhow::Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

/// Where the cpu controller is: `/sys/fs/cgroup` (v2) or `/sys/fs/cgroup/cpu` (v1). Inside
/// `ip netns exec` /sys is a fresh sysfs without cgroups, so the v1 cpu hierarchy (or the v2
/// one) is mounted again at a private mount point: the same hierarchy, seen twice.
fn hierarchy() -> anyhow::Result<(PathBuf, bool)> {
    let root = std::path::Path::new(ROOT);
    if root.join("cgroup.controllers").exists() {
        return Ok((root.to_path_buf(), true));
    }
    if root.join("cpu").join("cgroup.procs").exists() {
        return Ok((root.join("cpu"), false));
    }
    let private = std::env::temp_dir().join("pos-hub-chaos-cpu");
    if private.join("cgroup.procs").exists() {
        let v2 = private.join("cgroup.controllers").exists();
        return Ok((private, v2));
    }
    std::fs::create_dir_all(&private)?;
    for (fstype, options) in [("cgroup", "cpu"), ("cgroup2", "")] {
        let mut mount = std::process::Command::new("mount");
        mount.args(["-t", fstype]);
        if !options.is_empty() {
            mount.args(["-o", options]);
        }
        if mount
            .arg(fstype)
            .arg(&private)
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok((private.clone(), fstype == "cgroup2"));
        }
    }
    anyhow::bail!("no cpu cgroup hierarchy found or mountable (needs root)")
}

impl CpuCap {
    /// Moves `pid` into a new cgroup `name` allowed `percent`% of one CPU.
    pub fn apply(name: &str, pid: u32, percent: u64) -> anyhow::Result<CpuCap> {
        let quota = PERIOD_US * percent / 100;
        let (parent, v2) = hierarchy()?;
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if v2 {
            // The cpu controller must be on for children of the root; harmless if it is.
            let _ = write(&parent.join("cgroup.subtree_control"), "+cpu");
            write(&dir.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
        } else {
            write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
            write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        write(&dir.join("cgroup.procs"), &pid.to_string())?;
        Ok(CpuCap {
            dir,
            parent_procs: parent.join("cgroup.procs"),
            pid,
        })
    }

    /// Moves the process back and removes the cgroup.
    pub fn release(self) {
        if let Err(err) = write(&self.parent_procs, &self.pid.to_string()) {
            tracing::warn!(%err, "slow-node: could not move the node back (it may have died)");
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}
