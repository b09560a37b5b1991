//! The periodic orphaned-VM scan (FAULT-MATRIX D6): a VM that carries a
//! deployment's tag but that no instance owns — made by a director whose
//! record of it was lost (an etcd restored from an old backup, a
//! `delete_vm_reference` resolution), or by someone else with our tags —
//! is reported on the Deployment and deleted once a grace period is over.
//!
//! Cloud check ([`super::problems`]) finds the same VMs, but only when
//! an operator asks for a scan, and deletes them only when told to. This
//! controller looks every [`OrphanVmConfig::scan`] on its own:
//!
//! - each scan lists the CPI's VMs, then reads the deployment's instances
//!   (after the listing: a VM is tagged only once its instance records its
//!   cid, so a VM being created is never taken for an orphan; see
//!   [`super::problems::orphans`]);
//! - an orphan is recorded in `status.orphanedVms` with the time it was
//!   first found and the time it will be deleted (`since` + grace), and the
//!   `OrphanedVms` condition names it; a warning is logged;
//! - a VM recorded by an earlier scan, found orphaned again by this one,
//!   whose grace period is over, is deleted (the record written before is
//!   the intent the delete is checked against, FAULT-MATRIX I4); one that
//!   an instance owns again or that is gone is simply dropped;
//! - nothing is ever attached to an orphan: this controller only lists
//!   and deletes, and nothing in the director adopts a VM by its tags
//!   (adoption is by `create_vm` request id, which only an instance's own
//!   intent record holds).
//!
//! Why a controller of its own rather than a step of the deployment
//! controller: that controller's reconcile resolves and renders the whole
//! deployment and is silent on a converged one (FAULT-MATRIX A4); a timed
//! CPI listing would have to run all of that on every scan or bypass it
//! anyway. Apart, the scan has its own election and fence (its deletes are
//! fenced like every CPI mutation), its own schedule and backoff (a failing
//! listing holds up no rollout), and it writes only its own status field
//! and condition — and writes nothing at all while nothing changes.
//!
//! The scan runs per Deployment, each listing every VM: the CPI has no
//! filter by tag. A deployment being deleted is not scanned (its instances
//! and their VMs are going); a VM tagged with a deployment that no longer
//! exists is not found by this scan.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bosh_api::meta::{find_condition, set_condition};
use bosh_api::objects::{ConditionType, DeploymentSpec, InstanceSpec, OrphanedVm, Reason};
use bosh_api::store;
use bosh_api::{Condition, ConditionStatus, Object};
use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::runtime::{Action, Ctx, Trigger, Wiring, Workers};
use crate::world::cpi::CpiError;
use crate::world::director::Director;

/// The orphaned-VM scan: woken by spec changes (a new deployment) and its
/// own requeues, never by its status writes; one scan at a time, since a
/// scan is a CPI listing.
pub const WIRING: Wiring =
    Wiring { name: NAME, trigger: Trigger::Generation, workers: Workers::Exactly(1) };

/// The controller's (and its election's) name.
pub const NAME: &str = "orphan-vms";

/// How often to scan and how long an orphan is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrphanVmConfig {
    /// Time between two scans of a deployment.
    pub scan: Duration,
    /// How long a VM stays orphaned before it is deleted: long enough for
    /// an operator to see the report and keep the VM (tag it differently)
    /// if it is someone's on purpose.
    pub grace: Duration,
}

impl Default for OrphanVmConfig {
    /// A scan a minute (as the health monitor's scan for missing VMs, D5),
    /// an hour's grace.
    fn default() -> Self {
        OrphanVmConfig { scan: Duration::from_secs(60), grace: Duration::from_secs(3600) }
    }
}

/// The controller's context.
pub struct Scanner {
    /// The world's handles.
    pub director: Director,
    /// Its tuning.
    pub config: OrphanVmConfig,
    /// When each deployment is due for its next scan (in this term): a
    /// resync or a spec change in between does not list the VMs again.
    next: Mutex<HashMap<String, Instant>>,
}

