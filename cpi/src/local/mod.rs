//! The `local` CPI, the embedded default: it works on any machine.
//!
//! - A stemcell image is a gzipped tar holding the `bosh-agent` binary; it
//!   is unpacked under `stemcells/<cid>/`.
//! - A VM is a directory `vms/<cid>/` (the VM's `/`: the agent roots every
//!   `/var/vcap` path there) plus an agent process tree started from the
//!   stemcell's agent with the VM's `settings.json`. Each VM's jobs bind to
//!   the VM's own loopback address (127.77.x.y from the cloud config), so
//!   many VMs share one machine without port clashes.
//! - A persistent disk is a directory `disks/<cid>/` with a recorded size,
//!   outside every VM directory so it outlives VMs; attaching it lists it in
//!   the VM's settings, and the agent's `mount_disk` makes it visible at
//!   `/var/vcap/store`.
//! - A VM whose process tree died is a VM whose machine died: `has_vm` is
//!   false, and a reconcile replaces it.
//! - Its records live in the data dir, one file per resource, survive boshd
//!   restarts and may be shared by several boshd replicas (see `inventory`).
//! - Every mutating call is appended to `audit.log` there (see [`audit`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bosh_api::agent::Settings;
use bosh_api::store::Fence;
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::{CpiError, CpiInfo, CpiResult, CreateVm};

pub mod audit;
pub mod container;
mod container_vm;
pub mod image;
mod inventory;
mod list;
pub mod network;
pub mod process;

use audit::{AuditEntry, AuditFence, AuditLog, AuditResult, Outcome};
pub use container_vm::ContainerVm;
pub use inventory::Inventory;
use inventory::{DISKS, FENCES, Records, SNAPSHOTS, STEMCELLS, VMS};
pub use inventory::{DiskRecord, VmRecord};
use process::ProcId;

pub use bosh_api::local_stemcell::{AGENT_BINARY, FORMAT as STEMCELL_FORMAT, build_image};

/// The local CPI, rooted at a data directory.
pub struct LocalCpi {
    /// Its name in logs and stemcell cids (`local` unless renamed).
    name: String,
    root: PathBuf,
    records: Records,
    /// Serializes this process's read-modify-write of records (never held
    /// across a wait).
    lock: Mutex<()>,
    /// Where mutating calls are recorded.
    audit: AuditLog,
    /// Read for the etcd revision each audited call is made at.
    audit_store: Option<bosh_api::store::Store>,
    /// This CPI's container VMs (runc state, network names).
    machines: container_vm::Machines,
    /// Where operating system images are unpacked, one per digest.
    image_cache: PathBuf,
}

/// How long a fencing token seen is remembered (far longer than any
/// lease: a deposed leader's late call comes within it).
const FENCE_MEMORY: std::time::Duration = std::time::Duration::from_secs(600);

fn io(method: &'static str) -> impl FnOnce(std::io::Error) -> CpiError {
    move |e| CpiError::permanent(method, e)
}

