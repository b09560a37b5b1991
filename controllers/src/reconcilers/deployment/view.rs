//! What a deployment pass knows of Instances and compiled packages: read
//! from the shared caches, or from etcd.
//!
//! A pass used to list every Instance and every CompiledPackage from etcd,
//! and ran every 250 ms while a rollout lasted. Now a pass first plans on
//! the reflectors' caches ([`View::cached`]), which cost no read. A pass on
//! the cache may only conclude that there is nothing to do: anything else
//! (a write, a deletion, a creation, a failure) is decided again on a view
//! read from etcd ([`View::fresh`]), because a cache may lag (a slow
//! watch, this controller's own last writes, FAULT-MATRIX A5 and B5) and
//! what creates or deletes must be decided on current data. When the fresh
//! view holds exactly what the cached one did ([`View::same_as`]), the
//! cached pass stands and is not planned twice.
//!
//! Other deployments' instances (whose addresses the plan must avoid) come
//! from the cache in both views. Every address this term hands out is in
//! the director's address book before its Instance is written, and the
//! cache was listed after the term began (so after the last write of any
//! earlier term, which fencing stops): what the cache could still lack is
//! in the book.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use bosh_api::Object;
use bosh_api::objects::{
    BlobRef, CompiledPackageSpec, DnsNumbersSpec, ErrandRunSpec, InstanceSpec,
};
use bosh_api::store::{self, Quarantined, Store};

use crate::runtime::Cache;

/// The shared caches a deployer reads.
#[derive(Clone)]
pub struct Caches {
    /// Every Instance.
    pub instances: Arc<Cache<InstanceSpec>>,
    /// Every CompiledPackage.
    pub packages: Arc<Cache<CompiledPackageSpec>>,
    /// Every ErrandRun (which errand groups want instances).
    pub errands: Arc<Cache<ErrandRunSpec>>,
    /// The DNS numbers (a pass whose plan they cover writes none).
    pub numbers: Arc<Cache<DnsNumbersSpec>>,
}

/// Instances and compiled packages, as one pass sees them.
#[derive(Debug, Clone)]
pub struct View {
    /// This deployment's instances, by key.
    pub mine: Vec<Object<InstanceSpec>>,
    /// Addresses held outside this deployment: other deployments'
    /// instances and compile workers (not the address book).
    pub outside: BTreeSet<Ipv4Addr>,
    /// Compiled package blobs by package key.
    pub compiled: BTreeMap<String, BlobRef>,
    /// This deployment's instances that cannot be read, with why.
    pub unreadable: Vec<Quarantined>,
    /// Errand groups whose runs want instances now
    /// ([`crate::reconcilers::errand::groups_wanting_instances`]).
    pub running_errands: BTreeSet<String>,
    /// Read from etcd (else from the caches).
    pub fresh: bool,
    /// What the view was built from: each own instance's and package's
    /// key and revisions, to tell whether two views saw the same.
    seen: Vec<(String, i64, i64)>,
}

impl View {
    /// The view from the caches, if they have been listed.
    pub fn cached(caches: &Caches, name: &str) -> Option<View> {
        if !caches.instances.is_synced()
            || !caches.packages.is_synced()
            || !caches.errands.is_synced()
        {
            return None;
        }
        let runs: Vec<_> = caches
            .errands
            .list()
            .into_iter()
            .filter(|r| r.metadata.deployment.as_deref() == Some(name))
            .collect();
        let running =
            crate::reconcilers::errand::groups_wanting_instances(runs.iter().map(|r| &**r));
        let (mine, others): (Vec<_>, Vec<_>) = caches
            .instances
            .list()
            .into_iter()
            .partition(|i| i.metadata.deployment.as_deref() == Some(name));
        let mine = mine.into_iter().map(|i| (*i).clone()).collect();
        let packages: Vec<_> = caches.packages.list().iter().map(|p| (**p).clone()).collect();
        let unreadable = caches.instances.quarantined();
        let mut view =
            View::build(name, mine, others.iter().map(|i| &**i), &packages, unreadable, false);
        view.running_errands = running;
        Some(view)
    }

