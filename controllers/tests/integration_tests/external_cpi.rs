//! The director's external CPI path end to end (issue 16 item 1): the
//! same container VMs as the local CPI, but every CPI call is a
//! `bosh-local-cpi` process speaking BOSH's protocol (JSON on stdin and
//! stdout). A deploy with a persistent disk, a recreate that keeps what
//! was written on the disk, and a delete that leaves no VM; exactly one VM
//! per instance and one disk per disk intent throughout. And a CPI without
//! bosh-rs's lookups (as every stock BOSH CPI): a `create_vm` whose reply
//! is lost is retried and adopts the VM through its agent, never making a
//! second one; the same when `bosh-local-cpi` is killed in the middle of
//! `create_vm`, after the VM exists and before it answers.

use std::time::Duration;

use bosh_api::Object;
use bosh_api::objects::{
    DeploymentSpec, DiskPhase, DiskSpec, InstanceOverride, InstancePhase, InstanceSpec, TaskState,
};
use bosh_controllers::libs::tasks::create_task;
use bosh_controllers::testing::CpiFaults;
use bosh_controllers::testing::{CpiPath, Harness, HarnessOptions};
use bosh_controllers::world::cpi::Cpi as _;
use bosh_controllers::world::cpi::local::LocalCpi;

use super::compile::example_release;
use super::deploy::{DeployHarness, manifest};

/// VMs the CPI lists for deployment `name` (through the external path).
async fn vms_of(h: &Harness, name: &str) -> Vec<String> {
    let all = h.director.cpi.list_vms().await.unwrap();
    all.into_iter()
        .filter(|v| v.metadata.get("deployment").map(String::as_str) == Some(name))
        .map(|v| v.cid)
        .collect()
}

async fn sh(h: &Harness, i: &Object<InstanceSpec>, script: &str) -> String {
    let agent = h.director.agents.for_agent(i.status.agent_id.clone().unwrap());
    let r = agent.exec(&["sh".into(), "-c".into(), script.into()], Some(20)).await.unwrap();
    assert_eq!(r.exit_code, 0, "{script}: {}", r.stderr);
    r.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_disk_recreate_and_delete_through_bosh_local_cpi() {
    let external = CpiPath::External { disabled: vec![] };
    let h = Harness::start(HarnessOptions { cpi_path: external, ..HarnessOptions::containers() })
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let started = std::time::Instant::now();
    let t = h.apply("ext", manifest("ext", 2, "through the protocol", 64)).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Done, "{result}");
    println!("deployed 2 instances through bosh-local-cpi in {:?}", started.elapsed());
    let instances = h.instances("ext").await;
    let vms = vms_of(&h, "ext").await;
    assert_eq!(vms.len(), 2, "one VM per instance: {vms:?}");
    for i in &instances {
        assert!(vms.contains(i.status.vm_cid.as_ref().unwrap()), "{vms:?}");
        let greeting = super::deploy::greeting(&i.spec.networks[0].ip).await;
        assert!(greeting.is_some_and(|g| g.contains("through the protocol")));
    }
    let disks = h.store.list::<DiskSpec>("ext/").await.unwrap().items;
    assert_eq!(disks.len(), 2, "one disk per disk intent");
    sh(&h, &instances[0], "echo kept > /var/vcap/store/marker").await;

    let recreate = InstanceOverride { recreate: 1, ..Default::default() };
    let t = h
        .apply_with("ext", |s| {
            s.instances.insert("web".into(), recreate.clone());
        })
        .await;
    assert_eq!(h.task_end(t).await.0, TaskState::Done);
    let after = h.instances("ext").await;
    let vms = vms_of(&h, "ext").await;
    assert_eq!(vms.len(), 2, "the old VMs are gone: {vms:?}");
    let same = after.iter().find(|i| i.spec.id == instances[0].spec.id).unwrap();
    assert_ne!(same.status.vm_cid, instances[0].status.vm_cid, "a new VM");
    assert_eq!(sh(&h, same, "cat /var/vcap/store/marker").await.trim(), "kept");
    assert_eq!(h.store.list::<DiskSpec>("ext/").await.unwrap().items.len(), 2);

    let task = create_task(&h.store, "delete deployment", Some("ext"), "test").await.unwrap();
    let mut d: Object<DeploymentSpec> = h.store.get(None, "ext").await.unwrap();
    d.spec.task = Some(task.spec.id);
    h.store.update_spec(&d).await.unwrap();
    h.store.delete::<DeploymentSpec>(None, "ext", None).await.unwrap();
    let deadline = Duration::from_secs(180);
    bosh_test_utils::eventually(deadline, "the deployment to be gone", || async {
        h.store.try_get::<DeploymentSpec>(None, "ext").await.ok()?.is_none().then_some(())
    })
    .await
    .unwrap();
    assert!(vms_of(&h, "ext").await.is_empty(), "no VM left");
    let disks = h.store.list::<DiskSpec>("ext/").await.unwrap().items;
    assert!(disks.iter().all(|d| d.status.phase == DiskPhase::Orphaned), "{disks:?}");
    h.stop().await.unwrap();
}

