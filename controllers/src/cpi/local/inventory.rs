//! The local CPI's record of what exists, kept in the data dir so that it
//! survives boshd restarts. Written atomically (temp file + rename): a
//! crash leaves either the old or the new inventory, never half of one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::process::ProcId;

/// One VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    /// The agent id it was created with.
    pub agent_id: String,
    /// The create_vm request id it is tagged with.
    pub request_id: String,
    /// The stemcell it booted from.
    pub stemcell_cid: String,
    /// Its process tree, while running.
    pub proc: Option<ProcId>,
    /// Attached persistent disks.
    #[serde(default)]
    pub disks: Vec<String>,
    /// Tags set by set_vm_metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// One persistent disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskRecord {
    /// Recorded size (a directory has no size of its own).
    pub size_mb: u64,
    /// The create_disk request id it is tagged with.
    pub request_id: String,
    /// The VM it is attached to.
    pub attached_to: Option<String>,
}

/// Everything the local CPI created.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// Stemcell cid → its properties.
    #[serde(default)]
    pub stemcells: BTreeMap<String, serde_json::Value>,
    /// VM cid → record.
    #[serde(default)]
    pub vms: BTreeMap<String, VmRecord>,
    /// Disk cid → record.
    #[serde(default)]
    pub disks: BTreeMap<String, DiskRecord>,
    /// Snapshot cid → disk cid.
    #[serde(default)]
    pub snapshots: BTreeMap<String, String>,
}

impl Inventory {
    fn path(root: &Path) -> PathBuf {
        root.join("inventory.json")
    }

    /// Loads the inventory under `root` (empty when there is none yet).
    pub fn load(root: &Path) -> std::io::Result<Inventory> {
        match std::fs::read(Self::path(root)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Inventory::default()),
            Err(e) => Err(e),
        }
    }

    /// Saves atomically.
    pub fn save(&self, root: &Path) -> std::io::Result<()> {
        let tmp = root.join("inventory.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, Self::path(root))
    }
}
