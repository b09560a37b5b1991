//! The condition types and reasons controllers write into statuses, and
//! read from each other (cluster-api's `condition_consts.go`). Objects
//! hold them as [`crate::meta::Condition`]s, made with
//! [`crate::meta::Condition::new`].

use super::vocab::vocabulary;

vocabulary! {
    /// What a condition is about (its `type`).
    pub enum ConditionType {
        /// The summary. On a Deployment (deployment controller): True once
        /// every instance runs the current generation, False with why not
        /// (a [`Reason`] of its own, or the `PackagesCompiled` one that
        /// holds it up). On an Instance (instance controller): True once
        /// the current spec runs, False with `UpdateFailed` (which halts
        /// the rollout) or `Resurrecting`. On a Stemcell (stemcell
        /// controller): True once this director's CPI holds the image.
        Ready = "Ready",
        /// On a Deployment or Config (the validators): True with every
        /// error and its path when the spec is not valid, False when it is.
        Invalid = "Invalid",
        /// On a Deployment (compilation controller): True once every
        /// package its instances need is compiled for their stemcells.
        PackagesCompiled = "PackagesCompiled",
        /// On a Deployment (resurrector): True while too many of its
        /// instances are unresponsive and resurrection pauses.
        Meltdown = "Meltdown",
        /// On a Deployment (orphaned-VM scan): True while VMs tagged with
        /// it are owned by no instance; absent until the first is found.
        OrphanedVms = "OrphanedVms",
        /// On a CompiledPackage (compilation controller): its last compile
        /// failed; removed once it compiles.
        Failed = "Failed",
    }
}

vocabulary! {
    /// Why a condition has its status: CamelCase, for machines. One
    /// vocabulary for every condition type, because a reason travels: a
    /// Deployment's `Ready` False repeats the reason of the
    /// `PackagesCompiled` (or lookup) failure that holds it up.
    pub enum Reason {
        // Ready, on an Instance.
        /// The current spec runs, in the state asked for (True).
        Converged = "Converged",
        /// Driving the instance to its spec failed; halts the rollout.
        UpdateFailed = "UpdateFailed",
        /// An unresponsive instance's VM is being recreated.
        Resurrecting = "Resurrecting",
        /// The VM was recreated and runs the spec again (True).
        Resurrected = "Resurrected",

        // Ready, on a Deployment.
        /// Every instance runs the current generation (True).
        Deployed = "Deployed",
        /// Instances are being updated (False; the task goes on).
        RollingOut = "RollingOut",
        /// A cloud check is waiting for instances to scan or resolve.
        CloudCheck = "CloudCheck",
        /// The deployment's `Invalid` condition is True.
        Invalid = "Invalid",
        /// The task carrying out this generation was cancelled.
        Cancelled = "Cancelled",

        // Something the deployment names is missing or unusable (Ready on
        // a Deployment, PackagesCompiled, Failed).
        /// A cloud config it names does not exist.
        CloudConfigMissing = "CloudConfigMissing",
        /// A cloud config it names does not parse.
        CloudConfigInvalid = "CloudConfigInvalid",
        /// A runtime config does not parse.
        RuntimeConfigInvalid = "RuntimeConfigInvalid",
        /// The manifest does not parse.
        ManifestInvalid = "ManifestInvalid",
        /// The addons could not be applied.
        AddonsInvalid = "AddonsInvalid",
        /// A release it names is not uploaded.
        ReleaseMissing = "ReleaseMissing",
        /// A stemcell it names is not uploaded.
        StemcellMissing = "StemcellMissing",
        /// A job it names is not in its release (or has no templates, no blob).
        JobMissing = "JobMissing",
        /// A job's templates could not be read.
        JobInvalid = "JobInvalid",
        /// A job's blob could not be fetched.
        BlobMissing = "BlobMissing",
        /// An instance group names a vm_type the cloud config lacks.
        VmTypeMissing = "VmTypeMissing",
        /// An instance group names a vm_extension the cloud config lacks.
        VmExtensionMissing = "VmExtensionMissing",
        /// An instance group names a network the cloud config lacks.
        NetworkMissing = "NetworkMissing",
        /// An instance group names a disk_type the cloud config lacks.
        DiskTypeMissing = "DiskTypeMissing",
        /// A job's links cannot be resolved (no provider, several, wrong
        /// type) or the manifest's `consumes`/`provides` are malformed.
        LinksInvalid = "LinksInvalid",
        /// A package an instance needs is not compiled (yet).
        PackageNotCompiled = "PackageNotCompiled",
        /// The compilation or instance plan could not be made.
        PlanFailed = "PlanFailed",
        /// Instances could not be placed (AZs, addresses).
        PlacementFailed = "PlacementFailed",
        /// The instances' specs could not be built.
        BuildFailed = "BuildFailed",
        /// Templates failed to render.
        RenderFailed = "RenderFailed",
        /// Variables could not be generated or read.
        VariablesFailed = "VariablesFailed",
        /// Some of the deployment's Instance objects cannot be read.
        InstanceUnreadable = "InstanceUnreadable",
        /// Deleting an orphaned VM chosen in a cloud check failed.
        CloudCheckFailed = "CloudCheckFailed",

        // PackagesCompiled on a Deployment; Failed on a CompiledPackage.
        /// Every package is compiled (True).
        Compiled = "Compiled",
        /// Packages are being compiled.
        Compiling = "Compiling",
        /// The stemcell is not yet imported into this director's CPI.
        StemcellNotImported = "StemcellNotImported",
        /// The cloud config's compilation block is missing or unusable.
        NoCompilation = "NoCompilation",
        /// The compilation network has no free address.
        NoCompileAddress = "NoCompileAddress",
        /// A CPI or bus call for a compile VM failed.
        CompileVmFailed = "CompileVmFailed",
        /// A compile VM's agent never answered.
        AgentUnresponsive = "AgentUnresponsive",
        /// A package's packaging script failed.
        PackageCompileFailed = "PackageCompileFailed",
        /// Reading or writing the store failed.
        StoreError = "StoreError",

        // Invalid.
        /// The spec is valid (False).
        Valid = "Valid",
        /// The spec has errors, listed in the message (True).
        ValidationFailed = "ValidationFailed",

        // Meltdown.
        /// Too many instances are unresponsive (True).
        TooManyUnresponsive = "TooManyUnresponsive",
        /// Few enough are again (False).
        Recovered = "Recovered",

        // OrphanedVms.
        /// Orphaned VMs were found (True).
        Found = "Found",
        /// The orphaned VMs were deleted after their grace period (False).
        Deleted = "Deleted",
        /// The orphaned VMs are owned again or gone (False).
        Gone = "Gone",

        // Ready, on a Stemcell.
        /// The CPI holds the image (True).
        Imported = "Imported",
        /// The CPI (or reading the image for it) failed; retried with
        /// backoff (False).
        ImportFailed = "ImportFailed",
    }
}