/// A stock CPI (no `find_vm_by_request`, `find_disk_by_request` or
/// `list_vms`) whose first `create_vm` makes the VM and loses the reply:
/// the deploy fails naming the call; the instance's retry finds the VM
/// through its agent (which reports the cid its CPI gave it) and adopts
/// it; one VM in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_reply_from_a_stock_cpi_is_adopted_through_the_agent() {
    let disabled = ["find_vm_by_request", "find_disk_by_request", "list_vms"];
    let stock = CpiPath::External { disabled: disabled.iter().map(|m| m.to_string()).collect() };
    let h = Harness::start(HarnessOptions { cpi_path: stock, ..HarnessOptions::containers() })
        .await
        .unwrap();
    assert!(h.director.cpi.list_vms().await.unwrap_err().to_string().contains("not supported"));
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    // Compile first (compile VMs are not the subject here).
    let t = h.apply("stock", manifest("stock", 1, "adopted", 0)).await;
    assert_eq!(h.task_end(t).await.0, TaskState::Done);
    h.faults.set(CpiFaults { lose_create_replies: 1, ..Default::default() });
    let t = h.apply("stock", manifest("stock", 2, "adopted", 0)).await;
    let (state, result) = h.task_end(t).await;
    // The deploy fails as BOSH's does on a CPI error, naming it; the
    // intent (agent id, request id) stays recorded.
    assert_eq!(state, TaskState::Error, "{result}");
    assert!(result.contains("create_vm") && result.contains("lost"), "{result}");
    // The instance controller retries (a transient error backs off): the
    // retry adopts the VM through its agent instead of making another.
    bosh_test_utils::eventually(Duration::from_secs(120), "both instances running", || async {
        let all = h.instances("stock").await;
        let running = all.iter().filter(|i| i.status.phase == Some(InstancePhase::Running));
        (all.len() == 2 && running.count() == 2).then_some(())
    })
    .await
    .unwrap();
    let lost = h.faults.calls().iter().filter(|c| c.method == "create_vm" && c.injected).count();
    assert_eq!(lost, 1, "one reply was lost");
    // What the IaaS holds, read beside the director (its CPI cannot list).
    let local = LocalCpi::open(&h.cpi_root()).unwrap();
    let vms: Vec<_> = local
        .list_vms()
        .await
        .unwrap()
        .into_iter()
        .filter(|v| v.metadata.get("deployment").map(String::as_str) == Some("stock"))
        .collect();
    let instances = h.instances("stock").await;
    assert_eq!(vms.len(), 2, "one VM per instance, none twice: {vms:?}");
    for i in &instances {
        assert!(vms.iter().any(|v| Some(&v.cid) == i.status.vm_cid.as_ref()), "{vms:?}");
        let greeting = super::deploy::greeting(&i.spec.networks[0].ip).await;
        assert!(greeting.is_some_and(|g| g.contains("adopted")));
    }
    h.stop().await.unwrap();
}

