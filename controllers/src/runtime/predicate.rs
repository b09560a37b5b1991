//! Which changes of an object wake a controller.
//!
//! kube-runtime filters a watch with `predicate_filter` so that a
//! controller is not woken by writes it does not care about (above all its
//! own status writes). A [`Predicate`] is that filter: it compares what the
//! cache held before with what it holds now. Creation and removal always
//! pass. [`Trigger`] covers the two common cases; a controller that must
//! hear some status writes but not others (the deployment controller hears
//! the validator's and compiler's verdicts, not its own `Ready`) writes its
//! own with [`Predicate::new`].

use std::fmt;
use std::sync::Arc;

use bosh_api::{Kind, Object};

use super::reflector::{Change, Trigger};

type ChangedFn<S> = dyn Fn(&Object<S>, &Object<S>) -> bool + Send + Sync;

/// Decides whether a change of an object of kind `S` wakes.
pub struct Predicate<S: Kind>(Arc<ChangedFn<S>>);

impl<S: Kind> Clone for Predicate<S> {
    fn clone(&self) -> Self {
        Predicate(self.0.clone())
    }
}

impl<S: Kind> fmt::Debug for Predicate<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Predicate")
    }
}

impl<S: Kind> Predicate<S> {
    /// Wakes when `changed(old, new)` says so (and on creation and removal).
    pub fn new(changed: impl Fn(&Object<S>, &Object<S>) -> bool + Send + Sync + 'static) -> Self {
        Predicate(Arc::new(changed))
    }

    /// Any write of spec or status.
    pub fn any() -> Self {
        Trigger::Any.into()
    }

    /// Spec (and metadata) writes only.
    pub fn generation() -> Self {
        Trigger::Generation.into()
    }

    /// Whether `change` wakes.
    pub fn matches(&self, change: &Change<S>) -> bool {
        match (&change.old, &change.new) {
            (Some(old), Some(new)) => (self.0)(old, new),
            _ => true,
        }
    }
}

impl<S: Kind> From<Trigger> for Predicate<S> {
    fn from(t: Trigger) -> Self {
        Predicate::new(move |old, new| t.changed(old, new))
    }
}

#[cfg(test)]
mod tests {
    use bosh_api::ObjectMeta;
    use bosh_api::objects::DeploymentSpec;

    use super::*;

    fn at(spec: i64, status: i64) -> Option<Arc<Object<DeploymentSpec>>> {
        let mut o = Object::new(ObjectMeta::named("d"), DeploymentSpec::default());
        o.metadata.resource_version = spec;
        o.metadata.status_revision = status;
        Some(Arc::new(o))
    }

    fn change(
        old: Option<Arc<Object<DeploymentSpec>>>,
        new: Option<Arc<Object<DeploymentSpec>>>,
    ) -> Change<DeploymentSpec> {
        Change { key: "d".into(), old, new }
    }

    /// Creation and removal always wake; an update wakes as the predicate says.
    #[test]
    fn creation_and_removal_always_wake_updates_as_the_predicate_says() {
        let never = Predicate::<DeploymentSpec>::new(|_, _| false);
        assert!(never.matches(&change(None, at(1, 0))));
        assert!(never.matches(&change(at(1, 0), None)));
        assert!(!never.matches(&change(at(1, 0), at(2, 0))));
        let spec = Predicate::generation();
        assert!(!spec.matches(&change(at(1, 0), at(1, 2))), "a status write");
        assert!(spec.matches(&change(at(1, 2), at(3, 2))), "a spec write");
        assert!(Predicate::any().matches(&change(at(1, 0), at(1, 2))));
    }
}
