//! BOSH DNS served by boshd (issue 15 item 2, fault scenario F6): names
//! answered from Instance objects in a real etcd, health followed as the
//! health monitor writes it, other names refused or forwarded, and random
//! packets that never stop the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bosh_api::objects::{
    ConfigSpec, ConfigType, DNS_NUMBERS_NAME, DnsNumbersSpec, GroupType, InstanceHealth,
    InstanceNetwork, InstanceSpec, Wanted,
};
use bosh_api::store::Store;
use bosh_api::{Object, ObjectMeta};
use bosh_controllers::reconcilers::deployment::numbers;
use bosh_controllers::runtime::Reflectors;
use bosh_controllers::server::daemon;
use bosh_controllers::server::dns::{self, DnsConfig, Records, Table};
use bosh_test_utils::eventually;
use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use rand::{Rng, RngCore, SeedableRng};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::setup;

const WAIT: Duration = Duration::from_secs(10);

/// A DNS server on a free loopback port, stopped when dropped.
struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn sockets() -> (SocketAddr, Vec<UdpSocket>, Vec<TcpListener>) {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    (addr, vec![udp], vec![tcp])
}

/// boshd's DNS (the daemon's wiring) over `store`.
async fn start(store: &Store, config: DnsConfig) -> Server {
    let (addr, udp, tcp) = sockets().await;
    let stop = CancellationToken::new();
    tokio::spawn(daemon::run_dns(
        store.clone(),
        Reflectors::default(),
        config,
        udp,
        tcp,
        stop.clone(),
    ));
    Server { addr, stop }
}

/// A DNS server answering from a fixed table (the recursor of the tests).
async fn start_fixed(table: Table, domain: &str) -> Server {
    let (addr, udp, tcp) = sockets().await;
    let stop = CancellationToken::new();
    let records = Records::default();
    records.set(table);
    let config = DnsConfig { domain: domain.into(), ..DnsConfig::default() };
    tokio::spawn(dns::serve(records, config, udp, tcp, stop.clone()));
    Server { addr, stop }
}

