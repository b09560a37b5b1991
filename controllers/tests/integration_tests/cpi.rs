//! The CPIs against real processes: the local CPI's VM process trees and
//! the external CPI protocol with a protocol-speaking test executable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bosh_api::agent::bosh_env::VmGroup;
use bosh_api::agent::{BlobstoreSettings, MbusSettings, Settings};
use bosh_api::store::Fence;
use bosh_controllers::world::cpi::external::ExternalCpi;
use bosh_controllers::world::cpi::local::LocalCpi;
use bosh_controllers::world::cpi::{Cpi, CpiError, CreateVm, VmNetwork};
use bosh_test_utils::{SubnetLease, eventually};
use serde_json::json;

use super::DEADLINE;

fn dummy_cpi(dir: &Path) -> ExternalCpi {
    let exe = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dummy-cpi");
    let mut props = serde_json::Map::new();
    props.insert("dir".into(), dir.to_string_lossy().into_owned().into());
    ExternalCpi::new("dummy", &exe, props)
}

/// A request for a VM at `subnet`'s `.10`.
fn create_vm_request(subnet: &SubnetLease, stemcell: &str, request_id: &str) -> CreateVm {
    let mut networks = BTreeMap::new();
    networks.insert(
        "default".to_string(),
        VmNetwork { type_: "manual".into(), ip: subnet.ip(10).to_string(), ..Default::default() },
    );
    CreateVm {
        request_id: request_id.into(),
        agent_id: format!("agent-{request_id}"),
        stemcell_cid: stemcell.into(),
        cloud_properties: json!({"cpu": 1}),
        networks,
        settings: Settings { agent_id: format!("agent-{request_id}"), ..Default::default() },
        ..Default::default()
    }
}