impl Scanner {
    /// A scanner acting through `director`.
    pub fn new(director: Director, config: OrphanVmConfig) -> Scanner {
        Scanner { director, config, next: Mutex::default() }
    }
}

/// Errors of the scan.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the store failed.
    #[error("store: {0}")]
    Store(#[from] store::Error),
    /// The CPI failed.
    #[error("{0}")]
    Cpi(#[from] CpiError),
}

/// Scans one deployment for orphaned VMs, records them and deletes those
/// whose grace period is over.
pub async fn reconcile(
    obj: Arc<Object<DeploymentSpec>>,
    ctx: Arc<Ctx<Scanner>>,
) -> Result<Action, Error> {
    let name = obj.metadata.name.clone();
    let due = ctx.data.next.lock().unwrap_or_else(|p| p.into_inner()).get(&name).copied();
    if let Some(at) = due
        && at > Instant::now()
    {
        return Ok(Action::requeue(at - Instant::now()));
    }
    let store = &ctx.store;
    let Some(mut dep) = store.try_get::<DeploymentSpec>(None, &name).await? else {
        return Ok(Action::await_change());
    };
    if dep.metadata.is_deleting() {
        return Ok(Action::await_change());
    }
    let director = &ctx.data.director;
    let listed = match super::problems::list_all(director).await {
        Ok(l) => l,
        Err(CpiError::NotSupported { .. }) => {
            debug!(deployment = %name, "this CPI cannot list VMs: no orphaned-VM scan");
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e.into()),
    };
    // Read after the listing (see the module doc).
    let instances = store.list::<InstanceSpec>(&format!("{name}/")).await?.items;
    let found = super::problems::orphans(&name, &listed, &instances);
    let now = Utc::now();
    let grace = chrono::Duration::from_std(ctx.data.config.grace).unwrap_or(chrono::Duration::MAX);
    let known: BTreeMap<&str, &OrphanedVm> =
        dep.status.orphaned_vms.iter().map(|o| (o.vm_cid.as_str(), o)).collect();
    let orphans: Vec<OrphanedVm> = found
        .into_iter()
        .filter_map(|p| {
            let cid = p.vm_cid?;
            let since = known.get(cid.as_str()).map_or(now, |o| o.since);
            let delete_after = since.checked_add_signed(grace).unwrap_or(DateTime::<Utc>::MAX_UTC);
            Some(OrphanedVm { vm_cid: cid, description: p.description, since, delete_after })
        })
        .collect();
    for o in orphans.iter().filter(|o| !known.contains_key(o.vm_cid.as_str())) {
        warn!(deployment = %name, vm = %o.vm_cid, delete_after = %o.delete_after, "{}", o.description);
    }
    // Due: recorded by an earlier scan (the intent), orphaned still, grace over.
    let expired: Vec<String> = orphans
        .iter()
        .filter(|o| known.contains_key(o.vm_cid.as_str()) && o.delete_after <= now)
        .map(|o| o.vm_cid.clone())
        .collect();
    record(store, &mut dep, &orphans, &[]).await?;
    let mut deleted = Vec::new();
    for cid in &expired {
        store.check_fence().await?;
        match super::problems::delete_orphan_in(director, &ctx.fence, cid).await {
            Ok(()) => {
                info!(deployment = %name, vm = %cid, "orphaned VM deleted after its grace period")
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                // Record what was deleted before this one failed.
                let left: Vec<OrphanedVm> =
                    orphans.iter().filter(|o| !deleted.contains(&o.vm_cid)).cloned().collect();
                record(store, &mut dep, &left, &deleted).await?;
                return Err(e.into());
            }
        }
        deleted.push(cid.clone());
    }
    if !deleted.is_empty() {
        let left: Vec<OrphanedVm> =
            orphans.iter().filter(|o| !deleted.contains(&o.vm_cid)).cloned().collect();
        record(store, &mut dep, &left, &deleted).await?;
    }
    // The next scan: one period on, or sooner when a grace period ends.
    let mut wait = ctx.data.config.scan;
    for o in dep.status.orphaned_vms.iter() {
        let left = (o.delete_after - Utc::now()).to_std().unwrap_or_default();
        wait = wait.min(left);
    }
    ctx.data.next.lock().unwrap_or_else(|p| p.into_inner()).insert(name, Instant::now() + wait);
    Ok(Action::requeue(wait))
}

/// Writes `orphans` and the condition saying so into `dep`'s status,
/// naming the VMs just `deleted`; writes nothing when that changes
/// nothing. A deployment that never had an orphan gets no condition; once
/// its orphans are deleted (or owned again, or gone) the condition says so
/// until the next orphan.
async fn record(
    store: &store::Store,
    dep: &mut Object<DeploymentSpec>,
    orphans: &[OrphanedVm],
    deleted: &[String],
) -> Result<(), store::Error> {
    let generation = dep.metadata.generation;
    let found = (!orphans.is_empty()).then(|| {
        let list: Vec<String> = orphans
            .iter()
            .map(|o| format!("{} (since {}, deleted after {})", o.vm_cid, o.since, o.delete_after))
            .collect();
        format!(
            "{} VM(s) tagged with this deployment are owned by no instance: {}",
            orphans.len(),
            list.join(", ")
        )
    });
    crate::runtime::status::patch(store, dep, |s| {
        s.orphaned_vms = orphans.to_vec();
        let current = find_condition(&s.conditions, ConditionType::OrphanedVms);
        let Some((status, reason, message)) = verdict(found.as_deref(), deleted, current) else {
            return;
        };
        if current.is_some_and(|c| c.status == status && c.reason == reason && c.message == message)
        {
            return;
        }
        set_condition(
            &mut s.conditions,
            Condition::new(ConditionType::OrphanedVms, status, reason, message, generation),
        );
    })
    .await?;
    Ok(())
}

/// What the `OrphanedVms` condition should say, given the report of the
/// orphans found (if any), the VMs just deleted and the condition as it
/// stands; `None`: leave it as it is (or absent).
fn verdict(
    found: Option<&str>,
    deleted: &[String],
    current: Option<&Condition>,
) -> Option<(ConditionStatus, Reason, String)> {
    match (found, current) {
        (Some(m), _) => Some((ConditionStatus::True, Reason::Found, m.to_string())),
        (None, _) if !deleted.is_empty() => Some((
            ConditionStatus::False,
            Reason::Deleted,
            format!("deleted after the grace period: {}", deleted.join(", ")),
        )),
        (None, Some(c)) if c.status == ConditionStatus::True => Some((
            ConditionStatus::False,
            Reason::Gone,
            "the VMs reported are owned by an instance again, or gone".to_string(),
        )),
        // Nothing found, nothing to say (or already said).
        (None, _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(status: ConditionStatus, reason: Reason) -> Condition {
        Condition::new(ConditionType::OrphanedVms, status, reason, "", 1)
    }

    /// A deployment that never had an orphan gets no condition; one found
    /// is True; deleted, or gone by itself, turns it False, which then
    /// stays as it is while nothing is found.
    #[test]
    fn the_condition_reports_orphans_and_their_end_and_is_quiet_otherwise() {
        assert_eq!(verdict(None, &[], None), None);
        let (s, r, m) = verdict(Some("1 VM(s) ..."), &[], None).unwrap();
        assert_eq!((s, r, m.as_str()), (ConditionStatus::True, Reason::Found, "1 VM(s) ..."));
        let found = cond(ConditionStatus::True, Reason::Found);
        let (s, r, m) = verdict(None, &["vm-1".into()], Some(&found)).unwrap();
        assert_eq!((s, r), (ConditionStatus::False, Reason::Deleted));
        assert!(m.contains("vm-1"), "{m}");
        let (s, r, _) = verdict(None, &[], Some(&found)).unwrap();
        assert_eq!((s, r), (ConditionStatus::False, Reason::Gone));
        for said in [Reason::Deleted, Reason::Gone] {
            assert_eq!(verdict(None, &[], Some(&cond(ConditionStatus::False, said))), None);
        }
    }
}
