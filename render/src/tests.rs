//! Rendering with the real `ruby`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bosh_api::archive::TgzWriter;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::*;

const HELLO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/release/jobs/hello");

fn limits() -> Limits {
    Limits { timeout: Duration::from_secs(60), max_output: 16 << 20 }
}

/// A job tarball as a release stores it, from a job directory.
fn job_tgz_from_dir(dir: &Path) -> Vec<u8> {
    let mut w = TgzWriter::new();
    w.file("./job.MF", &dir.join("spec")).unwrap();
    w.file("./monit", &dir.join("monit")).unwrap();
    for e in std::fs::read_dir(dir.join("templates")).unwrap() {
        let e = e.unwrap();
        let name = format!("./templates/{}", e.file_name().to_string_lossy());
        w.file(&name, &e.path()).unwrap();
    }
    w.write(Vec::new(), "job").unwrap()
}

/// A job from a spec, a monit file and templates (source name, content).
fn job(spec: &str, monit: &str, templates: &[(&str, &str)]) -> Arc<JobTemplates> {
    let mut w = TgzWriter::new();
    w.bytes("./job.MF", spec, false).bytes("./monit", monit, false);
    for (name, text) in templates {
        w.bytes(&format!("./templates/{name}"), *text, false);
    }
    Arc::new(JobTemplates::from_job_tgz(&w.write(Vec::new(), "job").unwrap()).unwrap())
}

/// A job `t` with one template `t.erb` rendered to `out`, and properties.
fn one_template(erb: &str, props: &str) -> Arc<JobTemplates> {
    let spec = format!("name: t\ntemplates:\n  t.erb: out\nproperties:\n{props}");
    job(&spec, "", &[("t.erb", erb)])
}

fn instance(name: &str, index: u32) -> InstanceContext {
    let ip = format!("10.0.0.{}", 10 + index);
    let network = NetworkContext {
        ip: Some(ip),
        netmask: Some("255.255.255.0".into()),
        default: vec!["dns".into(), "gateway".into()],
        ..Default::default()
    };
    InstanceContext {
        deployment: "dep".into(),
        name: name.into(),
        index,
        id: format!("uuid-{index}"),
        az: Some("z1".into()),
        networks: [("default".to_owned(), network)].into_iter().collect(),
        bootstrap: index == 0,
        ..Default::default()
    }
}

fn request(index: u32, jobs: &[(&Arc<JobTemplates>, Value)]) -> RenderRequest {
    RenderRequest {
        instance: instance("web", index),
        jobs: jobs
            .iter()
            .map(|(j, p)| RenderJob {
                job: Arc::clone(j),
                properties: p.clone(),
                links: BTreeMap::new(),
                release: None,
            })
            .collect(),
    }
}

/// Unpacks an archive the way the agent does; path to (mode, content).
fn files(archive: &[u8]) -> BTreeMap<String, (u32, String)> {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("x");
    let limits = bosh_api::archive::Limits::default();
    let names = bosh_api::archive::unpack_tgz(archive, &root, &limits, "rendered").unwrap();
    let mut out = BTreeMap::new();
    for n in names {
        let p = root.join(&n);
        if p.is_file() {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            let text = std::fs::read_to_string(&p).unwrap();
            out.insert(n.to_string_lossy().into_owned(), (mode, text));
        }
    }
    out
}

/// Renders one request and returns its single file `t/out`, or the error text.
async fn render_one(job: &Arc<JobTemplates>, props: Value) -> Result<String, String> {
    let res = render_batch(&[request(0, &[(job, props)])], &limits()).await.unwrap();
    match res.into_iter().next().unwrap() {
        Ok(r) => Ok(files(&r.archive)["t/out"].1.clone()),
        Err(e) => Err(e.to_string()),
    }
}

