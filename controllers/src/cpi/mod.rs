//! The Cloud Provider Interface: the only code in bosh-rs that talks to an
//! IaaS.
//!
//! The method set is BOSH's, so that existing CPIs plug in through
//! [`external::ExternalCpi`] unchanged. Two things are added on top, both in
//! service of "intent before side effect" (DESIGN §2):
//!
//! - every create call carries a request id that the IaaS object is tagged
//!   with, and [`Cpi::find_vm_by_request`] / [`Cpi::find_disk_by_request`]
//!   look it up, so a controller that crashed (or lost the reply) after a
//!   successful create adopts the VM instead of creating a second one;
//! - errors are typed by what a caller should do about them
//!   ([`CpiError::is_retryable`], not-found, not-supported).
//!
//! # Layout
//!
//! - this file: the trait, its request and error types.
//! - [`local`]: the embedded default; a VM is a directory and an agent
//!   process tree with its own loopback address.
//! - [`external`]: any executable speaking BOSH's external CPI protocol.

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod external;
pub mod local;

tokio::task_local! {
    /// The fencing token of the controller term a CPI call is made in. The
    /// controller runtime sets it around every reconcile, so every CPI call
    /// carries it without each call site passing it: the external CPI puts
    /// it in the request's `context` (`fence`), and the local CPI refuses a
    /// mutation whose token is older than one it has already seen for the
    /// same election — a deposed leader's late call, once the new leader
    /// has acted — and, given a store, any call whose term is no longer
    /// the current one in etcd.
    pub static FENCE: bosh_api::store::Fence;
}

/// The fence of the running reconcile, if any (none for the API's own
/// calls, or tools).
pub fn current_fence() -> Option<bosh_api::store::Fence> {
    FENCE.try_with(Clone::clone).ok()
}

/// Why a CPI call failed, by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum CpiError {
    /// The VM, disk, stemcell or snapshot does not exist.
    #[error("{what} {cid:?} not found")]
    NotFound {
        /// `vm`, `disk`, `stemcell` or `snapshot`.
        what: &'static str,
        /// Its id.
        cid: String,
    },
    /// Worth retrying (IaaS busy, capacity, a lost connection).
    #[error("{method} failed (retryable): {message}")]
    Transient {
        /// The CPI method.
        method: &'static str,
        /// What the CPI said.
        message: String,
    },
    /// Retrying will not help.
    #[error("{method} failed: {message}")]
    Permanent {
        /// The CPI method.
        method: &'static str,
        /// What the CPI said.
        message: String,
    },
    /// This CPI does not implement the method.
    #[error("{method} is not supported by this CPI")]
    NotSupported {
        /// The CPI method.
        method: &'static str,
    },
}

impl CpiError {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CpiError::Transient { .. })
    }

    /// Whether the thing acted on does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CpiError::NotFound { .. })
    }

    pub(crate) fn permanent(method: &'static str, message: impl ToString) -> CpiError {
        CpiError::Permanent { method, message: message.to_string() }
    }
}

/// Result of a CPI call.
pub type CpiResult<T> = Result<T, CpiError>;

/// What `info` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpiInfo {
    /// Stemcell formats the CPI accepts, e.g. `local-agent`.
    #[serde(default)]
    pub stemcell_formats: Vec<String>,
    /// CPI API version (1 or 2).
    #[serde(default)]
    pub api_version: u32,
}

/// One network of a VM, as BOSH passes it to `create_vm`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmNetwork {
    /// `manual`, `dynamic` or `vip`.
    #[serde(rename = "type", default)]
    pub type_: String,
    /// The address allocated by boshd (manual networks).
    #[serde(default)]
    pub ip: String,
    /// Netmask.
    #[serde(default)]
    pub netmask: String,
    /// Gateway.
    #[serde(default)]
    pub gateway: String,
    /// DNS servers.
    #[serde(default)]
    pub dns: Vec<String>,
    /// Defaults this network provides.
    #[serde(default)]
    pub default: Vec<String>,
    /// IaaS-specific properties from the cloud config.
    #[serde(default)]
    pub cloud_properties: serde_json::Value,
}

