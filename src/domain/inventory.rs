//! Inventory as a PN-counter per SKU (spec §3 "Inventory CRDT"): each device's
//! increments and decrements are kept apart, so concurrent adjustments commute.
//!
//! `inventory.adjusted` is exempt from version checks and locks (any version ≥ 1 is
//! accepted, `force` means nothing here): adjustments are commutative, so there is no
//! conflict to detect. eventId dedupe still makes retries safe.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::apply::Ctx;
use super::outcome::{RejectCode, Rejection};

/// Largest magnitude of one adjustment, in stock units.
pub const INVENTORY_DELTA_ABS_MAX: i64 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stock {
    pub sku: String,
    /// Sum of positive deltas, per deviceId.
    pub increments: BTreeMap<String, u64>,
    /// Sum of the magnitudes of negative deltas, per deviceId.
    pub decrements: BTreeMap<String, u64>,
}

impl Stock {
    /// An SKU nobody has adjusted yet.
    pub fn empty(sku: impl Into<String>) -> Self {
        Self {
            sku: sku.into(),
            increments: BTreeMap::new(),
            decrements: BTreeMap::new(),
        }
    }

    /// Σ increments − Σ decrements.
    ///
    /// Summed in `i128` (no overflow for any map that fits in memory). `decide` keeps
    /// both sums within `i64::MAX`, so the difference always fits `i64` exactly; the
    /// saturation below only guards a `Stock` built by hand.
    pub fn total(&self) -> i64 {
        let diff = sum(&self.increments) - sum(&self.decrements);
        i64::try_from(diff).unwrap_or(if diff < 0 { i64::MIN } else { i64::MAX })
    }
}

fn sum(counters: &BTreeMap<String, u64>) -> i128 {
    counters.values().map(|&v| i128::from(v)).sum()
}

/// `inventory.adjusted`'s validated payload: `sku` equals the aggregateId and `delta` is
/// non-zero with `|delta| ≤ INVENTORY_DELTA_ABS_MAX`.
#[derive(Debug, Clone, PartialEq)]
pub struct Adjustment {
    pub sku: String,
    pub delta: i64,
}

/// The stock after `adj` by the event's device, or `OUT_OF_RANGE` if a counter (or the
/// sum of one side, which must stay within `i64` so that `total` is exact) would overflow.
pub(crate) fn decide(
    existing: Option<Stock>,
    adj: Adjustment,
    ctx: &Ctx,
) -> Result<Stock, Rejection> {
    let device = &ctx.event.actor.device_id;
    let mut stock = existing.unwrap_or_else(|| Stock::empty(adj.sku.clone()));
    let (side, name) = if adj.delta > 0 {
        (&mut stock.increments, "increments")
    } else {
        (&mut stock.decrements, "decrements")
    };
    let magnitude = adj.delta.unsigned_abs();
    let counter = side.get(device).copied().unwrap_or(0);
    let side_sum = sum(side) + i128::from(magnitude);
    let new_counter = counter
        .checked_add(magnitude)
        .filter(|_| side_sum <= i128::from(i64::MAX));
    let Some(new_counter) = new_counter else {
        return Err(Rejection::new(
            RejectCode::OutOfRange,
            format!(
                "adjusting {} by {} would overflow its {name} (device {device} has {counter})",
                adj.sku, adj.delta
            ),
        ));
    };
    side.insert(device.clone(), new_counter);
    Ok(stock)
}