impl LocalCpi {
    /// Opens (or creates) the CPI's data under `root`.
    pub fn open(root: &Path) -> std::io::Result<LocalCpi> {
        // VM roots go into agents' settings and from there into packaging
        // scripts' BOSH_INSTALL_TARGET, which run in another directory: a
        // relative path would point somewhere else there.
        let root = &std::path::absolute(root)?;
        for d in ["stemcells", "vms", "disks", "snapshots", "runc", "images"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        let records = Records::init(root)?;
        let audit = AuditLog::open(root)?;
        Ok(LocalCpi {
            name: "local".to_string(),
            root: root.to_path_buf(),
            records,
            lock: Mutex::new(()),
            audit,
            audit_store: None,
            machines: container_vm::Machines::new(root),
            image_cache: root.join("images"),
        })
    }

    /// Renames the CPI: a CPI config's `local` CPI goes by its config
    /// name, which keys stemcell cids and is recorded with VMs and disks.
    pub fn with_name(mut self, name: &str) -> LocalCpi {
        self.name = name.to_string();
        self
    }

    /// Unpacks operating system images into `dir` instead of the data dir:
    /// several CPIs on one machine (the tests' worlds) then share one copy
    /// of each image, as VMs of one IaaS region share its image store.
    pub fn with_image_cache(mut self, dir: &Path) -> LocalCpi {
        self.image_cache = dir.to_path_buf();
        self
    }

    /// Where operating system images are unpacked (a `bosh-local-cpi`
    /// over the same data dir is told it).
    pub fn image_cache(&self) -> &Path {
        &self.image_cache
    }

    /// Records in each audit line the etcd revision current when the call
    /// was admitted, read from `store` (one read per mutating call): every
    /// write committed before the call is at or below it, which is what
    /// lets a checker see that the intent was written first (FAULT-MATRIX
    /// I4). With it, too, a call made in a controller's term is admitted
    /// only if that term is still current in etcd (see
    /// `check_term`): the same read serves both. Without it the
    /// lines carry no revision and only the memory of fences guards.
    pub fn with_audit_store(mut self, store: bosh_api::store::Store) -> LocalCpi {
        self.audit_store = Some(store);
        self
    }

    /// Admits, runs and records one mutating call made under `fence`: the
    /// fence checks, then `body` if admitted, then one audit line with the
    /// outcome.
    async fn audited<T: Outcome>(
        &self,
        fence: Option<&Fence>,
        mut entry: AuditEntry,
        body: impl std::future::Future<Output = CpiResult<T>>,
    ) -> CpiResult<T> {
        let method: &'static str = audit_method(&entry.method);
        let mut held = Ok(());
        if let Some(store) = &self.audit_store {
            (entry.etcd_revision, held) = match fence {
                Some(f) => Self::check_term(store, f, method).await,
                None => (store.revision().await.ok(), Ok(())),
            };
        }
        entry.fence = fence.map(|f| AuditFence { key: f.key.clone(), revision: f.revision });
        entry.pid = std::process::id();
        let admitted = {
            let mut next = self.audit.next.lock().unwrap_or_else(|p| p.into_inner());
            let admitted = held.and_then(|()| self.admit(fence, method));
            entry.seq = *next;
            entry.at = Some(chrono::Utc::now());
            *next += 1;
            admitted
        };
        let result = match admitted {
            Ok(()) => body.await,
            Err(e) => {
                entry.refused = true;
                Err(e)
            }
        };
        match &result {
            Ok(v) => {
                entry.result = Some(AuditResult::Ok);
                entry.cid = v.created();
            }
            Err(e) => {
                entry.result = Some(AuditResult::Error);
                entry.error = Some(e.to_string());
            }
        }
        if let Err(e) = self.audit.append(&entry) {
            warn!(method, error = %e, "could not append to the CPI audit log");
        }
        result
    }

    /// Whether the term of `fence` is still current in etcd, read when the
    /// call is admitted: the revision of that read (the audit line's
    /// `etcd_revision`) and the verdict.
    ///
    /// Why here as well as in the controllers: a controller checks its fence
    /// (`Store::check_fence`) and then calls the CPI, and the two are not
    /// atomic. A replica paused between them past its lease resumes with a
    /// check that passed in its old term and makes the call in its
    /// successor's; [`Self::admit`]'s memory of fences refuses that call
    /// only once the successor has made a call of its own, and it may not
    /// have yet (FAULT-MATRIX A3; `faults_a3_b_...` shows the window
    /// deterministically). Checking the token against the election key when
    /// the call is admitted closes it for admission: a call is let through
    /// only at an etcd revision at which its term was still the current one
    /// (what I5 checks), so nothing from an old term is admitted after a
    /// new one began. What no check outside the IaaS can do is recall a
    /// call already admitted whose process is paused before its effect
    /// lands; that needs the IaaS to check the token itself (the external
    /// CPI passes it on in `context.fence` for that).
    ///
    /// When etcd cannot be read the call is refused as retryable: a term
    /// that cannot be confirmed is not acted in.
    async fn check_term(
        store: &bosh_api::store::Store,
        fence: &Fence,
        method: &'static str,
    ) -> (Option<i64>, CpiResult<()>) {
        match store.fence_revision(fence).await {
            Ok(rev) => (Some(rev), Ok(())),
            Err(bosh_api::store::Error::Fenced { .. }) => {
                warn!(method, %fence, "refused a call from a term that has ended");
                let message = format!("term {fence} has ended: another director leads now");
                (store.revision().await.ok(), Err(CpiError::Permanent { method, message }))
            }
            Err(e) => {
                let message = format!("cannot confirm leadership {fence}: {e}");
                (None, Err(CpiError::Transient { method, message }))
            }
        }
    }

    /// Stops every VM under `root` (the machines of a test world or of a
    /// local environment that is going away; boshd itself never does this:
    /// VMs outlive it). Beside the recorded VMs, every container runc knows
    /// in this CPI's state dir goes too: one made by a `create_vm` that
    /// died before recording it would otherwise outlive the environment.
    pub fn kill_all(root: &Path) {
        let Ok(root) = std::path::absolute(root) else { return };
        let runc = container::Runc::new(&root.join("runc"));
        if let Ok(inv) = Inventory::load(&root) {
            for (cid, vm) in &inv.vms {
                if let Some(p) = vm.proc {
                    p.kill_tree();
                }
                if vm.container.is_some() {
                    let _ = runc.destroy(&root.join("vms").join(cid), cid);
                }
            }
        }
        for id in runc.list().unwrap_or_default() {
            let _ = runc.destroy(&root.join("vms").join(&id), &id);
        }
        let _ = network::delete_all(&network::NetEnv::for_root(&root));
    }

    /// A VM's directory (its `/`).
    pub fn vm_dir(&self, cid: &str) -> PathBuf {
        self.root.join("vms").join(cid)
    }

    /// A disk's directory.
    pub fn disk_dir(&self, cid: &str) -> PathBuf {
        self.root.join("disks").join(cid)
    }

    pub(super) fn stemcell_dir(&self, cid: &str) -> PathBuf {
        self.root.join("stemcells").join(cid)
    }

    /// The VM's process (a container VM's init), for tests that kill
    /// "machines".
    pub async fn vm_process(&self, cid: &str) -> Option<ProcId> {
        let vm = self.records.get::<VmRecord>(VMS, cid).ok()??;
        match vm.container {
            Some(_) => ProcId::of(self.machines.init(cid)?),
            None => vm.proc,
        }
    }

    /// The host pid of the agent of container VM `cid` (not its init),
    /// while it runs: for tests that kill or pause an agent alone.
    pub fn container_agent_pid(&self, cid: &str) -> Option<i32> {
        let init = self.machines.init(cid)?;
        process::agent_in_pid_namespace_of(init)
    }

    /// Deletes VM `cid` the way an operator in the IaaS console would,
    /// behind the director's back (FAULT-MATRIX D5): its process tree is
    /// killed, its record and directory go, and its disks are detached (as
    /// an IaaS detaches a deleted VM's volumes). Not a CPI call: nothing
    /// is audited. For tests.
    pub fn delete_vm_outside(root: &Path, cid: &str) -> std::io::Result<()> {
        let root = std::path::absolute(root)?;
        let records = Records::new(&root);
        let Some(vm) = records.get::<VmRecord>(VMS, cid)? else { return Ok(()) };
        if let Some(p) = vm.proc {
            p.kill_tree();
        }
        if vm.container.is_some() {
            container::Runc::new(&root.join("runc"))
                .destroy(&root.join("vms").join(cid), cid)
                .map_err(std::io::Error::other)?;
            network::delete_vm_netns(&network::NetEnv::for_root(&root), cid)
                .map_err(std::io::Error::other)?;
        }
        for d in &vm.disks {
            if let Some(mut rec) = records.get::<DiskRecord>(DISKS, d)?
                && rec.attached_to.as_deref() == Some(cid)
            {
                rec.attached_to = None;
                records.put(DISKS, d, &rec)?;
            }
        }
        records.remove(VMS, cid)?;
        let _ = std::fs::remove_dir_all(root.join("vms").join(cid));
        Ok(())
    }

    /// Sends signal `signal` (e.g. `SIGKILL`, `SIGSTOP`, `SIGCONT`) to every
    /// process of VM `cid`, as a crash or a hang of the whole machine would
    /// (for tests; nothing is recorded): a container VM's processes are
    /// those in its PID namespace, a process VM's those in its process
    /// group. Returns how many were signalled.
    pub fn signal_vm(root: &Path, cid: &str, signal: &str) -> std::io::Result<usize> {
        use std::str::FromStr;
        let sig = nix::sys::signal::Signal::from_str(signal)
            .map_err(|e| std::io::Error::other(format!("{signal}: {e}")))?;
        let root = std::path::absolute(root)?;
        let Some(vm) = Records::new(&root).get::<VmRecord>(VMS, cid)? else { return Ok(0) };
        let pids: Vec<i32> = match (&vm.container, vm.proc) {
            (Some(_), _) => match container::Runc::new(&root.join("runc"))
                .state(cid)
                .map_err(std::io::Error::other)?
            {
                container::State::Running(init) => process::in_pid_namespace_of(init),
                _ => Vec::new(),
            },
            (None, Some(p)) if p.is_alive() => process::in_process_group(p.pid),
            (None, _) => Vec::new(),
        };
        for pid in &pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), sig);
        }
        Ok(pids.len())
    }

    /// Everything this CPI holds, read from its records (for tests and
    /// tools: a view, not something to write back).
    pub fn inventory(root: &Path) -> std::io::Result<Inventory> {
        Inventory::load(&std::path::absolute(root)?)
    }

    /// Admits a mutation: refused when the fencing token it carries is
    /// older than one seen for the same election, as a storage system
    /// refuses a deposed lock holder. A token seen more than
    /// [`FENCE_MEMORY`] ago is forgotten, so a director whose etcd was
    /// rebuilt (revisions start again) is not locked out for good. A call
    /// made outside any term (`None`) is admitted.
    fn admit(&self, fence: Option<&Fence>, method: &'static str) -> CpiResult<()> {
        let Some(f) = fence else { return Ok(()) };
        let name = f.key.trim_start_matches('/').replace('/', "_");
        let fresh = self
            .records
            .modified(FENCES, &name)
            .map_err(io(method))?
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < FENCE_MEMORY);
        let seen: i64 = if fresh {
            self.records.get(FENCES, &name).map_err(io(method))?.unwrap_or(0)
        } else {
            0
        };
        if f.revision < seen {
            warn!(method, fence = %f, newest = seen, "refused a call from a deposed leader");
            return Err(CpiError::Permanent {
                method,
                message: format!(
                    "fencing token {f} is older than {seen}: another director leads now"
                ),
            });
        }
        if f.revision > seen || !fresh {
            self.records.put(FENCES, &name, &f.revision).map_err(io(method))?;
        }
        Ok(())
    }

    fn vm(&self, cid: &str, method: &'static str) -> CpiResult<VmRecord> {
        self.records
            .get(VMS, cid)
            .map_err(io(method))?
            .ok_or_else(|| CpiError::NotFound { what: "vm", cid: cid.to_string() })
    }

    fn put_vm(&self, cid: &str, vm: &VmRecord, method: &'static str) -> CpiResult<()> {
        self.records.put(VMS, cid, vm).map_err(io(method))
    }

    fn disk(&self, cid: &str, method: &'static str) -> CpiResult<DiskRecord> {
        self.records
            .get(DISKS, cid)
            .map_err(io(method))?
            .ok_or_else(|| CpiError::NotFound { what: "disk", cid: cid.to_string() })
    }

    fn put_disk(&self, cid: &str, disk: &DiskRecord, method: &'static str) -> CpiResult<()> {
        self.records.put(DISKS, cid, disk).map_err(io(method))
    }

    /// Writes the VM's settings with its disks as currently attached.
    fn write_vm_settings(&self, cid: &str, vm: &VmRecord, settings: Settings) -> CpiResult<()> {
        match &vm.container {
            Some(c) => self.machines.write_settings(cid, c, settings, &vm.disks),
            None => self.write_settings(cid, settings, &vm.disks),
        }
    }

    /// The VM's settings as last written.
    fn read_vm_settings(&self, cid: &str, vm: &VmRecord) -> CpiResult<Settings> {
        match &vm.container {
            Some(_) => self.machines.read_settings(cid),
            None => self.read_settings(cid),
        }
    }

    /// Writes a process VM's settings with its disks as currently attached.
    fn write_settings(&self, cid: &str, mut settings: Settings, disks: &[String]) -> CpiResult<()> {
        settings.vm_cid = cid.to_string();
        settings.shares_host = true;
        settings.disks.persistent = disks
            .iter()
            .map(|d| (d.clone(), self.disk_dir(d).to_string_lossy().into_owned()))
            .collect();
        let path = self.vm_dir(cid).join("settings.json");
        let bytes = serde_json::to_vec_pretty(&settings).expect("settings serialize");
        bosh_api::secret_file::write(&path, &bytes).map_err(io("write settings"))
    }

    fn read_settings(&self, cid: &str) -> CpiResult<Settings> {
        let path = self.vm_dir(cid).join("settings.json");
        let bytes = std::fs::read(&path).map_err(io("read settings"))?;
        serde_json::from_slice(&bytes).map_err(|e| CpiError::permanent("read settings", e))
    }

    fn start_vm(&self, cid: &str, stemcell_cid: &str) -> CpiResult<ProcId> {
        let dir = self.vm_dir(cid);
        process::spawn_vm(
            &self.stemcell_dir(stemcell_cid).join(AGENT_BINARY),
            &dir.join("var/vcap"),
            &dir.join("settings.json"),
            &dir.join("agent.log"),
        )
        .map_err(io("create_vm"))
    }
}

