//! boshd as a process, on container VMs (issue 14), driven the way a user
//! drives it: uploads, apply, instance actions, `exec` and delete through
//! the HTTP API. A persistent disk and what was written on it survive a
//! stop/start, a recreate, a resurrection and a SIGKILL of boshd; the
//! container VMs outlive boshd (they are not its children) and the boshd
//! started after it takes them over; deleting the deployment leaves no
//! container, mount, bridge, veth or namespace behind.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bosh_api::Object;
use bosh_api::objects::{
    ConfigSpec, ConfigType, DeploymentSpec, DiskPhase, DiskSpec, InstanceHealth, InstanceSpec,
    TaskSpec, TaskState,
};
use bosh_api::release::{CreateOptions, create_release};
use bosh_api::store::Store;
use bosh_api::{ObjectMeta, local_stemcell::rootfs};
use bosh_controllers::libs::tasks::task_name;
use bosh_controllers::testing::WebManifest;
use bosh_controllers::world::cpi::Cpi as _;
use bosh_controllers::world::cpi::local::LocalCpi;
use bosh_controllers::world::cpi::local::network::{NetEnv, leftovers};
use bosh_test_utils::{SubnetLease, eventually};
use serde_json::{Value, json};

use super::boshd_deploy::{Boshd, VmReaper, api, cloud_config, kill, spawn_boshd_with};
use super::containers::plain_release;
use super::setup;

/// Deploys, compiles and replaces container VMs on a shared 2-core host.
const DEADLINE: Duration = Duration::from_secs(300);

/// One boshd's world: its data dir, the etcd it shares with its successor,
/// its fixed ports and its API.
struct World {
    etcd: Vec<OsString>,
    store: Store,
    data: PathBuf,
    api_port: u16,
    flags: Vec<String>,
    url: String,
    token: String,
}

impl World {
    /// The local CPI's data dir inside boshd's.
    fn cpi(&self) -> PathBuf {
        self.data.join("cpi")
    }

    /// Starts a boshd on this world's data dir, etcd and ports.
    async fn spawn(&mut self) -> Boshd {
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        let child = spawn_boshd_with(&self.data, &self.etcd, self.api_port, &flags);
        (self.url, self.token) = api(&self.data).await;
        Boshd(child)
    }

    fn http(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.bearer_auth(&self.token).timeout(Duration::from_secs(60))
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Value {
        let r = self.http(req).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "{what}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let client = reqwest::Client::new();
        self.send(client.post(format!("{}{path}", self.url)).json(&body), path).await
    }

    async fn upload(&self, what: &str, file: &Path) {
        let f = tokio::fs::File::open(file).await.unwrap();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(f));
        let url = format!("{}/v1/uploads/{what}", self.url);
        self.send(reqwest::Client::new().post(url).body(body), what).await;
    }

    /// Waits for task `task` (of the answer `reply`) to end.
    async fn task_end(&self, reply: &Value) -> (TaskState, String) {
        let id = reply["task"].as_u64().unwrap_or_else(|| panic!("no task in {reply}"));
        let store = self.store.clone();
        eventually(DEADLINE, &format!("task {id} to end"), || {
            let store = store.clone();
            async move {
                let t: Object<TaskSpec> = store.get(None, &task_name(id)).await.ok()?;
                t.status.state.is_finished().then_some((t.status.state, t.status.result))
            }
        })
        .await
        .unwrap()
    }

    /// Runs an instance action on the whole group and waits for its task.
    async fn action(&self, action: &str) {
        let reply = self
            .post(
                "/v1/deployments/plain/instances/actions",
                json!({"action": action, "target": "web"}),
            )
            .await;
        let (state, result) = self.task_end(&reply).await;
        assert_eq!(state, TaskState::Done, "{action}: {result}");
    }

    /// The deployment's one instance.
    async fn instance(&self) -> Object<InstanceSpec> {
        let mut items = self.store.list::<InstanceSpec>("plain/").await.unwrap().items;
        assert_eq!(items.len(), 1, "one instance");
        items.remove(0)
    }

