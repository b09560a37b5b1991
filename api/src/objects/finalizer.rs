//! The finalizers boshd's controllers put on objects: each keeps an object
//! in the store, marked for deletion, until its controller has cleaned up.

/// A finalizer of boshd's, by what it waits for. `metadata.finalizers`
/// stays a list of strings (other tools may add their own); these are
/// added, looked for and removed with [`crate::meta::ObjectMeta`]'s
/// `add_finalizer`, `has_finalizer` and `remove_finalizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Finalizer {
    /// On a Deployment (deployment controller): its Instance objects are
    /// deleted first.
    Instances,
    /// On an Instance (instance controller, added by the deployment
    /// controller when it creates it): its VM is deleted and its disk
    /// orphaned first.
    Vm,
    /// On a Stemcell (stemcell controller): the image is deleted from the
    /// CPI first.
    StemcellCpi,
}

impl Finalizer {
    /// Every finalizer.
    pub const ALL: [Finalizer; 3] = [Finalizer::Instances, Finalizer::Vm, Finalizer::StemcellCpi];

    /// The name as written in `metadata.finalizers`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Finalizer::Instances => "bosh.io/instances",
            Finalizer::Vm => "bosh.io/vm",
            Finalizer::StemcellCpi => "bosh.io/stemcell-cpi",
        }
    }
}

impl std::fmt::Display for Finalizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finalizers keep the names boshd always wrote.
    #[test]
    fn finalizers_keep_their_names() {
        let names: Vec<&str> = Finalizer::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(names, ["bosh.io/instances", "bosh.io/vm", "bosh.io/stemcell-cpi"]);
    }
}