fn instance(deployment: &str, index: u32, ip: &str) -> Object<InstanceSpec> {
    let id = format!("00000000-0000-4000-8000-00000000000{index}");
    Object::new(
        ObjectMeta::scoped(deployment, format!("web/{id}")),
        InstanceSpec {
            group: "web".into(),
            id,
            index,
            az: Some("z1".into()),
            networks: vec![InstanceNetwork {
                name: "default".into(),
                ip: ip.into(),
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

/// Writes an instance's health as the health monitor does (status only).
async fn set_health(store: &Store, name: &str, health: InstanceHealth) {
    let mut o = store.get::<InstanceSpec>(Some("hello"), name).await.unwrap();
    o.status.health = Some(health);
    store.update_status(&o).await.unwrap();
}

/// One UDP exchange; `None` when no answer comes within 2 s.
pub(super) async fn ask(server: SocketAddr, name: &str, rd: bool) -> Option<Message> {
    let mut m = Message::query();
    m.metadata.id = rand::rng().random();
    m.metadata.recursion_desired = rd;
    m.metadata.op_code = OpCode::Query;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await.ok()?.ok()?;
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.metadata.id, m.metadata.id);
    Some(reply)
}

pub(super) fn ips(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// Waits until `name` answers exactly `want`.
async fn answers(server: SocketAddr, name: &str, want: &[&str]) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    eventually(WAIT, &format!("{name} to answer {want:?}"), || {
        let want = want.clone();
        async move { ask(server, name, true).await.filter(|m| ips(m) == want).map(|_| ()) }
    })
    .await
    .unwrap();
}

/// Instance, index and group names answer the instances' addresses from
/// etcd; an unhealthy instance leaves the healthy and smart group queries
/// and comes back when healthy; `dig` gets the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bosh_names_answer_instances_and_follow_their_health() {
    let (_env, store) = setup().await;
    let server = start(&store, DnsConfig::default()).await;
    let all = ["10.244.1.50", "10.244.1.51", "10.244.1.52"];
    for (i, ip) in all.iter().enumerate() {
        let mut o = store.create(&instance("hello", i as u32, ip)).await.unwrap();
        o.status.health = Some(InstanceHealth::Running);
        store.update_status(&o).await.unwrap();
    }
    let s = server.addr;
    answers(s, "q-s0.web.default.hello.bosh.", &all).await;
    answers(s, "q-s3.web.default.hello.bosh.", &all).await;
    answers(s, "1.web.default.hello.bosh.", &["10.244.1.51"]).await;
    answers(s, "00000000-0000-4000-8000-000000000002.web.default.hello.bosh.", &["10.244.1.52"])
        .await;
    answers(s, "Q-S0.WEB.Default.hello.bosh.", &all).await;
    let unknown = ask(s, "q-s0.db.default.hello.bosh.", true).await.unwrap();
    assert_eq!(unknown.metadata.response_code, ResponseCode::NXDomain);
    assert!(unknown.metadata.authoritative);

    let web1 = "web/00000000-0000-4000-8000-000000000001";
    set_health(&store, web1, InstanceHealth::Failing).await;
    answers(s, "q-s3.web.default.hello.bosh.", &["10.244.1.50", "10.244.1.52"]).await;
    answers(s, "q-s0.web.default.hello.bosh.", &["10.244.1.50", "10.244.1.52"]).await;
    answers(s, "q-s1.web.default.hello.bosh.", &["10.244.1.51"]).await;
    answers(s, "q-s4.web.default.hello.bosh.", &all).await;
    set_health(&store, web1, InstanceHealth::Running).await;
    answers(s, "q-s3.web.default.hello.bosh.", &all).await;

    let out = tokio::process::Command::new("dig")
        .args([&format!("@{}", s.ip()), "-p", &s.port().to_string()])
        .args(["+short", "+time=2", "+tries=1", "q-s0.web.default.hello.bosh"])
        .output()
        .await
        .expect("dig runs (dnsutils; hack/install-deps.sh)");
    assert!(out.status.success(), "dig: {}", String::from_utf8_lossy(&out.stderr));
    let mut got: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    got.sort();
    assert_eq!(got, all);
}

/// Without recursors a name outside the domain is REFUSED; with one it is
/// forwarded and the recursor's answer (or its NXDOMAIN) comes back; a
/// recursor that never answers gives SERVFAIL after the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_names_are_refused_without_recursors_and_forwarded_with_one() {
    let (_env, store) = setup().await;
    let closed = start(&store, DnsConfig::default()).await;
    let r = ask(closed.addr, "example.com.", true).await.expect("an answer");
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(r.answers.is_empty());

    let mut db = instance("dep", 0, "10.9.9.9");
    db.spec.group = "db".into();
    let upstream = start_fixed(Table::build([&db]), "corp").await;
    let config = DnsConfig {
        recursors: vec![upstream.addr],
        recursor_timeout: Duration::from_millis(500),
        ..DnsConfig::default()
    };
    let open = start(&store, config).await;
    let r = ask(open.addr, "0.db.default.dep.corp.", true).await.expect("an answer");
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.recursion_available);
    assert_eq!(ips(&r), ["10.9.9.9"]);
    let r = ask(open.addr, "7.db.default.dep.corp.", true).await.expect("an answer");
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let r = ask(open.addr, "0.db.default.dep.corp.", false).await.expect("an answer");
    assert_eq!(r.metadata.response_code, ResponseCode::Refused, "no recursion unless asked");

    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let config = DnsConfig {
        recursors: vec![silent.local_addr().unwrap()],
        recursor_timeout: Duration::from_millis(300),
        ..DnsConfig::default()
    };
    let stuck = start(&store, config).await;
    let r = ask(stuck.addr, "example.com.", true).await.expect("an answer");
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
}

/// Panics anywhere in this process (nextest runs each test in its own).
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// F6: 100,000 random packets (seeded; the seed is printed, and
/// `BOSH_DNS_FUZZ_SEED` replays one) — raw bytes and mangled queries,
/// names inside and outside the domain — cause no panic, no answer larger
/// than its query plus a few records, no recursion (no recursor is set:
/// every forwarded-looking name is REFUSED), and the server answers
/// correctly afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_packets_never_panic_or_amplify() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info)
    }));
    let (_env, store) = setup().await;
    let mut o = store.create(&instance("hello", 0, "10.244.1.50")).await.unwrap();
    o.status.health = Some(InstanceHealth::Running);
    store.update_status(&o).await.unwrap();
    let server = start(&store, DnsConfig::default()).await;
    answers(server.addr, "q-s0.web.default.hello.bosh.", &["10.244.1.50"]).await;

    let seed: u64 = std::env::var("BOSH_DNS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("DNS fuzz seed: {seed} (replay with BOSH_DNS_FUZZ_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Every packet with id X has length LENS[X], so a reply with id X
    // tells which query size it answers even when ids repeat.
    let lens: Arc<Vec<usize>> = Arc::new((0..65536).map(|_| rng.random_range(0..600)).collect());
    let names = [
        "q-s0.web.default.hello.bosh.",
        "0.web.default.hello.bosh.",
        "q-a1i0m2n3s4y9.web.default.hello.bosh.",
        "x.bosh.",
        "example.com.",
        "q-.a.b.c.bosh.",
    ];
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let replies = Arc::new(AtomicUsize::new(0));
    let worst = Arc::new(std::sync::Mutex::new((0usize, 0usize)));
    let reader = tokio::spawn({
        let (socket, replies, worst, lens) =
            (socket.clone(), replies.clone(), worst.clone(), lens.clone());
        async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, _)) = socket.recv_from(&mut buf).await else { return };
                replies.fetch_add(1, Ordering::Relaxed);
                if n >= 2 {
                    let q = lens[u16::from_be_bytes([buf[0], buf[1]]) as usize];
                    let mut w = worst.lock().unwrap();
                    if n.saturating_sub(q) > w.0.saturating_sub(w.1) {
                        *w = (n, q);
                    }
                }
                if let Ok(m) = Message::from_vec(&buf[..n]) {
                    assert_eq!(m.metadata.message_type, MessageType::Response);
                    let bosh = Name::from_ascii("bosh.").unwrap();
                    for r in &m.answers {
                        assert!(bosh.zone_of(&r.name), "answer outside bosh.: {}", r.name);
                    }
                }
            }
        }
    });
    for i in 0..100_000u32 {
        let id = (i % 65536) as u16;
        let len = lens[id as usize];
        let mut p = if rng.random_bool(0.5) {
            let mut m = Message::query();
            m.metadata.id = id;
            m.metadata.recursion_desired = rng.random_bool(0.5);
            let name = names[rng.random_range(0..names.len())];
            m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
            let mut p = m.to_vec().unwrap();
            for _ in 0..rng.random_range(0..4) {
                let at = rng.random_range(0..p.len());
                p[at] = rng.random();
            }
            p
        } else {
            let mut p = vec![0u8; len];
            rng.fill_bytes(&mut p);
            p
        };
        p.resize_with(len, || rng.random());
        if len >= 2 {
            p[..2].copy_from_slice(&id.to_be_bytes());
        }
        socket.send_to(&p, server.addr).await.unwrap();
        if i % 256 == 0 {
            // Let the server drain its socket now and then.
            tokio::task::yield_now().await;
        }
    }
    answers(server.addr, "q-s0.web.default.hello.bosh.", &["10.244.1.50"]).await;
    let r = ask(server.addr, "example.com.", true).await.expect("an answer");
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    reader.abort();
    let (resp, query) = *worst.lock().unwrap();
    eprintln!(
        "replies: {}; largest growth: a {query}-byte query got {resp} bytes",
        replies.load(Ordering::Relaxed)
    );
    assert!(replies.load(Ordering::Relaxed) > 0, "the server answered some packets");
    // What a reply may add to its query: the question's name written out
    // in full where the query used compression pointers (at most 255
    // bytes), the one instance's A record (16) and an OPT record (11).
    assert!(resp <= query + 255 + 16 + 11, "a {query}-byte query got {resp} bytes");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "no panic");
}

