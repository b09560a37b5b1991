//! Deployments on container VMs (issue 14): a release written for a real
//! BOSH VM — plain `/var/vcap` paths, a job binding `0.0.0.0`, a pre-start
//! that changes `/etc/issue` and adds a user — deployed through the whole
//! director onto runc containers of the Debian rootfs stemcell, each with
//! its own root filesystem, namespaces and address on a bridge.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bosh_api::Object;
use bosh_api::objects::{InstanceSpec, TaskState};
use bosh_controllers::reconcilers::health::HealthConfig;
use bosh_controllers::testing::{Harness, HarnessOptions, WebManifest};
use bosh_test_utils::eventually;

use super::compile::write;
use super::deploy::DeployHarness;

/// A release in plain BOSH style, as a release author writes it for a real
/// stemcell: nothing in it knows it runs on bosh-rs. Its package records
/// the `BOSH_INSTALL_TARGET` it was compiled for; its job serves a
/// directory on `0.0.0.0:8080`, and its pre-start changes the VM the way
/// os-conf's `login_banner` and `user_add` do.
pub(super) fn plain_release(root: &Path) -> PathBuf {
    let dir = root.join("plain-release");
    write(&dir, "config/final.yml", "name: plain\n");
    write(&dir, "packages/served/spec", "---\nname: served\nfiles: [served/**/*]\n");
    write(&dir, "src/served/README", "served by the web job\n");
    write(
        &dir,
        "packages/served/packaging",
        "set -e\nmkdir -p \"$BOSH_INSTALL_TARGET\"\necho -n \"$BOSH_INSTALL_TARGET\" > \"$BOSH_INSTALL_TARGET/install_target\"\n",
    );
    write(
        &dir,
        "jobs/web/spec",
        "---\nname: web\ntemplates:\n  ctl.erb: bin/ctl\n  pre-start.erb: bin/pre-start\npackages: [served]\nproperties: {}\n",
    );
    write(
        &dir,
        "jobs/web/monit",
        "check process web\n  with pidfile /var/vcap/sys/run/web/web.pid\n  start program \"/var/vcap/jobs/web/bin/ctl start\"\n  stop program \"/var/vcap/jobs/web/bin/ctl stop\"\n  group vcap\n",
    );
    write(
        &dir,
        "jobs/web/templates/pre-start.erb",
        r#"#!/bin/bash
set -eu
echo "Authorized use only. <%= spec.id %>" > /etc/issue
id banner_user >/dev/null 2>&1 || useradd --create-home banner_user
mkdir -p /var/vcap/data/web
echo -n "<%= spec.id %>" > /var/vcap/data/web/id
cp /var/vcap/packages/served/install_target /var/vcap/data/web/install_target
if [ -d /var/vcap/store ] && [ ! -e /var/vcap/store/first-boot ]; then
  echo -n "<%= spec.id %>" > /var/vcap/store/first-boot
fi
"#,
    );
    write(
        &dir,
        "jobs/web/templates/ctl.erb",
        r#"#!/bin/bash
set -eu
RUN=/var/vcap/sys/run/web
case $1 in
  start)
    mkdir -p $RUN /var/vcap/sys/log/web
    cd /var/vcap/data/web
    nohup python3 -m http.server 8080 --bind 0.0.0.0 \
      >>/var/vcap/sys/log/web/web.log 2>&1 &
    echo $! > $RUN/web.pid
    ;;
  stop)
    kill "$(cat $RUN/web.pid)" 2>/dev/null || true
    rm -f $RUN/web.pid
    ;;
esac
"#,
    );
    dir
}

async fn world(health: HealthConfig) -> Harness {
    let h =
        Harness::start(HarnessOptions { health, ..HarnessOptions::containers() }).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&plain_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    h
}

fn manifest(name: &str, instances: u32, disk_mb: u64) -> serde_json::Value {
    WebManifest { persistent_disk_mb: disk_mb, ..WebManifest::job(name, "plain", "web") }
        .value()
        .as_object()
        .cloned()
        .map(|mut m| {
            m["instance_groups"][0]["instances"] = instances.into();
            serde_json::Value::Object(m)
        })
        .unwrap()
}