/// The external CPI protocol round trip: requests on stdin, replies on stdout, stderr kept as the call log.
#[tokio::test]
async fn external_cpi_round_trip() {
    let subnet = SubnetLease::acquire();
    let dir = tempfile::tempdir().unwrap();
    // Set up as the director sets a CPI up: `info` first.
    let (cpi, negotiated) = dummy_cpi(dir.path()).connect().await.unwrap();
    assert_eq!(negotiated.api_version, 2);
    assert_eq!(negotiated.info.stemcell_formats, ["dummy"]);
    assert_eq!(cpi.info().await.unwrap().stemcell_formats, ["dummy"]);
    let sc = cpi.create_stemcell(None, Path::new("/nonexistent/image"), &json!({})).await.unwrap();
    // The agent's settings as the director has them, which go to the CPI
    // in BOSH's shape.
    let mut req = create_vm_request(&subnet, &sc, "req-1");
    req.settings.mbus = MbusSettings {
        url: "nats://10.0.0.6:4222".into(),
        user: "agent-agent-req-1".into(),
        password: "nats-pw-1".into(),
    };
    req.settings.blobstore = BlobstoreSettings {
        url: "http://10.0.0.6:25250".into(),
        token: "blob-token-1".into(),
        mirrors: vec![],
    };
    req.env = json!({"bosh": {"password": "crypted"}});
    req.group = Some(VmGroup {
        director: "boshd".into(),
        deployment: "cf".into(),
        instance_group: "web".into(),
        tags: json!({"team": "rc"}).as_object().unwrap().clone(),
    });
    req.stemcell_api_version = Some(3);
    let vm = cpi.create_vm(None, &req).await.unwrap();
    assert!(vm.starts_with("vm-"), "API v2's [cid, networks] result must yield the cid: {vm}");
    assert!(cpi.has_vm(&vm).await.unwrap());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state.json")).unwrap()).unwrap();
    let rec = &state["vms"][&vm];
    assert_eq!(rec["request_id"], "req-1", "the request id must reach the CPI in the context");
    assert_eq!(rec["agent_id"], "agent-req-1");
    // BOSH's env.bosh, exactly: nothing of ours but the heartbeat interval.
    assert_eq!(
        rec["env"],
        json!({"bosh": {
            "blobstores": [{"provider": "dav", "options": {"endpoint": "http://10.0.0.6:25250",
                "user": "agent", "password": "blob-token-1"}}],
            "heartbeat_interval_secs": 0,
            "password": "crypted",
            "mbus": {"urls": ["nats://agent-agent-req-1:nats-pw-1@10.0.0.6:4222"]},
            "group": "boshd-cf-web",
            "groups": ["boshd", "cf", "web", "boshd-cf", "cf-web", "boshd-cf-web"],
            "tags": {"team": "rc"},
        }})
    );
    assert_eq!(rec["networks"]["default"]["ip"], subnet.ip(10).to_string());
    // As BOSH: `info` at set-up carries no version; every call after it
    // carries the one negotiated.
    let calls = state["calls"].as_array().unwrap();
    assert!(calls[0]["method"] == "info" && calls[0]["api_version"].is_null(), "{calls:?}");
    assert!(calls[1..].iter().all(|c| c["api_version"] == 2), "{calls:?}");
    let create = calls.iter().find(|c| c["method"] == "create_vm").unwrap();
    assert_eq!(create["vm"], json!({"stemcell": {"api_version": 3}}), "{create}");
    assert!(create["director_uuid"].as_str().is_some_and(|u| !u.is_empty()), "{create}");

    let mut md = BTreeMap::new();
    md.insert("deployment".to_string(), "cf".to_string());
    cpi.set_vm_metadata(None, &vm, &md).await.unwrap();
    let disk = cpi.create_disk(None, "req-d", 1024, &json!({}), Some(&vm)).await.unwrap();
    assert!(cpi.has_disk(&disk).await.unwrap());
    cpi.attach_disk(None, &vm, &disk).await.unwrap();
    assert_eq!(cpi.get_disks(&vm).await.unwrap(), vec![disk.clone()]);
    cpi.detach_disk(None, &vm, &disk).await.unwrap();
    let again = cpi.detach_disk(None, &vm, &disk).await.unwrap_err();
    assert!(again.is_retryable(), "DiskNotAttached is retriable in BOSH: {again}");
    cpi.delete_disk(None, &disk).await.unwrap();
    cpi.delete_vm(None, &vm).await.unwrap();
    assert!(!cpi.has_vm(&vm).await.unwrap());
    let gone = cpi.delete_vm(None, &vm).await.unwrap_err();
    assert!(matches!(gone, CpiError::NotFound { what: "vm", ref cid } if *cid == vm), "{gone}");

    // Made in a controller's term, a mutation carries its fencing token.
    let fence = Fence { key: "/bosh/leases/instance".into(), revision: 42 };
    let gone = cpi.delete_vm(Some(&fence), &vm).await.unwrap_err();
    assert!(gone.is_not_found(), "{gone}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state.json")).unwrap()).unwrap();
    let calls = state["calls"].as_array().unwrap();
    assert_eq!(
        calls.last().unwrap()["fence"],
        json!({"key": "/bosh/leases/instance", "revision": 42})
    );
    assert!(calls[0]["fence"].is_null(), "no fence outside a controller's term");

    let logs = cpi.take_logs();
    assert!(
        logs.iter().any(|l| l.method == "create_vm" && l.text.contains("dummy-cpi: create_vm"))
    );
    // The dummy logs its whole env: the URL's password and the blobstore's
    // are redacted.
    let env_log = logs.iter().find(|l| l.text.contains("dummy-cpi: create_vm env")).unwrap();
    assert!(
        env_log.text.contains("nats://agent-agent-req-1:<redacted>@10.0.0.6:4222"),
        "{env_log:?}"
    );
    assert!(!env_log.text.contains("nats-pw-1") && !env_log.text.contains("blob-token-1"));
    assert!(
        logs.iter().any(|l| l.text.contains("handled create_vm")),
        "the response's log is kept"
    );
}

