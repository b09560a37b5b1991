//! The kinds boshd stores in etcd. Each is an [`Object`] whose spec type
//! implements [`Kind`], which names the kind, its key segment and its status
//! type.
//!
//! What one controller writes and another reads is a type here, never a
//! string a controller defines: [`ConditionType`] and [`Reason`]
//! (`condition.rs`), [`Finalizer`], [`InstancePhase`] and [`InstanceHealth`]
//! (`instance.rs`), [`DiskPhase`]. The stored vocabularies read values they
//! do not know (see `vocab.rs`), so objects stay readable across versions.

use std::fmt::Debug;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::meta::{Condition, ObjectMeta};

mod cloud_check;
mod compiled_package;
pub(crate) mod condition;
mod config;
mod deployment;
mod disk;
mod dns_numbers;
mod errand;
mod event;
pub(crate) mod finalizer;
mod instance;
mod release;
mod stemcell;
mod task;
mod vocab;

pub use cloud_check::{
    CloudCheckSpec, CloudCheckStatus, InstanceCloudCheck, InstanceCloudCheckStatus, Problem,
    ProblemType, Resolution, ResolutionRequest,
};
pub use compiled_package::{
    CompileWorker, CompiledPackageSpec, CompiledPackageStatus, compile_key,
};
pub use condition::{ConditionType, Reason};
pub use config::{ConfigSpec, ConfigStatus, ConfigType};
pub use deployment::{
    DeploymentOptions, DeploymentSpec, DeploymentStatus, InstanceOverride, LinkStatus, OrphanedVm,
};
pub use disk::{DiskPhase, DiskSpec, DiskStatus};
pub use dns_numbers::{
    DNS_NUMBERS_NAME, DnsNumbersSpec, DnsNumbersStatus, GroupNumber, GroupType, LastNumbers, Wanted,
};
pub use errand::{
    DEFAULT_ERRAND_TIMEOUT_SECS, ErrandInstanceResult, ErrandPhase, ErrandRunSpec, ErrandRunStatus,
};
pub use event::{CPI_LOG_STAGE, EventSpec, EventState, EventStatus};
pub use finalizer::Finalizer;
pub use instance::{
    DesiredState, InstanceHealth, InstanceJob, InstanceNetwork, InstancePackage, InstancePhase,
    InstanceSpec, InstanceStatus,
};
pub use release::{BlobRef, ReleaseJob, ReleasePackage, ReleaseSpec, ReleaseStatus};
pub use stemcell::{StemcellSpec, StemcellStatus};
pub use task::{TaskChange, TaskSpec, TaskState, TaskStatus};
pub use vocab::Unrecognized;

/// The `apiVersion` of every object.
pub const API_VERSION: &str = "bosh.io/v1alpha1";

/// Ties a spec type to its kind name, key segment and status type.
pub trait Kind:
    Clone + Debug + PartialEq + Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static
{
    /// `kind` as written in objects, e.g. `Deployment`.
    const KIND: &'static str;
    /// The key segment under `/bosh/spec/` and `/bosh/status/`, e.g. `deployments`.
    const PLURAL: &'static str;
    /// Whether names are scoped to a deployment (the key then starts with it).
    const SCOPED: bool = false;
    /// What controllers observe and write.
    type Status: Clone
        + Debug
        + Default
        + PartialEq
        + Serialize
        + DeserializeOwned
        + JsonSchema
        + Send
        + Sync
        + 'static;
}

/// One stored object: metadata, the desired `spec` and the observed `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", bound = "S: Kind", deny_unknown_fields)]
#[schemars(bound = "S: Kind")]
pub struct Object<S: Kind> {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always `S::KIND`.
    pub kind: String,
    /// Identity and bookkeeping.
    pub metadata: ObjectMeta,
    /// What users (or a parent controller) want.
    pub spec: S,
    /// What controllers observed; stored under its own key.
    #[serde(default)]
    pub status: S::Status,
}

impl<S: Kind> Object<S> {
    /// A new object with empty status.
    pub fn new(metadata: ObjectMeta, spec: S) -> Self {
        Object {
            api_version: API_VERSION.to_string(),
            kind: S::KIND.to_string(),
            metadata,
            spec,
            status: S::Status::default(),
        }
    }

    /// The object's key relative to its kind's prefix: `name`, or
    /// `deployment/name` for scoped kinds.
    pub fn key_name(&self) -> String {
        key_name::<S>(self.metadata.deployment.as_deref(), &self.metadata.name)
    }
}

/// The key of an object relative to its kind's prefix.
pub fn key_name<S: Kind>(deployment: Option<&str>, name: &str) -> String {
    match (S::SCOPED, deployment) {
        (true, Some(d)) => format!("{d}/{name}"),
        _ => name.to_string(),
    }
}

/// Why a name cannot be used as (part of) an etcd key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {name:?}: {reason}")]
pub struct InvalidName {
    /// The offending name.
    pub name: String,
    /// What was expected.
    pub reason: &'static str,
}

/// Checks a key name: `/`-separated parts, each following the one name rule
/// ([`crate::names`]). Keeps keys unambiguous and prefix scans exact (`a/b`
/// must never match under the prefix of `a/bc`), and means a name the
/// manifest check let through always makes a key.
pub fn validate_name(name: &str) -> Result<(), InvalidName> {
    let bad = |reason| Err(InvalidName { name: name.to_string(), reason });
    if name.is_empty() {
        return bad("a name must not be empty");
    }
    if name.len() > 253 {
        return bad("a name must be at most 253 characters");
    }
    if !name.split('/').all(crate::names::is_valid_name) {
        return bad("each '/'-separated part must use letters, digits, '-', '_', '+' and '.', \
             start with a letter, digit or '_', and be at most 128 characters");
    }
    Ok(())
}

/// A status that is nothing but conditions; shared by kinds whose
/// controllers only validate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionsOnly {
    /// Observations; a Config's validator writes `Invalid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The spec generation these conditions describe.
    #[serde(default)]
    pub observed_revision: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names that would make key prefixes ambiguous are refused.
    #[test]
    fn validate_name_rejects_ambiguous_keys() {
        for ok in ["web", "nginx/1.2.0", "0+dev.1", "cloud/default", "a_b-c"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a//b", "/a", "a/", "..", "a/../b", "a b", "a\nb", "ü", "a/-rf"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    /// A scoped kind's key starts with its deployment.
    #[test]
    fn scoped_key_names_start_with_the_deployment() {
        let mut meta = ObjectMeta::scoped("cf", "web/4a1b");
        let i = Object::new(meta.clone(), InstanceSpec::default());
        assert_eq!(i.key_name(), "cf/web/4a1b");
        meta.deployment = None;
        let d = Object::new(meta, DeploymentSpec::default());
        assert_eq!(d.key_name(), "web/4a1b");
    }

    /// apiVersion and kind are filled and unknown fields are rejected.
    #[test]
    fn objects_round_trip_and_reject_unknown_fields() {
        let d = Object::new(ObjectMeta::named("d"), DeploymentSpec::default());
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["apiVersion"], API_VERSION);
        assert_eq!(v["kind"], "Deployment");
        let back: Object<DeploymentSpec> = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, d);
        let mut bad = v;
        bad["metadata"]["nmae"] = "x".into();
        let err = serde_json::from_value::<Object<DeploymentSpec>>(bad).unwrap_err();
        assert!(err.to_string().contains("nmae"), "{err}");
    }
}
