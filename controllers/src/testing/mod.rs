//! A private director world for tests and benchmarks (feature `testing`):
//! etcd, a nats-server whose users boshd manages, a blobstore, and the local
//! CPI with a stemcell built from the real agent binary; and [`invariants`],
//! the fault matrix's invariant checker.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;
use bosh_api::agent::{BlobstoreSettings, MbusSettings, NetworkSettings, Settings};
use bosh_api::store::{Fence, Store};
use bosh_test_utils::{Nats, TestEnv};

use crate::world::agent_client::{AgentClient, Timeouts};
use crate::world::bus::{Bus, BusConfig};
use crate::world::cpi::local::{self, LocalCpi};
use crate::world::cpi::{Cpi, CpiInfo, CpiResult, CreateVm, VmNetwork};

mod faulty;
mod harness;
pub mod invariants;
mod manifest;
pub use faulty::{CallRecord, CpiFaults, FaultyCpi};
pub use harness::{CpiPath, Harness, HarnessOptions, TOKEN, example_release};
pub use manifest::WebManifest;

/// Everything a director needs to run local VMs, private to one test.
pub struct LocalWorld {
    /// etcd (and the temp dir everything lives in).
    pub env: TestEnv,
    /// The store on that etcd.
    pub store: Store,
    /// nats-server, running the configuration `bus` renders. It picks its
    /// own port, overriding the configuration's `listen`.
    pub nats: Nats,
    /// Agents' credentials.
    pub bus: Bus,
    /// The local CPI.
    pub cpi: LocalCpi,
    /// A stemcell holding the real agent.
    pub stemcell: String,
    /// A director connection to the agents.
    pub agents: AgentClient,
    /// The blobstore agents download from.
    pub blobstore_url: String,
    /// Its token.
    pub blobstore_token: String,
    /// The blobstore's storage, for direct reads and writes.
    pub blobs: Arc<dyn bosh_blobstore::Storage>,
    /// The stemcell's image file (what an upload stores as a blob).
    pub image: std::path::PathBuf,
}

/// What a world's VMs are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VmKind {
    /// Process trees on the host sharing its filesystem and loopback, each
    /// with its own `/var/vcap` (the agent-only stemcell): what scale
    /// tests run a thousand of.
    #[default]
    Process,
    /// runc containers of the Debian rootfs stemcell, each with its own
    /// root, namespaces and an address on a bridge: nats-server and the
    /// blobstore then listen on every address, so VMs reach them through
    /// their gateway (their loopback is their own).
    Container,
}

/// The rootfs stemcell image holding `agent`, built once per machine and
/// agent (see [`bosh_api::local_stemcell::rootfs`]), and the shared cache
/// CPIs unpack it into.
pub fn container_image(agent: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    use bosh_api::local_stemcell::rootfs;
    let cache = rootfs::default_cache().ok_or_else(|| anyhow::anyhow!("HOME is not set"))?;
    let inputs = rootfs::RootfsInputs::for_agent(agent)?;
    let fs = rootfs::build(&inputs, &cache, |line| eprintln!("{line}"))?;
    let image = rootfs::cached_image(&fs, agent)?;
    Ok((image, cache.join("images")))
}

/// What stays with the test when the world's handles go to a `Director`:
/// the servers (dropped = stopped) and the stemcell's cid.
pub struct LocalWorldRest {
    /// etcd and the temp dir.
    pub env: TestEnv,
    /// nats-server.
    pub nats: Nats,
    /// The stemcell holding the real agent, already imported into the CPI.
    pub stemcell: String,
    /// The stemcell's image file.
    pub image: std::path::PathBuf,
}

impl Drop for LocalWorldRest {
    /// The world's VMs go with it, whatever a test left running.
    fn drop(&mut self) {
        LocalCpi::kill_all(&self.env.dir().join("cpi"));
    }
}

impl LocalWorld {
    /// Starts everything.
    pub async fn start() -> Result<LocalWorld> {
        LocalWorld::start_on(None).await
    }

