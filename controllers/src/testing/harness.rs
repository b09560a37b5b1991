//! A whole director in one process for tests and benchmarks: a
//! [`LocalWorld`], a counting CPI, an in-process API for uploads, the
//! validator, and the world's controllers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use bosh_api::objects::{
    ConditionType, ConfigSpec, ConfigType, DeploymentSpec, Reason, StemcellSpec,
};
use bosh_api::release::{CreateOptions, create_release};
use bosh_api::store::Store;
use bosh_api::{Object, ObjectMeta};
use bosh_test_utils::{SubnetLease, eventually};
use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;

use super::{CountingCpi, FaultyCpi, LocalWorld, LocalWorldRest, VmKind};
use crate::runtime::ElectionConfig;
use crate::server::api::{self, ApiState};
use crate::server::daemon::{self, Options};
use crate::world::director::Director;

/// The API token of a harness.
pub const TOKEN: &str = "t";

/// The cloud config's subnet entry for the leased subnet: gateway `.1`,
/// reserved `.2`–`.9`, static `.10`–`.20` (of a /16: `127.N.0.x`, the rest
/// of the /16 dynamic). With `dns` the gateway is also the subnet's DNS
/// server (see [`HarnessOptions::dns`]).
fn subnet_yaml(lease: &SubnetLease, dns: bool) -> String {
    let ip = |host| lease.ip(host);
    let mut yaml = format!(
        "range: {}
    gateway: {}
    azs: [z1]
    reserved: [{} - {}]
    static: [{} - {}]",
        lease.range(),
        ip(1),
        ip(2),
        ip(9),
        ip(10),
        ip(20)
    );
    if dns {
        yaml.push_str(&format!("\n    dns: [{}]", ip(1)));
    }
    yaml
}

/// The address the harness's BOSH DNS listens on when
/// [`HarnessOptions::dns`] is set: port 53 of the subnet's gateway, where
/// a VM's resolver asks.
fn dns_address(lease: &SubnetLease) -> std::net::SocketAddr {
    std::net::SocketAddr::new(lease.ip(1).into(), 53)
}

/// How a harness is set up.
#[derive(Debug, Clone)]
pub struct HarnessOptions {
    /// The loopback subnet of the `default` network, whose addresses the
    /// world's VMs bind: leased, so no other live test process uses it
    /// (see [`SubnetLease`]). Its size is the network's: a /24 (about 230
    /// instances) from [`HarnessOptions::new`], a /16 (room for 1,000
    /// instances, for benchmarks) from [`SubnetLease::acquire_slash16`]
    /// given to [`HarnessOptions::with_subnet`]. Shared, so a copy of these
    /// options (to start the world again) keeps the same subnet; the
    /// [`Harness`] holds it for its life as [`Harness::subnet`].
    pub subnet: Arc<SubnetLease>,
    /// `compilation.workers`.
    pub compile_workers: usize,
    /// `compilation.reuse_compilation_vms`.
    pub reuse_compile_vms: bool,
    /// Run the deployment and instance controllers (else only the stemcell
    /// and compilation controllers).
    pub deploy: bool,
    /// The controllers' resync period.
    pub resync: Duration,
    /// Limits of one template-rendering Ruby process.
    pub render: crate::libs::render::Limits,
    /// Health monitor and resurrection tuning.
    pub health: crate::reconcilers::health::HealthConfig,
    /// The etcd to keep the world in instead of the world's own single
    /// member (which then idles): e.g. a [`bosh_test_utils::EtcdCluster`]'s
    /// endpoints, for the etcd fault scenarios. The world's secrets key is
    /// added when this config has none.
    pub store: Option<bosh_api::store::StoreConfig>,
    /// The periodic orphaned-VM scan; off by default: its listing is a CPI
    /// call, and tests count CPI calls (A4 expects none from a converged
    /// deployment).
    pub orphan_vms: Option<crate::reconcilers::deployment::orphan_vms::OrphanVmConfig>,
    /// The blobstore URL agents (instances' and compile VMs') are given,
    /// instead of the world's own: tests put a proxy there that forwards
    /// to [`Harness::blobstore_url`] and tampers with what passes.
    pub agent_blobstore_url: Option<String>,
    /// What the world's VMs are.
    pub vms: VmKind,
    /// Serve BOSH DNS as boshd does ([`daemon::run_dns`]) on port 53 of
    /// the subnet's gateway and give the subnet `dns:
    /// [<gateway>]`, which the local CPI writes into a container VM's
    /// `/etc/resolv.conf`: jobs then resolve link addresses
    /// (`q-s0.<group>.<network>.<deployment>.bosh`) through the director.
    /// Off by default: port 53 needs root, and only container VMs have a
    /// resolver of their own (process VMs share the host's).
    pub dns: bool,
    /// How the director reaches the world's CPI.
    pub cpi_path: CpiPath,
    /// With [`CpiPath::External`]: the executable run instead of
    /// `bosh-local-cpi` (a test's stand-in, which may hand calls on to it).
    pub cpi_exe: Option<std::path::PathBuf>,
    /// The external CPI's per-call timeout (boshd's `--cpi-timeout-secs`).
    pub cpi_timeout: Option<Duration>,
}

