//! The typed store against a real etcd.

use std::time::Duration;

use bosh_api::objects::{ConfigSpec, ConfigType, DeploymentSpec, TaskSpec};
use bosh_api::store::{Error, SecretsKey, Store, StoreConfig, WatchEvent};
use bosh_api::{Object, ObjectMeta};
use bosh_test_utils::TestEnv;
use futures::StreamExt;
use serde_json::json;

async fn env_and_store() -> (TestEnv, Store) {
    let env = TestEnv::etcd_only().await.expect("start etcd");
    let store = Store::connect(&env.store_config(), "/bosh").await.expect("connect");
    (env, store)
}

fn config(name: &str, n: i64) -> Object<ConfigSpec> {
    Object::new(
        ObjectMeta::named(name),
        ConfigSpec { type_: ConfigType::Cloud, content: json!({ "n": n }) },
    )
}

async fn next<S: bosh_api::Kind>(w: &mut bosh_api::store::Watcher<S>) -> WatchEvent<S> {
    tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("a watch event within 20s")
        .expect("watch stream open")
}

/// Create-if-absent, CAS updates of spec and status, and preconditioned delete behave as documented.
#[tokio::test]
async fn crud_round_trip_with_revisions_and_preconditions() {
    let (_env, store) = env_and_store().await;
    let created = store.create(&config("cloud/default", 1)).await.unwrap();
    assert!(!created.metadata.uid.is_empty());
    assert!(created.metadata.generation > 0);
    assert_eq!(created.metadata.status_revision, 0);

    let again = store.create(&config("cloud/default", 2)).await.unwrap_err();
    assert!(matches!(again, Error::AlreadyExists { .. }), "{again}");

    let got: Object<ConfigSpec> = store.get(None, "cloud/default").await.unwrap();
    assert_eq!(got, created);

    // Spec CAS: the first writer wins, the stale one gets Conflict.
    let mut a = got.clone();
    a.spec.content = json!({"n": 10});
    let a = store.update_spec(&a).await.unwrap();
    assert!(a.metadata.generation > got.metadata.generation);
    let mut stale = got.clone();
    stale.spec.content = json!({"n": 11});
    let err = store.update_spec(&stale).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");

    // Status CAS is independent of the spec revision.
    let mut s = a.clone();
    s.status.observed_revision = a.metadata.generation;
    let s = store.update_status(&s).await.unwrap();
    assert!(s.metadata.status_revision > 0);
    assert_eq!(
        s.metadata.generation, a.metadata.generation,
        "status write must not bump generation"
    );
    let err = store.update_status(&a).await.unwrap_err();
    assert!(err.is_conflict(), "a status write based on status revision 0 must conflict: {err}");

    let list = store.list::<ConfigSpec>("").await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].status.observed_revision, a.metadata.generation);

    // Delete with a stale precondition is refused and loses nothing.
    let err = store.delete::<ConfigSpec>(None, "cloud/default", Some(1)).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(store.try_get::<ConfigSpec>(None, "cloud/default").await.unwrap().is_some());
    assert!(
        store
            .delete::<ConfigSpec>(None, "cloud/default", Some(s.metadata.resource_version))
            .await
            .unwrap()
    );
    assert!(store.try_get::<ConfigSpec>(None, "cloud/default").await.unwrap().is_none());
    assert!(store.list::<ConfigSpec>("").await.unwrap().items.is_empty(), "status key must go too");
}

/// With finalizers pending, delete only marks the object; removing the last finalizer removes it.
#[tokio::test]
async fn delete_waits_for_finalizers() {
    let (_env, store) = env_and_store().await;
    let mut d = Object::new(ObjectMeta::named("cf"), DeploymentSpec::default());
    d.metadata.finalizers = vec!["bosh.io/instances".into()];
    store.create(&d).await.unwrap();
    assert!(!store.delete::<DeploymentSpec>(None, "cf", None).await.unwrap());
    let mut marked: Object<DeploymentSpec> = store.get(None, "cf").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    marked.metadata.finalizers.clear();
    store.update_spec(&marked).await.unwrap();
    assert!(store.try_get::<DeploymentSpec>(None, "cf").await.unwrap().is_none());
}