/// A CPI executable that stands in for `bosh-local-cpi` in `create_vm`
/// (as `mode` says) and hands every other call, and `create_vm` in mode
/// `pass`, on to it. Writes the script into `dir`; the mode is the
/// content of `dir/mode`.
fn misbehaving_cpi(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let real = bosh_test_utils::agent::local_cpi_binary().unwrap();
    let (real, d) = (real.display(), dir.display());
    let script = format!(
        r#"#!/bin/sh
req=$(cat)
case "$req" in
  *'"method":"create_vm"'*) ;;
  *) printf '%s' "$req" | '{real}'; exit $? ;;
esac
case "$(cat '{d}/mode')" in
  garbage)
    echo 'about to answer garbage' >&2
    echo 'this is not json'
    exit 0 ;;
  exit)
    echo 'create_vm: cannot reach the IaaS endpoint' >&2
    exit 3 ;;
  hang)
    exec sleep 60 ;;
  unknown)
    printf '%s\n' '{{"result":null,"error":{{"type":"Acme::QuotaExploded","message":"acme VM quota exceeded","ok_to_retry":false}},"log":"acme: quota check\n"}}'
    exit 0 ;;
  retry)
    if [ ! -e '{d}/retried' ]; then
      : > '{d}/retried'
      printf '%s\n' '{{"result":null,"error":{{"type":"Bosh::Clouds::VMCreationFailed","message":"no capacity in z1, try again","ok_to_retry":true}},"log":""}}'
      exit 0
    fi ;;
esac
# Behaving: log the request (the director must redact its secrets), then
# let the real CPI answer.
printf 'create_vm request: %s\n' "$req" >&2
printf '%s' "$req" | '{real}'
"#
    );
    let path = dir.join("cpi");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The local CPI's VMs of deployment `name` (read beside the director).
async fn inventory(h: &Harness, name: &str) -> Vec<String> {
    let local = LocalCpi::open(&h.cpi_root()).unwrap();
    let all = local.list_vms().await.unwrap();
    let of =
        all.into_iter().filter(|v| v.metadata.get("deployment").map(String::as_str) == Some(name));
    of.map(|v| v.cid).collect()
}