/// How the director reaches the world's local CPI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CpiPath {
    /// In process (the default).
    #[default]
    InProcess,
    /// Through BOSH's external CPI protocol: `bosh-local-cpi`, one process
    /// per call, over the same data dir; `disabled` methods are answered
    /// as a stock BOSH CPI answers methods it lacks.
    External {
        /// Methods answered "Method is not known".
        disabled: Vec<String>,
    },
}

impl HarnessOptions {
    /// Defaults on a newly leased /24: 2 compile workers, no reuse, every
    /// controller but the orphaned-VM scan, a 2 s resync.
    ///
    /// # Panics
    ///
    /// When no /24 is free (see [`SubnetLease::acquire`]).
    pub fn new() -> HarnessOptions {
        HarnessOptions::containers()
    }

    /// Defaults for container VMs: a leased private /24 on a bridge
    /// ([`SubnetLease::acquire_bridged`]) and the Debian rootfs stemcell.
    pub fn containers() -> HarnessOptions {
        HarnessOptions {
            vms: VmKind::Container,
            ..HarnessOptions::with_subnet(SubnetLease::acquire_bridged())
        }
    }

    /// Defaults for process VMs (the agent-only stemcell, each VM with its
    /// own `/var/vcap` on a leased loopback /24): for tests of more VMs
    /// than one bridge holds.
    pub fn processes() -> HarnessOptions {
        HarnessOptions::with_subnet(SubnetLease::acquire())
    }

    /// The defaults of [`HarnessOptions::new`] on `subnet`: a /16, or a
    /// given /24 for a test that needs a specific layout.
    pub fn with_subnet(subnet: SubnetLease) -> HarnessOptions {
        HarnessOptions {
            subnet: Arc::new(subnet),
            compile_workers: 2,
            reuse_compile_vms: false,
            deploy: true,
            resync: Duration::from_secs(2),
            health: crate::reconcilers::health::HealthConfig::default(),
            render: Default::default(),
            store: None,
            orphan_vms: None,
            agent_blobstore_url: None,
            vms: VmKind::Process,
            cpi_path: CpiPath::InProcess,
            cpi_exe: None,
            cpi_timeout: None,
            dns: false,
        }
    }
}

impl Default for HarnessOptions {
    /// [`HarnessOptions::new`]: leases a /24.
    fn default() -> HarnessOptions {
        HarnessOptions::new()
    }
}