/// The example `hello` job renders for three instances in one batch: the
/// spec's default port and bind address (every address), the manifest's
/// greeting, each instance's name, and `bin/` scripts executable.
#[tokio::test]
async fn hello_job_renders_each_instance_in_one_batch() {
    let hello = Arc::new(JobTemplates::from_job_tgz(&job_tgz_from_dir(Path::new(HELLO))).unwrap());
    assert_eq!(hello.name, "hello");
    let reqs: Vec<_> =
        (0..3).map(|i| request(i, &[(&hello, json!({"greeting": "Hi there"}))])).collect();
    let res = render_batch(&reqs, &limits()).await.unwrap();
    assert_eq!(res.len(), 3);
    for (i, r) in res.into_iter().enumerate() {
        let r = r.unwrap();
        let f = files(&r.archive);
        let config: Value = serde_json::from_str(&f["hello/config/config.json"].1).unwrap();
        assert_eq!(
            config,
            json!({
                "bind": "0.0.0.0",
                "port": 8080,
                "greeting": "Hi there",
                "instance": format!("web/{i}"),
            })
        );
        assert_eq!(f["hello/config/config.json"].0, 0o644);
        assert_eq!(f["hello/bin/ctl"].0, 0o755);
        assert_eq!(f["hello/bin/pre-start"].0, 0o755);
        assert!(f["hello/bin/pre-start"].1.contains(&format!("web/{i} on port 8080")));
        assert!(f["hello/monit"].1.contains("check process hello"));
        let names: Vec<&str> = f.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "hello/bin/ctl",
                "hello/bin/drain",
                "hello/bin/pre-start",
                "hello/config/config.json",
                "hello/monit"
            ]
        );
    }
}

/// The same inputs give byte-identical archives, and `sha256` is theirs.
#[tokio::test]
async fn rendering_is_deterministic() {
    let hello = Arc::new(JobTemplates::from_job_tgz(&job_tgz_from_dir(Path::new(HELLO))).unwrap());
    let reqs = [request(1, &[(&hello, json!({"port": 9000}))])];
    let a = render_batch(&reqs, &limits()).await.unwrap().remove(0).unwrap();
    let b = render_batch(&reqs, &limits()).await.unwrap().remove(0).unwrap();
    assert_eq!(a.archive, b.archive);
    assert_eq!(a.sha256, b.sha256);
    let want: String = Sha256::digest(&a.archive).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(a.sha256, want);
}

/// `p` with a default and with a list, `p?`, `if_p` with `else` and
/// `else_if_p`, `properties.*`, and `spec` read as BOSH templates read them;
/// undeclared manifest properties stay invisible.
#[tokio::test]
async fn template_helpers_follow_bosh() {
    let erb = r#"<%- -%>
a=<%= p("missing", "dflt") %>
b=<%= p(["missing", "tls.port"]) %>
c=<%= p?("tls.port") %>/<%= p?("missing") %>
d=<% if_p("tls.port", "name") do |port, name| %><%= port %>:<%= name %><% end.else do %>no<% end %>
e=<% if_p("missing") do |m| %>yes<% end.else do %>else<% end %>
f=<% if_p("missing") { }.else_if_p("name") do |n| %><%= n %><% end %>
g=<%= p("undeclared", "hidden") %>
h=<%= properties.tls.port %>
i=<%= spec.networks.default.ip %> <%= spec.networks["default"].netmask %> <%= spec.ip %>
j=<%= spec.deployment %> <%= spec.name %> <%= spec.index %> <%= spec.id %> <%= spec.az %> <%= spec.bootstrap %> <%= spec.job.name %> <%= spec.address %>
k=<% if_link("db") do |db| %>linked<% end.else do %>nolink<% end %>
l=<%= name %>/<%= index %> <%= spec.nothing.inspect %>
"#;
    let props = "  tls.port: {default: 443}\n  name: ~\n  missing: ~\n";
    let t = one_template(erb, props);
    let out = render_one(&t, json!({"name": "n1", "undeclared": "x"})).await.unwrap();
    assert_eq!(
        out,
        "a=dflt\nb=443\nc=true/false\nd=443:n1\ne=else\nf=n1\ng=hidden\nh=443\n\
         i=10.0.0.10 255.255.255.0 10.0.0.10\n\
         j=dep web 0 uuid-0 z1 true web 10.0.0.10\nk=nolink\nl=web/0 nil\n"
    );
}

/// `p` of an unset property fails the instance; the error names the job,
/// every failing template and its line, while other instances still render.
#[tokio::test]
async fn missing_property_error_names_job_template_and_line() {
    let spec = "name: hello\ntemplates:\n  config.json.erb: config.json\n  ok.erb: ok\n  \
                other.erb: bin/other\nproperties:\n  port: ~\n";
    let erb = "{\n  \"a\": 1,\n  \"port\": <%= p(\"port\") %>\n}\n";
    let j = job(
        spec,
        "",
        &[
            ("config.json.erb", erb),
            ("ok.erb", "ok"),
            ("other.erb", "\n<% if_p(\"port\") {}.else { foo } %>"),
        ],
    );
    let reqs = [request(0, &[(&j, json!({}))]), request(1, &[(&j, json!({"port": 1}))])];
    let mut res = render_batch(&reqs, &limits()).await.unwrap();
    let good = res.pop().unwrap().unwrap();
    assert!(files(&good.archive)["hello/config.json"].1.contains("\"port\": 1"));
    let err = res.pop().unwrap().unwrap_err();
    let Error::Templates { failures, .. } = &err else { panic!("{err:?}") };
    assert_eq!(failures.len(), 2, "{err}");
    assert_eq!(
        err.to_string(),
        "Unable to render jobs for instance 'web/0'. Errors are:\n  \
         - Unable to render templates for job 'hello'. Errors are:\n    \
         - Error filling in template 'config.json.erb' (line 3: Can't find property '[\"port\"]')\n    \
         - Error filling in template 'other.erb' (line 2: undefined local variable or method 'foo')"
    );
}

