//! G. Security: bus permissions (G1), bus authentication (G2), canary
//! secrets (G5), shell metacharacters in names and properties (G6).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bosh_api::Object;
use bosh_api::objects::*;
use bosh_controllers::testing::{Harness, HarnessOptions, WebManifest};
use bosh_controllers::world::cpi::external::ExternalCpi;
use bosh_controllers::world::cpi::local::{LocalCpi, audit};
use bosh_controllers::world::cpi::{Cpi, CreateVm, VmNetwork};
use bosh_test_utils::eventually;
use futures::StreamExt;
use rand::{Rng, SeedableRng};

use super::super::super::deploy::DeployHarness;
use super::super::{CONVERGE, assert_invariants, iterations, report, seed, world};
use super::{Connected, Logs, RawNats, raw_etcd};

/// Messages (subject, payload) a subscriber saw.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Puts a string at one place in a manifest.
type SetAt = fn(&mut serde_json::Value, &str);

/// Logs in with `creds` (retrying while a reload of nats-server is on its
/// way, as a new agent would).
async fn logged_in(url: &str, user: &str, pass: &str) -> RawNats {
    eventually(Duration::from_secs(20), &format!("{user} to be let in"), || async move {
        match RawNats::connect(url, Some((user, pass))).await {
            Connected::Yes(c) => Some(c),
            Connected::Refused(_) => None,
        }
    })
    .await
    .unwrap()
}

/// G1: agent A's own credentials try to publish on agent B's subjects
/// (`hm.agent.{heartbeat,alert,shutdown}.B`, `director.<uuid>.B.<req>`,
/// `agent.B`, A's own request subject, an `_INBOX` subject) and to
/// subscribe to B's and everyone's (`agent.B`, `agent.>`, `agent.*`, `>`,
/// `hm.agent.>`, `director.>`, `_INBOX.>`). Every attempt is answered
/// with a Permissions Violation naming its subject, and 0 messages reach
/// anyone: not the director's subscribers (one on `>` counts everything
/// A sent), not B, and not A, while the director sends B requests and B
/// heartbeats. A's own heartbeat, sent last, does arrive (the counts are
/// read after it). Each run uses new agents; CI runs once, the full run 20.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_g1_an_agent_cannot_use_another_agents_subjects() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let runs = iterations(1, 20);
    let h =
        Harness::start(HarnessOptions { deploy: false, ..HarnessOptions::new() }).await.unwrap();
    let url = h.director.nats_url.clone();
    let director = h.director.agents.nats();
    // Everything on the bus, as the director (full permissions) sees it.
    let seen: Seen = Arc::default();
    let mut all = director.subscribe(">").await.unwrap();
    let collector = tokio::spawn({
        let seen = seen.clone();
        async move {
            while let Some(m) = all.next().await {
                seen.lock().unwrap().push((m.subject.to_string(), m.payload.to_vec()));
            }
        }
    });
    director.flush().await.unwrap();
    let (mut attempts, mut violations) = (0, 0);
    for run in 0..runs {
        let (a, b) = (format!("g1-a{run}"), format!("g1-b{run}"));
        let ca = h.director.bus.issue(&h.store, &a).await.unwrap();
        let cb = h.director.bus.issue(&h.store, &b).await.unwrap();
        let mut agent_b = logged_in(&url, &cb.user, &cb.password).await;
        let mut agent_a = logged_in(&url, &ca.user, &ca.password).await;
        agent_b.subscribe(&format!("agent.{b}"), 1).await;
        assert!(agent_b.sync().await);
        assert!(agent_b.errors.is_empty(), "B's own subscription: {:?}", agent_b.errors);

        let uuid = uuid::Uuid::from_u64_pair(rng.random(), rng.random());
        let publish = [
            format!("hm.agent.heartbeat.{b}"),
            format!("hm.agent.alert.{b}"),
            format!("hm.agent.shutdown.{b}"),
            format!("director.{uuid}.{b}.{}", rng.random::<u32>()),
            format!("agent.{b}"),
            format!("agent.{a}"),
            format!("_INBOX.{}", rng.random::<u64>()),
        ];
        let subscribe = [
            format!("agent.{b}"),
            "agent.>".to_string(),
            "agent.*".to_string(),
            ">".to_string(),
            "hm.agent.>".to_string(),
            format!("hm.agent.heartbeat.{b}"),
            "director.>".to_string(),
            "_INBOX.>".to_string(),
        ];
        for (sid, s) in subscribe.iter().enumerate() {
            agent_a.subscribe(s, sid as u32 + 1).await;
        }
        for s in &publish {
            agent_a.publish(s, format!("from-A {s}").as_bytes()).await;
        }
        assert!(agent_a.sync().await, "the server closed A's connection");
        let own = format!("hm.agent.heartbeat.{a}");
        agent_a.publish(&own, b"from-A own").await;
        assert!(agent_a.sync().await, "the server closed A's connection");
        attempts += publish.len() + subscribe.len();

        // Every attempt refused, by subject.
        let errs = agent_a.errors.clone();
        for s in &publish {
            let e = format!("Permissions Violation for Publish to \"{s}\"");
            assert!(errs.iter().any(|l| l.contains(&e)), "run {run}: no {e:?} in {errs:?}");
        }
        for s in &subscribe {
            let e = format!("Permissions Violation for Subscription to \"{s}\"");
            assert!(errs.iter().any(|l| l.contains(&e)), "run {run}: no {e:?} in {errs:?}");
        }
        violations += errs.iter().filter(|l| l.contains("Permissions Violation")).count();
        assert_eq!(errs.len(), publish.len() + subscribe.len(), "run {run}: {errs:?}");

        // Traffic A's subscriptions would have caught: requests to B, B's heartbeats.
        for i in 0..10 {
            director.publish(format!("agent.{b}"), format!("for-B {i}").into()).await.unwrap();
            agent_b.publish(&format!("hm.agent.heartbeat.{b}"), b"from-B").await;
        }
        director.flush().await.unwrap();
        assert!(agent_b.sync().await);
        let seen_ref = seen.clone();
        eventually(Duration::from_secs(10), "A's own heartbeat and B's traffic", || {
            let seen = seen_ref.lock().unwrap();
            let own_arrived = seen.iter().any(|(s, p)| s == &own && p == b"from-A own");
            let b_traffic = seen.iter().filter(|(_, p)| p.starts_with(b"from-B")).count();
            let done = own_arrived && b_traffic >= 10;
            async move { done.then_some(()) }
        })
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while agent_b.messages.iter().filter(|(_, p)| p.starts_with(b"for-B")).count() < 10 {
            assert!(Instant::now() < deadline, "run {run}: B did not receive its requests");
            assert!(agent_b.sync().await);
        }
        assert!(agent_a.sync().await);
        let forged: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p)| p.starts_with(b"from-A") && p != b"from-A own")
            .cloned()
            .collect();
        assert!(forged.is_empty(), "run {run}: A's messages were delivered: {forged:?}");
        let at_b: Vec<_> =
            agent_b.messages.iter().filter(|(_, p)| p.starts_with(b"from-A")).collect();
        assert!(at_b.is_empty(), "run {run}: B received A's messages: {at_b:?}");
        assert!(agent_a.messages.is_empty(), "run {run}: A received {:?}", agent_a.messages);
    }
    collector.abort();
    report(
        "G1",
        runs,
        seed,
        &format!(
            "{attempts} publish/subscribe attempts on other agents' subjects, {violations} \
             Permissions Violations (each naming its subject); 0 messages delivered (director's \
             `>` subscriber, B, A)"
        ),
    );
    h.stop().await.unwrap();
}