/// Two boshd replicas started with `--dns-listen` both answer from the
/// same etcd (no leader needed), and stop cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_boshd_replica_answers_bosh_dns() {
    use super::boshd_deploy::{api, spawn_boshd_with};

    let (env, store) = setup().await;
    let mut o = store.create(&instance("hello", 0, "10.244.1.50")).await.unwrap();
    o.status.health = Some(InstanceHealth::Running);
    store.update_status(&o).await.unwrap();
    let etcd = env.boshd_args();
    let mut replicas = Vec::new();
    for r in ["a", "b"] {
        let dns: SocketAddr =
            format!("127.0.0.1:{}", bosh_test_utils::free_port()).parse().unwrap();
        let nats = format!("127.0.0.1:{}", bosh_test_utils::free_port());
        let data = env.dir().join(format!("boshd-{r}"));
        let flags = ["--replica", r, "--nats-listen", &nats, "--dns-listen", &dns.to_string()];
        let child = spawn_boshd_with(&data, &etcd, bosh_test_utils::free_port(), &flags);
        replicas.push((child, dns, data));
    }
    // A replica's DNS listens once it has started (nats-server and all):
    // its API answering says it has, however loaded the machine is.
    for (_, dns, data) in &replicas {
        api(data).await;
        answers(*dns, "q-s0.web.default.hello.bosh.", &["10.244.1.50"]).await;
        let r = ask(*dns, "example.com.", true).await.expect("an answer");
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    }
    for (mut child, _, _) in replicas {
        // SAFETY: signalling a child we spawned and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
        assert!(exit.success(), "boshd exited with {exit}");
    }
}

