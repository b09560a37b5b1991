//! The Cloud Provider Interface: the only code in bosh-rs that talks to an
//! IaaS.
//!
//! The method set is BOSH's, so that existing CPIs plug in through
//! [`external::ExternalCpi`] unchanged. Three things are added on top, all
//! in service of "intent before side effect" (DESIGN §2):
//!
//! - every create call carries a request id that the IaaS object is tagged
//!   with, and [`Cpi::find_vm_by_request`] / [`Cpi::find_disk_by_request`]
//!   look it up, so a controller that crashed (or lost the reply) after a
//!   successful create adopts the VM instead of creating a second one;
//! - every mutating call takes the fencing token of the controller term it
//!   is made in as an argument (`fence`), so a CPI can refuse a deposed
//!   leader's late call (see [`FencedCpi`] for how controllers pass it);
//! - errors are typed by what a caller should do about them
//!   ([`CpiError::is_retryable`], not-found, not-supported).
//!
//! A crate of its own, on top of `bosh-api` alone (the fence, and the store
//! the local CPI confirms terms against), so that whatever needs a CPI
//! without boshd's controllers (`boshctl up`, the benchmarks, a standalone
//! local CPI executable) can have one. boshd re-exports it as
//! `bosh_controllers::world::cpi`.
//!
//! # Layout
//!
//! - `lib.rs`: the trait, its request and error types, and [`FencedCpi`].
//! - [`local`]: the embedded default; a VM is a directory and an agent
//!   process tree with its own loopback address.
//! - [`external`]: any executable speaking BOSH's external CPI protocol.
//! - [`call_log`]: what external CPI calls log, redacted, and the task
//!   they are logged to.
//! - [`protocol`]: the CPI side of that protocol, serving any [`Cpi`]
//!   (the `bosh-local-cpi` executable is the local CPI behind it).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bosh_api::objects::InstanceNetwork;
use bosh_api::store::Fence;
use serde::{Deserialize, Serialize};

pub mod call_log;
pub mod external;
pub mod local;
pub mod protocol;

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

impl VmNetwork {
    /// The agent's view of the network: everything but its cloud
    /// properties (the CPI's only).
    pub fn agent_settings(&self) -> bosh_api::agent::NetworkSettings {
        bosh_api::agent::NetworkSettings {
            type_: self.type_.clone(),
            ip: self.ip.clone(),
            netmask: self.netmask.clone(),
            gateway: self.gateway.clone(),
            dns: self.dns.clone(),
            default: self.default.clone(),
        }
    }
}

impl From<&InstanceNetwork> for VmNetwork {
    /// The CPI's view of a resolved network: everything but its name (the
    /// key of `networks`), cloud properties included.
    fn from(n: &InstanceNetwork) -> VmNetwork {
        VmNetwork {
            type_: n.type_.clone(),
            ip: n.ip.clone(),
            netmask: n.netmask.clone(),
            gateway: n.gateway.clone(),
            dns: n.dns.clone(),
            default: n.default.clone(),
            cloud_properties: n.cloud_properties.clone(),
        }
    }
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
    /// The agent's bootstrap settings. The local CPI writes them as they
    /// are; the external CPI sends them in BOSH's shape, in `env.bosh`
    /// (see [`bosh_api::agent::bosh_env`]), and the CPI builds them back.
    pub settings: bosh_api::agent::Settings,
    /// The instance group's `env`.
    pub env: serde_json::Value,
    /// Where the VM belongs (BOSH's `env.bosh.group`, `groups`, `tags`);
    /// none: not sent.
    pub group: Option<bosh_api::agent::bosh_env::VmGroup>,
    /// The stemcell's API version (BOSH's `context.vm.stemcell`), when
    /// known.
    pub stemcell_api_version: Option<u32>,
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
///
/// Every mutating method takes `fence`: the fencing token of the controller
/// term the call is made in, or `None` for a call made outside any term (a
/// tool, a test, a director bootstrapping). It is an argument, not ambient
/// state, so that no implementation and no wrapper (a test's fault
/// injector, a counter) can lose it: each must name it to pass it on.
/// Controllers do not pass it by hand either; they call through a
/// [`FencedCpi`] built from their reconcile's `Ctx`. Reads take none: a
/// stale read does no harm that a fence would prevent.
#[async_trait]
pub trait Cpi: Send + Sync {
    /// The CPI's name in logs and cids.
    fn name(&self) -> &str;