/// Exactly one VM per instance and one disk per disk intent in
/// deployment `name`, as the CPI holds them (its records, read beside the
/// director, whichever path drove it): the invariant checker's I1–I3 (no
/// untagged VM, at most one per instance, every CPI disk named by one Disk
/// object and attached once), each instance on the VM it records, and
/// each live Disk object's disk the only one on its instance's VM. Run it
/// when the world is quiet.
pub(super) async fn assert_one_vm_and_one_disk_each(h: &Harness, name: &str) {
    use bosh_controllers::testing::invariants::Invariant;
    let broken: Vec<String> = h
        .violations()
        .await
        .unwrap()
        .into_iter()
        .filter(|v| matches!(v.invariant, Invariant::I1 | Invariant::I2 | Invariant::I3))
        .map(|v| v.to_string())
        .collect();
    assert!(broken.is_empty(), "{broken:#?}");
    let held = LocalCpi::inventory(&h.cpi_root()).unwrap();
    let tagged = |v: &bosh_controllers::world::cpi::local::VmRecord| {
        v.metadata.get("deployment").map(String::as_str) == Some(name)
    };
    let vms: Vec<&String> = held.vms.iter().filter(|(_, v)| tagged(v)).map(|(c, _)| c).collect();
    let instances = h.instances(name).await;
    assert_eq!(vms.len(), instances.len(), "one VM per instance: {vms:?}");
    for i in &instances {
        let cid = i.status.vm_cid.as_ref().unwrap_or_else(|| panic!("{i:?} has no VM"));
        assert!(vms.contains(&cid), "{cid} of {} not in {vms:?}", i.metadata.name);
    }
    let intents: Vec<String> = h
        .store
        .list::<DiskSpec>(&format!("{name}/"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|d| d.status.phase != DiskPhase::Orphaned)
        .map(|d| d.status.cid.unwrap_or_else(|| panic!("disk {} has no cid", d.metadata.name)))
        .collect();
    let on_vms: Vec<&String> = held
        .disks
        .iter()
        .filter(|(_, d)| d.attached_to.as_ref().is_some_and(|vm| vms.contains(&vm)))
        .map(|(c, _)| c)
        .collect();
    assert_eq!(on_vms.len(), intents.len(), "one disk per disk intent: {on_vms:?} {intents:?}");
    assert!(intents.iter().all(|c| on_vms.contains(&c)), "{on_vms:?} {intents:?}");
}

/// The CPI logs stored with task `task` (what `boshctl task N --cpi` shows).
async fn cpi_logs(h: &Harness, task: u64) -> Vec<bosh_api::objects::EventSpec> {
    let all = h.events(task).await;
    all.into_iter().filter(|e| e.stage == bosh_api::objects::CPI_LOG_STAGE).collect()
}

/// Bad CPI executables through a deploy, one deployment of one instance
/// each (the packages compiled once, first): a `create_vm` that prints
/// garbage, exits non-zero without JSON, hangs past the call timeout,
/// answers an error type BOSH does not know, or answers
/// `VMCreationFailed` with `ok_to_retry` once. Each fails the deploy with
/// the CPI's message and the method named, keeps the VM intent recorded,
/// and logs what the CPI said to the task; once the CPI behaves (and, for
/// the permanent failures, the operator asks for a recreate, which wakes
/// the instance as BOSH's re-deploy would) the instance runs on exactly
/// one VM. The behaving CPI logs its whole request, and the task's CPI log
/// carries no password of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_cpi_executables_fail_the_deploy_naming_the_call_then_recover() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = misbehaving_cpi(tmp.path());
    let mode = |m: &str| std::fs::write(tmp.path().join("mode"), m).unwrap();
    mode("pass");
    let h = Harness::start(HarnessOptions {
        cpi_path: CpiPath::External { disabled: vec![] },
        cpi_exe: Some(exe),
        cpi_timeout: Some(Duration::from_secs(3)),
        ..HarnessOptions::containers()
    })
    .await
    .unwrap();
    let releases = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(releases.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let started = std::time::Instant::now();
    let mut good = manifest("good", 1, "behaving", 0);
    good["tags"] = serde_json::json!({"team": "rc"});
    let t = h.apply("good", good).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Done, "{result}");
    println!("compiled and deployed through the stand-in in {:?}", started.elapsed());
    // The behaving create_vm logged its request: the task's CPI log has
    // it, with every password redacted (the agent's NATS password is one).
    let logs = cpi_logs(&h, t).await;
    let request = logs
        .iter()
        .find(|e| e.object.starts_with("create_vm") && e.error.contains("create_vm request"))
        .unwrap_or_else(|| panic!("the create_vm request is in the task's CPI log: {logs:?}"));
    assert!(request.error.contains("\"mbus\""), "{}", request.error);
    let pairs = request.error.matches("\"password\":").count();
    assert!(pairs > 0, "{}", request.error);
    assert_eq!(
        pairs,
        request.error.matches("\"password\":\"<redacted>\"").count(),
        "every password redacted: {}",
        request.error
    );
    // BOSH's create_vm env (issue 16 item 4): the agent's NATS credentials
    // in the mbus URL (redacted in the log, present for the agent), a dav
    // blobstore, the groups and the manifest's tags.
    let web = logs
        .iter()
        .map(|e| &e.error)
        .find(|t| t.contains("create_vm request") && t.contains(r#""group":"boshd-good-web""#))
        .unwrap_or_else(|| panic!("the web VM's create_vm request is logged: {logs:?}"));
    for want in [
        r#""mbus":{"urls":["nats://"#,
        r#":<redacted>@"#,
        r#""blobstores":[{"provider":"dav","options":{"endpoint":"http://"#,
        r#""groups":["boshd","good","web","boshd-good","good-web","boshd-good-web"]"#,
        r#""tags":{"team":"rc"}"#,
    ] {
        assert!(web.contains(want), "{want} in {web}");
    }
    let i = &h.instances("good").await[0];
    let settings = sh(&h, i, "cat /var/vcap/bosh/settings.json").await;
    let settings: bosh_api::agent::Settings = serde_json::from_str(&settings).unwrap();
    let (mbus, blobstore) = (&settings.mbus, &settings.blobstore);
    assert!(mbus.url.starts_with("nats://") && !mbus.url.contains('@'), "{mbus:?}");
    assert!(mbus.user.starts_with("agent") && !mbus.password.is_empty(), "{mbus:?}");
    assert!(!blobstore.token.is_empty() && blobstore.url.starts_with("http://"));
    assert!(!web.contains(&mbus.password) && !web.contains(&blobstore.token), "{web}");

    // (mode, what the task's result says, what the task's CPI log says,
    //  whether the instance retries by itself)
    let cases = [
        ("garbage", "Invalid CPI response", "about to answer garbage", false),
        ("exit", "cannot reach the IaaS endpoint", "cannot reach the IaaS endpoint", false),
        ("hang", "timed out after 3s", "timed out after 3s", true),
        ("unknown", "Unknown CPI error 'Acme::QuotaExploded'", "acme: quota check", false),
        ("retry", "no capacity in z1", "", true),
    ];
    for (m, said, logged, retries) in cases {
        let name = format!("bad-{m}");
        mode(m);
        let case_started = std::time::Instant::now();
        let t = h.apply(&name, manifest(&name, 1, m, 0)).await;
        let (state, result) = h.task_end(t).await;
        assert_eq!(state, TaskState::Error, "{m}: {result}");
        assert!(result.contains("create_vm") && result.contains(said), "{m}: {result}");
        let i = &h.instances(&name).await[0];
        assert!(i.status.pending_create.is_some() && i.status.vm_cid.is_none(), "{m}: {i:?}");
        assert!(i.status.agent_id.is_some(), "{m}: the intent names the agent");
        if !logged.is_empty() {
            let logs = cpi_logs(&h, t).await;
            assert!(
                logs.iter().any(|e| e.object.starts_with("create_vm") && e.error.contains(logged)),
                "{m}: {logs:?}"
            );
        }
        mode("pass");
        if !retries {
            let recreate = InstanceOverride { recreate: 1, ..Default::default() };
            let t = h
                .apply_with(&name, |s| {
                    s.instances.insert("web".into(), recreate.clone());
                })
                .await;
            let (state, result) = h.task_end(t).await;
            assert_eq!(state, TaskState::Done, "{m}: {result}");
        }
        bosh_test_utils::eventually(Duration::from_secs(60), "the instance running", || async {
            let all = h.instances(&name).await;
            (all.len() == 1 && all[0].status.phase == Some(InstancePhase::Running)).then_some(())
        })
        .await
        .unwrap();
        let vms = inventory(&h, &name).await;
        let i = &h.instances(&name).await[0];
        assert_eq!(vms.len(), 1, "{m}: one VM: {vms:?}");
        assert_eq!(Some(&vms[0]), i.status.vm_cid.as_ref(), "{m}");
        println!("{m}: failed and recovered in {:?}", case_started.elapsed());
    }
    assert!(tmp.path().join("retried").exists());
    h.stop().await.unwrap();
}

/// A CPI executable that hands every call to `bosh-local-cpi`, and kills
/// it in the first `create_vm` of an instance's VM: after the VM
/// exists (its record is complete: the container runs, its network is
/// made) and before the reply gets out. The real CPI's stdout is a FIFO
/// kept full by a filler nobody reads, so its reply blocks in `write`
/// until the kill: the kill always lands between "made" and "answered".
/// Then the stand-in kills itself, so the director sees what it sees of a
/// CPI killed under it: no output and death by SIGKILL. Writes the script
/// into `dir`; `dir/killed` records the kill.
fn killing_cpi(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let real = bosh_test_utils::agent::local_cpi_binary().unwrap();
    let (real, d) = (real.display(), dir.display());
    let script = format!(
        r#"#!/bin/sh
req=$(cat)
case "$req" in
  *'"method":"create_vm"'*) ;;
  *) printf '%s' "$req" | '{real}'; exit $? ;;
esac
# An instance's VM (a compile VM's request id is `compile-...`), once.
case "$req" in
  *'"request_id":"vm-'*) ;;
  *) printf '%s' "$req" | '{real}'; exit $? ;;
