//! Bus security against a real nats-server: agents are confined to their own subjects.

use std::time::Duration;

use bosh_controllers::bus::{Bus, BusConfig, Credentials};
use bosh_test_utils::{Nats, eventually};
use futures::{FutureExt, StreamExt};

use super::{DEADLINE, setup};

async fn connect(
    url: &str,
    c: &Credentials,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::with_user_and_password(c.user.clone(), c.password.clone())
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await
}

/// Agent A can neither read B's requests nor publish B's heartbeats, can answer its own, and is cut off when revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_confined_to_their_own_subjects() {
    let (env, store) = setup().await;
    let dir = env.dir().to_path_buf();
    let cfg =
        BusConfig::generate(dir.join("nats.conf"), dir.join("nats.pid"), "127.0.0.1:4222".into());
    let bus = Bus::new(store.clone(), cfg.clone());
    bus.sync().await.unwrap();
    let conf = dir.join("nats.conf");
    let pid = dir.join("nats.pid");
    let nats = Nats::start_in(&dir, &["-c", conf.to_str().unwrap(), "-P", pid.to_str().unwrap()])
        .await
        .unwrap();
    let url = nats.url();
    let director = connect(&url, &cfg.director).await.unwrap();

    let a = bus.issue("a").await.unwrap();
    let b = bus.issue("b").await.unwrap();
    assert_ne!(a.password, b.password);
    assert_eq!(bus.issue("a").await.unwrap(), a, "issuing again returns the same credentials");
    let agent_a = eventually(DEADLINE, "A's credentials to be accepted", || {
        let (url, a) = (url.clone(), a.clone());
        async move { connect(&url, &a).await.ok() }
    })
    .await
    .unwrap();

    // Publishing: B's heartbeat subject is refused, A's own is delivered.
    let mut heartbeats = director.subscribe("hm.agent.heartbeat.*").await.unwrap();
    director.flush().await.unwrap();
    agent_a.publish("hm.agent.heartbeat.b", "forged".into()).await.unwrap();
    agent_a.publish("hm.agent.heartbeat.a", "legit".into()).await.unwrap();
    agent_a.flush().await.unwrap();
    let first = tokio::time::timeout(DEADLINE, heartbeats.next()).await.unwrap().unwrap();
    assert_eq!(first.subject.as_str(), "hm.agent.heartbeat.a", "a forged heartbeat got through");

    // Subscribing: B's request subject stays silent for A, A's own works and A may reply.
    let mut snoop = agent_a.subscribe("agent.b").await.unwrap();
    let mut own = agent_a.subscribe("agent.a").await.unwrap();
    agent_a.flush().await.unwrap();
    let responder = tokio::spawn(async move {
        let msg = own.next().await.unwrap();
        agent_a.publish(msg.reply.unwrap(), "pong".into()).await.unwrap();
        agent_a.flush().await.unwrap();
        (agent_a, snoop.next().now_or_never())
    });
    director.publish("agent.b", "secret".into()).await.unwrap();
    let reply = tokio::time::timeout(DEADLINE, director.request("agent.a", "ping".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&reply.payload[..], b"pong");
    let (agent_a, snooped) = responder.await.unwrap();
    assert!(snooped.is_none(), "A read a request meant for B");

    // Revocation closes A out.
    bus.revoke("a").await.unwrap();
    eventually(DEADLINE, "A's credentials to be refused", || {
        let (url, a) = (url.clone(), a.clone());
        async move { connect(&url, &a).await.is_err().then_some(()) }
    })
    .await
    .unwrap();
    eventually(DEADLINE, "A's open connection to be closed", || {
        let state = agent_a.connection_state();
        async move { (state != async_nats::connection::State::Connected).then_some(()) }
    })
    .await
    .unwrap();
    assert!(connect(&url, &b).await.is_ok(), "B is unaffected");
    let conf_text = std::fs::read_to_string(&conf).unwrap();
    assert!(!conf_text.contains(&a.password), "revoked password left in the config");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777, 0o600);
}