impl Default for Reason {
    /// No reason: what a stored condition without one reads as.
    fn default() -> Reason {
        Reason::from("")
    }
}

impl Reason {
    /// Whether no reason is given (never written: the field is left out).
    pub fn is_empty(&self) -> bool {
        self.as_str().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::vocab::tests::round_trips;

    /// Every condition type is written as the string boshd wrote before it was an enum.
    #[test]
    fn condition_types_keep_their_strings() {
        round_trips(
            ConditionType::KNOWN,
            &["Ready", "Invalid", "PackagesCompiled", "Meltdown", "OrphanedVms", "Failed"],
        );
    }

    /// Every reason is written as the string boshd wrote before it was an enum.
    #[test]
    fn reasons_keep_their_strings() {
        round_trips(
            Reason::KNOWN,
            &[
                "Converged",
                "UpdateFailed",
                "Resurrecting",
                "Resurrected",
                "Deployed",
                "RollingOut",
                "CloudCheck",
                "Invalid",
                "Cancelled",
                "CloudConfigMissing",
                "CloudConfigInvalid",
                "RuntimeConfigInvalid",
                "ManifestInvalid",
                "AddonsInvalid",
                "ReleaseMissing",
                "StemcellMissing",
                "JobMissing",
                "JobInvalid",
                "BlobMissing",
                "VmTypeMissing",
                "VmExtensionMissing",
                "NetworkMissing",
                "DiskTypeMissing",
                "LinksInvalid",
                "PackageNotCompiled",
                "PlanFailed",
                "PlacementFailed",
                "BuildFailed",
                "RenderFailed",
                "VariablesFailed",
                "InstanceUnreadable",
                "CloudCheckFailed",
                "Compiled",
                "Compiling",
                "StemcellNotImported",
                "NoCompilation",
                "NoCompileAddress",
                "CompileVmFailed",
                "AgentUnresponsive",
                "PackageCompileFailed",
                "StoreError",
                "Valid",
                "ValidationFailed",
                "TooManyUnresponsive",
                "Recovered",
                "Found",
                "Deleted",
                "Gone",
                "Imported",
                "ImportFailed",
            ],
        );
        assert!(Reason::default().is_empty());
    }
}