/// The agent log filter the operator asked for (`BOSH_AGENT_LOG`, e.g.
/// `debug` or `bosh_agent=trace`), given to every VM's agent as `RUST_LOG`
/// whatever the kind of VM: a container does not inherit our environment.
fn agent_log() -> Option<String> {
    std::env::var("BOSH_AGENT_LOG").ok().filter(|f| !f.is_empty())
}

/// Unpacks a stemcell image (a gzipped tar) into `dest`, refusing
/// anything that would escape it.
fn unpack_image(image: &Path, dest: &Path) -> Result<(), bosh_api::archive::ArchiveError> {
    let limits = bosh_api::archive::Limits::default();
    bosh_api::archive::unpack_tgz_file(image, dest, &limits, "stemcell image").map(drop)
}

/// Makes stemcell directory `dir` from `image_path`: a link to the root
/// filesystem unpacked (once per image) into `cache`, or the agent image
/// unpacked into `dir` itself. Blocking: hashes and unpacks.
fn import_image(image_path: &Path, cache: &Path, dir: &Path) -> CpiResult<()> {
    let refused = |e: image::ImageError| CpiError::permanent("create_stemcell", e);
    if image::kind(image_path).map_err(refused)? == image::Kind::Rootfs {
        let rootfs = image::rootfs(image_path, cache).map_err(refused)?;
        std::fs::create_dir_all(dir).map_err(io("create_stemcell"))?;
        return std::os::unix::fs::symlink(&rootfs, dir.join("rootfs"))
            .map_err(io("create_stemcell"));
    }
    std::fs::create_dir_all(dir).map_err(io("create_stemcell"))?;
    if let Err(e) = unpack_image(image_path, dir) {
        let _ = std::fs::remove_dir_all(dir);
        return Err(CpiError::permanent(
            "create_stemcell",
            format!("{}: {e}", image_path.display()),
        ));
    }
    if !dir.join(AGENT_BINARY).is_file() {
        let _ = std::fs::remove_dir_all(dir);
        return Err(CpiError::permanent(
            "create_stemcell",
            format!("{}: image holds no {AGENT_BINARY}", image_path.display()),
        ));
    }
    Ok(())
}