/// A syntax error is that template's error, with its line.
#[tokio::test]
async fn syntax_error_is_a_template_error() {
    let t = one_template("fine\n<% if %>\n<% end end %>\n", "  {}\n");
    let err = render_one(&t, json!({})).await.unwrap_err();
    assert!(err.contains("Error filling in template 't.erb' (line 2: syntax error"), "{err}");
}

/// Without link data, `link` raises BOSH's error.
#[tokio::test]
async fn link_without_data_raises_bosh_error() {
    let t = one_template("<%= link('db').instances.size %>", "  {}\n");
    let err = render_one(&t, json!({})).await.unwrap_err();
    assert!(err.contains("(line 1: Can't find link 'db')"), "{err}");
}

/// Error messages carry no property values: not through a receiver's
/// inspect, not through a conversion error, not through a template's own
/// `raise`.
#[tokio::test]
async fn errors_do_not_reveal_property_values() {
    let erb = "<%= p('creds').foo %>\n<%= Integer(p('creds.password')) %>\n\
               <% raise \"bad #{p('creds')}\" %>";
    let spec = "name: t\ntemplates:\n  a.erb: a\n  b.erb: b\n  c.erb: c\nproperties:\n  creds: ~\n";
    let lines: Vec<&str> = erb.lines().collect();
    let j = job(spec, "", &[("a.erb", lines[0]), ("b.erb", lines[1]), ("c.erb", lines[2])]);
    let res = render_batch(
        &[request(0, &[(&j, json!({"creds": {"password": "hunter2-secret"}}))])],
        &limits(),
    )
    .await
    .unwrap();
    let err = res.into_iter().next().unwrap().unwrap_err().to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("undefined method 'foo' for an instance of Hash"), "{err}");
    assert!(err.contains("invalid value for Integer(): \"<redacted>\""), "{err}");
    assert!(err.contains("'c.erb' (line 1: bad "), "{err}");
}

/// A template that never ends is killed at the timeout, process and all.
#[tokio::test]
async fn endless_loop_is_killed_at_the_timeout() {
    let t = one_template("<% loop {} %>", "  {}\n");
    let limits = Limits { timeout: Duration::from_secs(2), ..limits() };
    let start = Instant::now();
    let err = render_batch(&[request(0, &[(&t, json!({}))])], &limits).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(20), "{:?}", start.elapsed());
    // The batch's culprit is named: the instance Ruby was rendering.
    let name = instance_name(&request(0, &[(&t, json!({}))]).instance);
    assert!(err.to_string().contains(&format!("of instance '{name}'")), "{err}");
}