/// Whether a new connection with `user`/`pass` is refused, and how.
async fn refused(url: &str, user: Option<&str>, pass: &str) -> Option<String> {
    match RawNats::connect(url, user.map(|u| (u, pass))).await {
        Connected::Yes(_) => None,
        Connected::Refused(why) => Some(why),
    }
}

/// G2: agents authenticate to NATS with a user and password of their own
/// (bosh-rs issues no client certificates: the equivalents of "no client
/// cert", "wrong CA" and "expired cert" are no credentials, an unknown user,
/// a wrong password and a deleted VM's credentials). No credentials, an
/// unknown agent user, a real agent's user with another agent's password,
/// the director's user with a wrong password: each refused with
/// `Authorization Violation`. A deployed VM's own credentials work until
/// its deployment is deleted; then they are refused, and a connection
/// opened with them is closed, within 1 sync period — measured from the
/// CPI's `delete_vm` of the VM (target ≤ 10 s; the sync is a reload of
/// nats-server's configuration right after the delete). CI deletes one
/// deployment, the full run 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_g2_only_live_vms_credentials_get_on_the_bus() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let runs = iterations(1, 5);
    let (h, _tmp) = world().await;
    let url = h.director.nats_url.clone();
    let mut worst_refused = Duration::ZERO;
    let mut worst_closed = Duration::ZERO;
    let mut refusals = BTreeMap::new();
    for run in 0..runs {
        let name = format!("g2-{run}");
        let t = h.apply(&name, WebManifest::hello(&name, 1).value()).await;
        h.task_done(t, CONVERGE).await.unwrap();
        let i = h.instances(&name).await.pop().unwrap();
        let (agent, cid) = (i.status.agent_id.unwrap(), i.status.vm_cid.unwrap());
        let user = bosh_controllers::world::bus::user_for(&agent);
        let secret = h.store.get_secret(&format!("nats/agents/{agent}")).await.unwrap().unwrap();
        let pass = String::from_utf8(secret).unwrap();
        let other: String = (0..32).map(|_| rng.random_range(b'a'..=b'z') as char).collect();

        // Bad credentials of every kind.
        let ghost = format!("agent-{}", uuid::Uuid::from_u64_pair(rng.random(), rng.random()));
        for (what, u, p) in [
            ("no credentials", None, ""),
            ("an unknown agent", Some(ghost.as_str()), pass.as_str()),
            ("a wrong password", Some(user.as_str()), other.as_str()),
            ("an empty password", Some(user.as_str()), ""),
            ("the director with a wrong password", Some("director"), other.as_str()),
        ] {
            let why = refused(&url, u, p).await.unwrap_or_else(|| panic!("{what}: let in"));
            assert!(why.contains("Authorization Violation"), "{what}: {why}");
            *refusals.entry(what).or_insert(0) += 1;
        }

        // The VM's own credentials work, until it is deleted.
        let mut open = logged_in(&url, &user, &pass).await;
        let deleted_before = h.cpi.deleted.lock().unwrap().len();
        h.store.delete::<DeploymentSpec>(None, &name, None).await.unwrap();
        let t0 = eventually(CONVERGE, "the VM's delete_vm", || {
            let gone = h.cpi.deleted.lock().unwrap()[deleted_before..].contains(&cid);
            async move { gone.then(Instant::now) }
        })
        .await
        .unwrap();
        let refused_after = eventually(Duration::from_secs(30), "the deleted VM's credentials to be refused", || {
            let (url, user, pass) = (url.clone(), user.clone(), pass.clone());
            async move { refused(&url, Some(&user), &pass).await.map(|why| (t0.elapsed(), why)) }
        })
        .await
        .unwrap();
        assert!(refused_after.1.contains("Authorization Violation"), "{}", refused_after.1);
        let deadline = Instant::now() + Duration::from_secs(30);
        while open.sync().await {
            assert!(Instant::now() < deadline, "the deleted VM's open connection stayed open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let closed_after = t0.elapsed();
        eprintln!(
            "run {run}: refused {:?} and closed {closed_after:?} after delete_vm ({:?})",
            refused_after.0, open.errors
        );
        assert!(
            refused_after.0 <= Duration::from_secs(10),
            "refused only after {:?}",
            refused_after.0
        );
        assert!(closed_after <= Duration::from_secs(10), "closed only after {closed_after:?}");
        worst_refused = worst_refused.max(refused_after.0);
        worst_closed = worst_closed.max(closed_after);
        let conf = std::fs::read_to_string(h.rest.env.dir().join("nats.conf")).unwrap();
        assert!(!conf.contains(&user) && !conf.contains(&pass), "the user is still configured");
        let store = h.store.clone();
        eventually(CONVERGE, "the deployment to be gone", || {
            let (store, name) = (store.clone(), name.clone());
            async move {
                store.try_get::<DeploymentSpec>(None, &name).await.ok()?.is_none().then_some(())
            }
        })
        .await
        .unwrap();
        assert_invariants(&h, &format!("run {run}")).await;
    }
    report(
        "G2",
        runs,
        seed,
        &format!(
            "user/password auth (no client certs in bosh-rs): {refusals:?} all refused with \
             Authorization Violation; a deleted VM's user refused ≤ {worst_refused:.2?} and its \
             open connection closed ≤ {worst_closed:.2?} after delete_vm (target ≤ 10 s)"
        ),
    );
    h.stop().await.unwrap();
}

/// Every regular file under `dir` with its bytes (symlinks not followed).
/// A container VM's merged root (`vms/<cid>/rootfs`) is left out: it is
/// the shared stemcell image under what the VM wrote, and what the VM
/// wrote is its overlay's upper layer (`vms/<cid>/upper`), which is read.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() && !merged_root(&e.path()) {
            out.extend(files(&e.path()));
        } else if t.is_file()
            && let Ok(bytes) = std::fs::read(e.path())
        {
            out.push((e.path(), bytes));
        }
    }
    out
}

