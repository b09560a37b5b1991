//! Links end to end: a consumer job's template reads the provider's
//! instances and a property through `link(..)`, on container VMs; scaling
//! the provider re-renders and rolls the consumer and nothing else; an
//! unresolvable link fails the deploy before any VM is made.

use std::path::{Path, PathBuf};

use bosh_api::Object;
use bosh_api::objects::{DeploymentSpec, InstanceSpec, TaskState};
use bosh_controllers::testing::{Harness, HarnessOptions, WebManifest};
use serde_json::{Value, json};

use super::compile::write;

/// Deploying and rolling container VMs on a loaded machine.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(180);
use super::deploy::{DeployHarness, world};

/// A release of two process-less jobs: `server` provides `conn` (type
/// `srv`) exposing its `port`; `client` consumes it and writes the
/// provider's addresses and port into `config/peers`, and provides `back`
/// (type `cli`), which `server` optionally consumes into `config/back`.
fn linked_release(root: &Path) -> PathBuf {
    let dir = root.join("linked-release");
    write(&dir, "config/final.yml", "name: linked\n");
    write(
        &dir,
        "jobs/server/spec",
        "---\nname: server\ntemplates: {conf.erb: config/conf, back.erb: config/back}\n\
         provides: [{name: conn, type: srv, properties: [port]}]\n\
         consumes: [{name: back, type: cli, optional: true}]\n\
         properties: {port: {default: 1}}\n",
    );
    write(&dir, "jobs/server/monit", "");
    write(&dir, "jobs/server/templates/conf.erb", "port <%= p('port') %>\n");
    write(
        &dir,
        "jobs/server/templates/back.erb",
        "<% if_link('back') do |b| %><%= b.instances.map(&:address).join(',') %><% end %>\n",
    );
    write(
        &dir,
        "jobs/client/spec",
        "---\nname: client\ntemplates: {peers.erb: config/peers}\n\
         consumes: [{name: conn, type: srv}]\n\
         provides: [{name: back, type: cli}]\n",
    );
    write(&dir, "jobs/client/monit", "");
    write(
        &dir,
        "jobs/client/templates/peers.erb",
        "<%= link('conn').instances.map(&:address).join(',') %> port=<%= link('conn').p('port') %>",
    );
    dir
}

/// Groups `srv` (`servers` instances of `server`, port 7000) and `cli`
/// (one `client`, consuming `conn` as `consumes` says).
fn manifest(servers: u32, consumes: Value) -> Value {
    let mut m = WebManifest::job("linked", "linked", "server").value();
    let mut srv = m["instance_groups"][0].clone();
    srv["name"] = "srv".into();
    srv["instances"] = servers.into();
    srv["jobs"][0]["properties"] = json!({"port": 7000});
    // The server's optional `back` is wired only where a test says so.
    srv["jobs"][0]["consumes"] = json!({"back": null});
    let mut cli = m["instance_groups"][0].clone();
    cli["name"] = "cli".into();
    cli["jobs"] = json!([{"name": "client", "release": "linked", "consumes": consumes}]);
    m["instance_groups"] = json!([srv, cli]);
    m
}

/// The consumer's rendered `config/peers`, read in its VM through its agent.
async fn peers(h: &Harness, i: &Object<InstanceSpec>) -> String {
    let agent = h.director.agents.for_agent(i.status.agent_id.clone().unwrap());
    let cmd = vec!["cat".to_string(), "/var/vcap/jobs/client/config/peers".to_string()];
    let r = agent.exec(&cmd, Some(20)).await.unwrap();
    assert_eq!(r.exit_code, 0, "{}", r.stderr);
    r.stdout
}

/// The deployment's instances of `group`, by index.
async fn of(h: &Harness, group: &str) -> Vec<Object<InstanceSpec>> {
    let mut v: Vec<_> =
        h.instances("linked").await.into_iter().filter(|i| i.spec.group == group).collect();
    v.sort_by_key(|i| i.spec.index);
    v
}

/// The servers' IPs, comma-separated by index, as the consumer should see them.
fn ips(servers: &[Object<InstanceSpec>]) -> String {
    servers.iter().map(|i| i.spec.networks[0].ip.clone()).collect::<Vec<_>>().join(",")
}