    /// Formats and API version.
    async fn info(&self) -> CpiResult<CpiInfo>;
    /// Imports a stemcell image; returns its cid.
    async fn create_stemcell(
        &self,
        fence: Option<&Fence>,
        image_path: &Path,
        cloud_properties: &serde_json::Value,
    ) -> CpiResult<String>;
    /// Deletes a stemcell.
    async fn delete_stemcell(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()>;

    /// Creates and boots a VM; returns its cid.
    async fn create_vm(&self, fence: Option<&Fence>, req: &CreateVm) -> CpiResult<String>;
    /// Deletes a VM (its ephemeral state goes with it; persistent disks stay).
    async fn delete_vm(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()>;
    /// Whether the VM exists and is running.
    async fn has_vm(&self, cid: &str) -> CpiResult<bool>;
    /// Reboots a VM.
    async fn reboot_vm(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()>;
    /// Tags a VM (deployment, instance, ...).
    async fn set_vm_metadata(
        &self,
        fence: Option<&Fence>,
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
        fence: Option<&Fence>,
        request_id: &str,
        size_mb: u64,
        cloud_properties: &serde_json::Value,
        vm_hint: Option<&str>,
    ) -> CpiResult<String>;
    /// Deletes a disk.
    async fn delete_disk(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()>;
    /// Whether the disk exists.
    async fn has_disk(&self, cid: &str) -> CpiResult<bool>;
    /// Attaches a disk to a VM.
    async fn attach_disk(
        &self,
        fence: Option<&Fence>,
        vm_cid: &str,
        disk_cid: &str,
    ) -> CpiResult<()>;
    /// Detaches a disk from a VM.
    async fn detach_disk(
        &self,
        fence: Option<&Fence>,
        vm_cid: &str,
        disk_cid: &str,
    ) -> CpiResult<()>;
    /// Disks attached to a VM.
    async fn get_disks(&self, vm_cid: &str) -> CpiResult<Vec<String>>;
    /// Grows a disk.
    async fn resize_disk(&self, fence: Option<&Fence>, cid: &str, size_mb: u64) -> CpiResult<()>;
    /// Snapshots a disk; returns the snapshot cid.
    async fn snapshot_disk(
        &self,
        fence: Option<&Fence>,
        cid: &str,
        metadata: &BTreeMap<String, String>,
    ) -> CpiResult<String>;
    /// Deletes a snapshot.
    async fn delete_snapshot(&self, fence: Option<&Fence>, snapshot_cid: &str) -> CpiResult<()>;
    /// The disk created for `request_id`, if the IaaS has one.
    async fn find_disk_by_request(&self, request_id: &str) -> CpiResult<Option<String>>;

    /// Every VM this CPI manages, with its tags; cloud-check's orphaned-VM
    /// scan uses it. BOSH's CPI protocol has no such method, so the default
    /// is `NotSupported` and the scan says it skipped the check.
    async fn list_vms(&self) -> CpiResult<Vec<ListedVm>> {
        Err(CpiError::NotSupported { method: "list_vms" })
    }
}

/// A lookup by request id answered as "nothing found" when the CPI does
/// not have it (BOSH's protocol has no such lookup, so no stock CPI
/// does): the caller goes on to create, as BOSH's director would.
pub fn unsupported_as_none<T>(r: CpiResult<Option<T>>) -> CpiResult<Option<T>> {
    match r {
        Err(CpiError::NotSupported { .. }) => Ok(None),
        r => r,
    }
}

/// A CPI bound to one controller term: every mutation made through it
/// carries that term's fencing token.
///
/// This is how controllers call the CPI. A reconcile builds one from its
/// `Ctx` (the term's fence; `Director::fenced_cpi` in `bosh-controllers`)
/// and hands it to whatever acts on the IaaS,
/// spawned work included: the fence travels with the handle, so a helper
/// given a `FencedCpi` can make no unfenced call and none in another
/// term's name. Cheap to clone (an `Arc` and the token).
#[derive(Clone)]
pub struct FencedCpi {
    cpi: Arc<dyn Cpi>,
    fence: Fence,
}

impl std::fmt::Debug for FencedCpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FencedCpi")
            .field("cpi", &self.cpi.name())
            .field("fence", &self.fence)
            .finish()
    }
}

impl FencedCpi {
    /// `cpi`, with every mutation made under `fence`.
    pub fn new(cpi: Arc<dyn Cpi>, fence: Fence) -> FencedCpi {
        FencedCpi { cpi, fence }
    }

    /// The term's fencing token.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The CPI underneath (its mutations take a fence of their own).
    pub fn cpi(&self) -> &Arc<dyn Cpi> {
        &self.cpi
    }

    /// See [`Cpi::name`].
    pub fn name(&self) -> &str {
        self.cpi.name()
    }

    /// See [`Cpi::create_stemcell`].
    pub async fn create_stemcell(
        &self,
        image_path: &Path,
        cloud_properties: &serde_json::Value,
    ) -> CpiResult<String> {
        self.cpi.create_stemcell(Some(&self.fence), image_path, cloud_properties).await
    }

    /// See [`Cpi::delete_stemcell`].
    pub async fn delete_stemcell(&self, cid: &str) -> CpiResult<()> {
        self.cpi.delete_stemcell(Some(&self.fence), cid).await
    }

    /// See [`Cpi::create_vm`].
    pub async fn create_vm(&self, req: &CreateVm) -> CpiResult<String> {
        self.cpi.create_vm(Some(&self.fence), req).await
    }

    /// See [`Cpi::delete_vm`].
    pub async fn delete_vm(&self, cid: &str) -> CpiResult<()> {
        self.cpi.delete_vm(Some(&self.fence), cid).await
    }

    /// See [`Cpi::has_vm`].
    pub async fn has_vm(&self, cid: &str) -> CpiResult<bool> {
        self.cpi.has_vm(cid).await
    }

    /// See [`Cpi::reboot_vm`].
    pub async fn reboot_vm(&self, cid: &str) -> CpiResult<()> {
        self.cpi.reboot_vm(Some(&self.fence), cid).await
    }

    /// See [`Cpi::set_vm_metadata`].
    pub async fn set_vm_metadata(
        &self,
        cid: &str,
        metadata: &BTreeMap<String, String>,
    ) -> CpiResult<()> {
        self.cpi.set_vm_metadata(Some(&self.fence), cid, metadata).await
    }

    /// See [`Cpi::find_vm_by_request`].
    pub async fn find_vm_by_request(&self, request_id: &str) -> CpiResult<Option<String>> {
        self.cpi.find_vm_by_request(request_id).await
    }

    /// See [`Cpi::create_disk`].
    pub async fn create_disk(
        &self,
        request_id: &str,
        size_mb: u64,
        cloud_properties: &serde_json::Value,
        vm_hint: Option<&str>,
    ) -> CpiResult<String> {
        let fence = Some(&self.fence);
        self.cpi.create_disk(fence, request_id, size_mb, cloud_properties, vm_hint).await
    }

    /// See [`Cpi::delete_disk`].
    pub async fn delete_disk(&self, cid: &str) -> CpiResult<()> {
        self.cpi.delete_disk(Some(&self.fence), cid).await
    }

    /// See [`Cpi::has_disk`].
    pub async fn has_disk(&self, cid: &str) -> CpiResult<bool> {
        self.cpi.has_disk(cid).await
    }

    /// See [`Cpi::attach_disk`].
    pub async fn attach_disk(&self, vm_cid: &str, disk_cid: &str) -> CpiResult<()> {
        self.cpi.attach_disk(Some(&self.fence), vm_cid, disk_cid).await
    }

    /// See [`Cpi::detach_disk`].
    pub async fn detach_disk(&self, vm_cid: &str, disk_cid: &str) -> CpiResult<()> {
        self.cpi.detach_disk(Some(&self.fence), vm_cid, disk_cid).await
    }

    /// See [`Cpi::get_disks`].
    pub async fn get_disks(&self, vm_cid: &str) -> CpiResult<Vec<String>> {
        self.cpi.get_disks(vm_cid).await
    }

    /// See [`Cpi::resize_disk`].
    pub async fn resize_disk(&self, cid: &str, size_mb: u64) -> CpiResult<()> {
        self.cpi.resize_disk(Some(&self.fence), cid, size_mb).await
    }

    /// See [`Cpi::snapshot_disk`].
    pub async fn snapshot_disk(
        &self,
        cid: &str,
        metadata: &BTreeMap<String, String>,
    ) -> CpiResult<String> {
        self.cpi.snapshot_disk(Some(&self.fence), cid, metadata).await
    }

    /// See [`Cpi::delete_snapshot`].
    pub async fn delete_snapshot(&self, snapshot_cid: &str) -> CpiResult<()> {
        self.cpi.delete_snapshot(Some(&self.fence), snapshot_cid).await
    }

    /// See [`Cpi::find_disk_by_request`].
    pub async fn find_disk_by_request(&self, request_id: &str) -> CpiResult<Option<String>> {
        self.cpi.find_disk_by_request(request_id).await
    }

    /// See [`Cpi::list_vms`].
    pub async fn list_vms(&self) -> CpiResult<Vec<ListedVm>> {
        self.cpi.list_vms().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resolved network becomes `create_vm`'s `networks` entry, field for
    /// field, with its cloud properties (null when the subnet has none).
    #[test]
    fn a_resolved_network_becomes_the_cpis_network_json() {
        let n = InstanceNetwork {
            name: "default".into(),
            type_: "manual".into(),
            ip: "10.0.0.5".into(),
            netmask: "255.255.255.0".into(),
            gateway: "10.0.0.1".into(),
            dns: vec!["8.8.8.8".into()],
            default: vec!["dns".into(), "gateway".into()],
            cloud_properties: serde_json::json!({"subnet": "s-1"}),
        };
        assert_eq!(
            serde_json::to_string(&VmNetwork::from(&n)).unwrap(),
            r#"{"type":"manual","ip":"10.0.0.5","netmask":"255.255.255.0","gateway":"10.0.0.1","dns":["8.8.8.8"],"default":["dns","gateway"],"cloud_properties":{"subnet":"s-1"}}"#
        );
        let bare = InstanceNetwork { name: "v".into(), type_: "vip".into(), ..Default::default() };
        assert_eq!(
            serde_json::to_string(&VmNetwork::from(&bare)).unwrap(),
            r#"{"type":"vip","ip":"","netmask":"","gateway":"","dns":[],"default":[],"cloud_properties":null}"#
        );
    }

    /// Every mutation made through a `FencedCpi` carries its term's fence,
    /// so the handle of a term that has ended is refused once a newer term
    /// has acted.
    #[tokio::test]
    async fn a_fenced_cpi_passes_its_fence_on_every_mutation() {
        let dir = tempfile::tempdir().unwrap();
        let cpi: Arc<dyn Cpi> = Arc::new(local::LocalCpi::open(dir.path()).unwrap());
        let key = "/bosh/leader/instance".to_string();
        let old = FencedCpi::new(cpi.clone(), Fence { key: key.clone(), revision: 3 });
        let new = FencedCpi::new(cpi, Fence { key, revision: 4 });
        let disk = old.create_disk("r-1", 1, &serde_json::json!({}), None).await.unwrap();
        new.resize_disk(&disk, 2).await.unwrap();
        let e = old.delete_disk(&disk).await.unwrap_err();
        assert!(e.to_string().contains("older than 4"), "{e}");
        assert!(new.has_disk(&disk).await.unwrap());

        let log = local::audit::read(dir.path()).unwrap();
        let got: Vec<_> =
            log.iter().map(|e| (e.method.as_str(), e.fence.as_ref().map(|f| f.revision))).collect();
        assert_eq!(
            got,
            [("create_disk", Some(3)), ("resize_disk", Some(4)), ("delete_disk", Some(3))]
        );
    }
}