/// A template that writes without end fails alone, long before the timeout:
/// its output buffer is held to `max_output`.
#[tokio::test]
async fn endless_output_fails_its_template() {
    let t = one_template("<% loop { %>x<% } %>", "  {}\n");
    let limits = Limits { timeout: Duration::from_secs(60), max_output: 1 << 20 };
    let start = Instant::now();
    let res = render_batch(&[request(0, &[(&t, json!({}))])], &limits).await.unwrap();
    let err = res.into_iter().next().unwrap().unwrap_err().to_string();
    assert!(err.contains("(line 1: template output exceeds 1048576 bytes)"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(30));
}

/// A batch whose answers together pass `max_output` kills the process.
#[tokio::test]
async fn batch_output_over_the_limit_kills_the_process() {
    let t = one_template("<%= 'y' * 100_000 %>", "  {}\n");
    let reqs: Vec<_> = (0..20).map(|i| request(i, &[(&t, json!({}))])).collect();
    let limits = Limits { timeout: Duration::from_secs(60), max_output: 1 << 20 };
    let err = render_batch(&reqs, &limits).await.unwrap_err();
    assert!(matches!(err, Error::OutputTooLarge { limit: 1048576, .. }), "{err:?}");
    // About ten answers fit; the instance Ruby was on when the cap was
    // passed is named.
    let Error::OutputTooLarge { instance: Some(at), .. } = &err else { panic!("{err:?}") };
    let names: Vec<String> = reqs.iter().map(|r| instance_name(&r.instance)).collect();
    let i = names.iter().position(|n| n == at).unwrap();
    assert!((8..=11).contains(&i), "{at} is request {i}");
}

/// Ruby's memory is capped: a template allocating past it fails alone.
#[tokio::test]
async fn memory_is_capped() {
    let t = one_template("<% s = 'x' * (3 << 30) %>ok", "  {}\n");
    let err = render_one(&t, json!({})).await.unwrap_err();
    assert!(err.contains("failed to allocate memory"), "{err}");
}

/// Every template of every instance in a batch runs in the same Ruby
/// process, and the next batch in another.
#[tokio::test]
async fn one_ruby_process_renders_the_whole_batch() {
    let a = one_template("<%= Process.pid %>", "  {}\n");
    let b = job(
        "name: b\ntemplates:\n  x.erb: x\n",
        "<%= Process.pid %>",
        &[("x.erb", "<%= Process.pid %>")],
    );
    let reqs: Vec<_> = (0..4).map(|i| request(i, &[(&a, json!({})), (&b, json!({}))])).collect();
    let pids = |res: Vec<Result<Rendered, Error>>| {
        let mut pids = std::collections::BTreeSet::new();
        for r in res {
            let f = files(&r.unwrap().archive);
            for name in ["t/out", "b/x", "b/monit"] {
                pids.insert(f[name].1.clone());
            }
        }
        pids
    };
    let first = pids(render_batch(&reqs, &limits()).await.unwrap());
    assert_eq!(first.len(), 1, "{first:?}");
    let second = pids(render_batch(&reqs, &limits()).await.unwrap());
    assert_eq!(second.len(), 1);
    assert_ne!(first, second);
}

/// A job used by many instances, even through different `Arc`s, is sent once.
#[test]
fn batch_sends_each_job_once() {
    let a = one_template("x", "  {}\n");
    let a2 = Arc::new((*a).clone());
    let reqs = [
        request(0, &[(&a, json!({}))]),
        request(1, &[(&a2, json!({}))]),
        request(2, &[(&a, json!({}))]),
    ];
    let batch = ruby::Batch::build(&reqs, 1000);
    let input = serde_json::to_value(&batch.input).unwrap();
    assert_eq!(input["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(input["requests"].as_array().unwrap().len(), 3);
}

/// A request whose properties do not fit its spec fails alone.
#[tokio::test]
async fn bad_properties_fail_only_their_instance() {
    let t = one_template("<%= p('tls.cert') %>", "  tls.cert: ~\n");
    let reqs = [
        request(0, &[(&t, json!({"tls": "oops"}))]),
        request(1, &[(&t, json!({"tls": {"cert": "C"}}))]),
    ];
    let res = render_batch(&reqs, &limits()).await.unwrap();
    let err = res[0].as_ref().unwrap_err().to_string();
    assert!(err.contains("Property 'tls.cert' expects a hash, but received 'String'"), "{err}");
    assert_eq!(files(&res[1].as_ref().unwrap().archive)["t/out"].1, "C");
}

/// A job tarball whose symlink leaves the tarball is refused.
#[test]
fn job_tarball_escaping_its_directory_is_refused() {
    let mut w = TgzWriter::new();
    w.bytes("./job.MF", "name: j\ntemplates:\n  x.erb: x\n", false)
        .bytes("./monit", "", false)
        .symlink("./templates/x.erb", "../../../../etc/passwd");
    let err = JobTemplates::from_job_tgz(&w.write(Vec::new(), "job").unwrap()).unwrap_err();
    assert!(matches!(err, Error::JobArchive { .. }), "{err:?}");
}

/// Every template the spec lists must be in the tarball.
#[test]
fn job_tarball_missing_a_template_is_refused() {
    let mut w = TgzWriter::new();
    w.bytes("./job.MF", "name: j\ntemplates:\n  x.erb: x\n", false).bytes("./monit", "", false);
    let err = JobTemplates::from_job_tgz(&w.write(Vec::new(), "job").unwrap()).unwrap_err();
    assert!(err.to_string().contains("job j: cannot read templates/x.erb"), "{err}");
}

/// Issue 17: a manifest applied through `deploy` reaches templates with the
/// values `interpolate` prints, read the same YAML 1.1 way. The text the
/// CLI sends (`to_bosh_string` of its interpolated document) is read as the
/// API reads it, stored as JSON as etcd stores it, and rendered: `.inf`,
/// `-.inf` and `.nan` are Ruby's `Float::INFINITY`, `-Float::INFINITY` and
/// `Float::NAN`, as Ruby BOSH's YAML reader gives them; keys `on:`, `~:` and
/// `0x10:` are the keys bosh prints for them (`true`, `null`, `16`).
#[tokio::test]
async fn yaml_1_1_values_and_keys_reach_templates_as_interpolate_prints_them() {
    let user = "limit: .inf\nfloor: -.inf\nratio: .nan\nsize: 1.50\n\
                flags: {on: enabled, ~: nothing, 0x10: sixteen, \"on\": quoted}\n";
    let sent = bosh_api::yaml::to_bosh_string(&bosh_api::yaml::parse_value(user, "m.yml").unwrap());
    assert_eq!(
        sent,
        "flags:\n  true: enabled\n  16: sixteen\n  null: nothing\n  \"on\": quoted\n\
         floor: -.inf\nlimit: .inf\nratio: .nan\nsize: 1.5\n"
    );
    let read = bosh_api::yaml::parse_value(&sent, "manifest").unwrap();
    let stored: Value = serde_json::from_slice(&serde_json::to_vec(&read).unwrap()).unwrap();

    let erb = "<%- -%>
limit=<%= p('limit') %> <%= p('limit').class %> <%= p('limit').infinite? %>
floor=<%= p('floor') %> <%= p('floor') < -1e308 %>
ratio=<%= p('ratio').nan? %>
size=<%= p('size') %>
flags=<%= p('flags').keys.sort.join(',') %>
on=<%= p('flags')['true'] %> <%= p('flags')['on'] %> <%= p('flags.16') %>
";
    let props = "  limit: ~\n  floor: ~\n  ratio: ~\n  size: ~\n  flags: ~\n";
    let out = render_one(&one_template(erb, props), stored).await.unwrap();
    assert_eq!(
        out,
        "limit=Infinity Float 1\nfloor=-Infinity true\nratio=true\nsize=1.5\n\
         flags=16,null,on,true\non=enabled quoted sixteen\n"
    );
}

/// `link(..).address(azs: [...])` encodes AZs with the director's numbers
/// (sorted as BOSH's encoder sorts its filters); an AZ it has not numbered
/// is BOSH's "Unknown AZ" error; with short DNS addresses the address is
/// `q-<filters>.q-g<group>.<domain>` with the network's number.
#[tokio::test]
async fn link_address_encodes_azs_with_the_directors_numbers() {
    let erb = "<%= link('db').address(azs: ['z1']) %> <%= link('db').address(azs: ['z2', 'z1'], \
               status: 'healthy') %> <%= link('db').address(initial_health_check: 'synchronous') %>";
    let job = one_template(erb, "  {}\n");
    let long = Link {
        instance_group: Some("my_db".into()),
        default_network: Some("priv".into()),
        deployment_name: Some("dep1".into()),
        az_numbers: [("z1".to_string(), 1), ("z2".to_string(), 12)].into_iter().collect(),
        ..Default::default()
    };
    let short = Link {
        use_short_dns_addresses: true,
        group_number: Some(7),
        network_number: Some(3),
        ..long.clone()
    };
    let render = |link: Link| {
        let job = Arc::clone(&job);
        async move {
            let mut req = request(0, &[(&job, json!({}))]);
            req.jobs[0].links.insert("db".into(), link);
            let mut res = render_batch(&[req], &limits()).await.unwrap();
            match res.remove(0) {
                Ok(r) => Ok(files(&r.archive)["t/out"].1.clone()),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    assert_eq!(
        render(long.clone()).await.unwrap(),
        "q-a1s0.my-db.priv.dep1.bosh q-a1a12s3.my-db.priv.dep1.bosh q-s0y1.my-db.priv.dep1.bosh"
    );
    assert_eq!(
        render(short).await.unwrap(),
        "q-a1n3s0.q-g7.bosh q-a1a12n3s3.q-g7.bosh q-n3s0y1.q-g7.bosh"
    );
    let err = render(Link { az_numbers: BTreeMap::new(), ..long }).await.unwrap_err();
    assert!(err.contains("Unknown AZ: 'z1'"), "{err}");
}