/// Restarts the agent of `i`'s VM logging at debug level. A container
/// VM's init starts its agent with an environment of its own, not the
/// test's `RUST_LOG`: the agent binary in the VM is put behind a wrapper
/// that sets it, and the running agent is killed, so that the VM's init
/// starts it again through the wrapper. Returns once the new agent answers.
async fn agent_at_debug_level(h: &Harness, i: &Object<InstanceSpec>) {
    use std::os::unix::fs::PermissionsExt;
    let cid = i.status.vm_cid.as_deref().unwrap();
    let bin = h.cpi_root().join("vms").join(cid).join("rootfs/var/vcap/bosh/bin");
    std::fs::create_dir_all(bin.join("debug")).unwrap();
    std::fs::rename(bin.join("bosh-agent"), bin.join("debug/bosh-agent")).unwrap();
    let wrapper = "#!/bin/sh\nRUST_LOG=debug exec /var/vcap/bosh/bin/debug/bosh-agent \"$@\"\n";
    std::fs::write(bin.join("bosh-agent"), wrapper).unwrap();
    std::fs::set_permissions(bin.join("bosh-agent"), std::fs::Permissions::from_mode(0o755))
        .unwrap();
    let cpi = LocalCpi::open(&h.cpi_root()).unwrap();
    let old = cpi.container_agent_pid(cid).expect("the agent runs");
    // SAFETY: kill(2) has no memory effects.
    assert_eq!(unsafe { libc::kill(old, libc::SIGKILL) }, 0, "kill -9 {old}");
    let agent = h.director.agents.for_agent(i.status.agent_id.clone().unwrap());
    eventually(CONVERGE, "the agent back at debug level", || async {
        let new = cpi.container_agent_pid(cid)?;
        (new != old && agent.get_state(false).await.is_ok()).then_some(())
    })
    .await
    .unwrap();
}

