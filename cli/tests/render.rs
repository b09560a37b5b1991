//! `boshctl render` end to end with the real `ruby` (issue 15, item 4):
//! BOSH's semantic corners as a table, errors and exit codes, and the
//! director's renderer giving the same bytes from the same inputs.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

/// The job spec of the table's job `t`: one template per row, plus the
/// properties and links the rows read.
const PROPERTY_SPEC: &str = "\
properties:
  given: {default: dflt}
  absent: {default: dflt}
  nulled: {default: dflt}
  nodefault: {description: no default}
  f: {default: true}
  zero: {default: 7}
  empty: {default: x}
  h: {default: {k: 1, j: 2}}
  nested: {description: a hash}
  tls.port: {default: 443}
consumes:
- {name: db, type: database}
- {name: cache, type: cache}
- {name: opt, type: thing, optional: true}
";

/// The manifest properties the table's job gets.
const PROPERTIES: &str = "\
given: mine
nulled: ~
f: false
zero: 0
empty: \"\"
h: {m: 3}
nested: {b: 1, a: {d: 1, c: 2}, list: [{q: 1, p: 2}]}
undeclared: hidden
";

/// The instance the table renders.
const SPEC: &str = "\
deployment: My_Dep
name: Web_Group
index: 3
id: uuid-3
az: z2
bootstrap: false
persistent_disk: 1024
networks:
  private: {type: manual, ip: 10.0.0.5, netmask: 255.255.255.0, gateway: 10.0.0.1, default: [dns, gateway], dns: [8.8.8.8]}
  public: {type: dynamic, default: [addressable]}
";

/// The links the table's job consumes (`opt` is not provided).
const LINKS: &str = "\
db:
  instances:
  - {name: db, index: 0, id: db-0, az: z1, address: 10.0.1.1, bootstrap: true}
  - {name: db, index: 1, id: db-1, az: z2, address: 10.0.1.2}
  properties: {port: 5432}
  instance_group: My_DB
  default_network: priv_net
  deployment_name: Dep1
  az_numbers: {z1: 1, z2: 4}
cache:
  instances: []
  address: cache.example.com
";