/// Unknown methods, garbage output and slow CPIs give typed errors.
#[tokio::test]
async fn external_cpi_errors_are_typed() {
    let subnet = SubnetLease::acquire();
    let dir = tempfile::tempdir().unwrap();
    let cpi = dummy_cpi(dir.path());
    let e = cpi.snapshot_disk(None, "disk-1", &BTreeMap::new()).await.unwrap_err();
    assert!(matches!(e, CpiError::NotSupported { method: "snapshot_disk" }), "{e}");
    let e = cpi
        .create_vm(None, &create_vm_request(&subnet, "no-such-stemcell", "r"))
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "VMCreationFailed is retriable: {e}");

    let mut props = serde_json::Map::new();
    props.insert("dir".into(), dir.path().to_string_lossy().into_owned().into());
    props.insert("sleep".into(), 5.into());
    let slow = ExternalCpi::new(
        "slow",
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dummy-cpi"),
        props,
    )
    .with_timeout(Duration::from_millis(500));
    let start = std::time::Instant::now();
    let e = slow.info().await.unwrap_err();
    assert!(e.is_retryable() && e.to_string().contains("timed out"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "the CPI process must be killed at the timeout"
    );

    // A CPI killed before it answers may have done its work: retriable,
    // as a timeout is; one that exits with an error and no answer is not.
    let script = |name: &str, body: &str| {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\ncat > /dev/null\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        ExternalCpi::new(name, &path, serde_json::Map::new())
    };
    let killed = script("killed", "echo 'made vm-1' >&2\nkill -9 $$");
    let e = killed.info().await.unwrap_err();
    let text = e.to_string();
    assert!(e.is_retryable() && text.contains("killed by signal 9"), "{text}");
    assert!(text.contains("made vm-1") && text.contains("CPI request ID"), "{text}");
    let failed = script("failed", "echo 'no IaaS' >&2\nexit 3");
    let e = failed.info().await.unwrap_err();
    assert!(!e.is_retryable() && e.to_string().contains("no IaaS"), "{e}");
}

/// Writes a local stemcell image whose "agent" is a shell script: it starts
/// a grandchild tagged with `marker` and then waits, like an agent with a job.
fn fake_stemcell(dir: &Path, marker: &str) -> PathBuf {
    let script = format!(
        "#!/bin/sh\nsleep {marker} &\necho started > \"$(dirname \"$2\")/agent.started\"\nexec sleep 100000\n"
    );
    let path = dir.join("image.tgz");
    let mut w = bosh_api::archive::TgzWriter::new();
    w.bytes("bosh-agent", script.into_bytes(), true);
    w.write_to_path(&path).unwrap();
    path
}

/// Whether any process runs with `marker` in its command line.
fn marker_running(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(marker))
            .unwrap_or(false)
            && std::fs::read_to_string(e.path().join("stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false)
    })
}

