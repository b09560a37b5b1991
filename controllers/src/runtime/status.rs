//! The one status writer: every controller writes status through
//! [`patch`].
//!
//! A status is written only when the edit changes it, so a resync of
//! converged objects writes nothing (and conditions keep their transition
//! time); and an object's status has several writers (the validator, the
//! compiler and the deployer share a Deployment's), so a conflicting write
//! re-reads the object and applies the edit again instead of failing the
//! reconcile (which cost a backoff per conflict in a busy rollout).

use bosh_api::store::{self, Store};
use bosh_api::{Kind, Object};

/// Writes `edit` into `obj`'s status unless it changes nothing; on a
/// conflicting write (another status writer) re-reads the object and
/// applies `edit` again. `obj` is kept current. Returns whether a write
/// happened.
pub async fn patch<S: Kind>(
    store: &Store,
    obj: &mut Object<S>,
    edit: impl Fn(&mut S::Status),
) -> Result<bool, store::Error> {
    loop {
        let mut next = obj.clone();
        edit(&mut next.status);
        if next.status == obj.status {
            return Ok(false);
        }
        match store.update_status(&next).await {
            Ok(saved) => {
                *obj = saved;
                return Ok(true);
            }
            Err(e) if e.is_conflict() => {
                let dep = obj.metadata.deployment.clone();
                *obj = store.get::<S>(dep.as_deref(), &obj.metadata.name).await?;
            }
            Err(e) => return Err(e),
        }
    }
}
