//! boshd as a process, deploying on container VMs: a Deployment written
//! with `etcdctl put` is deployed; boshd killed with SIGKILL mid-rollout and started again
//! converges with no duplicate VM and no leaked disk; the watch API
//! streams the instances' transitions.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bosh_api::local_stemcell::rootfs;
use bosh_api::meta::find_condition;
use bosh_api::objects::ConditionType;
use bosh_api::objects::{
    ConfigSpec, ConfigType, DeploymentSpec, DiskPhase, DiskSpec, InstanceSpec,
};
use bosh_api::release::{CreateOptions, create_release};
use bosh_api::{ConditionStatus, Object, ObjectMeta};
use bosh_controllers::testing::WebManifest;
use bosh_controllers::world::cpi::local::LocalCpi;
use bosh_test_utils::{SubnetLease, eventually};
use futures::StreamExt;

use super::compile::example_release;
use super::setup;

const DEPLOY_DEADLINE: Duration = Duration::from_secs(240);

/// A cloud config with one AZ and one manual network on `subnet` (which
/// the test keeps leased while its VMs run).
pub(super) fn cloud_config(subnet: &SubnetLease) -> serde_json::Value {
    let (range, ip) = (subnet.range(), |host| subnet.ip(host));
    let text = format!(
        "
azs: [{{name: z1}}]
vm_types: [{{name: small}}]
networks:
- name: default
  type: manual
  subnets: [{{range: {range}, gateway: {}, azs: [z1], reserved: [{} - {}]}}]
compilation: {{workers: 2, az: z1, vm_type: small, network: default}}
",
        ip(1),
        ip(2),
        ip(9)
    );
    bosh_api::yaml::parse_value(&text, "cloud.yml").unwrap()
}

/// The `hello` deployment: `instances` of the example job with a
/// persistent disk, rolled out `max_in_flight` at a time after one canary,
/// on the agent-only stemcell (os `local`, process VMs).
pub(super) fn hello_manifest(
    instances: u32,
    max_in_flight: u32,
    greeting: &str,
) -> serde_json::Value {
    WebManifest {
        max_in_flight,
        persistent_disk_mb: 16,
        // Its own IP: the HA test runs it on process VMs, which share one network.
        properties: serde_json::json!({"port": 8080, "listen_on_instance_ip": true, "greeting": greeting}),
        ..WebManifest::hello("hello", instances)
    }
    .value()
}

/// Starts boshd on fixed ports: VMs keep the bus and blobstore addresses
/// they were created with, as real VMs keep a director's address. Both
/// listen on every address, so container VMs reach them through their
/// bridge's gateway.
fn spawn_boshd(dir: &Path, etcd: &[OsString], (api, nats, vm): (u16, u16, u16)) -> Child {
    let (nats, vm) = (format!("0.0.0.0:{nats}"), format!("0.0.0.0:{vm}"));
    spawn_boshd_with(&dir.join("boshd"), etcd, api, &["--nats-listen", &nats, "--vm-listen", &vm])
}

/// Starts boshd with data dir `data` (its log is `data.log`), the etcd
/// flags `etcd` ([`bosh_test_utils::TestEnv::boshd_args`]) and `extra` flags.
pub(super) fn spawn_boshd_with(
    data: &Path,
    etcd: &[OsString],
    api_port: u16,
    extra: &[&str],
) -> Child {
    spawn_boshd_env(data, etcd, api_port, extra, &[])
}

/// [`spawn_boshd_with`], with environment variables `vars` set (such as
/// `RUST_LOG`).
pub(super) fn spawn_boshd_env(
    data: &Path,
    etcd: &[OsString],
    api_port: u16,
    extra: &[&str],
    vars: &[(String, String)],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_extension("log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_boshd"))
        .args(etcd)
        .args(["--lease-ttl-secs", "3", "--listen"])
        .arg(format!("127.0.0.1:{api_port}"))
        .args(extra)
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// The API's URL and token, once the boshd of data dir `data` has written
/// them and answers.
pub(super) async fn api(data: &Path) -> (String, String) {
    let data = data.to_path_buf();
    eventually(Duration::from_secs(30), "boshd's API", || {
        let data = data.clone();
        async move {
            let d: serde_json::Value =
                serde_json::from_slice(&std::fs::read(data.join("director.json")).ok()?).ok()?;
            let token = std::fs::read_to_string(d["token_file"].as_str()?).ok()?;
            let url = d["url"].as_str()?.to_string();
            let ok = reqwest::Client::new()
                .get(format!("{url}/v1/info"))
                .bearer_auth(token.trim())
                .send()
                .await
                .ok()?
                .status()
                .is_success();
            ok.then(|| (url, token.trim().to_string()))
        }
    })
    .await
    .unwrap()
}