/// A local VM is a process tree: deleting it kills everything in it; a dead agent means has_vm is false.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_vm_lifecycle_and_process_tree() {
    let subnet = SubnetLease::acquire();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("{}.{}", 90000 + std::process::id() % 9999, rand_suffix());
    let cpi = LocalCpi::open(&dir.path().join("cpi")).unwrap();
    let sc =
        cpi.create_stemcell(None, &fake_stemcell(dir.path(), &marker), &json!({})).await.unwrap();

    let vm = cpi.create_vm(None, &create_vm_request(&subnet, &sc, "req-1")).await.unwrap();
    assert!(cpi.has_vm(&vm).await.unwrap());
    let started = cpi.vm_dir(&vm).join("agent.started");
    eventually(DEADLINE, "the VM's agent to start", || {
        let p = started.clone();
        async move { p.exists().then_some(()) }
    })
    .await
    .unwrap();
    assert!(marker_running(&marker), "the VM's child process runs");
    let settings: Settings =
        serde_json::from_slice(&std::fs::read(cpi.vm_dir(&vm).join("settings.json")).unwrap())
            .unwrap();
    assert_eq!(settings.vm_cid, vm);
    assert!(settings.shares_host, "a process VM's agent is told it shares the host's root");

    // Persistent disks: attach lists the disk in the VM's settings.
    let disk = cpi.create_disk(None, "req-d", 100, &json!({}), None).await.unwrap();
    std::fs::write(cpi.disk_dir(&disk).join("marker"), "kept").unwrap();
    cpi.attach_disk(None, &vm, &disk).await.unwrap();
    let settings: Settings =
        serde_json::from_slice(&std::fs::read(cpi.vm_dir(&vm).join("settings.json")).unwrap())
            .unwrap();
    assert_eq!(settings.disks.persistent[&disk], cpi.disk_dir(&disk).to_string_lossy());
    assert!(cpi.delete_disk(None, &disk).await.is_err(), "an attached disk cannot be deleted");

    cpi.delete_vm(None, &vm).await.unwrap();
    assert!(!cpi.has_vm(&vm).await.unwrap());
    eventually(DEADLINE, "every process of the VM to be gone", || {
        let m = marker.clone();
        async move { (!marker_running(&m)).then_some(()) }
    })
    .await
    .unwrap();
    assert!(!cpi.vm_dir(&vm).exists());
    assert_eq!(std::fs::read_to_string(cpi.disk_dir(&disk).join("marker")).unwrap(), "kept");
    assert!(cpi.get_disks(&vm).await.is_err());
    cpi.delete_disk(None, &disk).await.unwrap();
}

/// A killed agent makes has_vm false; a lost create reply is adopted by request id; the inventory survives a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_vm_death_adoption_and_restart() {
    let subnet = SubnetLease::acquire();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("{}.{}", 80000 + std::process::id() % 9999, rand_suffix());
    let root = dir.path().join("cpi");
    let cpi = LocalCpi::open(&root).unwrap();
    let sc =
        cpi.create_stemcell(None, &fake_stemcell(dir.path(), &marker), &json!({})).await.unwrap();
    let a = cpi.create_vm(None, &create_vm_request(&subnet, &sc, "req-a")).await.unwrap();
    let b = cpi.create_vm(None, &create_vm_request(&subnet, &sc, "req-b")).await.unwrap();

    // "The reply was lost": the caller only knows its request id.
    assert_eq!(cpi.find_vm_by_request("req-b").await.unwrap(), Some(b.clone()));
    assert_eq!(cpi.find_vm_by_request("req-never").await.unwrap(), None);

    // boshd restarts: a fresh CPI over the same data sees the same VMs alive.
    drop(cpi);
    let cpi = LocalCpi::open(&root).unwrap();
    assert!(cpi.has_vm(&a).await.unwrap() && cpi.has_vm(&b).await.unwrap());

    // The machine dies.
    let p = cpi.vm_process(&a).await.unwrap();
    p.kill_tree();
    eventually(DEADLINE, "has_vm to turn false", || {
        let cpi = &cpi;
        let a = a.clone();
        async move { (!cpi.has_vm(&a).await.unwrap()).then_some(()) }
    })
    .await
    .unwrap();
    assert!(cpi.has_vm(&b).await.unwrap(), "other VMs are unaffected");
    cpi.delete_vm(None, &a).await.unwrap();
    cpi.delete_vm(None, &b).await.unwrap();
    let e = cpi.delete_vm(None, &a).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    eventually(DEADLINE, "every process gone", || {
        let m = marker.clone();
        async move { (!marker_running(&m)).then_some(()) }
    })
    .await
    .unwrap();
}

fn rand_suffix() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32 % 100000
}

