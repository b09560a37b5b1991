use super::*;

fn settings() -> Settings {
    Settings {
        agent_id: "agent-1".into(),
        mbus: MbusSettings {
            url: "nats://10.0.0.6:4222".into(),
            user: "agent.agent-1".into(),
            // Characters a URL's userinfo must encode.
            password: "p@ss:w/rd%20?#".into(),
        },
        blobstore: BlobstoreSettings {
            url: "http://10.0.0.6:25250".into(),
            token: "blob-token-1".into(),
            mirrors: vec!["http://10.0.0.7:25250".into()],
        },
        networks: BTreeMap::from([(
            "default".into(),
            NetworkSettings {
                type_: "manual".into(),
                ip: "10.0.0.10".into(),
                ..Default::default()
            },
        )]),
        heartbeat_interval_secs: 7,
        ..Default::default()
    }
}

fn group() -> VmGroup {
    VmGroup {
        director: "boshd".into(),
        deployment: "cf".into(),
        instance_group: "web".into(),
        tags: json!({"team": "rc"}).as_object().unwrap().clone(),
    }
}

/// The director's env has BOSH's shape: credentials in the mbus URL, a
/// dav blobstore, groups and tags; the manifest's own `env.bosh` keys
/// stay and win over the director's defaults, but not over `mbus.urls`.
#[test]
fn the_director_sends_boshs_shape() {
    let manifest_env = json!({"persistent_disk_fs": "ext4",
        "bosh": {"password": "crypted", "heartbeat_interval_secs": 9, "mbus": {"urls": ["x"]}}});
    let env = director_env(&settings(), &manifest_env, Some(&group())).unwrap();
    assert_eq!(
        env,
        json!({
            "persistent_disk_fs": "ext4",
            "bosh": {
                "blobstores": [{"provider": "dav", "options": {
                    "endpoint": "http://10.0.0.6:25250", "user": "agent",
                    "password": "blob-token-1", "mirrors": ["http://10.0.0.7:25250"]}}],
                "heartbeat_interval_secs": 9,
                "password": "crypted",
                "mbus": {"urls": ["nats://agent.agent-1:p%40ss%3Aw%2Frd%2520%3F%23@10.0.0.6:4222"]},
                "group": "boshd-cf-web",
                "groups": ["boshd", "cf", "web", "boshd-cf", "cf-web", "boshd-cf-web"],
                "tags": {"team": "rc"},
            }
        })
    );
    // No tags, no group: none sent; empty URLs: no mbus, no blobstores.
    let bare = director_env(&Settings::default(), &Value::Null, None).unwrap();
    assert_eq!(bare, json!({"bosh": {"heartbeat_interval_secs": 0}}));
    let untagged = VmGroup { tags: Map::new(), ..group() };
    let env = director_env(&settings(), &json!({}), Some(&untagged)).unwrap();
    assert!(env["bosh"].get("tags").is_none(), "{env}");
}

/// What the director sends, the CPI turns back into the same settings
/// (the env aside, which the agent gets whole).
#[test]
fn the_cpi_builds_the_same_settings_back() {
    let want = settings();
    let env = director_env(&want, &json!({"x": 1}), Some(&group())).unwrap();
    let got = settings_from_create_vm("agent-1", want.networks.clone(), &env).unwrap();
    assert_eq!(got, Settings { env: env.clone(), ..want });
    assert_eq!(got.mbus.password, "p@ss:w/rd%20?#");
    assert_eq!(got.mbus.url, "nats://10.0.0.6:4222");
    // Nothing of BOSH's env: settings without a bus or a blobstore.
    let bare = settings_from_create_vm("a", BTreeMap::new(), &Value::Null).unwrap();
    assert_eq!(bare.mbus, MbusSettings::default());
    assert_eq!(bare.heartbeat_interval_secs, 30);
}