/// Each row: a template (name, ERB) and what it must render to.
const TABLE: &[(&str, &str, &str)] = &[
    ("manifest_value_wins", "<%= p('given') %>", "mine"),
    ("absent_takes_default", "<%= p('absent') %>", "dflt"),
    ("null_takes_default", "<%= p('nulled') %>", "dflt"),
    (
        "no_default_is_nil",
        "<%= p('nodefault', 'fb') %>|<%= properties.nodefault.inspect %>",
        "fb|nil",
    ),
    ("false_is_kept", "<%= p('f').inspect %>", "false"),
    ("zero_is_kept", "<%= p('zero').inspect %>", "0"),
    ("empty_string_is_kept", "<%= p('empty').inspect %>", "\"\""),
    ("hash_replaces_default_hash", "<%= p('h').to_a.inspect %>", "[[\"m\", 3]]"),
    (
        "hashes_sorted_except_in_arrays",
        "<%= JSON.generate(p('nested')) %>",
        r#"{"a":{"c":2,"d":1},"b":1,"list":[{"q":1,"p":2}]}"#,
    ),
    ("p_list_first_set", "<%= p(['nodefault', 'given', 'absent']) %>", "mine"),
    ("p_list_default", "<%= p(['nodefault', 'undeclared'], 'd') %>", "d"),
    ("p_undeclared_with_default", "<%= p('undeclared', 'dd') %>", "dd"),
    (
        "if_p_yields_false_values",
        "<% if_p('f', 'zero', 'empty') do |a, b, c| %><%= [a, b, c].inspect %><% end %>",
        "[false, 0, \"\"]",
    ),
    ("if_p_nil_runs_else", "<% if_p('nodefault') do %>yes<% end.else do %>else<% end %>", "else"),
    (
        "if_p_one_unset_runs_else",
        "<% if_p('given', 'nodefault') do %>yes<% end.else do %>else<% end %>",
        "else",
    ),
    ("else_if_p", "<% if_p('nodefault') {}.else_if_p('given') do |g| %><%= g %><% end %>", "mine"),
    ("properties_open_struct", "<%= properties.h.m %>/<%= properties.tls.port %>", "3/443"),
    (
        "spec_open_struct",
        "<%= spec.deployment %> <%= spec.name %> <%= spec.index %> <%= spec.id %> \
         <%= spec.az %> <%= spec.bootstrap %> <%= spec.job.name %> <%= spec.nothing.inspect %> \
         <%= spec['deployment'] %> <%= name %> <%= index %>",
        "My_Dep Web_Group 3 uuid-3 z2 false Web_Group nil My_Dep Web_Group 3",
    ),
    (
        "spec_address_from_addressable_dynamic_network",
        "<%= spec.ip %> <%= spec.address %> \
         <%= spec.networks['public'].ip %>/<%= spec.networks.public.netmask %>/<%= spec.networks.public.gateway %>",
        "127.0.0.1 127.0.0.1 127.0.0.1/127.0.0.1/127.0.0.1",
    ),
    (
        "spec_dns_record_names",
        "<%= spec.networks.private.dns_record_name %> <%= spec.networks.public.dns_record_name %>",
        "3.web-group.private.my-dep.bosh 3.web-group.public.my-dep.bosh",
    ),
    (
        "spec_defaults_and_release",
        "<%= spec.dns_domain_name %> <%= spec.persistent_disk %> <%= spec.release.name %> \
         <%= spec.release.version %> <%= spec.networks.private.dns.inspect %>",
        "bosh 1024 corners 0+dev.1 [\"8.8.8.8\"]",
    ),
    (
        "link_instances",
        "<%= link('db').instances.map { |i| [i.name, i.index, i.id, i.az, i.address, i.bootstrap].join(',') }.join(';') %>",
        "db,0,db-0,z1,10.0.1.1,true;db,1,db-1,z2,10.0.1.2,false",
    ),
    (
        "link_p",
        "<%= link('db').p('port') %> <%= link('db').p(['nope', 'port']) %> <%= link('db').p('nope', 'd') %>",
        "5432 5432 d",
    ),
    ("link_if_p", "<% link('db').if_p('port') do |port| %><%= port %><% end %>", "5432"),
    (
        "link_address_is_the_bosh_dns_group_query",
        "<%= link('db').address %> <%= link('db').address(status: 'healthy') %>",
        "q-s0.my-db.priv-net.dep1.bosh q-s3.my-db.priv-net.dep1.bosh",
    ),
    (
        "link_address_encodes_azs_with_the_given_numbers",
        "<%= link('db').address(azs: ['z2']) %> <%= link('db').address(azs: [:z1, 'z2'], status: 'all') %>",
        "q-a4s0.my-db.priv-net.dep1.bosh q-a1a4s4.my-db.priv-net.dep1.bosh",
    ),
    (
        "if_link_else_if_link_manual_address",
        "<% if_link('opt') do %>opt<% end.else_if_link('cache') do |c| %><%= c.address %><% end %>",
        "cache.example.com",
    ),
    ("if_link_else", "<% if_link('opt') do %>opt<% end.else do %>none<% end %>", "none"),
];

fn boshctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_boshctl")).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A release directory `corners` holding job `name` with `spec_tail` after
/// its templates map, and `templates` (source name, ERB) each rendered to
/// a destination of the same name without `.erb`.
fn release(root: &Path, name: &str, spec_tail: &str, templates: &[(&str, &str)]) -> PathBuf {
    let dir = root.join("corners");
    let job = dir.join("jobs").join(name);
    std::fs::create_dir_all(job.join("templates")).unwrap();
    let mut spec = format!("---\nname: {name}\ntemplates:\n");
    for (src, erb) in templates {
        spec.push_str(&format!("  {src}.erb: {src}\n"));
        std::fs::write(job.join("templates").join(format!("{src}.erb")), erb).unwrap();
    }
    spec.push_str(spec_tail);
    std::fs::write(job.join("spec"), spec).unwrap();
    std::fs::write(job.join("monit"), "check process <%= name %>\n").unwrap();
    dir
}