/// Two local CPIs over one directory (two boshd replicas sharing one
/// "IaaS"): each sees what the other made, a create repeated with the same
/// request id returns the VM (or disk) that exists instead of a second
/// one, and an inventory file of the older single-file layout is taken
/// over as records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cpis_sharing_a_directory_see_one_world() {
    let subnet = SubnetLease::acquire();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("{}.{}", 70000 + std::process::id() % 9999, rand_suffix());
    let root = dir.path().join("cpi");
    let a = LocalCpi::open(&root).unwrap();
    let b = LocalCpi::open(&root).unwrap();
    let sc =
        a.create_stemcell(None, &fake_stemcell(dir.path(), &marker), &json!({})).await.unwrap();

    let vm = a.create_vm(None, &create_vm_request(&subnet, &sc, "req-1")).await.unwrap();
    assert!(b.has_vm(&vm).await.unwrap(), "b sees a's VM");
    assert_eq!(b.find_vm_by_request("req-1").await.unwrap(), Some(vm.clone()));
    let again = b.create_vm(None, &create_vm_request(&subnet, &sc, "req-1")).await.unwrap();
    assert_eq!(again, vm, "the request id is an idempotency key");
    let disk = b.create_disk(None, "req-d", 10, &json!({}), None).await.unwrap();
    assert_eq!(a.create_disk(None, "req-d", 10, &json!({}), None).await.unwrap(), disk);
    a.attach_disk(None, &vm, &disk).await.unwrap();
    assert_eq!(b.get_disks(&vm).await.unwrap(), std::slice::from_ref(&disk));
    let inv = LocalCpi::inventory(&root).unwrap();
    assert_eq!(inv.vms.len(), 1, "one VM, not two");
    assert_eq!(inv.disks.len(), 1, "one disk, not two");
    assert_eq!(inv.disks[&disk].attached_to.as_deref(), Some(vm.as_str()));

    b.delete_vm(None, &vm).await.unwrap();
    assert!(!a.has_vm(&vm).await.unwrap(), "a sees b's delete");
    assert_eq!(LocalCpi::inventory(&root).unwrap().disks[&disk].attached_to, None);
    eventually(DEADLINE, "every process gone", || {
        let m = marker.clone();
        async move { (!marker_running(&m)).then_some(()) }
    })
    .await
    .unwrap();

    // The older layout: one inventory.json, moved into records at open.
    let old = dir.path().join("old");
    std::fs::create_dir_all(&old).unwrap();
    let inventory = json!({
        "stemcells": {"sc-1": {}},
        "vms": {},
        "disks": {"disk-1": {"size_mb": 5, "request_id": "r", "attached_to": null}},
        "snapshots": {},
    });
    std::fs::write(old.join("inventory.json"), inventory.to_string()).unwrap();
    let c = LocalCpi::open(&old).unwrap();
    assert!(c.has_disk("disk-1").await.unwrap());
    assert!(!old.join("inventory.json").exists());
    assert_eq!(LocalCpi::inventory(&old).unwrap().stemcells.len(), 1);
    // A damaged record is reported with its file.
    std::fs::write(old.join("records/vms/vm-bad.json"), "{not json").unwrap();
    let e = c.has_vm("vm-bad").await.unwrap_err().to_string();
    assert!(e.contains("records/vms/vm-bad.json"), "{e}");
}

/// A mutation carrying a fencing token older than one the local CPI has
/// seen for the same election is refused (a deposed leader's late call);
/// a newer one, another election's, or a call outside any term passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cpi_refuses_a_deposed_leaders_fence() {
    let dir = tempfile::tempdir().unwrap();
    let cpi = LocalCpi::open(&dir.path().join("cpi")).unwrap();
    let fence = |key: &str, revision| Fence { key: format!("/bosh/leases/{key}"), revision };
    let none = json!({});

    let disk = cpi.create_disk(Some(&fence("instance", 20)), "r-1", 1, &none, None).await.unwrap();
    let old = cpi.create_disk(Some(&fence("instance", 10)), "r-2", 1, &none, None).await;
    let e = old.unwrap_err();
    assert!(e.to_string().contains("older than 20"), "{e}");
    assert!(!e.is_retryable());
    assert_eq!(
        LocalCpi::inventory(&dir.path().join("cpi")).unwrap().disks.len(),
        1,
        "nothing made"
    );
    let stale_delete = cpi.delete_disk(Some(&fence("instance", 19)), &disk).await;
    assert!(stale_delete.is_err(), "a deposed leader deletes nothing");
    assert!(cpi.has_disk(&disk).await.unwrap());

    cpi.create_disk(Some(&fence("compilation", 5)), "r-3", 1, &none, None).await.unwrap();
    cpi.create_disk(None, "r-4", 1, &none, None).await.unwrap();
    cpi.delete_disk(Some(&fence("instance", 21)), &disk).await.unwrap();
    assert!(!cpi.has_disk(&disk).await.unwrap());
}

