//! Status writes that survive a concurrent writer.

use bosh_api::store::{self, Store};
use bosh_api::{Kind, Object};

/// Writes `edit` into `obj`'s status unless it changes nothing; on a
/// conflicting write (another status writer) re-reads the object and
/// applies `edit` again. `obj` is kept current.
pub async fn patch<S: Kind>(
    store: &Store,
    obj: &mut Object<S>,
    edit: impl Fn(&mut S::Status),
) -> Result<(), store::Error> {
    loop {
        let mut next = obj.clone();
        edit(&mut next.status);
        if next.status == obj.status {
            return Ok(());
        }
        match store.update_status(&next).await {
            Ok(saved) => {
                *obj = saved;
                return Ok(());
            }
            Err(e) if e.is_conflict() => {
                let dep = obj.metadata.deployment.clone();
                *obj = store.get::<S>(dep.as_deref(), &obj.metadata.name).await?;
            }
            Err(e) => return Err(e),
        }
    }
}