async fn get(ip: &str, path: &str) -> Option<String> {
    let r = reqwest::Client::new()
        .get(format!("http://{ip}:8080/{path}"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    r.status().is_success().then_some(())?;
    r.text().await.ok()
}

fn ip(i: &Object<InstanceSpec>) -> String {
    i.spec.networks[0].ip.clone()
}

/// Runs `script` in instance `i`'s VM through its agent.
async fn sh(h: &Harness, i: &Object<InstanceSpec>, script: &str) -> (i32, String) {
    let agent = h.director.agents.for_agent(i.status.agent_id.clone().unwrap());
    let cmd = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let r = agent.exec(&cmd, Some(20)).await.unwrap();
    (r.exit_code, format!("{}{}", r.stdout, r.stderr))
}

/// The memory limit (bytes) of the cgroup instance `i`'s VM runs in, read
/// on the host (cgroup v1: the path is the one the VM's init is in).
async fn memory_limit(h: &Harness, i: &Object<InstanceSpec>) -> u64 {
    let (code, cgroups) = sh(h, i, "cat /proc/1/cgroup").await;
    assert_eq!(code, 0, "{cgroups}");
    let path = cgroups
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers.split(',').any(|c| c == "memory").then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("no memory cgroup in {cgroups}"));
    let file = format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
    text.trim().parse().unwrap()
}

/// Two instances of a job binding `0.0.0.0:8080` each answer at their own
/// IP; the package was compiled for `/var/vcap/packages/served`; the
/// pre-start's `/etc/issue` and new user changed each VM and not the
/// host; a VM sees only its own processes and cannot reach the host's
/// etcd; `vm_resources.ram` is the container's memory limit. A second
/// deployment of the same job, on the same port, runs beside the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_bosh_release_runs_unchanged_on_isolated_container_vms() {
    let h = world(HealthConfig::default()).await;
    let mut m = manifest("plain", 2, 0);
    let group = m["instance_groups"][0].as_object_mut().unwrap();
    group.remove("vm_type");
    group.insert(
        "vm_resources".into(),
        serde_json::json!({"cpu": 1, "ram": 384, "ephemeral_disk_size": 1024}),
    );
    let t = h.apply("plain", m).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Done, "{result}");
    let t = h.apply("beside", manifest("beside", 1, 0)).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Done, "{result}");
    let instances = h.instances("plain").await;
    assert_eq!(instances.len(), 2);
    for i in &instances {
        assert_eq!(memory_limit(&h, i).await, 384 << 20, "the VM's memory cgroup limit");
        let id = get(&ip(i), "id").await;
        assert_eq!(id.as_deref(), Some(i.spec.id.as_str()), "{} answers as itself", ip(i));
        let target = get(&ip(i), "install_target").await;
        assert_eq!(target.as_deref(), Some("/var/vcap/packages/served"));
        let (code, issue) = sh(&h, i, "cat /etc/issue; id -u banner_user").await;
        assert_eq!(code, 0, "{issue}");
        assert!(issue.contains(&format!("Authorized use only. {}", i.spec.id)), "{issue}");
        let (_, ps) = sh(&h, i, "ps -e -o comm=").await;
        let procs: Vec<&str> = ps.lines().collect();
        assert!(procs.len() < 15, "the VM sees only its own processes: {procs:?}");
        assert!(!ps.contains("etcd") && !ps.contains("nats-server"), "{ps}");
        let etcd = h.rest.env.store_config().endpoints[0].clone();
        let port = etcd.rsplit(':').next().unwrap();
        let gw = h.subnet.ip(1);
        let (code, out) = sh(
            &h,
            i,
            &format!("curl -sS --max-time 2 -k https://{gw}:{port}/ || curl -sS --max-time 2 -k https://127.0.0.1:{port}/"),
        )
        .await;
        assert_ne!(code, 0, "the host's etcd is out of the VM's reach: {out}");
    }
    // The other deployment's VM binds the same 0.0.0.0:8080, at its own IP;
    // the first deployment's still answer.
    let beside = h.instances("beside").await.remove(0);
    assert_eq!(get(&ip(&beside), "id").await.as_deref(), Some(beside.spec.id.as_str()));
    for i in &instances {
        assert_eq!(get(&ip(i), "id").await.as_deref(), Some(i.spec.id.as_str()));
    }
    let host_issue = std::fs::read_to_string("/etc/issue").unwrap_or_default();
    assert!(!host_issue.contains("Authorized use only."), "the host's /etc/issue is untouched");
    let host_user = std::process::Command::new("id").arg("banner_user").output().unwrap();
    assert!(!host_user.status.success(), "the host has no banner_user");
    h.stop().await.unwrap();
}

