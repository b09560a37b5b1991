//! The local CPI's record of what exists, kept in the data dir so that it
//! survives boshd restarts: one small JSON file per stemcell, VM, disk and
//! snapshot under `records/<kind>/<cid>.json`, each written atomically
//! (unique temp file + rename), so a crash leaves the old or the new
//! record, never half of one.
//!
//! One file per resource, like an IaaS's own per-resource state, is what
//! lets several boshd replicas share one CPI directory: an operation reads
//! and writes only the records it concerns, and no lock is held across
//! processes — a replica paused in the middle of a call (and fenced out by
//! then) blocks nobody. Which replica may act at all is decided by leader
//! election; the request id on `create_vm`/`create_disk` is an idempotency
//! key, so a call repeated by a deposed leader creates nothing twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
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
    /// Set for a container VM (booted from an operating system image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<super::ContainerVm>,
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

/// Everything the local CPI created, as one view (read from the records).
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
    /// Reads every record under `root`.
    pub fn load(root: &Path) -> std::io::Result<Inventory> {
        let r = Records::new(root);
        Ok(Inventory {
            stemcells: r.all(STEMCELLS)?,
            vms: r.all(VMS)?,
            disks: r.all(DISKS)?,
            snapshots: r.all(SNAPSHOTS)?,
        })
    }
}

/// Record kinds (directories under `records/`).
pub const STEMCELLS: &str = "stemcells";
/// VM records.
pub const VMS: &str = "vms";
/// Disk records.
pub const DISKS: &str = "disks";
/// Snapshot records (the snapshot's disk cid).
pub const SNAPSHOTS: &str = "snapshots";
/// The newest fencing token seen per election (not part of the view).
pub const FENCES: &str = "fences";

/// The record files under one CPI directory.
#[derive(Debug, Clone)]
pub struct Records {
    root: PathBuf,
}

impl Records {
    /// The records under CPI directory `root`.
    pub fn new(root: &Path) -> Records {
        Records { root: root.join("records") }
    }

    /// Creates the record directories, and moves a single-file inventory
    /// (`inventory.json`, the layout before records) into records once.
    pub fn init(cpi_root: &Path) -> std::io::Result<Records> {
        let r = Records::new(cpi_root);
        for kind in [STEMCELLS, VMS, DISKS, SNAPSHOTS, FENCES] {
            std::fs::create_dir_all(r.root.join(kind))?;
        }
        let old = cpi_root.join("inventory.json");
        if old.is_file() {
            let inv: Inventory =
                serde_json::from_slice(&std::fs::read(&old)?).map_err(std::io::Error::other)?;
            for (cid, v) in &inv.stemcells {
                r.put(STEMCELLS, cid, v)?;
            }
            for (cid, v) in &inv.vms {
                r.put(VMS, cid, v)?;
            }
            for (cid, v) in &inv.disks {
                r.put(DISKS, cid, v)?;
            }
            for (cid, v) in &inv.snapshots {
                r.put(SNAPSHOTS, cid, v)?;
            }
            std::fs::rename(&old, cpi_root.join("inventory.json.migrated"))?;
        }
        Ok(r)
    }

    fn path(&self, kind: &str, cid: &str) -> PathBuf {
        self.root.join(kind).join(format!("{cid}.json"))
    }

    /// One record, `None` when absent.
    pub fn get<T: DeserializeOwned>(&self, kind: &str, cid: &str) -> std::io::Result<Option<T>> {
        let path = self.path(kind, cid);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| at(&path)(std::io::Error::other(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(at(&path)(e)),
        }
    }

    /// Writes one record atomically.
    pub fn put<T: Serialize>(&self, kind: &str, cid: &str, value: &T) -> std::io::Result<()> {
        let path = self.path(kind, cid);
        // A temp name of its own: two processes never share one.
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
        let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other);
        std::fs::write(&tmp, bytes?).map_err(at(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(at(&path))
    }

    /// When a record was last written.
    pub fn modified(
        &self,
        kind: &str,
        cid: &str,
    ) -> std::io::Result<Option<std::time::SystemTime>> {
        let path = self.path(kind, cid);
        match std::fs::metadata(&path) {
            Ok(m) => m.modified().map(Some).map_err(at(&path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(at(&path)(e)),
        }
    }

    /// Removes one record; whether it was there.
    pub fn remove(&self, kind: &str, cid: &str) -> std::io::Result<bool> {
        let path = self.path(kind, cid);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(at(&path)(e)),
        }
    }

    /// Every record of a kind, by cid.
    pub fn all<T: DeserializeOwned>(&self, kind: &str) -> std::io::Result<BTreeMap<String, T>> {
        let mut out = BTreeMap::new();
        let dir = self.root.join(kind);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(at(&dir)(e)),
        };
        for entry in entries {
            let name = entry.map_err(at(&dir))?.file_name().to_string_lossy().into_owned();
            let Some(cid) = name.strip_suffix(".json") else { continue };
            // Removed between listing and reading: not there.
            if let Some(v) = self.get(kind, cid)? {
                out.insert(cid.to_string(), v);
            }
        }
        Ok(out)
    }
}

/// Names the file in an I/O error (the CPI's errors end up in tasks and
/// events, where "No such file or directory" alone says nothing).
fn at(path: &Path) -> impl FnOnce(std::io::Error) -> std::io::Error + '_ {
    move |e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
