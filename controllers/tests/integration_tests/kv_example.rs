//! The repository's own links-DNS-errand release, `examples/kv-release`,
//! deployed by `examples/manifests/kv.yml` on container VMs whose resolver
//! is the director's BOSH DNS (issue 15): the web app reaches the kv
//! server by its link's DNS name and answers with kv's values, the
//! `smoke-tests` errand passes through the API, scaling kv re-renders and
//! rolls only its consumers, and an explicit `from:` picks one of two
//! providers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bosh_api::Object;
use bosh_api::objects::{ErrandPhase, ErrandRunSpec, InstanceSpec, TaskState};
use bosh_api::wire::{ErrandRunRef, RunErrandRequest};
use bosh_controllers::testing::{Harness, HarnessOptions, TOKEN};
use bosh_test_utils::eventually;
use serde_json::{Value, json};

use super::deploy::DeployHarness;

/// A started app answering (its deploy task waited for the process): its
/// first request resolves a name and reaches another VM.
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);

/// The deployment's name in `examples/manifests/kv.yml`.
const DEPLOYMENT: &str = "kv";

/// A world of container VMs whose subnet's DNS server is the harness's
/// BOSH DNS, with the stemcell and `examples/kv-release` uploaded.
async fn world(tmp: &Path) -> Harness {
    let h =
        Harness::start(HarnessOptions { dns: true, ..HarnessOptions::containers() }).await.unwrap();
    h.upload_stemcell().await.unwrap();
    h.upload_release(&kv_release(tmp)).await.unwrap();
    h
}

/// A copy of `examples/kv-release` without build state: creating a
/// release writes dev builds into its directory.
fn kv_release(root: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kv-release");
    let dir = root.join("kv-release");
    bosh_test_utils::copy_dir(&src, &dir).unwrap();
    for build_state in [".dev_builds", "dev_releases", ".blobstore"] {
        let _ = std::fs::remove_dir_all(dir.join(build_state));
    }
    dir
}

/// `examples/manifests/kv.yml` on the harness's stemcell (its OS is
/// `local`; the manifest names the Debian stemcell's).
fn example_manifest() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests/kv.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut m = bosh_api::yaml::parse_value(&text, "kv.yml").unwrap();
    m["stemcells"][0]["os"] = "local".into();
    m
}

/// The group named `name` of manifest `m`.
fn group<'a>(m: &'a mut Value, name: &str) -> &'a mut Value {
    let groups = m["instance_groups"].as_array_mut().unwrap();
    groups.iter_mut().find(|g| g["name"] == name).unwrap()
}

/// The deployment's instances of `group`, by index.
async fn of(h: &Harness, group: &str) -> Vec<Object<InstanceSpec>> {
    let mut v: Vec<_> =
        h.instances(DEPLOYMENT).await.into_iter().filter(|i| i.spec.group == group).collect();
    v.sort_by_key(|i| i.spec.index);
    v
}

fn ip(i: &Object<InstanceSpec>) -> &str {
    &i.spec.networks[0].ip
}

/// Waits for instance `i`'s web app to answer `GET /` with 200 and text
/// containing every one of `want`; returns the answer.
async fn web_answers(i: &Object<InstanceSpec>, want: &[&str]) -> String {
    let url = format!("http://{}:8080/", ip(i));
    let client = reqwest::Client::new();
    let last = std::sync::Mutex::new(String::new());
    let got = eventually(ANSWER_DEADLINE, &format!("{url} to answer {want:?}"), || {
        let (client, url, last) = (client.clone(), url.clone(), &last);
        async move {
            let r = client.get(&url).timeout(Duration::from_secs(10)).send().await.ok()?;
            let ok = r.status().is_success();
            let text = r.text().await.ok()?;
            *last.lock().unwrap() = text.clone();
            (ok && want.iter().all(|w| text.contains(w))).then_some(text)
        }
    })
    .await;
    got.unwrap_or_else(|e| panic!("{e}; last answer: {:?}", last.lock().unwrap()))
}

/// The pid of `job`'s process on instance `i` (its ctl's pidfile), read in
/// the VM through its agent.
async fn pid(h: &Harness, i: &Object<InstanceSpec>, job: &str) -> String {
    let agent = h.director.agents.for_agent(i.status.agent_id.clone().unwrap());
    let cmd = vec!["cat".to_string(), format!("/var/vcap/sys/run/{job}/{job}.pid")];
    let r = agent.exec(&cmd, Some(20)).await.unwrap();
    assert_eq!(r.exit_code, 0, "{}", r.stderr);
    r.stdout.trim().to_string()
}

/// Runs errand `errand` through the API, as `boshctl run-errand` does, and
/// returns its task's end state and the finished run.
async fn run_errand(h: &Harness, errand: &str) -> (TaskState, Object<ErrandRunSpec>) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/deployments/{DEPLOYMENT}/errands/{errand}/runs", h.api_url))
        .bearer_auth(TOKEN)
        .json(&RunErrandRequest::default())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r: ErrandRunRef = r.json().await.unwrap();
    let (state, _) = h.task_end(r.task).await;
    (state, h.store.get(Some(DEPLOYMENT), &r.run).await.unwrap())
}

