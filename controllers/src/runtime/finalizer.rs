//! Finalizers, the kube-runtime way: one helper that adds the finalizer
//! before any work, runs the clean-up when the object is being deleted,
//! and removes the finalizer only once the clean-up is done.
//!
//! Three controllers (deployment, instance, stemcell) each wrote this by
//! hand. The order is what matters: the finalizer is in etcd before
//! `apply` can make anything that needs cleaning up, so a crash after the
//! add leaves an object whose deletion waits for the clean-up; and it
//! leaves only after `cleanup` said so, so a crash between the clean-up and
//! the removal runs the clean-up again (it must be idempotent), never
//! skips it. Both writes are compare-and-swap on a fresh read, so a stale
//! cache can neither add twice nor drop someone else's finalizer.

use std::future::Future;
use std::sync::Arc;

use bosh_api::objects::Finalizer;
use bosh_api::store;
use bosh_api::{Kind, Object};

use super::controller::{Action, Ctx};

/// What a clean-up concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// Everything the finalizer guards is gone: remove the finalizer.
    Done,
    /// Not yet (children still going): keep the finalizer, look again as
    /// the action says.
    Wait(Action),
}

/// Reconciles `obj` under `finalizer`: adds the finalizer if missing
/// (and returns, the write wakes the controller again), runs `apply` while
/// the object lives, runs `cleanup` while it is being deleted and removes
/// the finalizer once it is [`Cleanup::Done`]. A deleting object without
/// the finalizer is someone else's to finish: nothing is done.
pub async fn finalizer<S, C, E, A, AF, D, DF>(
    ctx: &Ctx<C>,
    obj: Arc<Object<S>>,
    name: Finalizer,
    apply: A,
    cleanup: D,
) -> Result<Action, E>
where
    S: Kind,
    E: From<store::Error>,
    A: FnOnce(Arc<Object<S>>) -> AF,
    AF: Future<Output = Result<Action, E>>,
    D: FnOnce(Arc<Object<S>>) -> DF,
    DF: Future<Output = Result<Cleanup, E>>,
{
    let has = |o: &Object<S>| o.metadata.has_finalizer(name);
    let mut obj = obj;
    if !obj.metadata.is_deleting() && !has(&obj) {
        // The view may lag a finalizer added a moment ago: decide on etcd.
        let dep = obj.metadata.deployment.as_deref();
        let Some(mut cur) = ctx.store.try_get::<S>(dep, &obj.metadata.name).await? else {
            return Ok(Action::await_change());
        };
        if !has(&cur) && !cur.metadata.is_deleting() {
            cur.metadata.add_finalizer(name);
            ctx.store.update_spec(&cur).await?;
            // A spec write: it wakes the controller, which then finds the
            // finalizer in place.
            return Ok(Action::await_change());
        }
        // Added already (a reply lost, a cache behind), or deleted since:
        // carry on from what etcd holds.
        obj = Arc::new(cur);
    }
    if !obj.metadata.is_deleting() {
        return apply(obj).await;
    }
    if !has(&obj) {
        return Ok(Action::await_change());
    }
    match cleanup(obj.clone()).await? {
        Cleanup::Wait(action) => Ok(action),
        Cleanup::Done => {
            remove(ctx, &obj, name).await?;
            Ok(Action::await_change())
        }
    }
}

/// Removes finalizer `name` from the object as etcd holds it now (with the
/// last finalizer of a deleting object, the object goes). [`finalizer`]
/// calls it after a clean-up is [`Cleanup::Done`]; a clean-up whose last
/// step must come after the object is gone calls it itself (the deployment
/// controller ends a deletion's task `done` only once the deployment is no
/// longer readable, so that a user who saw the task end never lists it).
pub async fn remove<S: Kind, C>(
    ctx: &Ctx<C>,
    obj: &Object<S>,
    name: Finalizer,
) -> Result<(), store::Error> {
    let dep = obj.metadata.deployment.as_deref();
    let Some(mut cur) = ctx.store.try_get::<S>(dep, &obj.metadata.name).await? else {
        return Ok(());
    };
    if !cur.metadata.has_finalizer(name) {
        return Ok(());
    }
    cur.metadata.remove_finalizer(name);
    ctx.store.update_spec(&cur).await?;
    Ok(())
}