    /// Starts everything, keeping the world's objects in the etcd `store`
    /// says (with the world's secrets key unless it has one) instead of the
    /// world's own etcd member, which then idles.
    pub async fn start_on(store: Option<bosh_api::store::StoreConfig>) -> Result<LocalWorld> {
        LocalWorld::start_with(store, VmKind::Process).await
    }

    /// Starts everything for VMs of `kind` (see [`LocalWorld::start_on`]).
    pub async fn start_with(
        store: Option<bosh_api::store::StoreConfig>,
        kind: VmKind,
    ) -> Result<LocalWorld> {
        let env = TestEnv::etcd_only().await?;
        let config = match store {
            Some(c) if c.secrets_key.is_some() => c,
            Some(c) => {
                bosh_api::store::StoreConfig { secrets_key: env.store_config().secrets_key, ..c }
            }
            None => env.store_config(),
        };
        let store = Store::connect(&config, "/bosh").await?;
        let dir = env.dir().to_path_buf();
        let (conf, pid) = (dir.join("nats.conf"), dir.join("nats.pid"));
        let cfg = BusConfig::generate(conf.clone(), pid.clone(), "127.0.0.1:4222".into());
        let bus = Bus::new(store.clone(), cfg.clone());
        bus.sync().await?;
        let mut nats_args = vec!["-c".to_string(), conf.to_string_lossy().into_owned()];
        nats_args.extend(["-P".to_string(), pid.to_string_lossy().into_owned()]);
        // Container VMs reach the host at their gateway, not on loopback
        // (nats-server takes the last `-a`).
        let listen = if kind == VmKind::Container { "0.0.0.0" } else { "127.0.0.1" };
        nats_args.extend(["-a".to_string(), listen.to_string()]);
        let nats_args: Vec<&str> = nats_args.iter().map(String::as_str).collect();
        let nats = Nats::start_in(&dir, &nats_args).await?;
        let director = async_nats::ConnectOptions::with_user_and_password(
            cfg.director.user.clone(),
            cfg.director.password.clone(),
        )
        .connect(nats.url())
        .await?;
        // Shorter than boshd's (tests that stop an agent fail sooner), but
        // sized for a loaded test host: 3 tries of 5 s, same request id.
        let agents = AgentClient::new(director).with_timeouts(Timeouts {
            request: Duration::from_secs(5),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
            ..Timeouts::default()
        });

        let listener = tokio::net::TcpListener::bind((listen, 0)).await?;
        let blobstore_url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let blobstore_token = "blob-token".to_string();
        let storage: Arc<dyn bosh_blobstore::Storage> =
            Arc::new(bosh_blobstore::LocalStorage::new(dir.join("blobs")));
        tokio::spawn(bosh_blobstore::server::serve(
            listener,
            storage.clone(),
            blobstore_token.clone(),
            std::future::pending(),
        ));

        let mut cpi = LocalCpi::open(&dir.join("cpi"))?.with_audit_store(store.clone());
        let agent = bosh_test_utils::agent::agent_binary()?;
        let image = match kind {
            VmKind::Process => {
                let image = dir.join("image.tgz");
                local::build_image(&agent, &image)?;
                image
            }
            VmKind::Container => {
                let (image, cache) =
                    tokio::task::spawn_blocking(move || container_image(&agent)).await??;
                cpi = cpi.with_image_cache(&cache);
                image
            }
        };
        let stemcell = cpi.create_stemcell(None, &image, &serde_json::json!({})).await?;
        Ok(LocalWorld {
            env,
            store,
            nats,
            bus,
            cpi,
            stemcell,
            agents,
            blobstore_url,
            blobstore_token,
            blobs: storage,
            image,
        })
    }

