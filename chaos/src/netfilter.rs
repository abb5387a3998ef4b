//! `netem` for kernels built without `sch_netem` (this VM's is one): the same faults from
//! netfilter, in the namespace of the node the traffic goes to.
//!
//! - **Loss**: an iptables rule with the `statistic` match drops a random share of the TCP
//!   segments arriving at the node.
//! - **Delay and reordering**: the rest go to an NFQUEUE. A thread of the harness, moved
//!   into the node's namespace with `setns`, holds each packet for a random delay drawn
//!   from `DELAY_MS ± JITTER_MS` and then lets it through. Packets with a shorter draw
//!   overtake earlier ones, so TCP sees reordering as well as delay.
//!
//! Healing removes the rules first, then lets through every packet still held. The rules
//! sit in their own chain, so they come out whole.

use std::collections::BinaryHeap;
use std::os::fd::AsRawFd;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::rng::Rng;

pub const LOSS_PERCENT: u32 = 10;
pub const DELAY_MS: u64 = 40;
pub const JITTER_MS: u64 = 20;
const CHAIN: &str = "CHAOS_NETEM";

fn iptables(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["netns", "exec", ns, "iptables", "-w"];
    all.extend_from_slice(args);
    crate::topology::ip(&all)
}

/// Whether iptables with the `statistic` match and the NFQUEUE target works in `ns`.
pub fn available(ns: &str) -> bool {
    let probe = || -> anyhow::Result<()> {
        iptables(ns, &["-N", "CHAOS_PROBE"])?;
        let rules = iptables(
            ns,
            &[
                "-A",
                "CHAOS_PROBE",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                "0.5",
                "-j",
                "NFQUEUE",
                "--queue-num",
                "9",
                "--queue-bypass",
            ],
        );
        let _ = iptables(ns, &["-F", "CHAOS_PROBE"]);
        let _ = iptables(ns, &["-X", "CHAOS_PROBE"]);
        rules
    };
    probe().is_ok()
}

/// A packet held until `release`.
struct Held {
    release: Instant,
    message: nfq::Message,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.release == other.release
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    /// Reversed, so that `BinaryHeap` pops the earliest release first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.release.cmp(&self.release)
    }
}

/// Loss, delay and reordering on the traffic arriving in one node's namespace, until healed.
pub struct Impairment {
    ns: String,
    device: String,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<anyhow::Result<u64>>>,
}

impl Impairment {
    /// Starts the delay thread in `ns` on NFQUEUE `queue`, then adds the rules that feed it.
    pub fn start(ns: &str, device: &str, queue: u16, seed: u64) -> anyhow::Result<Impairment> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let worker = {
            let (ns, stop) = (ns.to_owned(), stop.clone());
            std::thread::Builder::new()
                .name(format!("netem-{ns}"))
                .spawn(move || delay_packets(&ns, queue, seed, &stop, ready_tx))
                .context("starting the delay thread")?
        };
        let mut impairment = Impairment {
            ns: ns.to_owned(),
            device: device.to_owned(),
            stop,
            worker: Some(worker),
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                impairment.heal();
                bail!("the delay thread in {ns}: {err}");
            }
            Err(_) => {
                impairment.heal();
                bail!("the delay thread in {ns} did not start");
            }
        }
        let probability = format!("{:.2}", f64::from(LOSS_PERCENT) / 100.0);
        let queue = queue.to_string();
        let rules = [
            vec!["-N", CHAIN],
            vec![
                "-A",
                CHAIN,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &probability,
                "-j",
                "DROP",
            ],
            // --queue-bypass: should the thread be gone, packets pass rather than vanish.
            vec![
                "-A",
                CHAIN,
                "-j",
                "NFQUEUE",
                "--queue-num",
                &queue,
                "--queue-bypass",
            ],
            vec!["-I", "INPUT", "1", "-i", device, "-p", "tcp", "-j", CHAIN],
        ];
        for rule in &rules {
            if let Err(err) = iptables(ns, rule) {
                impairment.heal();
                return Err(err);
            }
        }
        Ok(impairment)
    }

    /// Removes the rules and lets every held packet through; returns how many were delayed.
    pub fn heal(&mut self) -> u64 {
        // Rules first: from here on nothing new is queued.
        let _ = iptables(
            &self.ns,
            &["-D", "INPUT", "-i", &self.device, "-p", "tcp", "-j", CHAIN],
        );
        let _ = iptables(&self.ns, &["-F", CHAIN]);
        let _ = iptables(&self.ns, &["-X", CHAIN]);
        self.stop.store(true, Ordering::Relaxed);
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(Ok(delayed))) => delayed,
            Some(Ok(Err(err))) => {
                tracing::warn!(ns = %self.ns, %err, "the delay thread failed");
                0
            }
            Some(Err(_)) => {
                tracing::warn!(ns = %self.ns, "the delay thread panicked");
                0
            }
            None => 0,
        }
    }
}

impl Drop for Impairment {
    fn drop(&mut self) {
        if self.worker.is_some() {
            self.heal();
        }
    }
}