/// A running director world.
pub struct Harness {
    /// The store.
    pub store: Store,
    /// The director's handles (its CPI is `cpi`).
    pub director: Director,
    /// The counting CPI every controller uses.
    pub cpi: Arc<CountingCpi>,
    /// The fault injector between the counting CPI and the local one
    /// (injects nothing until told to).
    pub faults: Arc<FaultyCpi>,
    /// The in-process API.
    pub api_url: String,
    /// The world's blobstore (what agents are given, unless
    /// [`HarnessOptions::agent_blobstore_url`] says otherwise).
    pub blobstore_url: String,
    /// The servers and the stemcell image.
    pub rest: LocalWorldRest,
    /// The `default` network's subnet, leased for the harness's life:
    /// tests that name addresses (static IPs, a VM's IP) take them from
    /// it ([`SubnetLease::ip`]).
    pub subnet: Arc<SubnetLease>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Harness {
    /// Starts a world with a cloud config of one AZ (`z1`), one vm_type
    /// (`small`) and one manual network (`default`) of `o.network`'s size.
    pub async fn start(o: HarnessOptions) -> Result<Harness> {
        let world = LocalWorld::start_with(o.store.clone(), o.vms).await?;
        let images = world.cpi.image_cache().to_path_buf();
        let (mut director, rest) = world.director();
        if let CpiPath::External { disabled } = &o.cpi_path {
            let exe = match &o.cpi_exe {
                Some(exe) => exe.clone(),
                None => bosh_test_utils::agent::local_cpi_binary()?,
            };
            let mut props = serde_json::Map::new();
            props.insert("disabled_methods".into(), serde_json::json!(disabled));
            let data_dir = rest.env.dir().join("cpi");
            props.insert("data_dir".into(), data_dir.to_string_lossy().into_owned().into());
            props.insert("image_cache".into(), images.to_string_lossy().into_owned().into());
            let name = director.cpi.name().to_string();
            // Set up as boshd sets it up (`info` first, logs to tasks).
            let timeout = o.cpi_timeout.unwrap_or(Duration::from_secs(600));
            let sink = Arc::new(crate::libs::tasks::CpiTaskLog::new(director.store.clone()));
            let (ext, _) = crate::world::cpi::external::ExternalCpi::new(&name, &exe, props)
                .with_timeout(timeout)
                .with_log_sink(sink)
                .connect()
                .await?;
            director.cpi = Arc::new(ext);
        }
        let faults = Arc::new(FaultyCpi::new(director.cpi.clone()));
        let cpi = Arc::new(CountingCpi::new(faults.clone()));
        director.cpi = cpi.clone();
        let blobstore_url = director.blobstore.url.clone();
        if let Some(url) = &o.agent_blobstore_url {
            director.blobstore.url = url.clone();
        }
        let store = director.store.clone();
        let state = ApiState::new(store.clone(), TOKEN)
            .with_blobstore(director.blobs.clone(), rest.env.dir().join("scratch"))
            .with_director(director.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api_url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(api::serve(listener, api::router(Arc::new(state)), std::future::pending()));

        let (w, reuse) = (o.compile_workers, o.reuse_compile_vms);
        let subnet = subnet_yaml(&o.subnet, o.dns);
        let cloud = format!(
            "
azs: [{{name: z1}}]
vm_types: [{{name: small, cloud_properties: {{flavor: compile}}}}]
networks:
- name: default
  type: manual
  subnets:
  - {subnet}
compilation: {{workers: {w}, az: z1, vm_type: small, network: default, reuse_compilation_vms: {reuse}}}
"
        );
        let cloud = Object::new(
            ObjectMeta::named("cloud/default"),
            ConfigSpec {
                type_: ConfigType::Cloud,
                content: bosh_api::yaml::parse_value(&cloud, "cloud.yml")?,
            },
        );
        store.create(&cloud).await?;

        let shutdown = CancellationToken::new();
        let opts = Options {
            workers: 2,
            resync: o.resync,
            election: ElectionConfig { ttl: Duration::from_secs(3), ..Default::default() },
            health: o.health.clone(),
            limits: Default::default(),
            render: o.render.clone(),
            orphan_vms: o.orphan_vms,
            errand_timeout: Duration::from_secs(bosh_api::objects::DEFAULT_ERRAND_TIMEOUT_SECS),
            reflectors: Default::default(),
        };
        director.cpis.watch_configs(opts.reflectors.get::<ConfigSpec>(&store));
        let validator = daemon::deployment_validator(&store, &opts);
        let deploy = o.deploy;
        let task_controller = daemon::task_controller(&store, &opts);
        let mut tasks = Vec::new();
        if o.dns {
            // Bound before the bridge holds the gateway (IP_FREEBIND), as boshd does.
            let (udp, tcp) = crate::server::dns::bind(&[dns_address(&o.subnet)])?;
            let (store, stop) = (store.clone(), shutdown.clone());
            // The controllers' watches, as boshd shares them.
            let reflectors = opts.reflectors.clone();
            tasks.push(tokio::spawn(async move {
                let config = crate::server::dns::DnsConfig::default();
                if let Err(e) = daemon::run_dns(store, reflectors, config, udp, tcp, stop).await {
                    tracing::error!(error = %e, "the harness's BOSH DNS stopped");
                }
            }));
        }
        tasks.extend([
            tokio::spawn(validator.run(shutdown.clone())),
            tokio::spawn(task_controller.run(shutdown.clone())),
            tokio::spawn({
                let (d, s) = (director.clone(), shutdown.clone());
                async move {
                    if deploy {
                        daemon::run_world(d, &opts, s).await
                    } else {
                        daemon::run_build(d, &opts, s).await
                    }
                }
            }),
        ]);
        Ok(Harness {
            store,
            director,
            cpi,
            faults,
            api_url,
            blobstore_url,
            rest,
            subnet: o.subnet,
            shutdown,
            tasks,
        })
    }

    /// Stores the agent stemcell image as a blob and writes a Stemcell
    /// object for it (`local/1`), as an upload does, and waits for the
    /// stemcell controller to import it.
    pub async fn upload_stemcell(&self) -> Result<()> {
        self.upload_stemcell_version("1").await
    }

    /// [`Harness::upload_stemcell`] as version `version`
    /// (`bosh-local-agent/<version>`, OS `local`): the same image under
    /// another stemcell, which packages compile for separately.
    pub async fn upload_stemcell_version(&self, version: &str) -> Result<()> {
        let name = format!("bosh-local-agent/{version}");
        let image = &self.rest.image;
        let file = tokio::fs::File::open(image).await?;
        let stream = tokio_util::io::ReaderStream::new(file).map_err(std::io::Error::other);
        let b = self.director.blobs.put_stream(Box::pin(stream), None).await?;
        let spec = StemcellSpec {
            name: "bosh-local-agent".into(),
            version: version.into(),
            operating_system: "local".into(),
            api_version: 2,
            image: Some(b),
            ..Default::default()
        };
        self.store.create(&Object::new(ObjectMeta::named(&name), spec)).await?;
        let store = self.store.clone();
        let cpi = self.director.cpi.name().to_string();
        eventually(Duration::from_secs(120), "stemcell import", || {
            let (store, cpi, name) = (store.clone(), cpi.clone(), name.clone());
            async move {
                let s: Object<StemcellSpec> = store.get(None, &name).await.ok()?;
                s.status.cids.contains_key(&cpi).then_some(())
            }
        })
        .await
    }

    /// Builds a release directory into a tarball and uploads it through the API.
    pub async fn upload_release(&self, dir: &Path) -> Result<()> {
        let tarball = dir.with_extension("tgz");
        let opts = CreateOptions {
            tarball: Some(tarball.clone()),
            force: true,
            cache_dir: dir.with_extension("cache"),
            ..Default::default()
        };
        let d = dir.to_path_buf();
        tokio::task::spawn_blocking(move || create_release(&d, &opts)).await??;
        self.upload_release_tarball(&tarball).await?;
        Ok(())
    }

    /// Uploads a release tarball (source or compiled) through the API, as
    /// `upload-release` does; returns the API's answer.
    pub async fn upload_release_tarball(
        &self,
        tarball: &Path,
    ) -> Result<bosh_api::wire::ReleaseUpload> {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/uploads/releases", self.api_url))
            .bearer_auth(TOKEN)
            .body(tokio::fs::read(tarball).await?)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("release upload: {}", r.text().await?);
        }
        Ok(r.json().await?)
    }

    /// Exports release `release` (`name/version`) compiled for `stemcell`
    /// (`os/version`) through the API, as `export-release` does, into
    /// `dest`.
    pub async fn export_release(&self, release: &str, stemcell: &str, dest: &Path) -> Result<()> {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/exports/releases", self.api_url))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"release": release, "stemcell": stemcell}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("export-release: {}", r.text().await?);
        }
        tokio::fs::write(dest, r.bytes().await?).await?;
        Ok(())
    }

