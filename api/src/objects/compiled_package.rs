//! CompiledPackage: one package compiled for one stemcell, named by its
//! compile key, and the record of the compile VM that is making it.
//!
//! The object is both the cache entry and the compile job: it is created
//! with its inputs (and no blob) before a compile VM exists, its status
//! records the VM's agent and request ids before the CPI is asked for one
//! (intent before side effect), and its spec gains the result blob once the
//! agent has uploaded it. A package is compiled when `spec.blob` is set.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{BlobRef, Kind};
use crate::meta::Condition;

/// Spec of a CompiledPackage; `metadata.name` is its [`compile_key`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompiledPackageSpec {
    /// Package name.
    pub package: String,
    /// The source package's fingerprint (BOSH's package version).
    pub fingerprint: String,
    /// The release the source came from, `name/version` (the first one
    /// that needed it; any release with the same fingerprint shares it).
    pub release: String,
    /// Stemcell operating system, e.g. `ubuntu-jammy`.
    pub stemcell_os: String,
    /// Stemcell version.
    pub stemcell_version: String,
    /// Compile keys of the direct dependencies, by package name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dependencies: BTreeMap<String, String>,
    /// The compiled package's tgz, once compiled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobRef>,
}

/// The compile VM working on (or last used for) a package.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompileWorker {
    /// The deployment whose compilation runs it.
    pub deployment: String,
    /// The VM's agent id (also its bus user).
    pub agent_id: String,
    /// The CPI request id the VM is tagged with (adoption after a lost reply).
    pub request_id: String,
    /// The address it has on the compilation network.
    pub ip: String,
    /// The VM's cid, once `create_vm` answered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vm_cid: String,
    /// The CPI that makes the VM (the compilation AZ's), by its CPI config
    /// name; absent: boshd's default CPI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpi: Option<String>,
}

/// Status of a CompiledPackage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompiledPackageStatus {
    /// `Failed` while the packaging script fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default)]
    pub observed_revision: i64,
    /// The compile VM, from just before it is created until it is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<CompileWorker>,
}

impl Kind for CompiledPackageSpec {
    const KIND: &'static str = "CompiledPackage";
    const PLURAL: &'static str = "compiledpackages";
    type Status = CompiledPackageStatus;
}

/// The compile key: lower-case hex sha256 of the package fingerprint, the
/// stemcell OS and version, and the sorted compile keys of the package's
/// dependencies. Two packages with equal keys compile to interchangeable
/// results, whichever release or deployment asked for them.
pub fn compile_key(
    fingerprint: &str,
    stemcell_os: &str,
    stemcell_version: &str,
    dependency_keys: &[&str],
) -> String {
    let mut deps = dependency_keys.to_vec();
    deps.sort_unstable();
    deps.dedup();
    let mut h = Sha256::new();
    // Length-prefixed fields: no two input lists hash the same bytes.
    for part in [fingerprint, stemcell_os, stemcell_version].into_iter().chain(deps) {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key is stable, ignores dependency order and changes with every input.
    #[test]
    fn compile_key_depends_on_every_input_but_not_dependency_order() {
        let k = compile_key("fp", "ubuntu-jammy", "1.5", &["b", "a"]);
        assert_eq!(k.len(), 64);
        assert!(k.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(k, compile_key("fp", "ubuntu-jammy", "1.5", &["a", "b"]));
        assert_eq!(
            k, "55652c7453e40d631ee117f26bd2b9b6f67b7f1ac68b42f74faafca723c4b0a6",
            "the key must not change between versions of boshd"
        );
        for other in [
            compile_key("fp2", "ubuntu-jammy", "1.5", &["a", "b"]),
            compile_key("fp", "ubuntu-noble", "1.5", &["a", "b"]),
            compile_key("fp", "ubuntu-jammy", "1.6", &["a", "b"]),
            compile_key("fp", "ubuntu-jammy", "1.5", &["a"]),
            compile_key("fp", "ubuntu-jammy", "1.5", &["ab"]),
        ] {
            assert_ne!(k, other);
        }
        // Field boundaries matter: ("ab", "c") is not ("a", "bc").
        assert_ne!(compile_key("ab", "c", "", &[]), compile_key("a", "bc", "", &[]));
    }
}
