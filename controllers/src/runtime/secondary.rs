//! Secondary watches: a change of one kind wakes owners of another.
//!
//! kube-runtime's `Controller::owns` and `watches`. A parent that waits for
//! its children (the deployment controller for its Instances) registers a
//! watch of the children's reflector with a mapper from a child to its
//! owner's key; when a child changes in a way the predicate cares about,
//! exactly the owners it maps to (before and after the change, so a child
//! that moved or went wakes its old owner too) are queued. Nothing is read
//! from the event: the owner's reconcile reads what it needs, as it would
//! at a resync.

use std::collections::BTreeSet;
use std::sync::Arc;

use bosh_api::{Kind, Object};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::predicate::Predicate;
use super::queue::WorkQueue;
use super::shared::{Hold, Reflector, Subscription};

type MapperFn<K> = dyn Fn(&Object<K>) -> Vec<String> + Send + Sync;

/// A watch of kind `K` on behalf of a controller of another kind.
pub(crate) trait Secondary: Send + Sync {
    /// Starts waking keys of `queue`; stops when the subscription drops.
    fn subscribe(&self, queue: Arc<WorkQueue>) -> Subscription;
    /// Keeps the watched reflector running.
    fn hold(&self) -> Hold;
    /// Waits for a listing of the watched kind read at or after `revision`.
    fn listed_since(&self, revision: i64) -> BoxFuture<'_, ()>;
}

/// Changes of `K` that pass `when`, mapped to owner keys by `mapper`.
pub(crate) struct Watch<K: Kind> {
    pub reflector: Reflector<K>,
    pub when: Predicate<K>,
    /// `None`: the cache is only read, never wakes anyone.
    pub mapper: Option<Arc<MapperFn<K>>>,
}

/// The owner keys a change of a `K` wakes: those of the object before and
/// after, once each, in order.
pub(crate) fn owners<K: Kind>(
    change: &super::reflector::Change<K>,
    when: &Predicate<K>,
    mapper: &MapperFn<K>,
) -> BTreeSet<String> {
    if !when.matches(change) {
        return BTreeSet::new();
    }
    change.old.iter().chain(change.new.iter()).flat_map(|o| mapper(o)).collect()
}

impl<K: Kind> Secondary for Watch<K> {
    fn subscribe(&self, queue: Arc<WorkQueue>) -> Subscription {
        let Some(mapper) = self.mapper.clone() else {
            return self.reflector.subscribe(|_| {});
        };
        let when = self.when.clone();
        self.reflector.subscribe(move |c| {
            for key in owners(c, &when, &*mapper) {
                queue.add(&key);
            }
        })
    }

    fn hold(&self) -> Hold {
        self.reflector.hold()
    }

    fn listed_since(&self, revision: i64) -> BoxFuture<'_, ()> {
        self.reflector.listed_since(revision).boxed()
    }
}

#[cfg(test)]
mod tests {
    use bosh_api::ObjectMeta;
    use bosh_api::objects::InstanceSpec;
    use bosh_api::store::WatchEvent;

    use super::*;

    fn instance(dep: &str, name: &str, spec: i64, status: i64) -> Object<InstanceSpec> {
        let mut o = Object::new(ObjectMeta::scoped(dep, name), InstanceSpec::default());
        o.metadata.resource_version = spec;
        o.metadata.status_revision = status;
        o
    }

    async fn drain(q: &WorkQueue) -> Vec<String> {
        let mut out = Vec::new();
        while !q.is_empty() {
            let k = q.next().await.unwrap();
            q.done(&k, None);
            out.push(k);
        }
        out
    }

    /// A child's change wakes exactly its owner, and only when the
    /// predicate says it matters; its removal wakes the owner too.
    #[tokio::test]
    async fn a_secondary_watch_wakes_exactly_the_owner() {
        let children = Reflector::<InstanceSpec>::detached();
        let owns = Watch {
            reflector: children.clone(),
            // Status writes only (the spec is the parent's own to write).
            when: Predicate::new(|o: &Object<InstanceSpec>, n| {
                o.metadata.status_revision != n.metadata.status_revision
            }),
            mapper: Some(Arc::new(|i: &Object<InstanceSpec>| {
                i.metadata.deployment.clone().into_iter().collect()
            })),
        };
        let queue = Arc::new(WorkQueue::new());
        let sub = owns.subscribe(queue.clone());
        children.dispatch(WatchEvent::Relisted {
            objects: vec![instance("a", "web/1", 1, 0), instance("b", "web/1", 2, 0)],
            quarantined: Vec::new(),
            revision: 2,
        });
        assert_eq!(drain(&queue).await, ["a", "b"], "the initial listing wakes every owner");

        let applied = |o| WatchEvent::Applied(Box::new(o));
        children.dispatch(applied(instance("a", "web/1", 1, 3)));
        assert_eq!(drain(&queue).await, ["a"], "a's child changed status: a alone");
        children.dispatch(applied(instance("b", "web/1", 4, 0)));
        assert!(drain(&queue).await.is_empty(), "a spec write the predicate ignores");
        children.dispatch(WatchEvent::Deleted { name: "b/web/1".into(), revision: 5 });
        assert_eq!(drain(&queue).await, ["b"], "a removal wakes its owner");
        children.dispatch(applied(instance("c", "web/1", 6, 0)));
        assert_eq!(drain(&queue).await, ["c"], "a new child wakes its owner");

        drop(sub);
        children.dispatch(applied(instance("a", "web/1", 1, 7)));
        assert!(queue.is_empty(), "nothing once unsubscribed");
    }

    /// A child that moved from one owner to another wakes both.
    #[test]
    fn a_child_that_moved_wakes_its_old_and_new_owner() {
        let mut old = instance("a", "web/1", 1, 0);
        old.metadata.labels.insert("owner".into(), "x".into());
        let mut new = old.clone();
        new.metadata.labels.insert("owner".into(), "y".into());
        new.metadata.resource_version = 2;
        let change = super::super::reflector::Change {
            key: "a/web/1".into(),
            old: Some(Arc::new(old)),
            new: Some(Arc::new(new)),
        };
        let by_label = |i: &Object<InstanceSpec>| i.metadata.labels.values().cloned().collect();
        let got = owners(&change, &Predicate::any(), &by_label);
        assert_eq!(got.into_iter().collect::<Vec<_>>(), ["x", "y"]);
    }
}