/// Uploads `file` as a `what` (streamed: a rootfs stemcell is hundreds of MB).
async fn upload(url: &str, token: &str, what: &str, file: &Path) {
    let f = tokio::fs::File::open(file).await.unwrap();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(f));
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/uploads/{what}"))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "upload {what}: {}", r.text().await.unwrap());
}

/// Uploads the agent-only stemcell (process VMs, os `local`) carrying the
/// real agent, and the example release: the HA test and the fault
/// scenarios of `faults::a` still deploy on process VMs.
pub(super) async fn upload_stemcell_and_release(dir: &Path, url: &str, token: &str) {
    let image = dir.join("image");
    bosh_api::local_stemcell::build_image(&bosh_test_utils::agent::agent_binary().unwrap(), &image)
        .unwrap();
    let manifest = bosh_api::release::stemcell::StemcellManifest {
        name: "bosh-local".into(),
        version: "1".into(),
        operating_system: "local".into(),
        bosh_protocol: "1".into(),
        api_version: Some(3),
        stemcell_formats: vec![bosh_api::local_stemcell::FORMAT.into()],
        ..Default::default()
    };
    let sc = dir.join("stemcell.tgz");
    bosh_api::release::stemcell::write_stemcell(&sc, &manifest, &image, None).unwrap();
    upload(url, token, "stemcells", &sc).await;
    upload_release(dir, url, token).await;
}

/// Uploads the Debian rootfs stemcell carrying the real agent (its VMs are
/// runc containers: the manifest's os is [`rootfs::OPERATING_SYSTEM`]), and
/// the example release.
pub(super) async fn upload_rootfs_stemcell_and_release(dir: &Path, url: &str, token: &str) {
    let sc = dir.join("stemcell.tgz");
    let out = sc.clone();
    tokio::task::spawn_blocking(move || {
        let agent = bosh_test_utils::agent::agent_binary().unwrap();
        let cache = rootfs::default_cache().expect("HOME is set");
        rootfs::write_stemcell(&agent, &cache, &out, &Default::default(), |_| {}).unwrap();
    })
    .await
    .unwrap();
    upload(url, token, "stemcells", &sc).await;
    upload_release(dir, url, token).await;
}

/// Creates and uploads the example release.
async fn upload_release(dir: &Path, url: &str, token: &str) {
    let rel = example_release(dir);
    let tarball = dir.join("hello.tgz");
    let opts = CreateOptions {
        tarball: Some(tarball.clone()),
        force: true,
        cache_dir: dir.join("release-cache"),
        ..Default::default()
    };
    create_release(&rel, &opts).unwrap();
    upload(url, token, "releases", &tarball).await;
}

/// A boshd that is killed when the test ends, however it ends.
pub(super) struct Boshd(pub(super) Child);

impl Drop for Boshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) fn kill(child: &mut Child, signal: i32) {
    // SAFETY: signalling a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, signal) };
    child.wait().unwrap();
}

/// VMs and disks the local CPI holds, read from its records.
pub(super) fn inventory(cpi: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let inv = LocalCpi::inventory(cpi).unwrap();
    (inv.vms.into_keys().collect(), inv.disks.into_keys().collect())
}

