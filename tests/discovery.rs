//! mDNS for real: two hubs of different realms and a till run inside a network namespace
//! this test creates (its loopback up, with multicast on), so the multicast stays in it.
//! The till, given no address, ignores the other realm's hub, finds its own by mDNS,
//! appends through it, caches its address, and uses the cache when discovery is off.
//!
//! Needs root and `ip` (iproute2), as CI has; it fails, naming what is missing, otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::BIN;

struct Netns {
    name: String,
    hubs: Vec<Child>,
}

impl Netns {
    fn create() -> Netns {
        let name = format!("poshub-mdns-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        for args in [
            vec!["netns", "add", &name],
            vec!["-n", &name, "link", "set", "lo", "up"],
            vec!["-n", &name, "link", "set", "lo", "multicast", "on"],
        ] {
            let out = Command::new("ip").args(&args).output().unwrap_or_else(|e| {
                panic!("this test needs `ip` from iproute2 (apt install iproute2): {e}")
            });
            assert!(
                out.status.success(),
                "`ip {}` failed (this test needs root): {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Netns {
            name,
            hubs: Vec::new(),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, BIN])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        cmd
    }

    fn start_hub(&mut self, dir: &Path, tenant: &str, client_port: u16) {
        let node_dir = dir.join(tenant);
        std::fs::create_dir_all(&node_dir).expect("hub dir");
        let log = std::fs::File::create(node_dir.join("node.log")).expect("hub log");
        let child = self
            .command()
            .args(["serve", "--node-id", "1", "--insecure-no-auth"])
            .args(["--tenant", tenant, "--store", "s-1"])
            .args(["--listen", &format!("127.0.0.1:{client_port}")])
            .args(["--peer-listen", &format!("127.0.0.1:{}", client_port + 1)])
            .arg("--data-dir")
            .arg(node_dir.join("data"))
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starts a hub in the namespace");
        self.hubs.push(child);
        // Ready once it answers its own status.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.run(&["client", "--hub", &hub(client_port), "status"]);
            if out.status.success() && stdout(&out).contains("sees leader 1") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the {tenant} hub did not come up: {}{}",
                stdout(&out),
                common::stderr(&out)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .expect("runs pos-hub in the namespace")
    }

    /// `pos-hub client` as till-1 of realm t-a/s-1 with its data dir and no address.
    fn till(&self, data: &Path, args: &[&str]) -> Output {
        let mut all = vec![
            "client", "--device", "till-1", "--tenant", "t-a", "--store", "s-1",
        ];
        let data = data.to_str().expect("a UTF-8 path");
        all.extend(["--data-dir", data]);
        all.extend(args);
        self.run(&all)
    }

    fn last_seq(&self, client_port: u16) -> String {
        let out = self.run(&["client", "--hub", &hub(client_port), "status"]);
        assert!(out.status.success(), "status: {}", common::stderr(&out));
        let text = stdout(&out);
        text.split("last seq ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no last seq in {text}"))
            .to_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for hub in &mut self.hubs {
            let _ = hub.kill();
            let _ = hub.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn hub(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn stdout(out: &Output) -> String {
    common::stdout(out)
}

const HUB_A: u16 = 4101;
const HUB_B: u16 = 4201;

#[test]
fn a_till_finds_its_realms_hub_by_mdns_ignores_the_other_and_falls_back_to_its_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data: PathBuf = dir.path().join("till-1");
    let mut ns = Netns::create();

    // Only realm B's hub is on the network: the till of realm A must not use it.
    ns.start_hub(dir.path(), "t-b", HUB_B);
    let out = ns.till(&data, &["--wait-s", "4", "order", "new", "--id", "o-1"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", common::stderr(&out));
    assert!(
        text.contains("QUEUED"),
        "with only another realm's hub it stays queued: {text}"
    );
    assert_eq!(ns.last_seq(HUB_B), "0", "realm B's hub got nothing");

    let listed = ns.run(&["client", "discover", "--wait-ms", "2500"]);
    assert!(
        stdout(&listed).contains(&format!("127.0.0.1:{HUB_B} node=1 realm=t-b/s-1")),
        "discover lists B: {}",
        stdout(&listed)
    );

    // Realm A's hub appears: the queued order goes to it, found by mDNS alone.
    ns.start_hub(dir.path(), "t-a", HUB_A);
    let out = ns.till(&data, &["--wait-s", "20", "sync"]);
    let text = stdout(&out);
    assert!(
        out.status.success() && text.contains("unsent=0 dead=0"),
        "sync through the discovered hub: {text}{}",
        common::stderr(&out)
    );
    assert!(text.contains(&format!("node=127.0.0.1:{HUB_A}")), "{text}");
    assert_eq!(ns.last_seq(HUB_A), "1");
    assert_eq!(ns.last_seq(HUB_B), "0", "realm B's hub still got nothing");
    let listed = stdout(&ns.run(&["client", "discover", "--wait-ms", "2500"]));
    for expected in [
        format!("127.0.0.1:{HUB_A} node=1 realm=t-a/s-1"),
        format!("127.0.0.1:{HUB_B} node=1 realm=t-b/s-1"),
    ] {
        assert!(
            listed.contains(&expected),
            "discover lists {expected}: {listed}"
        );
    }

    // Discovery off, no address given: the cached address still works.
    let cache = std::fs::read_to_string(data.join("hubs.json")).expect("the till cached its hub");
    assert!(cache.contains(&format!("127.0.0.1:{HUB_A}")), "{cache}");
    assert!(!cache.contains(&format!("{HUB_B}")), "{cache}");
    let out = ns.till(
        &data,
        &[
            "--no-discovery",
            "--wait-s",
            "10",
            "order",
            "new",
            "--id",
            "o-2",
        ],
    );
    let text = stdout(&out);
    assert!(
        out.status.success() && text.contains("COMMITTED seq=2"),
        "with discovery off the cache finds the hub: {text}{}",
        common::stderr(&out)
    );
    assert_eq!(ns.last_seq(HUB_A), "2");
}