/// SIGKILL of a container VM's init: the instance comes back on a new
/// container with the same persistent disk (its first-boot marker kept);
/// then a stop/start and a recreate keep it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_container_vm_is_resurrected_with_its_disk() {
    let agent_timeout = Duration::from_secs(5);
    let h = world(HealthConfig {
        agent_timeout,
        check_interval: Duration::from_millis(250),
        resurrection_delay: Duration::from_secs(2),
        ..HealthConfig::default()
    })
    .await;
    let t = h.apply("res", manifest("res", 1, 16)).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Done, "{result}");
    let inst = h.instances("res").await.remove(0);
    let (code, first) = sh(&h, &inst, "cat /var/vcap/store/first-boot").await;
    assert_eq!((code, first.as_str()), (0, inst.spec.id.as_str()));
    let old = inst.status.vm_cid.clone().unwrap();
    let cpi = bosh_controllers::world::cpi::local::LocalCpi::open(&h.cpi_root()).unwrap();
    cpi.vm_process(&old).await.expect("the VM's init").kill_tree();

    let store = h.store.clone();
    let name = inst.metadata.name.clone();
    let new = eventually(agent_timeout + Duration::from_secs(30), "a new VM", || {
        let (store, old, name) = (store.clone(), old.clone(), name.clone());
        async move {
            let i: Object<InstanceSpec> = store.get(Some("res"), &name).await.ok()?;
            let cid = i.status.vm_cid.clone()?;
            (cid != old && i.status.health == Some(bosh_api::objects::InstanceHealth::Running))
                .then_some(i)
        }
    })
    .await
    .unwrap();
    let (code, kept) = sh(&h, &new, "cat /var/vcap/store/first-boot").await;
    assert_eq!((code, kept.as_str()), (0, inst.spec.id.as_str()), "the disk came along");
    assert_eq!(get(&ip(&new), "id").await.as_deref(), Some(inst.spec.id.as_str()));
    h.stop().await.unwrap();
}

/// Bad input refused with the field named and nothing half-made: a VM
/// asking for more memory than the host has fails the deploy with the CPI
/// naming `cloud_properties.ram`, and leaves no VM, container or network
/// behind; a stemcell whose image is a root filesystem without an agent is
/// refused on import, saying what it lacks, and the CPI keeps nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_much_memory_and_an_unusable_stemcell_are_refused_leaving_nothing() {
    use bosh_api::objects::StemcellSpec;
    use bosh_api::{Object, ObjectMeta};
    use bosh_controllers::world::cpi::local::LocalCpi;

    let h = world(HealthConfig::default()).await;
    let mut m = manifest("greedy", 1, 0);
    let group = m["instance_groups"][0].as_object_mut().unwrap();
    group.remove("vm_type");
    group.insert(
        "vm_resources".into(),
        serde_json::json!({"cpu": 1, "ram": 1u64 << 30, "ephemeral_disk_size": 1024}),
    );
    let t = h.apply("greedy", m).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Error, "{result}");
    assert!(
        result.contains("cloud_properties.ram") && result.contains("more than this host's"),
        "{result}"
    );
    let inv = LocalCpi::inventory(&h.cpi_root()).unwrap();
    let agents: Vec<_> =
        h.instances("greedy").await.iter().filter_map(|i| i.status.agent_id.clone()).collect();
    assert!(
        !inv.vms.values().any(|v| agents.contains(&v.agent_id)),
        "no VM was made for the refused instance: {inv:?}"
    );
    let vm_dirs = std::fs::read_dir(h.cpi_root().join("vms")).unwrap().count();
    assert_eq!(vm_dirs, inv.vms.len(), "no VM directory without a record");

    // A root filesystem without the agent.
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image.tgz");
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(&image).unwrap(),
        flate2::Compression::fast(),
    ));
    let src = tmp.path().join("rootfs");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("etc/os-release"), "ID=debian\n").unwrap();
    std::fs::write(src.join("bin/sh"), "").unwrap();
    tar.append_dir_all(".", &src).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    let file = tokio::fs::File::open(&image).await.unwrap();
    let stream = futures::TryStreamExt::map_err(
        tokio_util::io::ReaderStream::new(file),
        std::io::Error::other,
    );
    let blob = h.director.blobs.put_stream(Box::pin(stream), None).await.unwrap();
    let spec = StemcellSpec {
        name: "agentless".into(),
        version: "1".into(),
        operating_system: "debian-bookworm".into(),
        api_version: 2,
        image: Some(blob),
        ..Default::default()
    };
    let stemcells_before = LocalCpi::inventory(&h.cpi_root()).unwrap().stemcells.len();
    h.store.create(&Object::new(ObjectMeta::named("agentless/1"), spec)).await.unwrap();
    let store = h.store.clone();
    let error = eventually(Duration::from_secs(60), "the import to be refused", || {
        let store = store.clone();
        async move {
            let s: Object<StemcellSpec> = store.get(None, "agentless/1").await.ok()?;
            s.status.import_error().map(str::to_string)
        }
    })
    .await
    .unwrap();
    assert!(error.contains("holds no agent at /var/vcap/bosh/bin/bosh-agent"), "{error}");
    let stemcells = LocalCpi::inventory(&h.cpi_root()).unwrap().stemcells.len();
    assert_eq!(stemcells, stemcells_before, "the refused image left no stemcell in the CPI");
    h.stop().await.unwrap();
}