/// Whether `dir` is a container VM's merged root, `vms/<cid>/rootfs`.
fn merged_root(dir: &std::path::Path) -> bool {
    dir.file_name().is_some_and(|n| n == "rootfs")
        && dir
            .parent()
            .and_then(|p| p.parent())
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "vms")
}

/// Where a file of a container VM's directory sits: under the VM's root
/// (what the VM wrote, its overlay's upper layer, `vms/<cid>/upper`), or
/// beside it (the CPI's files: the runc spec, the console log).
fn vm_root_of(vm_dir: &std::path::Path, path: &std::path::Path) -> std::path::PathBuf {
    let upper = vm_dir.join("upper");
    if path.starts_with(&upper) { upper } else { vm_dir.to_path_buf() }
}

/// `bytes`, and, when they are gzip, what they decompress to (a tarball
/// of rendered templates holds its secrets compressed).
fn readable(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut plain = Vec::new();
        let mut gz = flate2::read::GzDecoder::new(bytes);
        if std::io::Read::read_to_end(&mut std::io::Read::take(&mut gz, 64 << 20), &mut plain)
            .is_ok()
        {
            out.extend(plain);
        }
    }
    out
}

/// Which of `canaries` (all starting with `g5c`) occur in `haystack`.
fn found<'a>(canaries: &'a [String], haystack: &[u8]) -> Vec<&'a str> {
    let mut hits = BTreeSet::new();
    for (i, _) in haystack.windows(3).enumerate().filter(|(_, w)| *w == b"g5c") {
        for c in canaries {
            if haystack[i..].starts_with(c.as_bytes()) {
                hits.insert(c.as_str());
            }
        }
    }
    hits.into_iter().collect()
}

/// Whether only the owner (and its group: bosh-agent's root:vcap) may
/// read `path` inside a VM rooted at `root`: the file has no permission
/// for others, or a directory on the way to it cannot be entered by them.
fn private(path: &std::path::Path, root: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode()).unwrap_or(0);
    if mode(path) & 0o007 == 0 {
        return true;
    }
    path.ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(root) && *a != root)
        .any(|a| mode(a) & 0o001 == 0)
}