    /// The view from etcd: this deployment's instances and every compiled
    /// package listed now; other deployments' instances from `caches`
    /// (listed from etcd too when there are none, or they are not listed
    /// yet).
    pub async fn fresh(
        store: &Store,
        caches: Option<&Caches>,
        name: &str,
    ) -> Result<View, store::Error> {
        let packages = store.list::<CompiledPackageSpec>("").await?.items;
        let runs = store.list::<ErrandRunSpec>(&format!("{name}/")).await?.items;
        let running = crate::reconcilers::errand::groups_wanting_instances(runs.iter());
        let mut view = match caches.filter(|c| c.instances.is_synced()) {
            Some(c) => {
                let listing = store.list::<InstanceSpec>(&format!("{name}/")).await?;
                let others: Vec<_> = c
                    .instances
                    .list()
                    .into_iter()
                    .filter(|i| i.metadata.deployment.as_deref() != Some(name))
                    .collect();
                let others = others.iter().map(|i| &**i);
                View::build(name, listing.items, others, &packages, listing.quarantined, true)
            }
            None => {
                let listing = store.list::<InstanceSpec>("").await?;
                let (mine, others): (Vec<_>, Vec<_>) = listing
                    .items
                    .into_iter()
                    .partition(|i| i.metadata.deployment.as_deref() == Some(name));
                View::build(name, mine, others.iter(), &packages, listing.quarantined, true)
            }
        };
        view.running_errands = running;
        Ok(view)
    }

    fn build<'a>(
        name: &str,
        mine: Vec<Object<InstanceSpec>>,
        others: impl Iterator<Item = &'a Object<InstanceSpec>>,
        packages: &[Object<CompiledPackageSpec>],
        quarantined: Vec<Quarantined>,
        fresh: bool,
    ) -> View {
        let outside = others
            .flat_map(|i| i.spec.networks.iter().map(|n| n.ip.clone()))
            .chain(packages.iter().filter_map(|w| w.status.worker.as_ref().map(|w| w.ip.clone())))
            .filter_map(|ip| ip.parse().ok())
            .collect();
        let compiled = packages
            .iter()
            .filter_map(|o| o.spec.blob.clone().map(|b| (o.metadata.name.clone(), b)))
            .collect();
        let prefix = format!("{name}/");
        let unreadable = quarantined.into_iter().filter(|q| q.name.starts_with(&prefix)).collect();
        let revisions =
            |key: String, m: &bosh_api::ObjectMeta| (key, m.resource_version, m.status_revision);
        let seen = mine
            .iter()
            .map(|i| revisions(i.key_name(), &i.metadata))
            .chain(packages.iter().map(|p| revisions(p.key_name(), &p.metadata)))
            .collect();
        View { mine, outside, compiled, unreadable, running_errands: BTreeSet::new(), fresh, seen }
    }

    /// Whether `other` saw exactly the objects this view saw, at the same
    /// revisions (and the same addresses held elsewhere).
    pub fn same_as(&self, other: &View) -> bool {
        self.seen == other.seen
            && self.outside == other.outside
            && self.running_errands == other.running_errands
            && self.unreadable.len() == other.unreadable.len()
    }
}

#[cfg(test)]
mod tests {
    use bosh_api::ObjectMeta;
    use bosh_api::objects::{CompileWorker, InstanceNetwork};

    use super::*;

    fn instance(dep: &str, name: &str, ip: &str, rev: i64) -> Object<InstanceSpec> {
        let mut o = Object::new(ObjectMeta::scoped(dep, name), InstanceSpec::default());
        o.spec.networks.push(InstanceNetwork { ip: ip.into(), ..Default::default() });
        o.metadata.resource_version = rev;
        o
    }

    /// Own instances are split from others, whose addresses (and compile
    /// workers') are held outside; views compare by revisions.
    #[test]
    fn a_view_splits_own_instances_from_addresses_held_elsewhere() {
        let mut pkg = Object::new(ObjectMeta::named("p-1"), CompiledPackageSpec::default());
        pkg.status.worker = Some(CompileWorker { ip: "10.0.0.9".into(), ..Default::default() });
        let mine = vec![instance("d", "web/a", "10.0.0.2", 1)];
        let others = [instance("e", "web/b", "10.0.0.3", 2)];
        let q = |n: &str| Quarantined { name: n.into(), revision: 1, reason: "bad".into() };
        let v = View::build(
            "d",
            mine.clone(),
            others.iter(),
            std::slice::from_ref(&pkg),
            vec![q("d/web/x"), q("e/web/y")],
            false,
        );
        assert_eq!(v.mine.len(), 1);
        let outside: Vec<String> = v.outside.iter().map(|ip| ip.to_string()).collect();
        assert_eq!(outside, ["10.0.0.3", "10.0.0.9"]);
        assert_eq!(v.unreadable.len(), 1, "only this deployment's unreadable instances");
        let same = View::build("d", mine.clone(), others.iter(), &[pkg.clone()], vec![], true);
        assert!(!v.same_as(&same), "an unreadable instance more");
        let w = View::build("d", mine, others.iter(), &[pkg], vec![q("d/web/x")], true);
        assert!(v.same_as(&w));
        let newer = View::build(
            "d",
            vec![instance("d", "web/a", "10.0.0.2", 5)],
            others.iter(),
            &[],
            vec![q("d/web/x")],
            true,
        );
        assert!(!v.same_as(&newer), "a newer revision of an own instance");
    }
}