/// A request as a BOSH director writes it (no extra keys of ours) works.
#[test]
fn a_bosh_directors_request_is_understood() {
    let env = json!({"bosh": {
        "mbus": {"urls": ["nats://nats:secret-pw@192.168.1.1:4222"]},
        "blobstores": [{"provider": "dav", "options":
            {"endpoint": "http://192.168.1.1:25250", "user": "agent", "password": "pw2",
             "tls": {"cert": {"ca": "..."}}}}],
        "group": "d-dep-g", "groups": ["d"]}});
    let s = settings_from_create_vm("a-1", BTreeMap::new(), &env).unwrap();
    assert_eq!(
        s.mbus,
        MbusSettings {
            url: "nats://192.168.1.1:4222".into(),
            user: "nats".into(),
            password: "secret-pw".into()
        }
    );
    assert_eq!(s.blobstore.url, "http://192.168.1.1:25250");
    assert_eq!(s.blobstore.token, "pw2");
    assert_eq!(s.heartbeat_interval_secs, 30);
}

/// Malformed fields are errors naming the field's path, never its value.
#[test]
fn malformed_fields_name_their_path() {
    let err = |env: Value| settings_from_create_vm("a", BTreeMap::new(), &env).unwrap_err();
    let cases = [
        (json!([1]), "env"),
        (json!({"bosh": "x"}), "env.bosh"),
        (json!({"bosh": {"mbus": "nats://u:p@h"}}), "env.bosh.mbus"),
        (json!({"bosh": {"mbus": {}}}), "env.bosh.mbus.urls"),
        (json!({"bosh": {"mbus": {"urls": []}}}), "env.bosh.mbus.urls"),
        (json!({"bosh": {"mbus": {"urls": [4222]}}}), "env.bosh.mbus.urls[0]"),
        (json!({"bosh": {"mbus": {"urls": ["not a url"]}}}), "env.bosh.mbus.urls[0]"),
        (
            json!({"bosh": {"mbus": {"urls": ["https://u:sekrit1@h:25250"]}}}),
            "env.bosh.mbus.urls[0]",
        ),
        (json!({"bosh": {"mbus": {"urls": ["nats://h:4222"]}}}), "env.bosh.mbus.urls[0]"),
        (json!({"bosh": {"mbus": {"urls": ["nats://u@h:4222"]}}}), "env.bosh.mbus.urls[0]"),
        (json!({"bosh": {"blobstores": {}}}), "env.bosh.blobstores"),
        (json!({"bosh": {"blobstores": []}}), "env.bosh.blobstores"),
        (json!({"bosh": {"blobstores": [{"provider": "s3"}]}}), "env.bosh.blobstores[0].provider"),
        (json!({"bosh": {"blobstores": [{"provider": "dav"}]}}), "env.bosh.blobstores[0].options"),
        (
            json!({"bosh": {"blobstores": [{"provider": "dav", "options": {"password": "sekrit1"}}]}}),
            "env.bosh.blobstores[0].options.endpoint",
        ),
        (
            json!({"bosh": {"blobstores": [{"provider": "dav", "options": {"endpoint": "http://h"}}]}}),
            "env.bosh.blobstores[0].options.password",
        ),
        (
            json!({"bosh": {"blobstores": [{"provider": "dav", "options":
                {"endpoint": "http://h", "password": "sekrit1", "mirrors": "http://m"}}]}}),
            "env.bosh.blobstores[0].options.mirrors",
        ),
        (json!({"bosh": {"heartbeat_interval_secs": "30"}}), "env.bosh.heartbeat_interval_secs"),
    ];
    for (env, path) in cases {
        let e = err(env.clone());
        assert_eq!(e.path, path, "{env}: {e}");
        assert!(!e.to_string().contains("sekrit1"), "{e}");
    }
    let e = settings_from_create_vm("", BTreeMap::new(), &json!({})).unwrap_err();
    assert_eq!(e.path, "agent_id");
}
