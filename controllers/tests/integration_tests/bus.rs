//! Bus security against a real nats-server: agents are confined to their own subjects.

use std::time::Duration;

use bosh_controllers::world::bus::{Bus, BusConfig, Credentials};
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

    let a = bus.issue(&store, "a").await.unwrap();
    let b = bus.issue(&store, "b").await.unwrap();
    assert_ne!(a.password, b.password);
    assert_eq!(
        bus.issue(&store, "a").await.unwrap(),
        a,
        "issuing again returns the same credentials"
    );
    // Reloads are applied asynchronously and in order: once B (issued last)
    // can connect, no reload is pending that could race A's subscriptions.
    let _agent_b = eventually(DEADLINE, "B's credentials to be accepted", || {
        let (url, b) = (url.clone(), b.clone());
        async move { connect(&url, &b).await.ok() }
    })
    .await
    .unwrap();
    let agent_a = connect(&url, &a).await.unwrap();

    // Publishing: B's heartbeat subject is refused, A's own is delivered.
    // (nats-server 2.9 may also drop a message that follows a refused one in
    // the same packet, so each round sends them in separate flushes and
    // rounds repeat until A's own heartbeat arrives.)
    let mut heartbeats = director.subscribe("hm.agent.heartbeat.*").await.unwrap();
    director.flush().await.unwrap();
    let mut received = Vec::new();
    let deadline = std::time::Instant::now() + DEADLINE;
    while !received.iter().any(|s: &String| s == "hm.agent.heartbeat.a") {
        assert!(std::time::Instant::now() < deadline, "A's own heartbeat never arrived");
        agent_a.publish("hm.agent.heartbeat.b", "forged".into()).await.unwrap();
        agent_a.flush().await.unwrap();
        agent_a.publish("hm.agent.heartbeat.a", "legit".into()).await.unwrap();
        agent_a.flush().await.unwrap();
        if let Ok(Some(m)) =
            tokio::time::timeout(std::time::Duration::from_secs(1), heartbeats.next()).await
        {
            received.push(m.subject.to_string());
        }
    }
    assert!(
        received.iter().all(|s| s == "hm.agent.heartbeat.a"),
        "a forged heartbeat got through: {received:?}"
    );

    // Subscribing: B's request subject stays silent for A, A's own works and A may reply.
    // The refused subscription makes the server send -ERR, after which the
    // client may reconnect; so each round publishes B's secret right
    // before pinging A, and the round whose ping is answered proves that A,
    // subscribed at that moment, was not given the secret (one connection
    // delivers in order: the secret would have arrived before the ping).
    let mut snoop = agent_a.subscribe("agent.b").await.unwrap();
    let mut own = agent_a.subscribe("agent.a").await.unwrap();
    agent_a.flush().await.unwrap();
    let responder_client = agent_a.clone();
    let responder = tokio::spawn(async move {
        while let Some(msg) = own.next().await {
            if let Some(reply) = msg.reply {
                let _ = responder_client.publish(reply, "pong".into()).await;
                let _ = responder_client.flush().await;
            }
        }
    });
    let reply = eventually(DEADLINE, "A to answer its own request", || {
        let director = director.clone();
        async move {
            director.publish("agent.b", "secret".into()).await.ok()?;
            director.request("agent.a", "ping".into()).await.ok()
        }
    })
    .await
    .unwrap();
    assert_eq!(&reply.payload[..], b"pong");
    assert!(snoop.next().now_or_never().is_none(), "A read a request meant for B");
    responder.abort();

    // Revocation closes A out.
    bus.revoke(&store, "a").await.unwrap();
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

/// A pid file left behind by a nats-server that is gone names another
/// process (here: this test): syncing signals nobody and succeeds, so a
/// director restarts cleanly after a crash.
#[tokio::test]
async fn a_stale_pid_file_is_not_signalled() {
    let (env, store) = setup().await;
    let pid = env.dir().join("nats.pid");
    std::fs::write(&pid, std::process::id().to_string()).unwrap();
    let cfg = BusConfig::generate(env.dir().join("nats.conf"), pid, "127.0.0.1:4222".into());
    let bus = Bus::new(store.clone(), cfg);
    bus.sync().await.unwrap();
    bus.issue(&store, "a1").await.unwrap();
    // Still alive: a SIGHUP would have ended this test process.
    assert!(std::fs::read_to_string(env.dir().join("nats.conf")).unwrap().contains("agent-a1"));
}

/// Two replicas render one nats-server configuration: agents issued by
/// either at once all end up in it, and a render from an older reading
/// never replaces a newer one.
#[tokio::test]
async fn replicas_render_one_configuration_newest_wins() {
    let (env, store) = setup().await;
    let conf = env.dir().join("nats.conf");
    let cfg =
        BusConfig::generate(conf.clone(), env.dir().join("nats.pid"), "127.0.0.1:4222".into());
    let (a, b) = (Bus::new(store.clone(), cfg.clone()), Bus::new(store.clone(), cfg.clone()));
    let (ra, rb) = tokio::join!(a.issue(&store, "from-a"), b.issue(&store, "from-b"));
    ra.unwrap();
    rb.unwrap();
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains("agent-from-a") && text.contains("agent-from-b"), "{text}");

    let director = format!("password: {:?}", cfg.director.password);
    let newer = format!("# boshd revision: 999999999\n{{user: \"director\", {director}}}\n");
    std::fs::write(&conf, &newer).unwrap();
    a.sync().await.unwrap();
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), newer, "a newer render stays");
    std::fs::write(&conf, newer.replace("999999999", "1")).unwrap();
    a.sync().await.unwrap();
    assert!(std::fs::read_to_string(&conf).unwrap().contains("agent-from-b"), "older: replaced");
    // Rendered from another etcd (other director credentials): replaced,
    // whatever revision it names.
    std::fs::write(&conf, "# boshd revision: 999999999\n{password: \"other\"}\n").unwrap();
    a.sync().await.unwrap();
    assert!(std::fs::read_to_string(&conf).unwrap().contains("agent-from-b"), "foreign: replaced");
}
