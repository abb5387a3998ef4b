//! Order lease locks: taking one (`Device::lock`), and `LockGuard`, which renews it while
//! held and releases it when dropped.

use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;

use super::{Device, Draft, Final, LOCK_RENEW_EVERY, LOCK_TTL_MS};
use crate::client::ClientError;

impl Device {
    /// Takes the lease lock on an order and waits up to `within` for the hub to confirm
    /// it. The guard renews it while held and releases it when dropped. Refused with the
    /// holder's device id when another device holds it.
    pub async fn lock(&self, order_id: &str, within: Duration) -> Result<LockGuard, ClientError> {
        let draft = Draft::order(order_id, "order.locked", json!({ "ttlMs": LOCK_TTL_MS }));
        let appended = self.append(draft)?;
        match self.wait_outcome(appended.number, within).await {
            Some(Final::Committed { .. }) => Ok(LockGuard::new(self.clone(), order_id)),
            Some(Final::Rejected {
                code,
                message,
                lock_holder,
            }) => {
                // The caller gets the refusal itself: no dead letter to resolve as well.
                self.resolve(appended.number)?;
                Err(ClientError::Refused {
                    code,
                    message,
                    lock_holder,
                })
            }
            None => Err(ClientError::Unconfirmed {
                event_id: appended.event_id,
            }),
        }
    }
}

/// A held order lock: renewed every `LOCK_RENEW_EVERY` while held, released on drop.
pub struct LockGuard {
    device: Device,
    order_id: String,
    renew: JoinHandle<()>,
}

impl LockGuard {
    fn new(device: Device, order_id: &str) -> LockGuard {
        let renewer = device.clone();
        let id = order_id.to_owned();
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LOCK_RENEW_EVERY).await;
                let draft = Draft::order(&id, "order.lock.renew", json!({ "ttlMs": LOCK_TTL_MS }));
                if let Err(err) = renewer.append(draft) {
                    tracing::warn!(order = %id, %err, "cannot renew the order lock");
                    return;
                }
            }
        });
        LockGuard {
            device,
            order_id: order_id.to_owned(),
            renew,
        }
    }

    pub fn order_id(&self) -> &str {
        &self.order_id
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.renew.abort();
        let draft = Draft::order(&self.order_id, "order.lock.released", json!({}));
        if let Err(err) = self.device.append(draft) {
            // Paid or cancelled orders drop their lock by themselves; otherwise it lapses.
            tracing::debug!(order = %self.order_id, %err, "order lock not released (it lapses)");
        }
    }
}