    /// The instance once its VM is `cid` (or any but `not`) and healthy.
    async fn running(&self, accept: impl Fn(&str) -> bool) -> Object<InstanceSpec> {
        let store = self.store.clone();
        let accept = &accept;
        eventually(DEADLINE, "the instance running on the expected VM", || {
            let store = store.clone();
            async move {
                let i = store.list::<InstanceSpec>("plain/").await.ok()?.items.pop()?;
                let ok = i.status.vm_cid.as_deref().is_some_and(accept)
                    && i.status.health == Some(InstanceHealth::Running);
                ok.then_some(i)
            }
        })
        .await
        .unwrap()
    }

    /// Runs `script` in `i`'s VM through `POST /v1/vms/<agent>/exec`.
    async fn sh(&self, i: &Object<InstanceSpec>, script: &str) -> (i32, String) {
        let agent = i.status.agent_id.clone().unwrap();
        let body = json!({"command": ["sh", "-c", script], "timeout_secs": 20});
        let r = self.post(&format!("/v1/vms/{agent}/exec"), body).await;
        let out =
            format!("{}{}", r["stdout"].as_str().unwrap_or(""), r["stderr"].as_str().unwrap_or(""));
        (r["exit_code"].as_i64().unwrap() as i32, out)
    }

    /// The deployment's one persistent disk's cid.
    async fn disk_cid(&self) -> String {
        let disks = self.store.list::<DiskSpec>("plain/").await.unwrap().items;
        assert_eq!(disks.len(), 1, "one persistent disk");
        disks[0].status.cid.clone().expect("the disk's cid")
    }

    /// Checks the disk from inside the VM (the pre-start's `first-boot` and
    /// the test's `marker`, at `/var/vcap/store`) and from the host (the
    /// disk's directory).
    async fn check_disk(&self, i: &Object<InstanceSpec>, disk: &str, marker: &str, when: &str) {
        let (code, out) =
            self.sh(i, "cat /var/vcap/store/first-boot; echo; cat /var/vcap/store/marker").await;
        assert_eq!(code, 0, "{when}: {out}");
        assert_eq!(out, format!("{}\n{marker}", i.spec.id), "{when}: the disk inside the VM");
        let host = std::fs::read_to_string(self.cpi().join("disks").join(disk).join("marker"));
        assert_eq!(host.ok().as_deref(), Some(marker), "{when}: the disk on the host");
    }
}