/// The static name of an audited method (the fence check's errors carry one).
fn audit_method(m: &str) -> &'static str {
    const AUDITED: [&str; 13] = [
        "create_stemcell",
        "delete_stemcell",
        "create_vm",
        "delete_vm",
        "reboot_vm",
        "set_vm_metadata",
        "create_disk",
        "delete_disk",
        "attach_disk",
        "detach_disk",
        "resize_disk",
        "snapshot_disk",
        "delete_snapshot",
    ];
    AUDITED.into_iter().find(|a| *a == m).unwrap_or("cpi call")
}

fn new_cid(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

#[async_trait]
impl super::Cpi for LocalCpi {
    fn name(&self) -> &str {
        &self.name
    }

    async fn info(&self) -> CpiResult<CpiInfo> {
        Ok(CpiInfo { stemcell_formats: vec![STEMCELL_FORMAT.into()], api_version: 2 })
    }

    async fn create_stemcell(
        &self,
        fence: Option<&Fence>,
        image_path: &Path,
        cloud_properties: &serde_json::Value,
    ) -> CpiResult<String> {
        let call = AuditEntry::call("create_stemcell");
        self.audited(fence, call, async {
            let cid = new_cid("sc");
            let dir = self.stemcell_dir(&cid);
            // Hashing and unpacking an image of hundreds of MB takes
            // seconds: on the runtime's threads it would starve everything
            // else boshd runs there, its leases' keepalives first (a lost
            // lease then voids the import, which is retried, and lost...).
            let (image, cache) = (image_path.to_path_buf(), self.image_cache.clone());
            tokio::task::spawn_blocking(move || import_image(&image, &cache, &dir))
                .await
                .map_err(|e| CpiError::permanent("create_stemcell", e))??;
            self.records.put(STEMCELLS, &cid, cloud_properties).map_err(io("create_stemcell"))?;
            Ok(cid)
        })
        .await
    }

    async fn delete_stemcell(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()> {
        let call = AuditEntry::call("delete_stemcell").stemcell(cid);
        self.audited(fence, call, async {
            if !self.records.remove(STEMCELLS, cid).map_err(io("delete_stemcell"))? {
                return Err(CpiError::NotFound { what: "stemcell", cid: cid.into() });
            }
            let _ = std::fs::remove_dir_all(self.stemcell_dir(cid));
            Ok(())
        })
        .await
    }

    async fn create_vm(&self, fence: Option<&Fence>, req: &CreateVm) -> CpiResult<String> {
        let call = AuditEntry::call("create_vm").request(&req.request_id).agent(&req.agent_id);
        self.audited(fence, call, async {
        const M: &str = "create_vm";
        if req.request_id.is_empty() || req.agent_id.is_empty() {
            return Err(CpiError::permanent(M, "request_id and agent_id are required"));
        }
        let _guard = self.lock.lock().await;
        // The request id is an idempotency key (as EC2's client token): a
        // create repeated by a director that lost track of the first — one
        // deposed while paused between its fence check and this call —
        // gets the VM that exists, not a second one.
        if let Some(cid) = self.find_vm_by_request(&req.request_id).await? {
            info!(vm = %cid, request = %req.request_id, "create_vm repeated: returning the VM made for it");
            return Ok(cid);
        }
        if self
            .records
            .get::<serde_json::Value>(STEMCELLS, &req.stemcell_cid)
            .map_err(io(M))?
            .is_none()
        {
            return Err(CpiError::NotFound { what: "stemcell", cid: req.stemcell_cid.clone() });
        }
        for d in &req.disk_cids {
            self.disk(d, M)?;
        }
        let rootfs = self.machines.stemcell_rootfs(&req.stemcell_cid);
        if rootfs.is_some() {
            container_vm::check(req)?;
        }
        let cid = new_cid("vm");
        std::fs::create_dir_all(self.vm_dir(&cid)).map_err(io(M))?;
        // Record the VM before starting it: a crash in between leaves a
        // record that find_vm_by_request adopts and delete_vm removes,
        // never an untracked process.
        let mut vm = VmRecord {
            agent_id: req.agent_id.clone(),
            request_id: req.request_id.clone(),
            stemcell_cid: req.stemcell_cid.clone(),
            proc: None,
            disks: Vec::new(),
            metadata: BTreeMap::new(),
            container: rootfs.as_ref().map(|_| ContainerVm::default()),
        };
        self.put_vm(&cid, &vm, M)?;
        if let Some(lower) = rootfs {
            let (m, c, r) = (self.machines.clone(), cid.clone(), req.clone());
            match container_vm::blocking(M, move || m.create(&c, &r, &lower)).await {
                Ok(c) => {
                    vm.container = Some(c);
                    self.put_vm(&cid, &vm, M)?;
                    info!(vm = %cid, agent = %req.agent_id, "created container VM");
                    return Ok(cid);
                }
                Err(e) => {
                    let _ = self.records.remove(VMS, &cid);
                    return Err(e);
                }
            }
        }
        self.write_settings(&cid, req.settings.clone(), &[])?;
        let proc = self.start_vm(&cid, &req.stemcell_cid)?;
        vm.proc = Some(proc);
        self.put_vm(&cid, &vm, M)?;
        info!(vm = %cid, agent = %req.agent_id, pid = proc.pid, "created VM");
        Ok(cid)
        }).await
    }

    async fn delete_vm(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()> {
        let call = AuditEntry::call("delete_vm").vm(cid);
        self.audited(fence, call, async {
            const M: &str = "delete_vm";
            let vm = self.vm(cid, M)?;
            if vm.container.is_some() {
                let (m, c) = (self.machines.clone(), cid.to_string());
                let running = container_vm::blocking(M, move || {
                    m.destroy(&c);
                    Ok(m.init(&c).is_some())
                })
                .await?;
                if running {
                    return Err(CpiError::Transient {
                        method: M,
                        message: format!("container {cid} did not stop"),
                    });
                }
            }
            if let Some(p) = vm.proc {
                p.kill_tree();
                for _ in 0..200 {
                    if !p.is_alive() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                if p.is_alive() {
                    return Err(CpiError::Transient {
                        method: M,
                        message: format!("process {} did not exit", p.pid),
                    });
                }
            }
            let _guard = self.lock.lock().await;
            for d in &vm.disks {
                if let Some(mut rec) = self.records.get::<DiskRecord>(DISKS, d).map_err(io(M))?
                    && rec.attached_to.as_deref() == Some(cid)
                {
                    rec.attached_to = None;
                    self.put_disk(d, &rec, M)?;
                }
            }
            self.records.remove(VMS, cid).map_err(io(M))?;
            // A container VM's directory went with its container.
            if let Err(e) = std::fs::remove_dir_all(self.vm_dir(cid))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn!(vm = %cid, error = %e, "could not remove VM directory");
            }
            info!(vm = %cid, "deleted VM");
            Ok(())
        })
        .await
    }

    async fn has_vm(&self, cid: &str) -> CpiResult<bool> {
        let vm: Option<VmRecord> = self.records.get(VMS, cid).map_err(io("has_vm"))?;
        Ok(match vm {
            Some(v) if v.container.is_some() => {
                let (m, c) = (self.machines.clone(), cid.to_string());
                container_vm::blocking("has_vm", move || Ok(m.init(&c).is_some())).await?
            }
            Some(v) => v.proc.is_some_and(|p| p.is_alive()),
            None => false,
        })
    }

    async fn reboot_vm(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()> {
        let call = AuditEntry::call("reboot_vm").vm(cid);
        self.audited(fence, call, async {
            let _guard = self.lock.lock().await;
            let mut vm = self.vm(cid, "reboot_vm")?;
            if vm.container.is_some() {
                let lower = self.machines.stemcell_rootfs(&vm.stemcell_cid).ok_or_else(|| {
                    CpiError::NotFound { what: "stemcell", cid: vm.stemcell_cid.clone() }
                })?;
                let (m, c) = (self.machines.clone(), cid.to_string());
                return container_vm::blocking("reboot_vm", move || m.reboot(&c, &lower)).await;
            }
            if let Some(p) = vm.proc {
                p.kill_tree();
            }
            vm.proc = Some(self.start_vm(cid, &vm.stemcell_cid)?);
            self.put_vm(cid, &vm, "reboot_vm")
        })
        .await
    }

    async fn set_vm_metadata(
        &self,
        fence: Option<&Fence>,
        cid: &str,
        metadata: &BTreeMap<String, String>,
    ) -> CpiResult<()> {
        let call = AuditEntry::call("set_vm_metadata").vm(cid);
        self.audited(fence, call, async {
            let _guard = self.lock.lock().await;
            let mut vm = self.vm(cid, "set_vm_metadata")?;
            vm.metadata = metadata.clone();
            self.put_vm(cid, &vm, "set_vm_metadata")
        })
        .await
    }

    async fn calculate_vm_cloud_properties(
        &self,
        resources: &serde_json::Value,
    ) -> CpiResult<serde_json::Value> {
        Ok(serde_json::json!({
            "cpu": resources.get("cpu").cloned().unwrap_or(1.into()),
            "ram": resources.get("ram").cloned().unwrap_or(1024.into()),
            "ephemeral_disk_size": resources.get("ephemeral_disk_size").cloned().unwrap_or(1024.into()),
        }))
    }

    async fn find_vm_by_request(&self, request_id: &str) -> CpiResult<Option<String>> {
        let vms: BTreeMap<String, VmRecord> =
            self.records.all(VMS).map_err(io("find_vm_by_request"))?;
        Ok(vms.into_iter().find(|(_, v)| v.request_id == request_id).map(|(c, _)| c))
    }

    async fn create_disk(
        &self,
        fence: Option<&Fence>,
        request_id: &str,
        size_mb: u64,
        _cloud_properties: &serde_json::Value,
        _vm_hint: Option<&str>,
    ) -> CpiResult<String> {
        let call = AuditEntry::call("create_disk").request(request_id);
        self.audited(fence, call, async {
            if size_mb == 0 {
                return Err(CpiError::permanent("create_disk", "size must be positive"));
            }
            let _guard = self.lock.lock().await;
            // The request id is an idempotency key, as for create_vm.
            if !request_id.is_empty()
                && let Some(cid) = self.find_disk_by_request(request_id).await?
            {
                return Ok(cid);
            }
            let cid = new_cid("disk");
            std::fs::create_dir_all(self.disk_dir(&cid)).map_err(io("create_disk"))?;
            let disk =
                DiskRecord { size_mb, request_id: request_id.to_string(), attached_to: None };
            self.put_disk(&cid, &disk, "create_disk")?;
            Ok(cid)
        })
        .await
    }

    async fn delete_disk(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()> {
        let call = AuditEntry::call("delete_disk").disk(cid);
        self.audited(fence, call, async {
            let _guard = self.lock.lock().await;
            let disk = self.disk(cid, "delete_disk")?;
            if let Some(vm) = &disk.attached_to {
                return Err(CpiError::permanent(
                    "delete_disk",
                    format!("disk {cid} is attached to {vm}"),
                ));
            }
            self.records.remove(DISKS, cid).map_err(io("delete_disk"))?;
            let _ = std::fs::remove_dir_all(self.disk_dir(cid));
            Ok(())
        })
        .await
    }

    async fn has_disk(&self, cid: &str) -> CpiResult<bool> {
        let disk: Option<DiskRecord> = self.records.get(DISKS, cid).map_err(io("has_disk"))?;
        Ok(disk.is_some())
    }

    async fn attach_disk(
        &self,
        fence: Option<&Fence>,
        vm_cid: &str,
        disk_cid: &str,
    ) -> CpiResult<()> {
        let call = AuditEntry::call("attach_disk").vm(vm_cid).disk(disk_cid);
        self.audited(fence, call, async {
            const M: &str = "attach_disk";
            let _guard = self.lock.lock().await;
            let mut disk = self.disk(disk_cid, M)?;
            let mut vm = self.vm(vm_cid, M)?;
            match disk.attached_to.as_deref() {
                Some(v) if v == vm_cid && vm.disks.iter().any(|d| d == disk_cid) => return Ok(()),
                Some(v) if v != vm_cid => {
                    return Err(CpiError::permanent(
                        M,
                        format!("disk {disk_cid} is attached to {v}"),
                    ));
                }
                _ => {}
            }
            // The disk's record first: a crash before the VM's leaves a disk
            // that a repeated attach completes, never one two VMs could claim.
            disk.attached_to = Some(vm_cid.to_string());
            self.put_disk(disk_cid, &disk, M)?;
            if !vm.disks.iter().any(|d| d == disk_cid) {
                vm.disks.push(disk_cid.to_string());
            }
            if vm.container.is_some() {
                self.machines.attach(vm_cid, disk_cid)?;
            }
            self.write_vm_settings(vm_cid, &vm, self.read_vm_settings(vm_cid, &vm)?)?;
            self.put_vm(vm_cid, &vm, M)
        })
        .await
    }

    async fn detach_disk(
        &self,
        fence: Option<&Fence>,
        vm_cid: &str,
        disk_cid: &str,
    ) -> CpiResult<()> {
        let call = AuditEntry::call("detach_disk").vm(vm_cid).disk(disk_cid);
        self.audited(fence, call, async {
            const M: &str = "detach_disk";
            let _guard = self.lock.lock().await;
            let mut disk = self.disk(disk_cid, M)?;
            let mut vm = self.vm(vm_cid, M)?;
            vm.disks.retain(|d| d != disk_cid);
            self.write_vm_settings(vm_cid, &vm, self.read_vm_settings(vm_cid, &vm)?)?;
            if vm.container.is_some() {
                self.machines.detach(vm_cid, disk_cid)?;
            }
            self.put_vm(vm_cid, &vm, M)?;
            disk.attached_to = None;
            self.put_disk(disk_cid, &disk, M)
        })
        .await
    }

    async fn get_disks(&self, vm_cid: &str) -> CpiResult<Vec<String>> {
        Ok(self.vm(vm_cid, "get_disks")?.disks)
    }

    async fn resize_disk(&self, fence: Option<&Fence>, cid: &str, size_mb: u64) -> CpiResult<()> {
        let call = AuditEntry::call("resize_disk").disk(cid);
        self.audited(fence, call, async {
            let _guard = self.lock.lock().await;
            let mut disk = self.disk(cid, "resize_disk")?;
            if size_mb < disk.size_mb {
                return Err(CpiError::permanent("resize_disk", "disks can only grow"));
            }
            disk.size_mb = size_mb;
            self.put_disk(cid, &disk, "resize_disk")
        })
        .await
    }

    async fn snapshot_disk(
        &self,
        fence: Option<&Fence>,
        cid: &str,
        _metadata: &BTreeMap<String, String>,
    ) -> CpiResult<String> {
        let call = AuditEntry::call("snapshot_disk").disk(cid);
        self.audited(fence, call, async {
            self.disk(cid, "snapshot_disk")?;
            let snap = new_cid("snap");
            copy_dir(&self.disk_dir(cid), &self.root.join("snapshots").join(&snap))
                .map_err(io("snapshot_disk"))?;
            self.records.put(SNAPSHOTS, &snap, &cid).map_err(io("snapshot_disk"))?;
            Ok(snap)
        })
        .await
    }

    async fn delete_snapshot(&self, fence: Option<&Fence>, snapshot_cid: &str) -> CpiResult<()> {
        let call = AuditEntry::call("delete_snapshot").snapshot(snapshot_cid);
        self.audited(fence, call, async {
            if !self.records.remove(SNAPSHOTS, snapshot_cid).map_err(io("delete_snapshot"))? {
                return Err(CpiError::NotFound { what: "snapshot", cid: snapshot_cid.into() });
            }
            let _ = std::fs::remove_dir_all(self.root.join("snapshots").join(snapshot_cid));
            Ok(())
        })
        .await
    }

    async fn find_disk_by_request(&self, request_id: &str) -> CpiResult<Option<String>> {
        let disks: BTreeMap<String, DiskRecord> =
            self.records.all(DISKS).map_err(io("find_disk_by_request"))?;
        Ok(disks.into_iter().find(|(_, d)| d.request_id == request_id).map(|(c, _)| c))
    }

    async fn list_vms(&self) -> CpiResult<Vec<super::ListedVm>> {
        self.listed_vms()
    }
}

/// Copies a directory tree (symlinks are copied as links, never followed).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if ty.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, dest)?;
        } else {
            std::fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpi;

    /// Every mutating call leaves one audit line with its subject, fence
    /// and outcome, numbered in admission order; a reopened CPI continues
    /// the numbering; reads are not recorded.
    #[tokio::test]
    async fn mutating_calls_are_audited_with_fence_and_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let cpi = LocalCpi::open(dir.path()).unwrap();
        let disk =
            cpi.create_disk(None, "disk-r1", 10, &serde_json::json!({}), None).await.unwrap();
        let fence = bosh_api::store::Fence { key: "/bosh/leader/instance".into(), revision: 7 };
        let gone = cpi.delete_disk(Some(&fence), "disk-nope").await;
        assert!(gone.unwrap_err().is_not_found());
        cpi.has_disk(&disk).await.unwrap();
        drop(cpi);
        let cpi = LocalCpi::open(dir.path()).unwrap();
        cpi.delete_disk(None, &disk).await.unwrap();

        let log = audit::read(dir.path()).unwrap();
        let got: Vec<_> = log
            .iter()
            .map(|e| (e.seq, e.method.as_str(), e.ok(), e.fence.as_ref().map(|f| f.revision)))
            .collect();
        assert_eq!(
            got,
            [
                (1, "create_disk", true, None),
                (2, "delete_disk", false, Some(7)),
                (3, "delete_disk", true, None)
            ]
        );
        assert_eq!(log[0].request_id.as_deref(), Some("disk-r1"));
        assert_eq!(log[0].cid.as_deref(), Some(disk.as_str()));
        assert_eq!(log[1].disk_cid.as_deref(), Some("disk-nope"));
        assert!(log[1].error.as_deref().unwrap_or_default().contains("not found"), "{log:?}");
    }

    /// A call refused by the fence check is recorded as an error and has
    /// no effect.
    #[tokio::test]
    async fn a_call_refused_by_the_fence_is_audited_as_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let cpi = LocalCpi::open(dir.path()).unwrap();
        let key = "/bosh/leader/instance".to_string();
        let new = bosh_api::store::Fence { key: key.clone(), revision: 9 };
        let old = bosh_api::store::Fence { key, revision: 5 };
        let cp = serde_json::json!({});
        cpi.create_disk(Some(&new), "a", 1, &cp, None).await.unwrap();
        let refused = cpi.create_disk(Some(&old), "b", 1, &cp, None).await;
        assert!(refused.is_err());
        let log = audit::read(dir.path()).unwrap();
        assert_eq!(log.len(), 2);
        assert!(log[0].ok() && !log[1].ok(), "{log:?}");
        assert!(!log[0].refused && log[1].refused, "{log:?}");
        assert_eq!(log[1].fence.as_ref().map(|f| f.revision), Some(5));
        assert_eq!(Inventory::load(dir.path()).unwrap().disks.len(), 1);
    }

    /// A relative data dir still gives VMs absolute roots (packaging scripts
    /// run in another directory and would otherwise install elsewhere).
    #[test]
    fn vm_roots_are_absolute_even_from_a_relative_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_current_dir(dir.path()).unwrap();
        let cpi = LocalCpi::open(Path::new("relative/cpi")).unwrap();
        let vm = cpi.vm_dir("vm-1");
        assert!(vm.is_absolute(), "{}", vm.display());
        assert!(vm.starts_with(dir.path().canonicalize().unwrap()) || vm.starts_with(dir.path()));
    }
}