    /// Deletes release `release` (`name/version`) through the API, as
    /// `delete-release` does (only the Release object goes: its blobs and
    /// the compiled packages it was compiled to stay).
    pub async fn delete_release(&self, release: &str) -> Result<()> {
        let r = reqwest::Client::new()
            .delete(format!("{}/v1/releases/{release}", self.api_url))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("delete-release: {}", r.text().await?);
        }
        Ok(())
    }

    /// Creates deployment `name` with `manifest` and a new task carrying the
    /// change, as `apply` does; returns the task's number.
    pub async fn create_deployment(&self, name: &str, manifest: serde_json::Value) -> Result<u64> {
        let task = crate::libs::tasks::create_change_task(
            &self.store,
            "create deployment",
            name,
            "harness",
            bosh_api::objects::TaskChange::Update,
        )
        .await?;
        let spec = DeploymentSpec { manifest, task: Some(task.spec.id), ..Default::default() };
        self.store.create(&Object::new(ObjectMeta::named(name), spec)).await?;
        Ok(task.spec.id)
    }

    /// Gives deployment `name` a new manifest under a new task, as
    /// `apply` does (a write that loses a race with a controller's is
    /// made again on the fresh object).
    pub async fn update_deployment(&self, name: &str, manifest: serde_json::Value) -> Result<u64> {
        let task = crate::libs::tasks::create_change_task(
            &self.store,
            "update deployment",
            name,
            "harness",
            bosh_api::objects::TaskChange::Update,
        )
        .await?;
        loop {
            let mut d = self.store.get::<DeploymentSpec>(None, name).await?;
            d.spec.manifest = manifest.clone();
            d.spec.task = Some(task.spec.id);
            match self.store.update_spec(&d).await {
                Ok(_) => return Ok(task.spec.id),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits (up to `deadline`) for task `id` to end; an error unless it
    /// ended done (failed and cancelled tasks say why).
    pub async fn task_done(&self, id: u64, deadline: Duration) -> Result<()> {
        use bosh_api::objects::{TaskSpec, TaskState};
        let store = self.store.clone();
        let (state, result) = eventually(deadline, &format!("task {id} to end"), || {
            let store = store.clone();
            async move {
                let t: Object<TaskSpec> =
                    store.get(None, &crate::libs::tasks::task_name(id)).await.ok()?;
                t.status.state.is_finished().then_some((t.status.state, t.status.result))
            }
        })
        .await?;
        if state != TaskState::Done {
            bail!("task {id} ended {state:?}: {result}");
        }
        Ok(())
    }

    /// Waits (up to `deadline`) for deployment `name`'s `PackagesCompiled`
    /// to settle: True, or False for a reason other than the transient
    /// `Compiling` and `StemcellNotImported`.
    pub async fn packages_compiled(
        &self,
        name: &str,
        deadline: Duration,
    ) -> Result<bosh_api::meta::Condition> {
        use bosh_api::ConditionStatus;
        eventually(deadline, &format!("{name} to finish compiling"), || async {
            let d: Object<DeploymentSpec> = self.store.get(None, name).await.ok()?;
            let c = bosh_api::meta::find_condition(
                &d.status.conditions,
                ConditionType::PackagesCompiled,
            )?;
            let settled = c.status == ConditionStatus::True
                || ![Reason::Compiling, Reason::StemcellNotImported].contains(&c.reason);
            settled.then(|| c.clone())
        })
        .await
    }

    /// The local CPI's directory (records and audit log).
    pub fn cpi_root(&self) -> std::path::PathBuf {
        self.rest.env.dir().join("cpi")
    }

    /// Every violation of the fault matrix's invariants I1–I6 now (see
    /// [`super::invariants`]); run it when the world is quiet.
    pub async fn violations(&self) -> Result<Vec<super::invariants::Violation>> {
        super::invariants::check(&self.store, &self.cpi_root()).await
    }

    /// Whether every controller task still runs (none returned or
    /// panicked): a director that cannot reach etcd must wait, not fall
    /// over.
    pub fn running(&self) -> bool {
        self.tasks.iter().all(|t| !t.is_finished())
    }

    /// Stops the controllers and waits for them.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        for t in self.tasks {
            t.await?;
        }
        Ok(())
    }
}