/// Container ids in the CPI's runc state dir.
fn containers(cpi: &Path) -> BTreeSet<String> {
    let out =
        Command::new("runc").arg("--root").arg(cpi.join("runc")).args(["list", "-q"]).output();
    let out = out.expect("runc");
    assert!(out.status.success(), "runc list: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// The plain release's tarball and the rootfs stemcell's, built under `dir`.
fn tarballs(dir: &Path) -> (PathBuf, PathBuf) {
    let release = dir.join("plain.tgz");
    let opts = CreateOptions {
        tarball: Some(release.clone()),
        force: true,
        cache_dir: dir.join("release-cache"),
        ..Default::default()
    };
    create_release(&plain_release(dir), &opts).unwrap();
    let stemcell = dir.join("stemcell.tgz");
    let agent = bosh_test_utils::agent::agent_binary().unwrap();
    let cache = rootfs::default_cache().expect("HOME is set");
    rootfs::write_stemcell(&agent, &cache, &stemcell, &Default::default(), |_| {}).unwrap();
    (release, stemcell)
}

/// The plain release's web job, one instance with a 16 MB disk, on the
/// rootfs stemcell.
fn manifest() -> Value {
    let mut m =
        WebManifest { persistent_disk_mb: 16, ..WebManifest::job("plain", "plain", "web") }.value();
    m["stemcells"][0]["os"] = rootfs::OPERATING_SYSTEM.into();
    m
}

/// One instance with a disk on a container VM of a real boshd: the disk's
/// contents survive stop/start, recreate, resurrection and a SIGKILLed
/// boshd (whose VM keeps running and is taken over by the next boshd);
/// deleting the deployment leaves nothing on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boshd_containers_keep_the_disk_and_outlive_boshd() {
    let (env, store) = setup().await;
    let dir = env.dir().to_path_buf();
    let data = dir.join("boshd");
    // Dropped in reverse: boshd first, then the VMs and bridges, then the
    // subnet they used.
    let subnet = SubnetLease::acquire_bridged();
    let _reaper = VmReaper(data.join("cpi"));
    let cloud = Object::new(
        ObjectMeta::named("cloud/default"),
        ConfigSpec { type_: ConfigType::Cloud, content: cloud_config(&subnet) },
    );
    store.create(&cloud).await.unwrap();
    let (nats, vm) = (bosh_test_utils::free_port(), bosh_test_utils::free_port());
    let mut w = World {
        etcd: env.boshd_args(),
        store: store.clone(),
        data: data.clone(),
        api_port: bosh_test_utils::free_port(),
        flags: vec![
            "--nats-listen".into(),
            format!("0.0.0.0:{nats}"),
            "--vm-listen".into(),
            format!("0.0.0.0:{vm}"),
            "--heartbeat-interval-secs".into(),
            "1".into(),
            "--agent-timeout-secs".into(),
            "10".into(),
            "--resurrection-delay-secs".into(),
            "2".into(),
        ],
        url: String::new(),
        token: String::new(),
    };
    let mut boshd = w.spawn().await;

    // Uploads and the deploy, as `boshctl upload-*` and `deploy` do.
    let d = dir.clone();
    let (release, stemcell) = tokio::task::spawn_blocking(move || tarballs(&d)).await.unwrap();
    w.upload("stemcells", &stemcell).await;
    w.upload("releases", &release).await;
    // The import into the CPI runs after the upload answers (`boshctl
    // stemcells` shows `importing`); a deploy before it ends is refused.
    let (url, token) = (w.url.clone(), w.token.clone());
    eventually(DEADLINE, "the stemcell to be imported", || {
        let (url, token) = (url.clone(), token.clone());
        async move {
            let list: Value = reqwest::Client::new()
                .get(format!("{url}/v1/stemcells"))
                .bearer_auth(&token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let cids = &list["items"][0]["status"]["cids"];
            cids.as_object().is_some_and(|c| !c.is_empty()).then_some(())
        }
    })
    .await
    .unwrap();
    let apply = json!({"manifest": manifest().to_string()});
    let reply = w.post("/v1/deployments/plain/apply", apply).await;
    let (state, result) = w.task_end(&reply).await;
    assert_eq!(state, TaskState::Done, "deploy: {result}");

    let first = w.instance().await;
    let disk = w.disk_cid().await;
    let vm0 = first.status.vm_cid.clone().unwrap();
    assert_eq!(containers(&w.cpi()), BTreeSet::from([vm0.clone()]), "the instance's container");
    let marker = format!("written-{}-{}", std::process::id(), disk);
    let (code, out) = w.sh(&first, &format!("printf %s {marker} > /var/vcap/store/marker")).await;
    assert_eq!(code, 0, "{out}");
    w.check_disk(&first, &disk, &marker, "after the deploy").await;

    // (a) stop + start: the same VM, the disk kept.
    w.action("stop").await;
    let stopped = w.instance().await;
    assert_eq!(stopped.status.vm_cid.as_deref(), Some(vm0.as_str()), "a stop keeps the VM");
    w.action("start").await;
    let started = w.running(|c| c == vm0).await;
    w.check_disk(&started, &disk, &marker, "after stop and start").await;

    // (b) recreate: a new VM, the same disk.
    w.action("recreate").await;
    let recreated = w.running(|c| c != vm0).await;
    let vm1 = recreated.status.vm_cid.clone().unwrap();
    assert_eq!(containers(&w.cpi()), BTreeSet::from([vm1.clone()]), "the old container is gone");
    assert_eq!(w.disk_cid().await, disk, "the disk is the same");
    w.check_disk(&recreated, &disk, &marker, "after a recreate").await;

    // (c) resurrection: the VM's init killed, as if the machine died.
    let cpi = LocalCpi::open(&w.cpi()).unwrap();
    cpi.vm_process(&vm1).await.expect("the VM's init").kill_tree();
    let resurrected = w.running(|c| c != vm1).await;
    let vm2 = resurrected.status.vm_cid.clone().unwrap();
    assert_eq!(w.disk_cid().await, disk, "the disk is the same");
    w.check_disk(&resurrected, &disk, &marker, "after a resurrection").await;

    // (d) boshd SIGKILLed: the VM runs on without it...
    kill(&mut boshd.0, libc::SIGKILL);
    assert!(containers(&w.cpi()).contains(&vm2), "the container outlived boshd");
    assert!(cpi.has_vm(&vm2).await.unwrap(), "the VM runs without boshd");
    let init = cpi.vm_process(&vm2).await.expect("the VM's init");
    // ... and the next boshd takes it over: the same VM answers its agent
    // live, the disk intact.
    let mut boshd = w.spawn().await;
    let (url, token) = (w.url.clone(), w.token.clone());
    eventually(DEADLINE, "the VM's agent to answer the new boshd", || {
        let (url, token, vm2) = (url.clone(), token.clone(), vm2.clone());
        async move {
            let vms: Vec<Value> = reqwest::Client::new()
                .get(format!("{url}/v1/vms?deployment=plain"))
                .bearer_auth(&token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            vms.iter().any(|v| v["vm_cid"] == vm2.as_str() && v["state"] == "running").then_some(())
        }
    })
    .await
    .unwrap();
    let taken_over = w.running(|c| c == vm2).await;
    assert_eq!(cpi.vm_process(&vm2).await, Some(init), "the same container, not a new one");
    assert_eq!(w.disk_cid().await, disk, "the disk is the same");
    w.check_disk(&taken_over, &disk, &marker, "after a boshd restart").await;
    assert_eq!(containers(&w.cpi()), BTreeSet::from([vm2.clone()]), "no second container");

    // Deleting the deployment leaves nothing behind.
    let client = reqwest::Client::new();
    let req = client.delete(format!("{}/v1/deployments/plain", w.url));
    let reply = w.send(req, "delete").await;
    let (state, result) = w.task_end(&reply).await;
    assert_eq!(state, TaskState::Done, "delete: {result}");
    let store = w.store.clone();
    eventually(DEADLINE, "the deployment to be gone", || {
        let store = store.clone();
        async move { store.try_get::<DeploymentSpec>(None, "plain").await.ok()?.is_none().then_some(()) }
    })
    .await
    .unwrap();
    assert_eq!(containers(&w.cpi()), BTreeSet::new(), "no container left");
    assert_eq!(bosh_test_utils::mounts_under(&data), Vec::<String>::new(), "no mount left");
    // The subnet's bridge is the environment's, as an IaaS network outlives
    // its VMs (`down` and the reaper remove it); nothing of the VM is left.
    let net = NetEnv::for_root(&std::path::absolute(w.cpi()).unwrap());
    let bridge = net.bridge_name(subnet.ip(0), 24);
    assert_eq!(leftovers(&net).unwrap(), vec![bridge], "no netns or veth left");
    // The disk is orphaned, as BOSH orphans a deleted deployment's disks:
    // kept in the IaaS, attached to nothing, its contents intact.
    let inv = LocalCpi::inventory(&w.cpi()).unwrap();
    assert!(inv.vms.is_empty(), "no VM recorded: {:?}", inv.vms.keys());
    assert_eq!(inv.disks.keys().collect::<Vec<_>>(), vec![&disk], "the disk is kept");
    assert_eq!(inv.disks[&disk].attached_to, None, "attached to nothing");
    let orphan = w.store.list::<DiskSpec>("plain/").await.unwrap().items;
    assert_eq!(orphan.len(), 1);
    assert_eq!(orphan[0].status.phase, DiskPhase::Orphaned);
    let kept = std::fs::read_to_string(w.cpi().join("disks").join(&disk).join("marker"));
    assert_eq!(kept.ok().as_deref(), Some(marker.as_str()), "the orphaned disk keeps its contents");
    let stemcells = inv.stemcells.len();
    assert_eq!(stemcells, 1, "the stemcell was imported once: {:?}", inv.stemcells.keys());
    kill(&mut boshd.0, libc::SIGTERM);
}
