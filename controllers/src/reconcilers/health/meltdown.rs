//! A deployment's meltdown: too many of its instances unresponsive at once
//! for resurrection to be safe (BOSH's health monitor pauses the
//! resurrector then). Resurrection sets and clears it as it looks at an
//! unresponsive instance; the health monitor clears it when instances
//! answer again. It lives with the health monitor because it is a verdict
//! on observed health, which keeps the instance controller depending on
//! the health monitor and never the other way round.

use bosh_api::Condition;
use bosh_api::meta::{find_condition, set_condition};
use bosh_api::objects::{ConditionType, DeploymentSpec, InstanceSpec, Reason};
use bosh_api::store::Store;

/// Whether `down` unresponsive instances of `total` are a meltdown.
pub fn is_meltdown(down: usize, total: usize, min_down: usize, fraction: f64) -> bool {
    total > 0 && down >= min_down && down as f64 / total as f64 > fraction
}

/// Sets or clears `Meltdown` on the deployment, writing only on change.
pub async fn set_meltdown(
    store: &Store,
    dep: &str,
    on: bool,
    message: String,
) -> Result<bool, bosh_api::store::Error> {
    let Some(mut d) = store.try_get::<DeploymentSpec>(None, dep).await? else { return Ok(false) };
    let was =
        find_condition(&d.status.conditions, ConditionType::Meltdown).is_some_and(|c| c.is_true());
    if was == on {
        return Ok(false);
    }
    let generation = d.metadata.generation;
    crate::runtime::status::patch(store, &mut d, |s| {
        let reason = if on { Reason::TooManyUnresponsive } else { Reason::Recovered };
        set_condition(
            &mut s.conditions,
            Condition::new(ConditionType::Meltdown, on, reason, message.clone(), generation),
        );
    })
    .await?;
    Ok(true)
}

/// Clears `Meltdown` on `dep` when its unresponsive instances are no longer
/// a meltdown; true when it did. The health monitor calls it when an
/// instance recovers: a meltdown that heals by itself (a partition ends)
/// leaves no unresponsive instance for resurrection
/// ([`crate::reconcilers::instance::resurrect::run`]) to clear it on, and the
/// condition would say "resurrection paused" for good (FAULT-MATRIX C4).
pub async fn clear_meltdown_if_over(
    store: &Store,
    dep: &str,
    h: &super::HealthConfig,
) -> Result<bool, bosh_api::store::Error> {
    let all = store.list::<InstanceSpec>(&format!("{dep}/")).await?.items;
    let down = all.iter().filter(|i| i.status.is_unresponsive()).count();
    if is_meltdown(down, all.len(), h.meltdown_min_down, h.meltdown_fraction) {
        return Ok(false);
    }
    set_meltdown(store, dep, false, format!("{down} of {} instances unresponsive", all.len())).await
}

#[cfg(test)]
mod tests {
    /// BOSH's meltdown: at least 5 down and more than 20 %.
    #[test]
    fn meltdown_thresholds() {
        assert!(!super::is_meltdown(4, 10, 5, 0.2), "under the floor");
        assert!(super::is_meltdown(6, 10, 5, 0.2));
        assert!(!super::is_meltdown(5, 100, 5, 0.2), "under the fraction");
        assert!(super::is_meltdown(21, 100, 5, 0.2));
        assert!(!super::is_meltdown(0, 0, 5, 0.2));
    }
}