/// A copy of the repository's example release (no build state), under `root`.
pub fn example_release(root: &Path) -> Result<std::path::PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/release");
    let dir = root.join("hello-release");
    bosh_test_utils::copy_dir(&src, &dir)?;
    for build_state in [".dev_builds", "dev_releases", ".blobstore"] {
        let _ = std::fs::remove_dir_all(dir.join(build_state));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::subnet_yaml;
    use bosh_api::manifest::Subnet;
    use bosh_api::manifest::ip::parse_range;
    use bosh_test_utils::SubnetLease;

    fn subnet(lease: &SubnetLease) -> Subnet {
        let yaml = subnet_yaml(lease, false).replace("\n    ", "\n");
        serde_json::from_value(bosh_api::yaml::parse_value(&yaml, "subnet.yml").unwrap()).unwrap()
    }

    /// Issue 12: a /16 holds 1,000 instances besides its reserved and static addresses; a /24 does not.
    #[test]
    fn a_slash16_network_has_room_for_1000_instances() {
        let lease = SubnetLease::acquire_slash16();
        let wide = subnet(&lease);
        let range = parse_range(wide.range.as_deref().unwrap()).unwrap();
        assert!(range.len() - 2 - 1 - 8 - 11 >= 1000, "{}", range.len());
        assert_eq!(wide.gateway, Some(format!("127.{}.0.1", lease.n())));
        assert_eq!(wide.r#static, vec![format!("127.{0}.0.10 - 127.{0}.0.20", lease.n())]);
        let lease = SubnetLease::acquire();
        let narrow = subnet(&lease);
        assert_eq!(narrow.range, Some(format!("127.77.{}.0/24", lease.n())));
        assert!(parse_range(narrow.range.as_deref().unwrap()).unwrap().len() < 1000);
    }
}