/// G5: 20 canary secrets planted as the deployment's variables (stored as
/// a config server would hold them; the manifest names only `((c0))` ...
/// `((c19))`) reach the job's templates; a deploy, a deploy that fails in
/// the director (a variable where a watch time belongs) and one that fails
/// on the VM (a variable as the port: pre-start refuses it), all with the
/// in-process director and the agents logging at debug level. None of the
/// canaries occurs in the director's logs, the agents' logs, task events,
/// status objects, any API answer `boshctl` reads, any etcd key or value
/// (all of them, the secret store included: it is encrypted), or any file
/// of the director's (etcd's data and WAL, nats-server's configuration,
/// the CPI's records and audit log); on VMs (decompressing gzip files
/// too) only in files no one but the owner and its group may read (the
/// local CPI's VMs have no tmpfs: modes are checked instead and reported),
/// and in the director's blobstore only in private files (rendered
/// templates, as BOSH's blobstore holds them). One canary is also the VM
/// password (`env.bosh.password`), which goes to the CPI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_g5_canary_secrets_appear_nowhere_but_private_files_on_vms() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // The director logs at debug level; the instance's agent is restarted
    // at debug level after the first deploy (`agent_at_debug_level`: a
    // container VM's agent does not inherit this environment), for the
    // deploys that fail and the last one.
    // SAFETY: set before the world starts any process or reads it.
    unsafe { std::env::set_var("RUST_LOG", "debug") };
    let logs = Logs::capture("debug,h2=info,hyper=info,hyper_util=info,tower=info,rustls=info");
    let (h, _tmp) = world().await;
    let canaries: Vec<String> = (0..20)
        .map(|i| {
            let tail: String = (0..24).map(|_| rng.random_range(b'a'..=b'z') as char).collect();
            format!("g5c{i:02}{tail}")
        })
        .collect();
    for (i, c) in canaries.iter().enumerate() {
        let stored =
            serde_json::json!({"type": "password", "id": format!("planted-{i}"), "value": c});
        h.store
            .create_secret(&format!("variables/g5/c{i}"), stored.to_string().as_bytes())
            .await
            .unwrap();
    }
    let mut m = WebManifest::hello("g5", 1);
    let greeting: Vec<String> = (0..20).map(|i| format!("((c{i}))")).collect();
    m.properties = serde_json::json!({"port": 8080, "greeting": greeting.join(" ")});
    let mut good = m.value();
    // The VM's password, as BOSH manifests pass it to the CPI.
    good["instance_groups"][0]["env"] = serde_json::json!({"bosh": {"password": "((c19))"}});
    good["variables"] =
        (0..20).map(|i| serde_json::json!({"name": format!("c{i}"), "type": "password"})).collect();

    let mut outcomes = Vec::new();
    let t = h.apply("g5", good.clone()).await;
    h.task_done(t, CONVERGE).await.unwrap();
    outcomes.push("deployed".to_string());
    let first = h.instances("g5").await.pop().unwrap();
    agent_at_debug_level(&h, &first).await;
    let mut in_director = good.clone();
    in_director["update"]["canary_watch_time"] = "((c3))".into();
    let mut on_vm = good.clone();
    on_vm["instance_groups"][0]["jobs"][0]["properties"]["port"] = "((c5))".into();
    for (what, manifest) in [("fails in the director", in_director), ("fails on the VM", on_vm)] {
        let t = h.apply("g5", manifest).await;
        let (state, result) = h.task_end(t).await;
        eprintln!("{what}: {state:?}: {result}");
        assert_ne!(state, TaskState::Done, "{what}");
        outcomes.push(format!("{what}: {state:?}"));
    }
    let t = h.apply("g5", good).await;
    h.task_done(t, CONVERGE).await.unwrap();

    // The job got them: its rendered configuration holds all 20.
    let i = h.instances("g5").await.pop().unwrap();
    let state = h
        .director
        .agents
        .for_agent(i.status.agent_id.clone().unwrap())
        .get_state(false)
        .await
        .unwrap();
    assert_eq!(state.job_state, bosh_api::agent::JobState::Running);
    let root = h.cpi_root();
    let vms = root.join("vms");
    let config: Vec<_> = files(&vms)
        .into_iter()
        .filter(|(p, b)| p.ends_with("config/config.json") && found(&canaries, b).len() == 20)
        .collect();
    assert!(!config.is_empty(), "no VM holds the rendered configuration with the canaries");
    // The VM's password reached the CPI (the local CPI keeps what it was
    // given in the VM's settings), while the Instance keeps its placeholder.
    let password = canaries[19].as_str();
    assert!(
        files(&vms)
            .iter()
            .any(|(p, b)| p.ends_with("settings.json") && found(&canaries, b).contains(&password)),
        "the VM password did not reach the CPI"
    );
    assert_eq!(i.spec.env["bosh"]["password"], "((c19))");

    // Logs: the director's (captured), and every file outside VMs' roots
    // (agents log to their VM's console, `vms/<cid>/console.log`).
    let mut leaks: Vec<String> = Vec::new();
    let text = logs.text();
    for c in found(&canaries, text.as_bytes()) {
        let line = text.lines().find(|l| l.contains(c)).unwrap();
        leaks.push(format!("director log: {line}"));
    }
    // etcd: every key and value.
    let etcd = raw_etcd(&h).await;
    let kvs = super::every_key(&etcd).await;
    for (k, v) in &kvs {
        for c in found(&canaries, &[k.as_slice(), v.as_slice()].concat()) {
            leaks.push(format!("etcd {}: {c}", String::from_utf8_lossy(k)));
        }
    }
    // The API, as boshctl reads it.
    let client = reqwest::Client::new();
    let routes = [
        "/v1/deployments",
        "/v1/deployments/g5",
        "/v1/deployments/g5/instances",
        "/v1/deployments/g5/variables",
        "/v1/instances",
        "/v1/disks",
        "/v1/tasks",
        "/v1/events",
        "/v1/configs",
        "/v1/releases",
        "/v1/stemcells",
        "/v1/vms",
    ];
    for r in routes {
        let resp = client
            .get(format!("{}{r}", h.api_url))
            .bearer_auth(bosh_controllers::testing::TOKEN)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{r}: {}", resp.status());
        let body = resp.bytes().await.unwrap();
        for c in found(&canaries, &body) {
            leaks.push(format!("API {r}: {c}"));
        }
    }
    // Files: the director's (etcd data and WAL included), and VMs'.
    let mut on_vms = BTreeMap::new();
    let mut in_blobstore = BTreeSet::new();
    let blobs = h.rest.env.dir().join("blobs");
    let mut scanned = 0;
    let (mut agent_logs, mut agent_debug) = (0, 0);
    for (path, bytes) in files(h.rest.env.dir()) {
        scanned += 1;
        // A container VM's console: its agent's stdout and stderr.
        if path.ends_with("console.log") {
            agent_logs += bytes.len();
            agent_debug += bytes.windows(7).filter(|w| *w == b" DEBUG ").count();
        }
        let hits = found(&canaries, &readable(&bytes));
        if hits.is_empty() {
            continue;
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        // The director's blobstore keeps rendered templates (compressed),
        // as BOSH's does: private files in private directories.
        if let Ok(rel) = path.strip_prefix(&blobs) {
            if !private(&path, &blobs) {
                leaks.push(format!(
                    "blobstore file readable by others: {} ({mode:o})",
                    rel.display()
                ));
            }
            in_blobstore.insert(format!("{mode:o}"));
            continue;
        }
        let vm = path.strip_prefix(&vms).ok().and_then(|r| r.components().next());
        match vm {
            Some(cid) if !path.to_string_lossy().ends_with(".log") => {
                let vm_root = vm_root_of(&vms.join(cid), &path);
                let rel = path.strip_prefix(&vm_root).unwrap().display().to_string();
                if !private(&path, &vm_root) {
                    leaks.push(format!("VM file readable by others: {rel} ({mode:o})"));
                }
                on_vms.insert(rel, format!("{mode:o}"));
            }
            _ => leaks.push(format!("file {}: {} canaries", path.display(), hits.len())),
        }
    }
    assert!(leaks.is_empty(), "canaries leaked:\n{}", leaks.join("\n"));
    // Debug logging was on where it was looked for.
    let director_debug = text.lines().filter(|l| l.contains(" DEBUG ")).count();
    assert!(director_debug > 0, "the director logged nothing at debug level");
    assert!(agent_debug > 0, "the agents logged nothing at debug level ({agent_logs} bytes)");
    assert_invariants(&h, "after G5").await;
    eprintln!("on VMs: {on_vms:#?}");
    report(
        "G5",
        1,
        seed,
        &format!(
            "20 canaries through a deploy, {}; debug logging ({} KB director log, {director_debug} \
             debug lines; {} KB agents' logs, {agent_debug} debug lines): 0 in logs, events, status, {} API routes, {} etcd keys (secret store included), {scanned} \
             director/VM files; on VMs only in owner/group-only files ({}; no tmpfs in the local \
             CPI); in the director's blobstore only in rendered templates, compressed, modes {:?}",
            outcomes[1..].join(", "),
            logs.len() / 1024,
            agent_logs / 1024,
            routes.len(),
            kvs.len(),
            on_vms.iter().map(|(p, m)| format!("{p} {m}")).collect::<Vec<_>>().join(", "),
            in_blobstore
        ),
    );
    h.stop().await.unwrap();
}