/// Every file under `dir`: relative path to (mode, bytes).
fn files(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, (mode, std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// Every corner of the table renders as BOSH renders it, in one run.
#[test]
fn render_follows_bosh_in_every_corner() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = release(tmp.path(), "t", PROPERTY_SPEC, &table_templates());
    let (props, spec, links) = inputs(tmp.path());
    let out = tmp.path().join("out");
    let o = boshctl(&[
        "render",
        dir.to_str().unwrap(),
        "t",
        "--properties",
        &props,
        "--spec",
        &spec,
        "--links",
        &links,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = files(&out);
    let mut failed = Vec::new();
    for (name, _, want) in TABLE {
        let text = got.get(*name).map(|(_, b)| String::from_utf8_lossy(b).into_owned());
        if text.as_deref() != Some(*want) {
            failed.push(format!("{name}: want {want:?}, got {text:?}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert_eq!(got["monit"].1, b"check process Web_Group\n");
    // Nothing but monit and the templates' destinations.
    assert_eq!(got.len(), TABLE.len() + 1, "{:?}", got.keys().collect::<Vec<_>>());
}

fn table_templates() -> Vec<(&'static str, &'static str)> {
    TABLE.iter().map(|(n, erb, _)| (*n, *erb)).collect()
}

fn inputs(dir: &Path) -> (String, String, String) {
    (
        write(dir, "props.yml", PROPERTIES),
        write(dir, "spec.yml", SPEC),
        write(dir, "links.yml", LINKS),
    )
}

/// Render = deploy: the director's entry point (`render_batch`, whose
/// archive the agent installs) given the same inputs yields the very bytes
/// and modes `boshctl render` wrote.
#[test]
fn render_writes_what_the_director_renders() {
    let tmp = tempfile::tempdir().unwrap();
    let mut templates = table_templates();
    templates.push(("bin_ctl", "#!/bin/sh\necho <%= spec.index %>\n"));
    let dir = release(tmp.path(), "t", PROPERTY_SPEC, &templates);
    // A destination under bin/ (executable).
    let spec_path = dir.join("jobs/t/spec");
    let spec = std::fs::read_to_string(&spec_path)
        .unwrap()
        .replace("bin_ctl.erb: bin_ctl", "bin_ctl.erb: bin/ctl");
    std::fs::write(&spec_path, spec).unwrap();
    let (props, spec, links) = inputs(tmp.path());
    let out = tmp.path().join("out");
    let o = boshctl(&[
        "render",
        dir.to_str().unwrap(),
        "t",
        "--properties",
        &props,
        "--spec",
        &spec,
        "--links",
        &links,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let yaml =
        |p: &str| bosh_api::yaml::parse_value(&std::fs::read_to_string(p).unwrap(), p).unwrap();
    let instance: bosh_render::InstanceContext = serde_json::from_value(yaml(&spec)).unwrap();
    let request = bosh_render::RenderRequest {
        instance,
        jobs: vec![bosh_render::RenderJob {
            job: Arc::new(bosh_render::JobTemplates::from_dir(&dir.join("jobs/t")).unwrap()),
            properties: yaml(&props),
            links: serde_json::from_value(yaml(&links)).unwrap(),
            release: Some(bosh_render::ReleaseRef {
                name: "corners".into(),
                version: "0+dev.1".into(),
            }),
        }],
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let rendered = rt
        .block_on(bosh_render::render_batch(&[request], &bosh_render::Limits::default()))
        .unwrap()
        .remove(0)
        .unwrap();
    let unpacked = tmp.path().join("agent");
    let limits = bosh_api::archive::Limits::default();
    bosh_api::archive::unpack_tgz(rendered.archive.as_slice(), &unpacked, &limits, "rendered")
        .unwrap();
    let director = files(&unpacked.join("t"));
    let cli = files(&out);
    assert_eq!(cli.len(), TABLE.len() + 2);
    assert_eq!(cli["bin/ctl"], (0o755, b"#!/bin/sh\necho 3\n".to_vec()));
    assert_eq!(director, cli);
}

/// A rendering error tries every template, then exits 1 naming the job,
/// each failing template with its line and the property or link at fault,
/// and writes nothing.
#[test]
fn render_errors_list_every_failing_template_and_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let templates = [
        ("fine", "fine"),
        ("undeclared", "ok\n<%= p('undeclared') %>"),
        ("nil", "<%= p('nodefault') %>"),
        ("missing_link", "\n\n<%= link('opt').address %>"),
        ("link_property", "<%= link('db').p('nope') %>"),
    ];
    let dir = release(tmp.path(), "bad", PROPERTY_SPEC, &templates);
    let (props, _, links) = inputs(tmp.path());
    let out = tmp.path().join("out");
    let o = boshctl(&[
        "render",
        dir.to_str().unwrap(),
        "bad",
        "--properties",
        &props,
        "--links",
        &links,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    for want in [
        "Unable to render templates for job 'bad'",
        "Error filling in template 'undeclared.erb' (line 2: Can't find property '[\"undeclared\"]')",
        "Error filling in template 'nil.erb' (line 1: Can't find property '[\"nodefault\"]')",
        "Error filling in template 'missing_link.erb' (line 3: Can't find link 'opt')",
        "Error filling in template 'link_property.erb' (line 1: Can't find property '[\"nope\"]' of link 'db')",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(!err.contains("fine.erb"), "{err}");
    assert!(files(&out).is_empty(), "{:?}", files(&out).keys().collect::<Vec<_>>());
}

/// Usage and input mistakes exit 2 and say which file, where, and what was
/// expected.
#[test]
fn bad_usage_and_input_exit_2_naming_file_and_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = release(tmp.path(), "t", PROPERTY_SPEC, &[("a", "a")]);
    let dir = dir.to_str().unwrap();
    let (props, _, _) = inputs(tmp.path());
    let out = tmp.path().join("out");
    let out = out.to_str().unwrap();
    let bad_spec = write(tmp.path(), "bad-spec.yml", "networks:\n  net: {ipp: 10.0.0.1}\n");
    let bad_key = write(tmp.path(), "bad-key.yml", "netwroks: {}\n");
    let bad_links = write(tmp.path(), "bad-links.yml", "other: {instances: []}\n");
    let list = write(tmp.path(), "list.yml", "- a\n");
    let renamed = release(tmp.path(), "renamed", "", &[]);
    let spec = renamed.join("jobs/renamed/spec");
    let text = std::fs::read_to_string(&spec).unwrap().replace("name: renamed", "name: other");
    std::fs::write(&spec, text).unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (&["render", dir, "t", "--out", out], &["--properties"]),
        (&["render", dir, "nope", "--properties", &props, "--out", out], &["job nope", "spec"]),
        (
            &["render", dir, "t", "--properties", &list, "--out", out],
            &["list.yml", "expected a hash"],
        ),
        (
            &["render", dir, "renamed", "--properties", &props, "--out", out],
            &["jobs/renamed/spec: name", "\"other\""],
        ),
        (
            &["render", dir, "t", "--properties", &props, "--spec", &bad_spec, "--out", out],
            &["bad-spec.yml", "networks.net.ipp", "unknown field"],
        ),
        (
            &["render", dir, "t", "--properties", &props, "--spec", &bad_key, "--out", out],
            &["bad-key.yml", "netwroks"],
        ),
        (
            &["render", dir, "t", "--properties", &props, "--links", &bad_links, "--out", out],
            &["bad-links.yml", "other", "consumes no link"],
        ),
    ];
    for (args, wants) in cases {
        let o = boshctl(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        for want in *wants {
            assert!(err.contains(want), "{args:?}: missing {want:?} in {err}");
        }
    }
    assert!(!Path::new(out).exists());
}