/// 50 concurrent read-modify-write loops lose no increment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_cas_writers_lose_no_update() {
    let (_env, store) = env_and_store().await;
    store.create(&config("cloud/counter", 0)).await.unwrap();
    const WRITERS: i64 = 50;
    const EACH: i64 = 4;
    let mut handles = Vec::new();
    for _ in 0..WRITERS {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            for _ in 0..EACH {
                loop {
                    let mut o: Object<ConfigSpec> = store.get(None, "cloud/counter").await.unwrap();
                    let n = o.spec.content["n"].as_i64().unwrap();
                    o.spec.content = json!({ "n": n + 1 });
                    match store.update_spec(&o).await {
                        Ok(_) => break,
                        Err(e) if e.is_conflict() => conflicts += 1,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for h in handles {
        conflicts += h.await.unwrap();
    }
    let o: Object<ConfigSpec> = store.get(None, "cloud/counter").await.unwrap();
    assert_eq!(o.spec.content["n"], json!(WRITERS * EACH));
    assert!(conflicts > 0, "50 concurrent writers should have raced at least once");
}

/// A watch sees creates, status-only changes and deletes as whole objects, one event per transaction.
#[tokio::test]
async fn watch_reports_whole_objects_once_per_transaction() {
    let (_env, store) = env_and_store().await;
    let mut w = store.watch::<ConfigSpec>(None);
    match next(&mut w).await {
        WatchEvent::Relisted { objects, .. } => assert!(objects.is_empty()),
        e => panic!("expected the initial relist, got {e:?}"),
    }
    // A create that writes spec and status in one transaction is one event.
    let mut c = config("cloud/a", 1);
    c.status.observed_revision = 42;
    store.create(&c).await.unwrap();
    match next(&mut w).await {
        WatchEvent::Applied(o) => {
            assert_eq!(o.metadata.name, "cloud/a");
            assert_eq!(o.status.observed_revision, 42, "status must arrive with the spec");
        }
        e => panic!("expected Applied, got {e:?}"),
    }
    let mut o: Object<ConfigSpec> = store.get(None, "cloud/a").await.unwrap();
    o.status.observed_revision = 43;
    store.update_status(&o).await.unwrap();
    match next(&mut w).await {
        WatchEvent::Applied(o) => {
            assert_eq!(o.spec.content["n"], 1, "a status change carries the spec too");
            assert_eq!(o.status.observed_revision, 43);
        }
        e => panic!("expected Applied, got {e:?}"),
    }
    store.delete::<ConfigSpec>(None, "cloud/a", None).await.unwrap();
    match next(&mut w).await {
        WatchEvent::Deleted { name, .. } => assert_eq!(name, "cloud/a"),
        e => panic!("expected Deleted, got {e:?}"),
    }
}

/// After etcd is killed and restarted, the watch resumes where it was without relisting.
#[tokio::test]
async fn watch_resumes_after_etcd_restart() {
    let (mut env, store) = env_and_store().await;
    let mut w = store.watch::<ConfigSpec>(None);
    assert!(matches!(next(&mut w).await, WatchEvent::Relisted { .. }));
    store.create(&config("cloud/before", 1)).await.unwrap();
    assert!(
        matches!(next(&mut w).await, WatchEvent::Applied(o) if o.metadata.name == "cloud/before")
    );

    env.etcd.stop();
    env.etcd.start_again().await.unwrap();

    // The client reconnects by itself; retry the write until etcd serves it.
    let store2 = store.clone();
    bosh_test_utils::eventually(Duration::from_secs(20), "a write after restart", || {
        let s = store2.clone();
        async move { s.create(&config("cloud/after", 2)).await.ok() }
    })
    .await
    .unwrap();
    match next(&mut w).await {
        WatchEvent::Applied(o) => assert_eq!(o.metadata.name, "cloud/after"),
        e => panic!("expected the watch to resume with Applied(cloud/after), got {e:?}"),
    }
}

/// Watching from a compacted revision relists, and the listing equals what etcd holds.
#[tokio::test]
async fn watch_from_compacted_revision_relists_to_current_state() {
    let (_env, store) = env_and_store().await;
    let start = store.revision().await.unwrap();
    for i in 0..20 {
        store.create(&config(&format!("cloud/c{i:02}"), i)).await.unwrap();
    }
    for i in 0..5 {
        store.delete::<ConfigSpec>(None, &format!("cloud/c{i:02}"), None).await.unwrap();
    }
    let mut o: Object<ConfigSpec> = store.get(None, "cloud/c10").await.unwrap();
    o.status.observed_revision = 7;
    store.update_status(&o).await.unwrap();
    let now = store.revision().await.unwrap();
    store.compact(now).await.unwrap();

    let mut w = store.watch::<ConfigSpec>(Some(start + 1));
    let listed = match next(&mut w).await {
        WatchEvent::Relisted { objects, revision, .. } => {
            assert!(revision >= now);
            objects
        }
        e => panic!("expected a relist after compaction, got {e:?}"),
    };
    let truth = store.list::<ConfigSpec>("").await.unwrap().items;
    assert_eq!(listed.len(), 15);
    assert_eq!(listed, truth);
}

/// Listing pages through more objects than one etcd page holds.
#[tokio::test]
async fn list_pages_through_large_kinds() {
    let (_env, store) = env_and_store().await;
    for i in 0..1203u64 {
        let t = Object::new(
            ObjectMeta::named(format!("{i:08}")),
            TaskSpec { id: i, description: "x".into(), ..Default::default() },
        );
        store.create(&t).await.unwrap();
    }
    let list = store.list::<TaskSpec>("").await.unwrap();
    assert_eq!(list.items.len(), 1203);
    let ids: Vec<u64> = list.items.iter().map(|t| t.spec.id).collect();
    assert_eq!(ids, (0..1203).collect::<Vec<_>>(), "sorted by key, none lost or repeated");
}

/// A fenced store writes while its leader key stands and is refused once the lease is gone.
#[tokio::test]
async fn fenced_writes_are_refused_after_leadership_is_lost() {
    let (_env, store) = env_and_store().await;
    let lease = store.grant_lease(10).await.unwrap();
    let fence = store.try_acquire("test-controller", "replica-a", lease).await.unwrap().unwrap();
    let fenced = store.with_fence(fence.clone());
    fenced.create(&config("cloud/fenced", 1)).await.unwrap();
    let rev = store.revision().await.unwrap();
    fenced.check_fence().await.unwrap();
    assert_eq!(store.revision().await.unwrap(), rev, "a fence check writes nothing");

    // Someone else cannot acquire while the key stands.
    let other = store.grant_lease(10).await.unwrap();
    assert!(store.try_acquire("test-controller", "replica-b", other).await.unwrap().is_none());

    store.revoke_lease(lease).await.unwrap();
    let err = fenced.check_fence().await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "a lost fence is seen before a CPI call: {err}");
    let err = fenced.create(&config("cloud/fenced-2", 1)).await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    let mut o: Object<ConfigSpec> = store.get(None, "cloud/fenced").await.unwrap();
    o.status.observed_revision = 1;
    let err = fenced.update_status(&o).await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");

    let new_fence =
        store.try_acquire("test-controller", "replica-b", other).await.unwrap().unwrap();
    assert!(new_fence.revision > fence.revision, "fencing tokens only grow");
    store.with_fence(new_fence).update_status(&o).await.unwrap();
    // The stale fence stays refused even though a leader key exists again.
    o = store.get(None, "cloud/fenced").await.unwrap();
    let err = fenced.update_status(&o).await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
}

/// Issue 12 item 6: etcd refuses a client without our certificate (plain
/// HTTP, TLS without a client certificate, `etcdctl` without one), and
/// answers one with it.
#[tokio::test]
async fn etcd_serves_only_clients_with_the_certificate() {
    let (env, store) = env_and_store().await;
    store.create_secret("director/api-token", b"the-token").await.unwrap();
    let endpoint = env.etcd.endpoint();

    async fn read(mut c: etcd_client::Client) -> Result<usize, etcd_client::Error> {
        let opts = etcd_client::GetOptions::new().with_prefix();
        Ok(c.get("/bosh/", Some(opts)).await?.kvs().len())
    }
    let plain = StoreConfig::plain(vec![endpoint.clone()]);
    let plain = match plain.client().await {
        Ok(c) => read(c).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(plain.is_err(), "plain HTTP read {plain:?}");

    let ca = std::fs::read(env.etcd.pki().ca()).unwrap();
    let tls = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca));
    let opts = etcd_client::ConnectOptions::new()
        .with_tls(tls)
        .with_timeout(Duration::from_secs(5))
        .with_connect_timeout(Duration::from_secs(5));
    let anonymous =
        match etcd_client::Client::connect([format!("https://{endpoint}")], Some(opts)).await {
            Ok(c) => read(c).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
    assert!(anonymous.is_err(), "TLS without a client certificate read {anonymous:?}");

    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{endpoint}"))
        .arg("--cacert")
        .arg(env.etcd.pki().ca())
        .args([
            "--dial-timeout=2s",
            "--command-timeout=3s",
            "get",
            "/bosh/",
            "--prefix",
            "--keys-only",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "etcdctl without a certificate: {out:?}");

    let out =
        env.etcd.etcdctl().args(["get", "/bosh/", "--prefix", "--keys-only"]).output().unwrap();
    assert!(out.status.success(), "etcdctl with the certificate: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("/bosh/secrets/director/api-token"));
    assert_eq!(read(env.etcd.config().client().await.unwrap()).await.unwrap(), 1);
}

/// Raw bytes of a secret read from etcd (with a valid certificate) hold
/// no plaintext; the store reads the value back.
#[tokio::test]
async fn secrets_are_encrypted_at_rest() {
    let (env, store) = env_and_store().await;
    let value = b"plaintext-password-1234";
    assert_eq!(store.create_secret("nats/director", value).await.unwrap(), value);
    let mut raw = env.etcd.config().client().await.unwrap();
    let resp = raw.get("/bosh/secrets/nats/director", None).await.unwrap();
    let stored = resp.kvs()[0].value();
    assert!(stored.starts_with(b"bosh:enc:aesgcm:v1:"), "{}", String::from_utf8_lossy(stored));
    assert!(!stored.windows(value.len()).any(|w| w == value), "plaintext in etcd");
    assert_eq!(store.get_secret("nats/director").await.unwrap().unwrap(), value);
    let listed = store.list_secrets("nats/").await.unwrap();
    assert_eq!(listed, vec![("nats/director".to_string(), value.to_vec())]);
}

/// A secret written as plaintext (before encryption) still reads, and the
/// read rewrites it encrypted.
#[tokio::test]
async fn plaintext_secrets_are_read_and_rewritten_encrypted() {
    let (env, store) = env_and_store().await;
    let old = Store::connect(&env.etcd.config(), "/bosh").await.unwrap();
    old.create_secret("director/api-token", b"old-token").await.unwrap();
    let mut raw = env.etcd.config().client().await.unwrap();
    let before = raw.get("/bosh/secrets/director/api-token", None).await.unwrap();
    assert_eq!(before.kvs()[0].value(), b"old-token");

    assert_eq!(store.get_secret("director/api-token").await.unwrap().unwrap(), b"old-token");
    let after = raw.get("/bosh/secrets/director/api-token", None).await.unwrap();
    assert!(after.kvs()[0].value().starts_with(b"bosh:enc:aesgcm:v1:"));
    assert_eq!(store.get_secret("director/api-token").await.unwrap().unwrap(), b"old-token");
}

/// A store with another key (or none) cannot read a secret; the error names
/// the key id and never the value.
#[tokio::test]
async fn a_wrong_key_is_a_clear_error_naming_the_key_id() {
    let (env, store) = env_and_store().await;
    store.create_secret("variables/d/password", b"s3cret-value").await.unwrap();
    let wrong = StoreConfig { secrets_key: Some(SecretsKey::generate()), ..env.store_config() };
    let wrong = Store::connect(&wrong, "/bosh").await.unwrap();
    let err = wrong.get_secret("variables/d/password").await.unwrap_err();
    let key_id = env.store_config().secrets_key.unwrap().id().to_string();
    assert!(matches!(&err, Error::Decrypt { key_id: k, .. } if *k == key_id), "{err}");
    assert!(err.to_string().contains(&key_id) && !err.to_string().contains("s3cret"), "{err}");
    let keyless = Store::connect(&env.etcd.config(), "/bosh").await.unwrap();
    assert!(matches!(keyless.list_secrets("").await, Err(Error::Decrypt { .. })));
}

/// With one member of a 3-member etcd killed, a store on every endpoint
/// keeps working: no request goes to the dead member once it is found not
/// to answer (etcd-client's balancer alone sent it about a quarter of them,
/// each failing; FAULT-MATRIX B1), and it is used again after it rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_is_left_out_of_the_balance() {
    let mut cluster = bosh_test_utils::EtcdCluster::start(3, &[]).await.unwrap();
    let store = Store::connect(&cluster.config(), "/bosh").await.unwrap();
    let victim = cluster.leader().await.expect("a leader");
    cluster.kill(victim);
    cluster.wait_new_leader(victim, Duration::from_secs(30)).await.unwrap();
    // Found out within a probe period or two: 20 reads in a row succeed.
    bosh_test_utils::eventually(Duration::from_secs(10), "the dead member left out", || async {
        for _ in 0..20 {
            store.revision().await.ok()?;
        }
        Some(())
    })
    .await
    .unwrap();
    let mut failed = Vec::new();
    for i in 0..200 {
        if let Err(e) = store.create(&config(&format!("cloud/c{i}"), i)).await {
            failed.push(e.to_string());
        }
    }
    assert!(failed.is_empty(), "{} of 200 writes failed: {:?}", failed.len(), failed.first());
    cluster.restart(victim).await.unwrap();
    for i in 0..20 {
        store.get::<ConfigSpec>(None, &format!("cloud/c{i}")).await.unwrap();
    }
}

/// Values under a kind's keys that are not its objects — bad JSON, another
/// kind, metadata naming another key, a garbage status — are left out of
/// listings and reported as quarantined, and watches report them and go
/// on; 50 values near etcd's 1.5 MiB request limit in one kind (70 MB: over
/// one response's decoding limit) list, relist and catch up too (fault
/// matrix F2: a relist or catch-up over such values used to fail for good).
#[tokio::test]
async fn unusable_and_large_values_are_quarantined_not_fatal() {
    let (env, store) = env_and_store().await;
    store.create(&config("cloud/good", 1)).await.unwrap();
    let mut live = store.watch::<ConfigSpec>(None);
    assert!(matches!(next(&mut live).await, WatchEvent::Relisted { .. }));
    let before = store.revision().await.unwrap();
    let raw = env.store_config().client().await.unwrap();
    let record = |kind: &str, name: &str| {
        json!({"apiVersion": "bosh.io/v1alpha1", "kind": kind, "metadata": {"name": name},
               "spec": {"type": "cloud", "content": {}}})
        .to_string()
    };
    let mut bad: Vec<(String, String)> = vec![
        ("spec/cloud/bad-json".into(), "{\"apiVersion\":".into()),
        ("spec/cloud/other-kind".into(), record("Deployment", "cloud/other-kind")),
        ("spec/cloud/misnamed".into(), record("Config", "cloud/else")),
        ("status/cloud/good".into(), "garbage".into()),
    ];
    for i in 0..50 {
        bad.push((format!("spec/cloud/big-{i}"), format!("[\"{}", "x".repeat(1_400_000))));
    }
    for (key, value) in &bad {
        // Straight to etcd on purpose: the store never writes such values.
        #[allow(clippy::disallowed_methods)]
        raw.clone().put(format!("/bosh/configs/{key}"), value.clone(), None).await.unwrap();
    }
    let mut want: Vec<String> = bad
        .iter()
        .map(|(k, _)| k.trim_start_matches("spec/").trim_start_matches("status/").to_string())
        .collect();
    want.sort();

    let list = store.list::<ConfigSpec>("").await.unwrap();
    assert!(list.items.is_empty(), "{:?}", list.items);
    let names: Vec<String> = list.quarantined.iter().map(|q| q.name.clone()).collect();
    assert_eq!(names, want);
    assert!(list.quarantined[0].reason.contains("cloud/bad-json"), "{:?}", list.quarantined[0]);
    let other = list.quarantined.iter().find(|q| q.name == "cloud/other-kind").unwrap();
    assert!(other.reason.contains("kind \"Deployment\""), "{}", other.reason);
    assert!(store.get::<ConfigSpec>(None, "cloud/misnamed").await.unwrap_err().is_undecodable());

    // The live watch, a relist and a catch-up over the same revisions.
    for (what, mut w) in [
        ("relist", store.watch::<ConfigSpec>(None)),
        ("catch-up", store.watch::<ConfigSpec>(Some(before + 1))),
        ("live", live),
    ] {
        // A watch from a revision knows only what changed since: cloud/good's
        // spec is older, so its garbage status names nothing it knows.
        let mut want = want.clone();
        if what == "catch-up" {
            want.retain(|n| n != "cloud/good");
        }
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < want.len() {
            let ev = tokio::time::timeout(Duration::from_secs(30), w.next()).await;
            let ev = ev.unwrap_or_else(|_| panic!("{what}: stalled after {seen:?}")).unwrap();
            match ev {
                WatchEvent::Relisted { objects, quarantined, .. } => {
                    assert!(objects.is_empty(), "{what}");
                    seen.extend(quarantined.into_iter().map(|q| q.name));
                }
                WatchEvent::Quarantined(q) => {
                    seen.insert(q.name);
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), want, "{what}");
        if what == "live" {
            // Fixing the status brings the object back.
            #[allow(clippy::disallowed_methods)]
            raw.clone().delete("/bosh/configs/status/cloud/good", None).await.unwrap();
            match next(&mut w).await {
                WatchEvent::Applied(o) => assert_eq!(o.metadata.name, "cloud/good"),
                other => panic!("{other:?}"),
            }
        }
    }
}

/// A watch whose connection goes silent (a blackholed network: the TCP
/// connection stays open, nothing moves) is given up on and reopened —
/// by the connection's HTTP/2 keep-alive here, or by the watch's own
/// progress check when only the stream is stuck — instead of being waited
/// on for good; once the network is back it delivers what was written
/// meanwhile, nothing missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_watch_is_given_up_and_resumed_without_missing_a_write() {
    use bosh_test_utils::proxy::{Mode, Proxy};
    let (env, direct) = env_and_store().await;
    let mut cfg = env.store_config();
    let target: std::net::SocketAddr = cfg.endpoints[0].parse().expect("host:port endpoint");
    let proxy = Proxy::start(target).await.unwrap();
    cfg.endpoints = vec![proxy.addr().to_string()];
    let through = Store::connect(&cfg, "/bosh").await.unwrap();
    let mut w = through.watch::<ConfigSpec>(None);
    assert!(matches!(next(&mut w).await, WatchEvent::Relisted { .. }));
    let stats = w.stats();

    proxy.set(Mode::Blackhole);
    // Written beside the proxy: the watch cannot see it while blackholed.
    direct.create(&config("cloud/unseen", 1)).await.unwrap();
    // The session is given up (not waited on for good).
    bosh_test_utils::eventually(Duration::from_secs(60), "the silent watch to be given up", || {
        let stats = stats.clone();
        async move { (stats.broken() > 0).then_some(()) }
    })
    .await
    .unwrap();
    proxy.set(Mode::Pass);
    match tokio::time::timeout(Duration::from_secs(60), w.next()).await {
        Ok(Some(WatchEvent::Applied(o))) => assert_eq!(o.metadata.name, "cloud/unseen"),
        other => panic!("expected the resumed watch to deliver cloud/unseen, got {other:?}"),
    }
}
