//! The boshd binary against a real etcd: GitOps writes are validated, and
//! SIGTERM stops it cleanly.

use bosh_api::meta::find_condition;
use bosh_api::objects::ConditionType;
use bosh_api::objects::{ConfigSpec, ConfigType, DeploymentSpec};
use bosh_api::{ConditionStatus, Object, ObjectMeta};
use bosh_test_utils::{SubnetLease, eventually};
use std::process::{Command, Stdio};

use super::{DEADLINE, setup};

/// The cloud config: one AZ, one vm_type, one manual network on `subnet`.
fn cloud(subnet: &SubnetLease) -> serde_json::Value {
    let (range, ip) = (subnet.range(), |host| subnet.ip(host));
    let src = format!(
        "
azs: [{{name: z1}}]
vm_types: [{{name: small}}]
networks:
- name: default
  type: manual
  subnets: [{{range: {range}, gateway: {}, azs: [z1], static: [{} - {}]}}]
compilation: {{workers: 1, az: z1, vm_type: small, network: default}}
",
        ip(1),
        ip(10),
        ip(20)
    );
    bosh_api::yaml::parse_value(&src, "cloud.yml").unwrap()
}

fn manifest(name: &str, vm_type: &str, release: &str) -> serde_json::Value {
    let src = format!(
        "
name: {name}
releases: [{{name: app, version: '1'}}]
stemcells: [{{alias: default, os: ubuntu-jammy, version: latest}}]
update: {{canaries: 1, max_in_flight: 1, canary_watch_time: 1000, update_watch_time: 1000}}
instance_groups:
- name: web
  instances: 2
  azs: [z1]
  vm_type: {vm_type}
  stemcell: default
  networks: [{{name: default}}]
  jobs: [{{name: web, release: {release}}}]
"
    );
    bosh_api::yaml::parse_value(&src, "test.yml").unwrap()
}

/// boshd marks GitOps-written deployments Invalid with every error's path, valid ones not, and exits cleanly on SIGTERM.
#[tokio::test]
async fn boshd_validates_gitops_writes_and_stops_on_sigterm() {
    let (env, store) = setup().await;
    let subnet = SubnetLease::acquire();
    let cloud = Object::new(
        ObjectMeta::named("cloud/default"),
        ConfigSpec { type_: ConfigType::Cloud, content: cloud(&subnet) },
    );
    store.create(&cloud).await.unwrap();
    let deploy = |name: &str, m| {
        Object::new(ObjectMeta::named(name), DeploymentSpec { manifest: m, ..Default::default() })
    };
    store.create(&deploy("good", manifest("good", "small", "app"))).await.unwrap();
    store.create(&deploy("bad", manifest("bad", "huge", "nope"))).await.unwrap();

    let log = std::fs::File::create(env.dir().join("boshd.log")).unwrap();
    let mut boshd = Command::new(env!("CARGO_BIN_EXE_boshd"))
        .args(env.boshd_args())
        .args(["--lease-ttl-secs", "3", "--listen", "127.0.0.1:0"])
        .args(["--nats-listen", &format!("127.0.0.1:{}", bosh_test_utils::free_port())])
        .arg("--data-dir")
        .arg(env.dir().join("boshd"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();

    let status_of = |name: &'static str| {
        let s = store.clone();
        async move {
            let d: Object<DeploymentSpec> = s.get(None, name).await.ok()?;
            find_condition(&d.status.conditions, ConditionType::Invalid).cloned()
        }
    };
    let good = eventually(DEADLINE, "good to be validated", || status_of("good")).await.unwrap();
    assert_eq!(good.status, ConditionStatus::False, "{good:?}");
    let bad = eventually(DEADLINE, "bad to be validated", || status_of("bad")).await.unwrap();
    assert_eq!(bad.status, ConditionStatus::True);
    assert!(bad.message.contains("instance_groups[0].jobs[0].release"), "{}", bad.message);
    let d: Object<DeploymentSpec> = store.get(None, "bad").await.unwrap();
    assert_eq!(d.status.observed_revision, 0, "an invalid generation is not observed");

    // A fix written straight into etcd is picked up. Written as a GitOps
    // tool writes: read, edit, compare-and-swap, again on a conflict (boshd
    // may write the spec in between, e.g. its finalizer).
    let fixed = eventually(DEADLINE, "the fix to be written", || {
        let s = store.clone();
        async move {
            let mut d: Object<DeploymentSpec> = s.get(None, "bad").await.ok()?;
            d.spec.manifest = manifest("bad", "small", "app");
            s.update_spec(&d).await.ok()
        }
    })
    .await
    .unwrap();
    eventually(DEADLINE, "the fix to be observed", || {
        let s = store.clone();
        async move {
            let d: Object<DeploymentSpec> = s.get(None, "bad").await.ok()?;
            // At or after the fix: boshd may write the spec again (its
            // finalizer), and every spec write is a new generation.
            (d.status.observed_revision >= fixed.metadata.generation).then_some(())
        }
    })
    .await
    .unwrap();

    // The API it serves answers with the token it generated.
    let director: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.dir().join("boshd/director.json")).unwrap())
            .unwrap();
    let token = std::fs::read_to_string(director["token_file"].as_str().unwrap()).unwrap();
    let url = director["url"].as_str().unwrap();
    let r = reqwest::Client::new()
        .get(format!("{url}/v1/deployments/bad"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Issue 12 item 6: its secrets are private on disk, and encrypted in etcd.
    let data = env.dir().join("boshd");
    let mode = |f: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(data.join(f)).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(""), 0o700, "the data dir");
    for f in ["api-token", "blobstore-token", "director.json", "nats.conf"] {
        assert_eq!(mode(f), 0o600, "{f}");
    }
    let mut raw = env.etcd.config().client().await.unwrap();
    let stored = raw.get("/bosh/secrets/director/api-token", None).await.unwrap();
    let stored = stored.kvs()[0].value();
    assert!(stored.starts_with(b"bosh:enc:aesgcm:v1:"), "the API token is encrypted in etcd");
    assert!(!stored.windows(token.trim().len()).any(|w| w == token.trim().as_bytes()));

    // SIGTERM: a clean exit that gives leadership up at once.
    // SAFETY: signalling a child we spawned and have not reaped.
    unsafe { libc::kill(boshd.id() as i32, libc::SIGTERM) };
    let exit = tokio::task::spawn_blocking(move || boshd.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "boshd exited with {exit}");
    let leader = store.leader("deployment-validator").await.unwrap();
    assert!(leader.is_none(), "boshd must resign on shutdown: {leader:?}");
}