/// Everything `create_vm` needs.
#[derive(Debug, Clone, Default)]
pub struct CreateVm {
    /// Tags the VM so a lost reply can be recovered by adoption.
    pub request_id: String,
    /// The agent id the VM's agent will have.
    pub agent_id: String,
    /// The stemcell to boot from.
    pub stemcell_cid: String,
    /// vm_type + vm_extensions + az cloud properties, merged.
    pub cloud_properties: serde_json::Value,
    /// Networks by name.
    pub networks: BTreeMap<String, VmNetwork>,
    /// Persistent disks the VM should be placed near.
    pub disk_cids: Vec<String>,
    /// The agent's bootstrap settings (BOSH passes them in `env`).
    pub settings: bosh_api::agent::Settings,
    /// The instance group's `env`.
    pub env: serde_json::Value,
}

/// A VM as a CPI lists it: its cid and the tags `set_vm_metadata` gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedVm {
    /// The VM's cid.
    pub cid: String,
    /// Its tags (`deployment`, `instance_group`, `id`, ...).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// BOSH's CPI method set, plus adoption by request id.
#[async_trait]
pub trait Cpi: Send + Sync {
    /// The CPI's name in logs and cids.
    fn name(&self) -> &str;

    /// Formats and API version.
    async fn info(&self) -> CpiResult<CpiInfo>;
    /// Imports a stemcell image; returns its cid.
    async fn create_stemcell(
        &self,
        image_path: &Path,
        cloud_properties: &serde_json::Value,
    ) -> CpiResult<String>;
    /// Deletes a stemcell.
    async fn delete_stemcell(&self, cid: &str) -> CpiResult<()>;

    /// Creates and boots a VM; returns its cid.
    async fn create_vm(&self, req: &CreateVm) -> CpiResult<String>;
    /// Deletes a VM (its ephemeral state goes with it; persistent disks stay).
    async fn delete_vm(&self, cid: &str) -> CpiResult<()>;
    /// Whether the VM exists and is running.
    async fn has_vm(&self, cid: &str) -> CpiResult<bool>;
    /// Reboots a VM.
    async fn reboot_vm(&self, cid: &str) -> CpiResult<()>;
    /// Tags a VM (deployment, instance, ...).
    async fn set_vm_metadata(
        &self,
        cid: &str,
        metadata: &BTreeMap<String, String>,
    ) -> CpiResult<()>;
    /// Turns `vm_resources` (cpu, ram, ephemeral_disk_size) into cloud properties.
    async fn calculate_vm_cloud_properties(
        &self,
        resources: &serde_json::Value,
    ) -> CpiResult<serde_json::Value>;
    /// The VM created for `request_id`, if the IaaS has one.
    async fn find_vm_by_request(&self, request_id: &str) -> CpiResult<Option<String>>;

    /// Creates a persistent disk of `size_mb`; returns its cid.
    async fn create_disk(
        &self,
        request_id: &str,
        size_mb: u64,
        cloud_properties: &serde_json::Value,
        vm_hint: Option<&str>,
    ) -> CpiResult<String>;
    /// Deletes a disk.
    async fn delete_disk(&self, cid: &str) -> CpiResult<()>;
    /// Whether the disk exists.
    async fn has_disk(&self, cid: &str) -> CpiResult<bool>;
    /// Attaches a disk to a VM.
    async fn attach_disk(&self, vm_cid: &str, disk_cid: &str) -> CpiResult<()>;
    /// Detaches a disk from a VM.
    async fn detach_disk(&self, vm_cid: &str, disk_cid: &str) -> CpiResult<()>;
    /// Disks attached to a VM.
    async fn get_disks(&self, vm_cid: &str) -> CpiResult<Vec<String>>;
    /// Grows a disk.
    async fn resize_disk(&self, cid: &str, size_mb: u64) -> CpiResult<()>;
    /// Snapshots a disk; returns the snapshot cid.
    async fn snapshot_disk(
        &self,
        cid: &str,
        metadata: &BTreeMap<String, String>,
    ) -> CpiResult<String>;
    /// Deletes a snapshot.
    async fn delete_snapshot(&self, snapshot_cid: &str) -> CpiResult<()>;
    /// The disk created for `request_id`, if the IaaS has one.
    async fn find_disk_by_request(&self, request_id: &str) -> CpiResult<Option<String>>;

    /// Every VM this CPI manages, with its tags; cloud-check's orphaned-VM
    /// scan uses it. BOSH's CPI protocol has no such method, so the default
    /// is `NotSupported` and the scan says it skipped the check.
    async fn list_vms(&self) -> CpiResult<Vec<ListedVm>> {
        Err(CpiError::NotSupported { method: "list_vms" })
    }
}
