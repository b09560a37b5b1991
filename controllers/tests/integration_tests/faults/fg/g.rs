//! G. Security: bus permissions (G1), bus authentication (G2), canary
//! secrets (G5), shell metacharacters in names and properties (G6).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bosh_api::objects::*;
use bosh_api::{Kind, Object};
use bosh_controllers::testing::{Harness, HarnessOptions, WebManifest};
use bosh_test_utils::eventually;
use futures::StreamExt;
use rand::{Rng, SeedableRng};

use super::super::super::deploy::DeployHarness;
use super::super::{CONVERGE, assert_invariants, iterations, report, seed, world};
use super::{Connected, Logs, RawNats, raw_etcd};

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
        Harness::start(HarnessOptions { deploy: false, ..HarnessOptions::new(155) }).await.unwrap();
    let url = h.director.nats_url.clone();
    let director = h.director.agents.nats();
    // Everything on the bus, as the director (full permissions) sees it.
    let seen: Arc<Mutex<Vec<(String, Vec<u8>)>>> = Arc::default();
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
    let (h, _tmp) = world(156).await;
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
        let user = bosh_controllers::bus::user_for(&agent);
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
