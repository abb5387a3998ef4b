//! Whether this hub reaches the internet, for the offline grace of expired tokens.
//!
//! Spec §6.6: tokens are refreshed while the store has WAN, and a known device keeps
//! working on an expired token only while it has not. A hub learns which by probing a
//! WAN address it is given (`serve --wan-probe HOST:PORT`, e.g. the cloud's API): a TCP
//! connection every `PROBE_EVERY`. While the last probe connected, the hub is online and
//! gives no grace. Without a probe the hub cannot tell, and treats itself as offline (the
//! grace applies, as before this existed); it says so at start.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the WAN address is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// How long one probe may take to connect before it counts as a failure.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// This hub's view of its WAN. Cheap to clone; clones share the view.
#[derive(Debug, Clone, Default)]
pub struct Wan {
    /// The probed address; `None`: no probe, never online.
    target: Option<Arc<str>>,
    online: Arc<AtomicBool>,
}

impl Wan {
    /// A hub without a probe: it cannot tell, so it is never online.
    pub fn unprobed() -> Wan {
        Wan::default()
    }

    /// Probes `target` (`HOST:PORT`) now and every `PROBE_EVERY` until the runtime stops.
    /// Offline until the first probe connects.
    pub fn probe(target: String) -> Wan {
        let wan = Wan {
            target: Some(target.into()),
            online: Arc::new(AtomicBool::new(false)),
        };
        let task = wan.clone();
        tokio::spawn(async move { task.run().await });
        wan
    }

    async fn run(self) {
        let Some(target) = self.target.clone() else {
            return;
        };
        let mut ticks = tokio::time::interval(PROBE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let connect = tokio::net::TcpStream::connect(&*target);
            let reached = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, connect).await,
                Ok(Ok(_))
            );
            let was = self.online.swap(reached, Ordering::Relaxed);
            if was != reached {
                tracing::info!(
                    probe = %target,
                    online = reached,
                    "WAN {}: the offline grace of expired tokens is {}",
                    if reached { "reached" } else { "lost" },
                    if reached { "off" } else { "on" }
                );
            }
        }
    }

    /// The probed address, while the last probe reached it; `None` while offline or
    /// without a probe.
    pub fn online(&self) -> Option<&str> {
        match &self.target {
            Some(target) if self.online.load(Ordering::Relaxed) => Some(target),
            _ => None,
        }
    }

    /// The probed address, if there is a probe.
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn online_while_the_probe_connects_and_offline_once_it_cannot() {
        assert_eq!(Wan::unprobed().online(), None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let target = listener.local_addr().expect("address").to_string();
        let wan = Wan::probe(target.clone());
        let mut waited = 0;
        while wan.online().is_none() {
            assert!(waited < 200, "the first probe never connected");
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
        }
        assert_eq!(wan.online(), Some(target.as_str()));
        drop(listener);
        let mut waited = 0;
        while wan.online().is_some() {
            assert!(
                waited < 400,
                "the probe never noticed the listener was gone"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
        }
        assert_eq!(wan.target(), Some(target.as_str()));
    }
}