    /// A [`crate::world::director::Director`] over this world. The CPI and the bus
    /// move into it, so this consumes the world's handles on them.
    pub fn director(self) -> (crate::world::director::Director, LocalWorldRest) {
        let cpis = crate::world::cpis::CpiRegistry::new(crate::world::cpis::LocalDefaults {
            data_dir: self.env.dir().join("cpi"),
            image_cache: Some(self.cpi.image_cache().to_path_buf()),
            audit_store: Some(self.store.clone()),
        });
        let director = crate::world::director::Director {
            store: self.store.clone(),
            cpi: Arc::new(self.cpi),
            cpis: Arc::new(cpis),
            bus: Arc::new(self.bus),
            nats_url: self.nats.url(),
            agents: self.agents.clone(),
            blobs: self.blobs.clone(),
            blobstore: BlobstoreSettings {
                url: self.blobstore_url.clone(),
                token: self.blobstore_token.clone(),
                mirrors: Vec::new(),
            },
            heartbeat_interval_secs: 1,
            addresses: Default::default(),
        };
        let rest = LocalWorldRest {
            env: self.env,
            nats: self.nats,
            stemcell: self.stemcell,
            image: self.image,
        };
        (director, rest)
    }

    /// Creates a VM whose agent has its own bus credentials and address
    /// (a test's call, outside any controller term: unfenced).
    pub async fn create_vm(&self, agent_id: &str, ip: &str) -> Result<String> {
        self.create_vm_on(agent_id, VmNetwork { ip: ip.into(), ..Default::default() }).await
    }

    /// [`LocalWorld::create_vm`] on the `default` network `net` (a
    /// container VM needs its netmask and gateway too).
    pub async fn create_vm_on(&self, agent_id: &str, net: VmNetwork) -> Result<String> {
        let ip = net.ip.clone();
        let creds = self.bus.issue(&self.store, agent_id).await?;
        let mut networks = BTreeMap::new();
        networks.insert(
            "default".to_string(),
            NetworkSettings { type_: "manual".into(), ip: ip.clone(), ..Default::default() },
        );
        let settings = Settings {
            agent_id: agent_id.into(),
            mbus: MbusSettings { url: self.nats.url(), user: creds.user, password: creds.password },
            blobstore: BlobstoreSettings {
                url: self.blobstore_url.clone(),
                token: self.blobstore_token.clone(),
                mirrors: Vec::new(),
            },
            networks,
            heartbeat_interval_secs: 1,
            ..Default::default()
        };
        let mut vm_networks = BTreeMap::new();
        vm_networks.insert("default".to_string(), net);
        Ok(self
            .cpi
            .create_vm(
                None,
                &CreateVm {
                    request_id: format!("req-{agent_id}"),
                    agent_id: agent_id.into(),
                    stemcell_cid: self.stemcell.clone(),
                    networks: vm_networks,
                    settings,
                    ..Default::default()
                },
            )
            .await?)
    }
}

/// A test's edit of each new VM's agent settings (see
/// [`CountingCpi::edit_settings`]).
pub type SettingsEdit = Arc<dyn Fn(&mut Settings) + Send + Sync>;

/// A CPI that counts the calls tests and benchmarks assert on and passes
/// every call on to a real one.
pub struct CountingCpi {
    /// The CPI every call goes to.
    pub inner: Arc<dyn Cpi>,
    /// `create_vm` calls.
    pub creates: AtomicUsize,
    /// cids `create_vm` returned.
    pub created: Mutex<Vec<String>>,
    /// `delete_stemcell` calls.
    pub stemcell_deletes: AtomicUsize,
    /// Every call (`info` included).
    pub total: AtomicUsize,
    /// cids passed to `delete_vm`.
    pub deleted: Mutex<Vec<String>>,
    /// Edits each new VM's agent settings (none: as the director made them).
    settings_edit: Mutex<Option<SettingsEdit>>,
}