/// Instance phases streamed by `GET /v1/watch/instances?from=REV`, until
/// one is `running`.
async fn watched_phases(url: &str, token: &str, from: i64) -> Vec<String> {
    let watch = reqwest::Client::new()
        .get(format!("{url}/v1/watch/instances?from={from}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let mut body = watch.bytes_stream();
    let (mut buf, mut phases) = (Vec::new(), Vec::<String>::new());
    let read = async {
        while let Some(Ok(chunk)) = body.next().await {
            buf.extend_from_slice(&chunk);
            while let Some(n) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=n).collect();
                let ev: serde_json::Value = serde_json::from_slice(&line).unwrap();
                if let Some(phase) = ev["object"]["status"]["phase"].as_str() {
                    phases.push(phase.to_string());
                    if phase == "running" {
                        return;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), read).await;
    phases
}

/// Kills every VM of the test's CPI when the test ends, however it ends.
pub(super) struct VmReaper(pub(super) std::path::PathBuf);

impl Drop for VmReaper {
    fn drop(&mut self) {
        LocalCpi::kill_all(&self.0);
    }
}

/// etcdctl writes the deployment; boshd is SIGKILLed once the first VM
/// exists and started again; the rollout finishes with exactly one VM and
/// one disk per instance, and `watch instances` saw them go from creating
/// to running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boshd_killed_mid_deploy_converges_without_duplicates() {
    let (env, store) = setup().await;
    let dir = env.dir().to_path_buf();
    // Dropped in reverse: boshd, then the VMs and bridges, then the subnet.
    let subnet = SubnetLease::acquire_bridged();
    let _reaper = VmReaper(dir.join("boshd/cpi"));
    let cloud = Object::new(
        ObjectMeta::named("cloud/default"),
        ConfigSpec { type_: ConfigType::Cloud, content: cloud_config(&subnet) },
    );
    store.create(&cloud).await.unwrap();
    let free = bosh_test_utils::free_port;
    let ports = (free(), free(), free());
    let mut boshd = Boshd(spawn_boshd(&dir, &env.boshd_args(), ports));
    let (url, token) = api(&dir.join("boshd")).await;
    upload_rootfs_stemcell_and_release(&dir, &url, &token).await;

    let rev0 = store.revision().await.unwrap();

    // The deployment, written the way a GitOps tool would: etcdctl put.
    let mut manifest = hello_manifest(3, 1, "from etcdctl");
    manifest["stemcells"][0]["os"] = rootfs::OPERATING_SYSTEM.into();
    let spec = serde_json::json!({
        "apiVersion": bosh_api::objects::API_VERSION,
        "kind": "Deployment",
        "metadata": {"name": "hello"},
        "spec": {"manifest": manifest},
    });
    let out = env
        .etcd
        .etcdctl()
        .args(["put", "/bosh/deployments/spec/hello"])
        .arg(spec.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "etcdctl: {}", String::from_utf8_lossy(&out.stderr));

    // Kill boshd once an instance VM exists (mid-rollout: one at a time).
    let first = eventually(DEPLOY_DEADLINE, "a first instance VM", || {
        let store = store.clone();
        async move {
            let items = store.list::<InstanceSpec>("hello/").await.ok()?.items;
            items.iter().any(|i| i.status.vm_cid.is_some()).then_some(items.len())
        }
    })
    .await
    .unwrap();
    kill(&mut boshd.0, libc::SIGKILL);
    assert!(first <= 3);
    let mut boshd = Boshd(spawn_boshd(&dir, &env.boshd_args(), ports));

    let generation = eventually(DEPLOY_DEADLINE, "hello to be deployed", || {
        let store = store.clone();
        async move {
            let d: Object<DeploymentSpec> = store.get(None, "hello").await.ok()?;
            let c = find_condition(&d.status.conditions, ConditionType::Ready)?;
            (c.status == ConditionStatus::True && c.observed_revision == d.metadata.generation)
                .then_some(d.metadata.generation)
        }
    })
    .await
    .unwrap();
    assert!(generation > 0);

    let instances = store.list::<InstanceSpec>("hello/").await.unwrap().items;
    assert_eq!(instances.len(), 3);
    let vm_cids: BTreeSet<String> =
        instances.iter().map(|i| i.status.vm_cid.clone().unwrap()).collect();
    let disks = store.list::<DiskSpec>("hello/").await.unwrap().items;
    assert_eq!(disks.len(), 3);
    assert!(disks.iter().all(|d| d.status.phase == DiskPhase::Attached));
    let disk_cids: BTreeSet<String> = disks.iter().map(|d| d.status.cid.clone().unwrap()).collect();
    let (vms, cpi_disks) = inventory(&dir.join("boshd/cpi"));
    assert_eq!(vms, vm_cids, "exactly one VM per instance (compile VMs gone, no duplicate)");
    assert_eq!(cpi_disks, disk_cids, "exactly one disk per instance, none leaked");

    // A watcher (here, of the restarted boshd, from before the apply)
    // streams the instances' transitions.
    let phases = watched_phases(&url, &token, rev0).await;
    assert!(phases.iter().any(|p| p == "creating"), "{phases:?}");
    assert!(phases.iter().any(|p| p == "running"), "{phases:?}");
    kill(&mut boshd.0, libc::SIGTERM);
}