/// `hello/web` instance `index` in `az` at `ip`, healthy, written to etcd.
async fn healthy(store: &Store, index: u32, az: &str, ip: &str) -> String {
    let mut i = instance("hello", index, ip);
    i.spec.az = Some(az.into());
    let mut o = store.create(&i).await.unwrap();
    o.status.health = Some(InstanceHealth::Running);
    store.update_status(&o).await.unwrap();
    o.spec.id
}

/// What `ids` of `hello/web` on `default` in AZs z1, z2 need numbered.
fn wanted(ids: &[String]) -> Wanted {
    Wanted {
        azs: vec!["z1".into(), "z2".into()],
        networks: vec!["default".into()],
        groups: vec![("hello".into(), "web".into(), GroupType::InstanceGroup)],
        instances: ids.to_vec(),
        links: vec![],
    }
}

fn runtime_config(aliases: serde_json::Value) -> Object<ConfigSpec> {
    Object::new(
        ObjectMeta::named("runtime/dns"),
        ConfigSpec {
            type_: ConfigType::Runtime,
            content: serde_json::json!({ "aliases": aliases }),
        },
    )
}

/// Short names (`q-m<n>n<n>s0.q-g<n>`, `q-s0.q-g<n>`) and AZ filters answer
/// by the numbers the deployment controller's `ensure` wrote to etcd, and
/// a runtime config's aliases answer their group (`*`) and each instance
/// (`_`); a new instance numbered later, and an alias removed, are
/// followed from the watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_names_az_filters_and_aliases_answer_from_etcd() {
    let (_env, store) = setup().await;
    let mut ids = vec![
        healthy(&store, 0, "z1", "10.244.1.50").await,
        healthy(&store, 1, "z2", "10.244.1.51").await,
        healthy(&store, 2, "z2", "10.244.1.52").await,
    ];
    let n = numbers::ensure(&store, None, &wanted(&ids)).await.unwrap();
    let g = n.group("hello", "web", GroupType::InstanceGroup).unwrap();
    let (net, z2) = (n.networks["default"], n.azs["z2"]);
    let target = |q: &str| {
        serde_json::json!({"targets": [{"query": q, "instance_group": "web", "deployment": "hello",
                                         "network": "default", "domain": "bosh"}]})
    };
    let rc = runtime_config(serde_json::json!({
        "web.internal": target("*"),
        "each.web.internal": target("_"),
    }));
    store.create(&rc).await.unwrap();
    let server = start(&store, DnsConfig::default()).await;
    let s = server.addr;
    let all = ["10.244.1.50", "10.244.1.51", "10.244.1.52"];
    let m1 = n.instances[&ids[1]];
    answers(s, &format!("q-m{m1}n{net}s0.q-g{g}.bosh."), &["10.244.1.51"]).await;
    answers(s, &format!("q-s0.q-g{g}.bosh."), &all).await;
    answers(s, &format!("q-n{net}s0.q-g{g}.bosh."), &all).await;
    answers(s, &format!("q-a{z2}s0.q-g{g}.bosh."), &["10.244.1.51", "10.244.1.52"]).await;
    answers(s, &format!("q-a{z2}s0.web.default.hello.bosh."), &["10.244.1.51", "10.244.1.52"])
        .await;
    answers(s, "web.internal.", &all).await;
    answers(s, &format!("{}.each.web.internal.", ids[2]), &["10.244.1.52"]).await;
    let r = ask(s, &format!("q-s0.q-g{}.bosh.", g + 100), true).await.unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let r = ask(s, "00000000-0000-4000-8000-00000000000f.each.web.internal.", true).await.unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "an alias, no such instance");
    assert!(r.metadata.authoritative);

    // A new instance answers its short name once the director numbered it.
    ids.push(healthy(&store, 3, "z1", "10.244.1.53").await);
    let n = numbers::ensure(&store, None, &wanted(&ids)).await.unwrap();
    let m3 = n.instances[&ids[3]];
    assert_eq!(n.instances[&ids[1]], m1, "numbers given stay");
    answers(s, &format!("q-m{m3}n{net}s0.q-g{g}.bosh."), &["10.244.1.53"]).await;

    // An alias removed from the runtime config is no name of ours any more.
    let mut rc = store.get::<ConfigSpec>(None, "runtime/dns").await.unwrap();
    rc.spec.content = serde_json::json!({"aliases": {"each.web.internal": target("_")}});
    store.update_spec(&rc).await.unwrap();
    eventually(WAIT, "web.internal to be refused", || async {
        ask(s, "web.internal.", true)
            .await
            .filter(|m| m.metadata.response_code == ResponseCode::Refused)
            .map(|_| ())
    })
    .await
    .unwrap();
}

