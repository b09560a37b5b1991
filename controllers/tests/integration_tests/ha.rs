//! Two boshd replicas against one etcd, sharing what a director's world is
//! made of — a nats-server run apart from either, the local CPI's
//! directory, the blobstore — each controller led by exactly one of them.
//! The leader of the instance controller is SIGKILLed mid-resurrection:
//! the other finishes it with no duplicate VM. Later the leader is
//! SIGSTOPped past its lease mid-resurrection and resumed once the other
//! has finished: it writes nothing to etcd and changes nothing in the CPI.
//!
//! Still on process VMs (issue 14). On container VMs the pause often lands
//! inside a `create_vm` the CPI admitted before the lease was lost, and a
//! container takes seconds to make, so once resumed the deposed replica
//! finishes it and records a VM — a CPI mutation after resuming, which
//! the last assertion forbids (the fence refuses calls at admission only).
//! Pausing once the new VM exists instead, one run in four still saw etcd
//! writes after resuming. `Shared::vm_ports` is what the replicas need on
//! container VMs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bosh_api::meta::find_condition;
use bosh_api::objects::{ConditionType, InstanceHealth, InstancePhase};
use bosh_api::objects::{ConfigSpec, ConfigType, DeploymentSpec, DiskSpec, InstanceSpec};
use bosh_api::store::Store;
use bosh_api::{ConditionStatus, Object, ObjectMeta};
use bosh_controllers::world::cpi::local::LocalCpi;
use bosh_test_utils::{eventually, free_port};

use super::boshd_deploy::{
    Boshd, VmReaper, api, cloud_config, hello_manifest, inventory, kill, spawn_boshd_env,
    upload_stemcell_and_release,
};
use super::setup;

pub(super) const DEPLOY_DEADLINE: Duration = Duration::from_secs(240);
/// agent timeout 4 s + resurrection delay 1 s + a 3 s lease + a VM's boot,
/// apply and start, with room for a loaded machine.
pub(super) const RESURRECT_DEADLINE: Duration = Duration::from_secs(60);

/// Every election boshd runs.
pub(super) const ELECTIONS: [&str; 8] = [
    "deployment-validator",
    "config-validator",
    "stemcell",
    "compilation",
    "deployment",
    "instance",
    "health-monitor",
    "orphan-vms",
];

/// The nats-server both replicas share, stopped however the test ends.
pub(super) struct NatsServer(Child);

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prints the end of each replica's log when the test fails: what two
/// directors did is otherwise lost with the test's directory.
pub(super) struct LogsOnFailure(pub(super) PathBuf);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for r in 0..2 {
            let path = self.0.join(format!("r{r}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- {} (last 80 lines) ---", path.display());
            for l in &lines[lines.len().saturating_sub(80)..] {
                eprintln!("{l}");
            }
        }
    }
}

/// Addresses and paths the replicas share.
pub(super) struct Shared {
    pub(super) dir: PathBuf,
    /// boshd's etcd flags (endpoint, certificate, secrets key).
    pub(super) etcd: Vec<std::ffi::OsString>,
    pub(super) nats: String,
    pub(super) monitor: String,
    pub(super) api_ports: [u16; 2],
    /// Ports of each replica's agents' side (`--vm-listen` on every
    /// address), for container VMs, which reach the blobstore and `nats`
    /// (then on `0.0.0.0`) through their gateway; `None` for process VMs,
    /// which use the blobstore under the API's address.
    pub(super) vm_ports: Option<[u16; 2]>,
    /// Environment variables of each replica (`RUST_LOG`).
    pub(super) vars: Vec<(String, String)>,
}

impl Shared {
    pub(super) fn data(&self, replica: usize) -> PathBuf {
        self.dir.join(format!("r{replica}"))
    }

    /// Starts replica `r{replica}`, naming the other as its blobstore mirror.
    pub(super) fn spawn(&self, replica: usize) -> Boshd {
        let dir = |p: &str| self.dir.join(p).to_string_lossy().into_owned();
        let other = 1 - replica;
        let blob_port = |r: usize| self.vm_ports.map_or(self.api_ports[r], |p| p[r]);
        let (name, mirror) =
            (format!("r{replica}"), format!("http://127.0.0.1:{}", blob_port(other)));
        let (conf, pid, cpi, blobs) =
            (dir("nats.conf"), dir("nats.pid"), dir("cpi"), dir("blobstore"));
        #[rustfmt::skip]
        let mut args = vec![
            "--replica", &name,
            "--nats-external", "--nats-listen", &self.nats, "--nats-monitor", &self.monitor,
            "--nats-config", &conf, "--nats-pid-file", &pid,
            "--cpi-dir", &cpi, "--blobstore-dir", &blobs, "--blobstore-mirror", &mirror,
            "--heartbeat-interval-secs", "1", "--agent-timeout-secs", "4",
            "--resurrection-delay-secs", "1",
        ];
        let vm_listen = format!("0.0.0.0:{}", blob_port(replica));
        if self.vm_ports.is_some() {
            args.extend(["--vm-listen", &vm_listen]);
        }
        let (data, port) = (self.data(replica), self.api_ports[replica]);
        Boshd(spawn_boshd_env(&data, &self.etcd, port, &args, &self.vars))
    }