/// Deployed as the example manifest says (web consumes kv implicitly):
/// each web instance answers with kv's seeded greeting, fetched by the
/// link's BOSH DNS name; `smoke-tests` passes and prints its checks;
/// scaling kv to 2 re-renders and restarts both web instances on their
/// VMs and leaves kv/0 alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_example_implicit_link_dns_errand_and_scaling_rolls_only_consumers() {
    let tmp = tempfile::tempdir().unwrap();
    let h = world(tmp.path()).await;
    let mut m = example_manifest();
    let (state, result) = h.task_end(h.apply(DEPLOYMENT, m.clone()).await).await;
    assert_eq!(state, TaskState::Done, "{result}");

    let kv_address = "q-s0.kv.default.kv.bosh";
    let web = of(&h, "web").await;
    assert_eq!(web.len(), 2);
    for (n, i) in web.iter().enumerate() {
        let said = web_answers(
            i,
            &[
                &format!("web/{n} says hello from kv "),
                &format!("kv at {kv_address}:7000, 1 kv instance(s)"),
            ],
        )
        .await;
        println!("web/{n} at {}: {}", ip(i), said.trim());
    }

    let (state, run) = run_errand(&h, "smoke-tests").await;
    assert_eq!((state, run.status.phase), (TaskState::Done, ErrandPhase::Succeeded), "{run:?}");
    let [res] = &run.status.results[..] else { panic!("{:?}", run.status) };
    println!("smoke-tests (exit {:?}):\n{}", res.exit_code, res.stdout);
    assert_eq!(res.exit_code, Some(0), "{res:?}");
    assert!(res.instance.starts_with("smoke-tests/"), "{res:?}");
    let lines: Vec<&str> = res.stdout.lines().collect();
    let want = [
        format!("ok   kv greeting: http://{kv_address}:7000/greeting -> hello from kv"),
        format!("ok   web/0: http://{}:8080/ -> web/0 says hello from kv", ip(&web[0])),
        format!("ok   web/1: http://{}:8080/ -> web/1 says hello from kv", ip(&web[1])),
    ];
    assert_eq!(lines.len(), 4, "{lines:?}");
    for (line, want) in lines.iter().zip(&want) {
        assert!(line.starts_with(want.as_str()), "{line:?} should start with {want:?}");
    }
    assert_eq!(lines[3], "all checks passed");

    // Scale the provider: the consumers re-render (kv's instances are in
    // their config) and restart on their VMs; kv/0 is untouched.
    let kv0 = of(&h, "kv").await.remove(0);
    let kv0_pid = pid(&h, &kv0, "kv").await;
    let mut web_pids = Vec::new();
    for i in &web {
        web_pids.push(pid(&h, i, "web").await);
    }
    group(&mut m, "kv")["instances"] = 2.into();
    let (state, result) = h.task_end(h.apply(DEPLOYMENT, m).await).await;
    assert_eq!(state, TaskState::Done, "{result}");
    let kv = of(&h, "kv").await;
    assert_eq!(kv.len(), 2);
    assert_eq!(kv[0].spec, kv0.spec, "kv/0's spec (config hash and all) is unchanged");
    assert_eq!(kv[0].status.vm_cid, kv0.status.vm_cid, "kv/0 keeps its VM");
    assert_eq!(pid(&h, &kv[0], "kv").await, kv0_pid, "kv/0's server was not restarted");
    let rolled = of(&h, "web").await;
    for (n, (old, new)) in web.iter().zip(&rolled).enumerate() {
        assert_ne!(new.spec.config_hash, old.spec.config_hash, "web/{n} re-rendered");
        assert_eq!(new.status.vm_cid, old.status.vm_cid, "web/{n} rolled on its VM");
        assert_ne!(pid(&h, new, "web").await, web_pids[n], "web/{n}'s app restarted");
        let said = web_answers(new, &["says hello from kv ", "2 kv instance(s)"]).await;
        println!("web/{n} after scaling kv: {}", said.trim());
    }
    h.stop().await.unwrap();
}

/// Two providers of type `kv` (`kv` as `primary`, `kv-b` as `secondary`
/// with another greeting): web's `from: secondary` reaches kv-b by its
/// group's DNS name and answers with its greeting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_example_explicit_from_picks_the_named_provider() {
    let tmp = tempfile::tempdir().unwrap();
    let h = world(tmp.path()).await;
    let mut m = example_manifest();
    // No errand here: its implicit `kv` would have two providers to choose from.
    m["instance_groups"].as_array_mut().unwrap().retain(|g| g["name"] != "smoke-tests");
    let primary = group(&mut m, "kv");
    primary["jobs"][0]["provides"] = json!({"kv": {"as": "primary"}});
    let mut secondary = primary.clone();
    secondary["name"] = "kv-b".into();
    secondary["jobs"][0]["provides"] = json!({"kv": {"as": "secondary"}});
    secondary["jobs"][0]["properties"]["kv"]["seed"] = json!({"greeting": "hello from kv-b"});
    m["instance_groups"].as_array_mut().unwrap().insert(1, secondary);
    let web = group(&mut m, "web");
    web["instances"] = 1.into();
    web["jobs"][0]["consumes"] = json!({"kv": {"from": "secondary"}});
    let (state, result) = h.task_end(h.apply(DEPLOYMENT, m).await).await;
    assert_eq!(state, TaskState::Done, "{result}");

    let web = of(&h, "web").await;
    assert_eq!(web.len(), 1);
    let said = web_answers(
        &web[0],
        &["web/0 says hello from kv-b ", "kv at q-s0.kv-b.default.kv.bosh:7000, 1 kv instance(s)"],
    )
    .await;
    println!("web/0: {}", said.trim());
    h.stop().await.unwrap();
}