/// A consumer renders its provider's IPs and bound property; scaling the
/// provider re-renders and rolls the consumer (same VM) and leaves the
/// existing provider instance alone; the Deployment's status lists the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_renders_provider_link_and_scaling_the_provider_rolls_it() {
    let h = world().await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&linked_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();

    let (state, result) = h.task_end(h.apply("linked", manifest(1, json!({}))).await).await;
    assert_eq!(state, TaskState::Done, "{result}");
    let (servers, client) = (of(&h, "srv").await, of(&h, "cli").await.remove(0));
    assert_eq!(servers.len(), 1);
    assert_eq!(peers(&h, &client).await, format!("{} port=7000", ips(&servers)));

    let explicit = json!({"conn": {"from": "conn"}});
    let (state, result) = h.task_end(h.apply("linked", manifest(2, explicit)).await).await;
    assert_eq!(state, TaskState::Done, "{result}");
    let (grown, rolled) = (of(&h, "srv").await, of(&h, "cli").await.remove(0));
    assert_eq!(grown.len(), 2);
    assert_eq!(peers(&h, &rolled).await, format!("{} port=7000", ips(&grown)));
    assert_ne!(rolled.spec.config_hash, client.spec.config_hash, "the consumer rolled");
    assert_eq!(rolled.status.vm_cid, client.status.vm_cid, "on its VM");
    assert_eq!(grown[0].spec, servers[0].spec, "the first provider is untouched");
    let dep: Object<DeploymentSpec> = h.store.get(None, "linked").await.unwrap();
    let shown: Vec<_> = dep
        .status
        .links
        .iter()
        .map(|l| (l.instance_group.as_str(), l.job.as_str(), l.provider.as_deref(), l.instances))
        .collect();
    assert_eq!(shown, [("cli", "client", Some("srv/server/conn"), 2)], "boshctl links shows it");
}

/// With `use_short_dns_addresses` a consumer's templates get the short
/// names BOSH hands out, written with the numbers the deploy assigned in
/// etcd: each provider instance `q-m<n>n<n>s0.q-g<n>.bosh`, the link's
/// group query `q-n<n>s0.q-g<n>.bosh` (and with `azs: ['z1']` the AZ's
/// number), and its own `spec.address`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_dns_addresses_reach_templates_with_the_assigned_numbers() {
    use bosh_api::objects::{DNS_NUMBERS_NAME, DnsNumbersSpec, GroupType};

    let h = world().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = linked_release(tmp.path());
    write(
        &dir,
        "jobs/client/templates/peers.erb",
        "<%= link('conn').instances.map(&:address).join(',') %> <%= link('conn').address %> \
         <%= link('conn').address(azs: ['z1']) %> <%= spec.address %>",
    );
    h.upload_release(&dir).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let mut m = manifest(2, json!({}));
    m["features"] = json!({"use_dns_addresses": true, "use_short_dns_addresses": true});
    let (state, result) = h.task_end(h.apply("linked", m).await).await;
    assert_eq!(state, TaskState::Done, "{result}");
    let n: DnsNumbersSpec = h.store.get(None, DNS_NUMBERS_NAME).await.unwrap().spec;
    let (servers, client) = (of(&h, "srv").await, of(&h, "cli").await.remove(0));
    let net = n.networks["default"];
    let srv = n.group("linked", "srv", GroupType::InstanceGroup).unwrap();
    let cli = n.group("linked", "cli", GroupType::InstanceGroup).unwrap();
    assert_ne!(srv, cli);
    let short = |i: &Object<InstanceSpec>, g: u32| {
        let mut f = [format!("m{}", n.instances[&i.spec.id]), format!("n{net}"), "s0".into()];
        f.sort();
        format!("q-{}.q-g{g}.bosh", f.concat())
    };
    let instances: Vec<String> = servers.iter().map(|i| short(i, srv)).collect();
    let mut az = [format!("a{}", n.azs["z1"]), format!("n{net}"), "s0".into()];
    az.sort();
    let want = format!(
        "{} q-n{net}s0.q-g{srv}.bosh q-{}.q-g{srv}.bosh {}",
        instances.join(","),
        az.concat(),
        short(&client, cli)
    );
    assert_eq!(peers(&h, &client).await, want);
}

/// A consumer takes another deployment's shared link (`deployment:`),
/// seeing that deployment's instances and property.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_takes_a_shared_link_from_another_deployment() {
    let h = world().await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&linked_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let mut data = manifest(2, json!({}));
    data["name"] = "data".into();
    data["instance_groups"][0]["jobs"][0]["provides"] =
        json!({"conn": {"as": "main", "shared": true}});
    data["instance_groups"].as_array_mut().unwrap().truncate(1);
    let (state, result) = h.task_end(h.apply("data", data).await).await;
    assert_eq!(state, TaskState::Done, "{result}");
    let mut app = manifest(0, json!({"conn": {"from": "main", "deployment": "data"}}));
    app["instance_groups"].as_array_mut().unwrap().remove(0);
    let (state, result) = h.task_end(h.apply("linked", app).await).await;
    assert_eq!(state, TaskState::Done, "{result}");
    let mut servers: Vec<_> = h.instances("data").await;
    servers.sort_by_key(|i| i.spec.index);
    let client = of(&h, "cli").await.remove(0);
    assert_eq!(peers(&h, &client).await, format!("{} port=7000", ips(&servers)));
}