esac
if [ -e '{d}/killed' ]; then
  printf '%s' "$req" | '{real}'; exit $?
fi
: > '{d}/killed'
agent=$(printf '%s' "$req" | sed -n 's/.*"arguments":\["\([^"]*\)".*/\1/p')
data=$(printf '%s' "$req" | sed -n 's/.*"data_dir":"\([^"]*\)".*/\1/p')
rm -f '{d}/reply' && mkfifo '{d}/reply'
exec 3<>'{d}/reply'
head -c 4194304 /dev/zero >&3 2>/dev/null &
filler=$!
printf '%s' "$req" | '{real}' >&3 2>/dev/null &
cpi=$!
# Bounded: 30 s for the VM to be made.
i=0
until grep -ls "\"agent_id\": \"$agent\"" "$data"/records/vms/*.json | xargs -r grep -ls '"netns": "' | grep -q .; do
  i=$((i + 1))
  if [ "$i" -gt 600 ] || ! kill -0 "$cpi" 2>/dev/null; then
    kill -9 "$cpi" "$filler" 2>/dev/null
    echo "the VM of agent $agent was not made while bosh-local-cpi ran" >&2
    exit 4
  fi
  sleep 0.05
done
kill -9 "$cpi" "$filler"
echo "killed bosh-local-cpi (pid $cpi) after it made the VM of agent $agent" >&2
kill -9 $$
"#
    );
    let path = dir.join("cpi");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Issue 16: a stock CPI (no lookups by request id, no listing) killed in
/// the middle of `create_vm`, after the VM exists and before it answers.
/// The call is transient (it may have taken effect): the deploy fails
/// naming it, the instance retries by itself and adopts the VM through
/// its agent; the audit log has one `create_vm` for the instance, the CPI
/// one VM for it, and the next deploy of the same manifest succeeds
/// without another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpi_killed_mid_create_vm_leaves_one_vm_once_retried() {
    use bosh_controllers::world::cpi::local::audit;
    let tmp = tempfile::tempdir().unwrap();
    let exe = killing_cpi(tmp.path());
    let disabled = ["find_vm_by_request", "find_disk_by_request", "list_vms"];
    let h = Harness::start(HarnessOptions {
        cpi_path: CpiPath::External { disabled: disabled.iter().map(|m| m.to_string()).collect() },
        cpi_exe: Some(exe),
        ..HarnessOptions::containers()
    })
    .await
    .unwrap();
    let releases = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(releases.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let started = std::time::Instant::now();
    let t = h.apply("killed", manifest("killed", 1, "survived", 16)).await;
    let (state, result) = h.task_end(t).await;
    assert!(tmp.path().join("killed").exists(), "the stand-in killed bosh-local-cpi");
    assert_eq!(state, TaskState::Error, "{result}");
    assert!(result.contains("create_vm") && result.contains("killed by signal 9"), "{result}");
    bosh_test_utils::eventually(Duration::from_secs(90), "the instance running", || async {
        let all = h.instances("killed").await;
        (all.len() == 1 && all[0].status.phase == Some(InstancePhase::Running)).then_some(())
    })
    .await
    .unwrap();
    println!("killed mid-create_vm, retried and running in {:?}", started.elapsed());
    let i = &h.instances("killed").await[0];
    let greeting = super::deploy::greeting(&i.spec.networks[0].ip).await;
    assert!(greeting.is_some_and(|g| g.contains("survived")));
    let agent = i.status.agent_id.clone().unwrap();
    let creates = || {
        let log = audit::read(&h.cpi_root()).unwrap();
        log.iter()
            .filter(|e| e.method == "create_vm" && e.agent_id.as_ref() == Some(&agent))
            .count()
    };
    assert_eq!(creates(), 1, "one create_vm for the instance: the killed one");
    assert_one_vm_and_one_disk_each(&h, "killed").await;

    let t = h.apply("killed", manifest("killed", 1, "survived", 16)).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Done, "{result}");
    assert_eq!(creates(), 1, "the deploy that succeeds makes no VM");
    assert_one_vm_and_one_disk_each(&h, "killed").await;
    h.stop().await.unwrap();
}