/// POSTs `manifest` (as YAML, the way `boshctl deploy` sends it) to
/// `/v1/deployments/<name>/apply`; `name` is percent-encoded as one path
/// segment. Answers the status and the JSON body.
async fn api_apply(
    h: &Harness,
    name: &str,
    manifest: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut url = reqwest::Url::parse(&h.api_url).unwrap();
    url.path_segments_mut().unwrap().extend(["v1", "deployments", name, "apply"]);
    let yaml = bosh_api::yaml::to_string(manifest).unwrap();
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(bosh_controllers::testing::TOKEN)
        .json(&serde_json::json!({"manifest": yaml}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// PUTs cloud config `cloud/<name>` with `content`.
async fn api_put_cloud(
    h: &Harness,
    name: &str,
    content: serde_json::Value,
) -> (u16, serde_json::Value) {
    let obj = Object::new(
        bosh_api::ObjectMeta::named(format!("cloud/{name}")),
        ConfigSpec { type_: ConfigType::Cloud, content },
    );
    let r = reqwest::Client::new()
        .put(format!("{}/v1/configs/cloud/{name}", h.api_url))
        .bearer_auth(bosh_controllers::testing::TOKEN)
        .json(&obj)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Whether `v` holds the string `s` anywhere (as a value).
fn holds(v: &serde_json::Value, s: &str) -> bool {
    match v {
        serde_json::Value::String(x) => x == s,
        serde_json::Value::Array(a) => a.iter().any(|i| holds(i, s)),
        serde_json::Value::Object(m) => m.values().any(|i| holds(i, s)),
        _ => false,
    }
}

/// The current etcd revision.
async fn etcd_revision(c: &etcd_client::Client) -> i64 {
    c.clone().get("/", None).await.unwrap().header().unwrap().revision()
}

/// G6: strings a shell would act on — `a;rm -rf <victim>`, `$(touch M)`,
/// backticks, a newline before a command, `|`, `&&`, quotes that close
/// and reopen, `../..` and a leading `-` — as names and as values.
///
/// - **Names**, through the API as `boshctl` sends them: the deployment's
///   (in the URL), an instance group's, a job's, a release's, a network's,
///   an AZ's, a vm_type's, a stemcell alias, a variable's, and in a cloud
///   config an AZ's, a network's, a vm_type's and a disk type's. Each is
///   refused (422) by the one name rule (`bosh_api::names`: letters,
///   digits, `-`, `_`, `+`, `.`, as BOSH's director), with the manifest
///   path in the error, and nothing changes: the etcd revision and the
///   CPI's audit log are the same before and after all of them.
/// - **Names that arrive later**: an instance group named by a variable
///   (`((n))`, the API cannot see the value) and one written straight to
///   etcd (GitOps, no API): each deploy task fails naming
///   `instance_groups[0].name`, no Instance is made and no CPI call is
///   recorded. (An unchecked name would reach the example job's
///   `pre-start`, which echoes `spec.name` in double quotes.)
/// - **Values** that may hold anything: all the strings, as the `hello`
///   job's `greeting` property (rendered into `config/config.json`, the
///   job started, its pre-start and ctl scripts run) and in the group's
///   `env` (to the CPI and the agent's settings). The job serves the
///   greeting byte for byte and the VM's settings hold the env verbatim;
///   through the external CPI protocol (the `dummy-cpi` fixture, as the
///   harness runs the local CPI) the same strings in cloud properties,
///   env, network cloud properties, disk cloud properties and VM metadata
///   arrive verbatim.
///
/// Pass: no marker file appears and the victim file is still there, after
/// all of it. DNS is not covered: there is no DNS server yet (issue 15).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_g6_names_are_checked_and_no_string_reaches_a_shell() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (h, _tmp) = world().await;
    let marks = tempfile::tempdir().unwrap();
    let tag: u32 = rng.random();
    let mark = |k: usize| marks.path().join(format!("PWNED-{tag:08x}-{k}")).display().to_string();
    let victim = marks.path().join("victim");
    std::fs::write(&victim, b"still here").unwrap();
    let victim_path = victim.display().to_string();
    let hostile: Vec<String> = vec![
        format!("a;rm -rf {victim_path}"),
        format!("$(touch {})", mark(1)),
        format!("`touch {}`", mark(2)),
        format!("x\ntouch {}", mark(3)),
        format!("x | touch {}", mark(4)),
        format!("x && touch {}", mark(5)),
        format!("'; touch {}; '", mark(6)),
        format!("\"; touch {}; \"", mark(7)),
        "../../x".into(),
        "-rf".into(),
    ];
    let untouched = |when: &str| {
        let mut left: Vec<String> = std::fs::read_dir(marks.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["victim"], "{when}: a string was run by a shell");
    };

    // Values: every string in a property rendered into a template, and in env.
    let greeting = hostile.join(" ");
    let mut m = WebManifest::hello("g6", 1);
    m.properties = serde_json::json!({"port": 8080, "greeting": greeting});
    let mut good = m.value();
    good["instance_groups"][0]["env"] = serde_json::json!({"g6": hostile});
    let (status, body) = api_apply(&h, "g6", &good).await;
    assert_eq!(status, 201, "{body}");
    let task = body["task"].as_u64().unwrap();
    h.task_done(task, CONVERGE).await.unwrap();
    let i = h.instances("g6").await.pop().unwrap();
    let ip = i.spec.networks[0].ip.clone();
    let answer = reqwest::get(format!("http://{ip}:8080/")).await.unwrap().text().await.unwrap();
    assert_eq!(answer, format!("{greeting} (from web/0)\n"), "the greeting is served verbatim");
    let vms = h.cpi_root().join("vms");
    let settings: Vec<serde_json::Value> = files(&vms)
        .into_iter()
        .filter(|(p, _)| p.ends_with("settings.json"))
        .filter_map(|(_, b)| serde_json::from_slice(&b).ok())
        .collect();
    for s in &hostile {
        assert!(settings.iter().any(|v| holds(v, s)), "env {s:?} did not reach the VM verbatim");
    }
    untouched("after the deploy");

    // Names through the API: refused, naming the path; nothing changes.
    let etcd = raw_etcd(&h).await;
    let (rev, audited) = (etcd_revision(&etcd).await, audit::read(&h.cpi_root()).unwrap().len());
    let mut refused = 0;
    let mut refuse = |what: &str, status: u16, body: &serde_json::Value, path: &str| {
        let details: Vec<&str> =
            body["details"].as_array().into_iter().flatten().filter_map(|d| d.as_str()).collect();
        assert_eq!(status, 422, "{what}: {body}");
        assert!(
            details
                .iter()
                .any(|d| d.contains(&format!("{path}: ")) && d.contains("is not a valid")),
            "{what}: no error names {path}: {body}"
        );
        refused += 1;
    };
    let locations: [(&str, SetAt); 9] = [
        ("instance_groups[0].name", |m, s| m["instance_groups"][0]["name"] = s.into()),
        ("instance_groups[0].jobs[0].name", |m, s| {
            m["instance_groups"][0]["jobs"][0]["name"] = s.into()
        }),
        ("releases[0].name", |m, s| m["releases"][0]["name"] = s.into()),
        ("instance_groups[0].networks[0].name", |m, s| {
            m["instance_groups"][0]["networks"][0]["name"] = s.into()
        }),
        ("instance_groups[0].azs[0]", |m, s| m["instance_groups"][0]["azs"][0] = s.into()),
        ("instance_groups[0].vm_type", |m, s| m["instance_groups"][0]["vm_type"] = s.into()),
        ("stemcells[0].alias", |m, s| m["stemcells"][0]["alias"] = s.into()),
        ("variables[0].name", |m, s| {
            m["variables"] = serde_json::json!([{"name": s, "type": "password"}])
        }),
        ("name", |_, _| {}),
    ];
    let cloud = h.store.get::<ConfigSpec>(None, "cloud/default").await.unwrap().spec.content;
    for s in &hostile {
        for (path, set) in &locations {
            if *path == "name" {
                // The deployment's name is the URL's (and must be the manifest's).
                let mut m = good.clone();
                m["name"] = s.as_str().into();
                let (status, body) = api_apply(&h, s, &m).await;
                refuse(&format!("deployment {s:?}"), status, &body, "deployment name");
                continue;
            }
            let mut m = good.clone();
            set(&mut m, s);
            let (status, body) = api_apply(&h, "g6", &m).await;
            refuse(&format!("{path} {s:?}"), status, &body, path);
        }
        for (list, what) in [("azs", "az"), ("networks", "network"), ("vm_types", "vm type")] {
            let mut c = cloud.clone();
            c[list][0]["name"] = s.as_str().into();
            let (status, body) = api_put_cloud(&h, "g6", c).await;
            refuse(
                &format!("cloud config {what} {s:?}"),
                status,
                &body,
                &format!("{list}[0].name"),
            );
        }
        let mut c = cloud.clone();
        c["disk_types"] = serde_json::json!([{"name": s, "disk_size": 1024}]);
        let (status, body) = api_put_cloud(&h, "g6", c).await;
        refuse(&format!("disk type {s:?}"), status, &body, "disk_types[0].name");
    }
    assert_eq!(etcd_revision(&etcd).await, rev, "a refused request wrote to etcd");
    assert_eq!(
        audit::read(&h.cpi_root()).unwrap().len(),
        audited,
        "a refused request reached the CPI"
    );

    // Names that arrive later: from a variable, and straight into etcd.
    let mut late = 0;
    for (k, s) in hostile.iter().enumerate() {
        let stored = serde_json::json!({"type": "password", "id": format!("g6-{k}"), "value": s});
        h.store
            .create_secret(&format!("variables/g6v/n{k}"), stored.to_string().as_bytes())
            .await
            .unwrap();
        let mut m = good.clone();
        m["name"] = "g6v".into();
        m["instance_groups"][0]["name"] = format!("((n{k}))").into();
        let (status, body) = api_apply(&h, "g6v", &m).await;
        assert!(status == 200 || status == 201, "a placeholder name is for later: {body}");
        let (state, result) = h.task_end(body["task"].as_u64().unwrap()).await;
        assert_eq!(state, TaskState::Error, "{result}");
        assert!(
            result.contains("instance_groups[0].name: ") && result.contains("is not a valid name"),
            "{result}"
        );
        let mut m = good.clone();
        m["name"] = "g6s".into();
        m["instance_groups"][0]["name"] = s.as_str().into();
        let (state, result) = h.task_end(h.apply("g6s", m).await).await;
        assert_eq!(state, TaskState::Error, "{result}");
        assert!(
            result.contains("instance_groups[0].name: ") && result.contains("is not a valid name"),
            "{result}"
        );
        late += 2;
    }
    assert!(h.instances("g6v").await.is_empty() && h.instances("g6s").await.is_empty());
    assert_eq!(audit::read(&h.cpi_root()).unwrap().len(), audited, "a bad name reached the CPI");
    untouched("after the names");

    // The external CPI protocol: the strings arrive as they were sent.
    let cpi_dir = tempfile::tempdir().unwrap();
    let exe = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dummy-cpi");
    let mut props = serde_json::Map::new();
    props.insert("dir".into(), cpi_dir.path().to_string_lossy().into_owned().into());
    let ext = ExternalCpi::new("dummy", &exe, props);
    let sc = ext
        .create_stemcell(None, std::path::Path::new("/nonexistent"), &serde_json::json!({}))
        .await
        .unwrap();
    let all = serde_json::json!(hostile);
    let mut networks = BTreeMap::new();
    networks.insert(
        "default".to_string(),
        VmNetwork {
            type_: "manual".into(),
            ip: h.subnet.ip(250).to_string(),
            cloud_properties: serde_json::json!({"g6": all}),
            ..Default::default()
        },
    );
    let req = CreateVm {
        request_id: "g6-req".into(),
        agent_id: "g6-agent".into(),
        stemcell_cid: sc,
        cloud_properties: serde_json::json!({"g6": all}),
        networks,
        env: serde_json::json!({"g6": all}),
        ..Default::default()
    };
    let vm = ext.create_vm(None, &req).await.unwrap();
    let md: BTreeMap<String, String> =
        hostile.iter().enumerate().map(|(k, s)| (format!("k{k}"), s.clone())).collect();
    ext.set_vm_metadata(None, &vm, &md).await.unwrap();
    ext.create_disk(None, "g6-disk", 1024, &serde_json::json!({"g6": all}), Some(&vm))
        .await
        .unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cpi_dir.path().join("state.json")).unwrap()).unwrap();
    let rec = &state["vms"][&vm];
    assert_eq!(rec["env"]["g6"], all, "env through the external CPI");
    assert_eq!(rec["networks"]["default"]["cloud_properties"]["g6"], all);
    for (k, s) in &md {
        assert_eq!(rec["metadata"][k].as_str(), Some(s.as_str()), "metadata {k}");
    }
    untouched("at the end");
    assert_invariants(&h, "after G6").await;
    report(
        "G6",
        1,
        seed,
        &format!(
            "{} hostile strings: {refused} names refused through the API (422 naming the path; etcd \
             revision and CPI audit log unchanged), {late} names arriving later (a variable, a \
             direct etcd write) failed their task naming instance_groups[0].name with 0 CPI calls; \
             as a template property and env: served and delivered verbatim; through the external \
             CPI protocol (cloud properties, env, networks, disk, metadata): verbatim; 0 marker \
             files, the rm -rf victim intact; DNS not covered (no DNS server yet, issue 15)",
            hostile.len()
        ),
    );
    h.stop().await.unwrap();
}