/// With resyncs an hour apart (so only watches wake anyone), scaling a
/// deployment whose shared link another deployment consumes re-renders
/// the consumer at once; and two deployments consuming each other's
/// shared links (a cycle) both converge and then stay still: a consumer's
/// re-render changes nothing its own provided link carries, so nothing
/// bounces back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_link_consumers_follow_their_provider_and_cycles_settle() {
    let h = Harness::start(HarnessOptions {
        resync: std::time::Duration::from_secs(3600),
        ..HarnessOptions::containers()
    })
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&linked_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    // `data` (servers, sharing `conn` as `main`) consumes `app`'s shared
    // `back` once `app` exists; `app` (one client) consumes `data`'s `main`.
    let data = |servers: u32, back: bool| {
        let mut m = manifest(servers, json!({}));
        m["name"] = "data".into();
        m["instance_groups"].as_array_mut().unwrap().truncate(1);
        let job = &mut m["instance_groups"][0]["jobs"][0];
        job["provides"] = json!({"conn": {"as": "main", "shared": true}});
        if back {
            job["consumes"] = json!({"back": {"from": "app-back", "deployment": "linked"}});
        }
        m
    };
    let mut app = manifest(0, json!({"conn": {"from": "main", "deployment": "data"}}));
    app["instance_groups"].as_array_mut().unwrap().remove(0);
    app["instance_groups"][0]["jobs"][0]["provides"] =
        json!({"back": {"as": "app-back", "shared": true}});
    for (name, m) in [("data", data(1, false)), ("linked", app), ("data", data(1, true))] {
        let (state, result) = h.task_end(h.apply(name, m).await).await;
        assert_eq!(state, TaskState::Done, "{name}: {result}");
    }
    let client = of(&h, "cli").await.remove(0);
    let servers = h.instances("data").await;
    assert_eq!(peers(&h, &client).await, format!("{} port=7000", ips(&servers)));
    let back = servers[0].clone();
    let agent = h.director.agents.for_agent(back.status.agent_id.clone().unwrap());
    let cmd = vec!["cat".to_string(), "/var/vcap/jobs/server/config/back".to_string()];
    let r = agent.exec(&cmd, Some(20)).await.unwrap();
    assert_eq!(r.stdout.trim(), client.spec.networks[0].ip, "{}", r.stderr);
    let app: Object<DeploymentSpec> = h.store.get(None, "linked").await.unwrap();
    assert_eq!(app.status.links[0].deployment.as_deref(), Some("data"), "{:?}", app.status);

    // The provider grows: the consumer in the other deployment follows
    // (its own task is long done; only the watch can wake it).
    let (state, result) = h.task_end(h.apply("data", data(2, true)).await).await;
    assert_eq!(state, TaskState::Done, "{result}");
    let mut grown = h.instances("data").await;
    grown.sort_by_key(|i| i.spec.index);
    let want = format!("{} port=7000", ips(&grown));
    let rolled = bosh_test_utils::eventually(DEADLINE, "the consumer to re-render", || async {
        let c = of(&h, "cli").await.pop()?;
        let ready = c.status.applied_hash == c.spec.config_hash;
        (c.spec.config_hash != client.spec.config_hash && ready).then_some(c)
    })
    .await
    .unwrap();
    assert_eq!(peers(&h, &rolled).await, want);
    assert_eq!(rolled.status.vm_cid, client.status.vm_cid, "on its VM");

    // The cycle settles: the consumer's roll changed nothing `data`
    // renders, so `data` keeps its specs (its first server the spec it
    // got when the cycle closed).
    let now = h.instances("data").await;
    let first = now.iter().find(|i| i.spec.id == back.spec.id).unwrap();
    assert_eq!(first.spec, grown.iter().find(|i| i.spec.id == back.spec.id).unwrap().spec);
    let versions = |v: &[Object<InstanceSpec>]| {
        let mut r: Vec<(String, i64)> =
            v.iter().map(|i| (i.metadata.name.clone(), i.metadata.resource_version)).collect();
        r.sort();
        r
    };
    let before = (versions(&h.instances("data").await), versions(&h.instances("linked").await));
    // A cycle that bounced would rewrite specs within a pass or two (each
    // pass takes well under a second here); none is written in 5 s.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let after = (versions(&h.instances("data").await), versions(&h.instances("linked").await));
    assert_eq!(before, after, "no spec rewritten after the cycle settled");
    h.stop().await.unwrap();
}

/// A link that names no provider fails the deploy with `LinksInvalid`,
/// naming the group, job, link and type, before any VM is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_link_fails_the_deploy_before_any_vm() {
    let h = world().await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&linked_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let t = h.apply("linked", manifest(1, json!({"conn": {"from": "nope"}}))).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Error, "{result}");
    let want = "instance group cli, job client: link conn (type srv): no provider named \"nope\"";
    assert!(result.contains(want), "{result}");
    assert!(h.instances("linked").await.is_empty(), "no instance was made");
    assert!(h.cpi.created.lock().unwrap().is_empty(), "no VM was made");
}