    /// Starts nats-server on the configuration the replicas render.
    pub(super) async fn start_nats(&self) -> NatsServer {
        let conf = self.dir.join("nats.conf");
        eventually(Duration::from_secs(30), "the rendered nats-server configuration", || {
            let conf = conf.clone();
            async move { conf.is_file().then_some(()) }
        })
        .await
        .unwrap();
        let log = std::fs::File::create(self.dir.join("nats.log")).unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .arg("-P")
            .arg(self.dir.join("nats.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("nats-server (run hack/install-deps.sh)");
        NatsServer(child)
    }
}

/// Who leads `election` now.
pub(super) async fn holder(store: &Store, election: &str) -> Option<String> {
    store.leader(election).await.ok().flatten().map(|l| l.holder)
}

/// Waits until `replica` leads every controller.
pub(super) async fn leads_all(store: &Store, replica: &str) {
    eventually(RESURRECT_DEADLINE, &format!("{replica} to lead every controller"), || async {
        for e in ELECTIONS {
            if holder(store, e).await? != replica {
                return None;
            }
        }
        Some(())
    })
    .await
    .unwrap();
}

/// The deployment is Ready at its generation and every instance's health
/// is `running`.
async fn converged(store: &Store) -> Option<Vec<Object<InstanceSpec>>> {
    let d: Object<DeploymentSpec> = store.get(None, "hello").await.ok()?;
    let c = find_condition(&d.status.conditions, ConditionType::Ready)?;
    if c.status != ConditionStatus::True || c.observed_revision != d.metadata.generation {
        return None;
    }
    let items = store.list::<InstanceSpec>("hello/").await.ok()?.items;
    let ready = |i: &Object<InstanceSpec>| {
        find_condition(&i.status.conditions, ConditionType::Ready).is_some_and(|c| {
            c.status == ConditionStatus::True && c.observed_revision == i.metadata.generation
        })
    };
    (items.len() == 2
        && items.iter().all(|i| ready(i) && i.status.health == Some(InstanceHealth::Running)))
    .then_some(items)
}

/// Kills instance `name`'s VM (its process tree), returns the VM's cid.
async fn kill_vm(store: &Store, cpi: &LocalCpi, name: &str) -> String {
    let i: Object<InstanceSpec> = store.get(Some("hello"), name).await.unwrap();
    let cid = i.status.vm_cid.clone().unwrap();
    cpi.vm_process(&cid).await.expect("the VM's process").kill_tree();
    cid
}

/// Waits until instance `name` is being resurrected: its dead VM is gone
/// from its status and the new one is not running yet.
async fn mid_resurrection(store: &Store, name: &str, dead: &str) -> Option<InstancePhase> {
    eventually(RESURRECT_DEADLINE, "the resurrection to be under way", || async move {
        let i: Object<InstanceSpec> = store.get(Some("hello"), name).await.ok()?;
        (i.status.vm_cid.as_deref() != Some(dead)).then_some(i.status.phase)
    })
    .await
    .unwrap()
}

/// Waits for the resurrected instance and checks that the CPI holds
/// exactly one VM per instance and one disk per Disk object.
async fn converged_without_duplicates(store: &Store, cpi_dir: &Path, dead: &str) {
    let instances = eventually(RESURRECT_DEADLINE, "the resurrected deployment", || async move {
        converged(store).await
    })
    .await
    .unwrap();
    let vm_cids: BTreeSet<String> =
        instances.iter().map(|i| i.status.vm_cid.clone().unwrap()).collect();
    let disks = store.list::<DiskSpec>("hello/").await.unwrap().items;
    let disk_cids: BTreeSet<String> = disks.iter().map(|d| d.status.cid.clone().unwrap()).collect();
    let (vms, cpi_disks) = inventory(cpi_dir);
    assert_eq!(vms, vm_cids, "exactly one VM per instance, no duplicate");
    assert!(!vms.contains(dead), "the dead VM was deleted");
    assert_eq!(cpi_disks, disk_cids, "the same disks, none added");
}

/// Two replicas: a SIGKILLed leader is replaced mid-resurrection with no
/// duplicate VM and the disk's data intact; a leader SIGSTOPped past its
/// lease and resumed performs zero etcd writes and zero CPI mutations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_directors_a_killed_leader_is_replaced_and_a_paused_one_changes_nothing() {
    let (env, store) = setup().await;
    let dir = env.dir().to_path_buf();
    let _reaper = VmReaper(dir.join("cpi"));
    let _logs = LogsOnFailure(dir.clone());
    let subnet = bosh_test_utils::SubnetLease::acquire();
    let cloud = Object::new(
        ObjectMeta::named("cloud/default"),
        ConfigSpec { type_: ConfigType::Cloud, content: cloud_config(&subnet) },
    );
    store.create(&cloud).await.unwrap();
    let shared = Shared {
        dir: dir.clone(),
        etcd: env.boshd_args(),
        nats: format!("127.0.0.1:{}", free_port()),
        monitor: format!("127.0.0.1:{}", free_port()),
        api_ports: [free_port(), free_port()],
        vm_ports: None,
        vars: Vec::new(),
    };
    let mut replicas = [Some(shared.spawn(0)), None];
    let _nats = shared.start_nats().await;
    replicas[1] = Some(shared.spawn(1));
    let (url, token) = api(&shared.data(0)).await;
    let (_, token1) = api(&shared.data(1)).await;
    assert_eq!(token, token1, "both replicas accept the one token kept in etcd");
    upload_stemcell_and_release(&dir, &url, &token).await;

    let manifest = hello_manifest(2, 2, "from two directors");
    let deployment =
        Object::new(ObjectMeta::named("hello"), DeploymentSpec { manifest, ..Default::default() });
    store.create(&deployment).await.unwrap();
    let instances =
        eventually(DEPLOY_DEADLINE, "hello to be deployed", || converged(&store)).await.unwrap();
    for e in ELECTIONS {
        let h = holder(&store, e).await;
        assert!(matches!(h.as_deref(), Some("r0" | "r1")), "{e} is led by one replica: {h:?}");
    }

    // 1. SIGKILL the instance controller's leader mid-resurrection.
    let cpi = LocalCpi::open(&dir.join("cpi")).unwrap();
    let victim = instances[0].metadata.name.clone();
    let disk_cid = instances[0].status.disk_cid.clone().unwrap();
    std::fs::write(cpi.disk_dir(&disk_cid).join("marker"), "kept").unwrap();
    let leader = holder(&store, "instance").await.unwrap();
    let (killed, survivor) = if leader == "r0" { (0, 1) } else { (1, 0) };
    let dead = kill_vm(&store, &cpi, &victim).await;
    let phase = mid_resurrection(&store, &victim, &dead).await;
    kill(&mut replicas[killed].take().unwrap().0, libc::SIGKILL);
    assert_ne!(phase, Some(InstancePhase::Running), "killed before the resurrection finished");
    converged_without_duplicates(&store, &dir.join("cpi"), &dead).await;
    assert_eq!(holder(&store, "instance").await.as_deref(), Some(&*format!("r{survivor}")));
    assert_eq!(
        std::fs::read_to_string(cpi.disk_dir(&disk_cid).join("marker")).unwrap(),
        "kept",
        "the persistent disk's data survived"
    );
    let i: Object<InstanceSpec> = store.get(Some("hello"), &victim).await.unwrap();
    assert_eq!(i.status.disk_cid.as_deref(), Some(&*disk_cid), "the same disk");

    // 2. The killed replica comes back as a follower; the survivor, which
    //    now leads everything, is SIGSTOPped past its lease mid-resurrection.
    leads_all(&store, &format!("r{survivor}")).await;
    replicas[killed] = Some(shared.spawn(killed));
    api(&shared.data(killed)).await;
    let victim = instances[1].metadata.name.clone();
    let dead = kill_vm(&store, &cpi, &victim).await;
    let phase = mid_resurrection(&store, &victim, &dead).await;
    let paused = replicas[survivor].as_mut().unwrap();
    // SAFETY: signalling a child we spawned and have not reaped.
    unsafe { libc::kill(paused.0.id() as i32, libc::SIGSTOP) };
    assert_ne!(phase, Some(InstancePhase::Running), "paused before the resurrection finished");
    let active = format!("r{killed}");
    leads_all(&store, &active).await;
    converged_without_duplicates(&store, &dir.join("cpi"), &dead).await;

    // Resume the deposed leader with the world settled: from now on any
    // etcd revision or CPI inventory change is its doing.
    let revision = store.revision().await.unwrap();
    let cpi_before = LocalCpi::inventory(&dir.join("cpi")).unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(paused.0.id() as i32, libc::SIGCONT) };
    let log = shared.data(survivor).with_extension("log");
    eventually(Duration::from_secs(30), "the resumed replica to notice it lost", || {
        let log = log.clone();
        async move {
            let text = std::fs::read_to_string(&log).ok()?;
            text.lines()
                .any(|l| l.contains("leadership lost") && l.contains("instance"))
                .then_some(())
        }
    })
    .await
    .unwrap();
    // An observation window, not a readiness wait: what it resumed in the
    // middle of (a reconcile waiting on an agent, lease keepers, workers)
    // runs on; none of it may reach etcd or the CPI.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(store.revision().await.unwrap(), revision, "zero etcd writes after resuming");
    assert_eq!(
        LocalCpi::inventory(&dir.join("cpi")).unwrap(),
        cpi_before,
        "zero CPI mutations after resuming"
    );
    for e in ELECTIONS {
        assert_eq!(holder(&store, e).await, Some(active.clone()), "{e} stays with {active}");
    }
}