/// The delay thread: joins `ns`, binds NFQUEUE `queue`, and holds each packet for its drawn
/// delay until `stop`, then releases whatever it still holds.
fn delay_packets(
    ns: &str,
    queue_num: u16,
    seed: u64,
    stop: &AtomicBool,
    ready: std::sync::mpsc::Sender<anyhow::Result<()>>,
) -> anyhow::Result<u64> {
    let setup = || -> anyhow::Result<nfq::Queue> {
        let path = format!("/run/netns/{ns}");
        let netns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns on a namespace file we hold open; it changes only this thread.
        if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns into {ns}: {}", std::io::Error::last_os_error());
        }
        let mut queue = nfq::Queue::open().context("opening a netfilter queue socket")?;
        queue
            .bind(queue_num)
            .with_context(|| format!("binding NFQUEUE {queue_num}"))?;
        // Headers are enough: the verdict never rewrites a packet.
        queue.set_copy_range(queue_num, 128)?;
        queue.set_nonblocking(true);
        Ok(queue)
    };
    let mut queue = match setup() {
        Ok(queue) => {
            let _ = ready.send(Ok(()));
            queue
        }
        Err(err) => {
            let message = format!("{err:#}");
            let _ = ready.send(Err(err));
            bail!(message);
        }
    };
    let mut rng = Rng::new(seed);
    let mut held = BinaryHeap::new();
    let mut delayed = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut idle = true;
        loop {
            match queue.recv() {
                Ok(mut message) => {
                    idle = false;
                    message.set_verdict(nfq::Verdict::Accept);
                    let spread = rng.below(2 * JITTER_MS + 1);
                    let delay = DELAY_MS - JITTER_MS + spread;
                    held.push(Held {
                        release: Instant::now() + Duration::from_millis(delay),
                        message,
                    });
                    delayed += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("receiving from the netfilter queue"),
            }
        }
        let now = Instant::now();
        while held.peek().is_some_and(|h: &Held| h.release <= now) {
            if let Some(h) = held.pop() {
                idle = false;
                queue.verdict(h.message)?;
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for h in held.into_sorted_vec().into_iter().rev() {
        queue.verdict(h.message)?;
    }
    Ok(delayed)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::Command;

    use super::*;

    /// Runs `work` on a thread inside namespace `ns`.
    fn in_netns<T: Send + 'static>(ns: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let netns = std::fs::File::open(&path).expect("opens the namespace");
            // SAFETY: setns on a namespace file we hold open; it changes only this thread.
            let joined = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(joined, 0, "setns: {}", std::io::Error::last_os_error());
            work()
        })
        .join()
        .expect("the thread in the namespace")
    }

    /// The shortest of 20 one-byte TCP round trips on the namespace's loopback.
    fn shortest_round_trip(ns: &str) -> Duration {
        in_netns(ns, || {
            let listener = TcpListener::bind("127.0.0.1:0").expect("listens");
            let addr = listener.local_addr().expect("address");
            let echo = std::thread::spawn(move || {
                let (mut conn, _) = listener.accept().expect("accepts");
                let mut byte = [0u8; 1];
                while conn.read_exact(&mut byte).is_ok() {
                    if conn.write_all(&byte).is_err() {
                        break;
                    }
                }
            });
            let mut client = TcpStream::connect(addr).expect("connects");
            client.set_nodelay(true).expect("nodelay");
            let mut shortest = Duration::MAX;
            let mut byte = [7u8; 1];
            for _ in 0..20 {
                let sent = Instant::now();
                client.write_all(&byte).expect("writes");
                client.read_exact(&mut byte).expect("reads the echo");
                shortest = shortest.min(sent.elapsed());
            }
            drop(client);
            let _ = echo.join();
            shortest
        })
    }

    fn dropped_by_rule(ns: &str) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns", "exec", ns, "iptables", "-w", "-L", CHAIN, "-v", "-x", "-n",
            ])
            .output()
            .expect("lists the chain");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains("DROP"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .expect("the DROP rule with its packet count")
    }

    /// The layer bites: every packet into the namespace waits at least `DELAY_MS -
    /// JITTER_MS`, some are dropped (TCP resends them), and healing restores the link.
    /// Needs root, iproute2 and iptables, as CI has.
    #[test]
    fn impaired_packets_are_delayed_and_dropped_until_healed() {
        let ns = format!("pcnf{}", std::process::id() % 100_000);
        let ip = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("runs ip");
            assert!(status.success(), "ip {args:?}");
        };
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        assert!(available(&ns), "iptables with statistic and NFQUEUE");

        let mut impairment = Impairment::start(&ns, "lo", 3, 42).expect("impairs lo");
        let floor = Duration::from_millis(DELAY_MS - JITTER_MS);
        let impaired = shortest_round_trip(&ns);
        // A connection plus 20 round trips, each way through the rules: about 90 packets.
        // At 10% loss, none dropped has odds of 0.9^90, about 1 in 13,000.
        let dropped = dropped_by_rule(&ns);
        let delayed = impairment.heal();
        let rules = Command::new("ip")
            .args(["netns", "exec", &ns, "iptables", "-w", "-S"])
            .output()
            .expect("lists the rules");
        let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
        // The link still carries traffic once healed.
        shortest_round_trip(&ns);
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();

        assert!(
            impaired >= floor,
            "a round trip took {impaired:?} through a delay of at least {floor:?} each way"
        );
        assert!(
            delayed >= 40,
            "only {delayed} packets went through the delay"
        );
        assert!(dropped > 0, "the loss rule dropped nothing");
        assert!(!rules.contains(CHAIN), "rules left after healing: {rules}");
    }
}