/// A CPI script answering `info` with `info` and `create_vm` with
/// `create_vm` (raw stdout text), keeping the last request in `dir/req`.
fn scripted_cpi(dir: &Path, info: &str, create_vm: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let d = dir.display();
    let script = format!(
        "#!/bin/sh\nreq=$(cat)\nprintf '%s' \"$req\" > '{d}/req'\ncase \"$req\" in\n  *'\"method\":\"info\"'*) printf '%s\\n' '{info}' ;;\n  *) printf '%s\\n' '{create_vm}' ;;\nesac\n"
    );
    let path = dir.join("cpi");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Setting a CPI up follows its `info` as BOSH's director does: v2 when
/// it says so, v1 when it says nothing or its `info` is nonsense (BOSH
/// tolerates that too), and `create_vm`'s answer is read by the version
/// spoken. A CPI that cannot be run is refused, naming the executable.
#[tokio::test]
async fn external_cpi_setup_follows_info() {
    let subnet = SubnetLease::acquire();
    let req = create_vm_request(&subnet, "sc-1", "req-1");
    let ok = |r: &str| format!(r#"{{"result":{r},"error":null,"log":""}}"#);
    let setup = |info: String, create: String| async move {
        let dir = tempfile::tempdir().unwrap();
        let exe = scripted_cpi(dir.path(), &info, &create);
        let (cpi, n) = ExternalCpi::new("s", &exe, Default::default()).connect().await.unwrap();
        (dir, cpi, n)
    };
    let sent = |dir: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("req")).unwrap()).unwrap()
    };

    let v2 = ok(r#"{"stemcell_formats":["raw"],"api_version":2}"#);
    let (dir, cpi, n) = setup(v2.clone(), ok(r#"["vm-2",{"default":{}}]"#)).await;
    assert_eq!((n.api_version, n.info.stemcell_formats.clone()), (2, vec!["raw".to_string()]));
    assert_eq!(cpi.create_vm(None, &req).await.unwrap(), "vm-2");
    assert_eq!(sent(dir.path())["api_version"], 2);
    let (_dir, cpi, _) = setup(v2, ok(r#""vm-1""#)).await;
    let e = cpi.create_vm(None, &req).await.unwrap_err();
    assert!(e.to_string().contains("under CPI API v2"), "{e}");

    let (dir, cpi, n) = setup(ok(r#"{"stemcell_formats":["raw"]}"#), ok(r#""vm-1""#)).await;
    assert_eq!((n.api_version, n.info_error.clone()), (1, None), "no api_version is v1");
    assert_eq!(cpi.create_vm(None, &req).await.unwrap(), "vm-1");
    assert_eq!(sent(dir.path())["api_version"], 1);

    let (_dir, _cpi, n) = setup("not json".into(), ok(r#""vm-1""#)).await;
    assert_eq!(n.api_version, 1);
    let why = n.info_error.unwrap();
    assert!(why.contains("Invalid CPI response") && why.contains("not json"), "{why}");

    let missing = PathBuf::from("/nonexistent/bin/cpi");
    let e = ExternalCpi::new("m", &missing, Default::default()).connect().await.err().unwrap();
    assert!(e.to_string().contains("/nonexistent/bin/cpi"), "{e}");
}
