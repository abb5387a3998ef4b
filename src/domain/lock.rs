//! Lease locks on orders (spec §3): a device holds an order for 30–60 s while editing,
//! renews it, and releases it. Expiry is judged only against the leader-stamped hub time.
//!
//! Rules (enforced through `order::decide`):
//! - while a device holds an unexpired lock, every write to the order by another device
//!   is `LOCKED` unless forced; the holder writes freely; an expired lock binds nobody;
//! - `order.locked` takes a free or expired lock, or re-takes (extends) the caller's own;
//!   a forced `order.locked` takes the lock over from another device;
//! - `order.lock.renew` is for the holder of an unexpired lock only (force does not
//!   change that: renewing is by definition the holder's act);
//! - `order.lock.released` is for the holder only, expired or not;
//! - the lock is cleared when the order is paid or cancelled (see `order.rs`).

use serde::{Deserialize, Serialize};

use super::event::Actor;
use super::outcome::{RejectCode, Rejection};

/// Bounds on a lock's time to live; a requested ttl is clamped into them.
pub const LOCK_TTL_MS_MIN: u64 = 30_000;
pub const LOCK_TTL_MS_MAX: u64 = 60_000;
/// The ttl of a lock whose event does not ask for one, in ms.
pub const LOCK_TTL_MS_DEFAULT: u64 = 45_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lock {
    /// The deviceId holding the lock.
    pub holder: String,
    /// The user signed in on that device when it took the lock, if any.
    pub user_id: Option<String>,
    /// Hub time (ms since the Unix epoch) at which the lock lapses.
    pub expires_at_ms: u64,
}

impl Lock {
    /// A lock for `actor` from `hub_time_ms` for the requested ttl, clamped.
    pub fn lease(actor: &Actor, ttl_ms: Option<u64>, hub_time_ms: u64) -> Self {
        Self {
            holder: actor.device_id.clone(),
            user_id: actor.user_id.clone(),
            expires_at_ms: hub_time_ms.saturating_add(clamp_ttl(ttl_ms)),
        }
    }

    /// Whether the lock still binds at `hub_time_ms`.
    pub fn is_held_at(&self, hub_time_ms: u64) -> bool {
        hub_time_ms < self.expires_at_ms
    }

    /// Whether the lock keeps `device_id` from writing at `hub_time_ms`.
    pub fn binds(&self, device_id: &str, hub_time_ms: u64) -> bool {
        self.is_held_at(hub_time_ms) && self.holder != device_id
    }
}

/// The ttl actually granted for a requested one, in ms.
pub fn clamp_ttl(requested_ms: Option<u64>) -> u64 {
    requested_ms
        .unwrap_or(LOCK_TTL_MS_DEFAULT)
        .clamp(LOCK_TTL_MS_MIN, LOCK_TTL_MS_MAX)
}

/// `LOCKED` if another device holds an unexpired lock on the order.
pub fn check_free_for(
    order_id: &str,
    lock: Option<&Lock>,
    device_id: &str,
    hub_time_ms: u64,
) -> Result<(), Rejection> {
    match lock {
        Some(l) if l.binds(device_id, hub_time_ms) => Err(Rejection::locked(
            &l.holder,
            format!(
                "order {order_id} is locked by {} until hub time {} ms",
                l.holder, l.expires_at_ms
            ),
        )),
        _ => Ok(()),
    }
}

/// `order.lock.renew`: only the holder of an unexpired lock may renew it.
pub fn check_renew(
    order_id: &str,
    lock: Option<&Lock>,
    device_id: &str,
    hub_time_ms: u64,
) -> Result<(), Rejection> {
    let own = held_by(order_id, lock, device_id, "renew")?;
    if !own.is_held_at(hub_time_ms) {
        return Err(Rejection::new(
            RejectCode::LockExpired,
            format!(
                "the lock of {device_id} on order {order_id} expired at hub time {} ms \
                 (now {hub_time_ms} ms); take it again with order.locked",
                own.expires_at_ms
            ),
        ));
    }
    Ok(())
}

/// `order.lock.released`: only the holder may release its lock, expired or not.
pub fn check_release(
    order_id: &str,
    lock: Option<&Lock>,
    device_id: &str,
) -> Result<(), Rejection> {
    held_by(order_id, lock, device_id, "release").map(|_| ())
}

/// The lock, if `device_id` holds it (expired or not); else `NOT_LOCK_HOLDER` naming who
/// does, for a message about what the device tried to `action`.
fn held_by<'a>(
    order_id: &str,
    lock: Option<&'a Lock>,
    device_id: &str,
    action: &str,
) -> Result<&'a Lock, Rejection> {
    match lock {
        None => Err(not_holder(format!(
            "order {order_id} has no lock for {device_id} to {action}"
        ))),
        Some(l) if l.holder != device_id => Err(not_holder(format!(
            "order {order_id} is locked by {} (until hub time {} ms), not by {device_id}",
            l.holder, l.expires_at_ms
        ))),
        Some(l) => Ok(l),
    }
}

fn not_holder(message: String) -> Rejection {
    Rejection::new(RejectCode::NotLockHolder, message)
}