impl CountingCpi {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Cpi>) -> CountingCpi {
        CountingCpi {
            inner,
            creates: AtomicUsize::new(0),
            created: Mutex::new(Vec::new()),
            stemcell_deletes: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            deleted: Mutex::new(Vec::new()),
            settings_edit: Mutex::new(None),
        }
    }

    /// From now on, each VM this CPI creates gets its agent settings as
    /// `edit` leaves them: fault tests route an agent's NATS or blobstore
    /// connection through a proxy of their own this way (FAULT-MATRIX C1,
    /// C2, C4: one proxy per agent, to partition one agent at a time; C5:
    /// a slow blobstore link).
    pub fn edit_settings(&self, edit: impl Fn(&mut Settings) + Send + Sync + 'static) {
        *self.settings_edit.lock().expect("settings edit") = Some(Arc::new(edit));
    }

    /// Calls made so far, of every method.
    pub fn calls(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Cpi for CountingCpi {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn info(&self) -> CpiResult<CpiInfo> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.inner.info().await
    }
    async fn create_stemcell(
        &self,
        fence: Option<&Fence>,
        p: &Path,
        cp: &serde_json::Value,
    ) -> CpiResult<String> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.inner.create_stemcell(fence, p, cp).await
    }
    async fn delete_stemcell(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.stemcell_deletes.fetch_add(1, Ordering::SeqCst);
        self.inner.delete_stemcell(fence, cid).await
    }
    async fn create_vm(&self, fence: Option<&Fence>, req: &CreateVm) -> CpiResult<String> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.creates.fetch_add(1, Ordering::SeqCst);
        let edit = self.settings_edit.lock().expect("settings edit").clone();
        let cid = match edit {
            Some(edit) => {
                let mut req = req.clone();
                edit(&mut req.settings);
                self.inner.create_vm(fence, &req).await?
            }
            None => self.inner.create_vm(fence, req).await?,
        };
        self.created.lock().unwrap().push(cid.clone());
        Ok(cid)
    }
    async fn delete_vm(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.deleted.lock().unwrap().push(cid.to_string());
        self.inner.delete_vm(fence, cid).await
    }
    async fn has_vm(&self, cid: &str) -> CpiResult<bool> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.inner.has_vm(cid).await
    }
    async fn reboot_vm(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.inner.reboot_vm(fence, cid).await
    }
    async fn set_vm_metadata(
        &self,
        fence: Option<&Fence>,
        cid: &str,
        m: &BTreeMap<String, String>,
    ) -> CpiResult<()> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.inner.set_vm_metadata(fence, cid, m).await
    }
    async fn calculate_vm_cloud_properties(
        &self,
        r: &serde_json::Value,
    ) -> CpiResult<serde_json::Value> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.inner.calculate_vm_cloud_properties(r).await
    }
    async fn find_vm_by_request(&self, id: &str) -> CpiResult<Option<String>> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.inner.find_vm_by_request(id).await
    }
    async fn create_disk(
        &self,
        fence: Option<&Fence>,
        id: &str,
        size: u64,
        cp: &serde_json::Value,
        vm: Option<&str>,
    ) -> CpiResult<String> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.inner.create_disk(fence, id, size, cp, vm).await
    }
    async fn delete_disk(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.inner.delete_disk(fence, cid).await
    }
    async fn has_disk(&self, cid: &str) -> CpiResult<bool> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.inner.has_disk(cid).await
    }
    async fn attach_disk(&self, fence: Option<&Fence>, vm: &str, disk: &str) -> CpiResult<()> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.inner.attach_disk(fence, vm, disk).await
    }
    async fn detach_disk(&self, fence: Option<&Fence>, vm: &str, disk: &str) -> CpiResult<()> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.inner.detach_disk(fence, vm, disk).await
    }
    async fn get_disks(&self, vm: &str) -> CpiResult<Vec<String>> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.inner.get_disks(vm).await
    }
    async fn resize_disk(&self, fence: Option<&Fence>, cid: &str, size: u64) -> CpiResult<()> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.inner.resize_disk(fence, cid, size).await
    }
    async fn snapshot_disk(
        &self,
        fence: Option<&Fence>,
        cid: &str,
        m: &BTreeMap<String, String>,
    ) -> CpiResult<String> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.inner.snapshot_disk(fence, cid, m).await
    }
    async fn delete_snapshot(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.inner.delete_snapshot(fence, cid).await
    }
    async fn find_disk_by_request(&self, id: &str) -> CpiResult<Option<String>> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.inner.find_disk_by_request(id).await
    }
    async fn list_vms(&self) -> CpiResult<Vec<crate::world::cpi::ListedVm>> {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.inner.list_vms().await
    }
}