/// Eight writers numbering overlapping plans at once (as two replicas'
/// or two deployments' passes may) through etcd's compare-and-swap: every
/// number is given once, each writer gets numbers covering its plan, and
/// what one saw is what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_numbers_are_assigned_once_by_concurrent_writers() {
    let (_env, store) = setup().await;
    let mut writers = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let ids: Vec<String> =
                (0..20).map(|i| format!("inst-{}", (w * 10 + i) % 100)).collect();
            let mut want = wanted(&ids);
            want.azs.push(format!("az-{w}"));
            want.groups.push((format!("dep-{w}"), "web".into(), GroupType::InstanceGroup));
            let got = numbers::ensure(&store, None, &want).await.unwrap();
            assert!(got.covers(&want));
            (want, got)
        }));
    }
    let mut results = Vec::new();
    for w in writers {
        results.push(w.await.unwrap());
    }
    let stored = store.get::<DnsNumbersSpec>(None, DNS_NUMBERS_NAME).await.unwrap().spec;
    let unique = |v: Vec<u32>| {
        let n = v.len();
        let set: std::collections::BTreeSet<u32> = v.into_iter().collect();
        set.len() == n
    };
    assert_eq!(stored.instances.len(), 90, "inst-0..inst-89");
    assert!(unique(stored.instances.values().copied().collect()), "{:?}", stored.instances);
    assert!(unique(stored.azs.values().copied().collect()), "{:?}", stored.azs);
    assert!(unique(stored.groups.iter().map(|g| g.number).collect()), "{:?}", stored.groups);
    assert_eq!(stored.azs.len(), 10);
    assert_eq!(stored.groups.len(), 9);
    assert_eq!(stored.last.instance as usize, stored.instances.len(), "no number lost or reused");
    for (want, got) in results {
        for id in &want.instances {
            assert_eq!(got.instances[id], stored.instances[id], "{id}");
        }
        for az in &want.azs {
            assert_eq!(got.azs[az], stored.azs[az], "{az}");
        }
    }
}
