//! Variables against a real etcd.

use std::time::{Duration, Instant};

use bosh_api::store::Store;
use bosh_test_utils::TestEnv;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use serde_json::{Value, json};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;

async fn setup() -> (TestEnv, Store) {
    let env = TestEnv::etcd_only().await.expect("start etcd");
    let store = Store::connect(&env.store_config(), "/bosh").await.expect("connect");
    (env, store)
}

/// A manifest with the given variables section and properties.
fn manifest(variables: Value, properties: Value) -> Value {
    json!({
        "name": "d",
        "variables": variables,
        "instance_groups": [{"name": "web", "jobs": [{"name": "j", "release": "r", "properties": properties}]}],
    })
}

fn props(out: &Value) -> &Value {
    &out["instance_groups"][0]["jobs"][0]["properties"]
}

fn der_of(pem_text: &str) -> Vec<u8> {
    let p = pem::parse(pem_text).expect("PEM");
    assert_eq!(p.tag(), "CERTIFICATE");
    p.contents().to_vec()
}

/// Every string in a JSON value, to check none appears in some text.
fn secret_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|i| secret_strings(i, out)),
        Value::Object(m) => m.values().for_each(|i| secret_strings(i, out)),
        _ => {}
    }
}

/// A 2048-bit RSA key takes well under a second even in a debug build.
#[test]
fn rsa_keygen_must_be_fast_in_debug_builds() {
    let start = Instant::now();
    generate::generate(VariableType::Rsa, &Properties::new(), None).unwrap();
    assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
}

/// Passwords are 20 lowercase letters and digits, or `length` of them.
#[tokio::test]
async fn passwords_are_generated_with_config_server_alphabet_and_length() {
    let (_env, store) = setup().await;
    let m = manifest(
        json!([{"name": "pw", "type": "password"}, {"name": "long", "type": "password", "options": {"length": 40}}]),
        json!({"a": "((pw))", "b": "((long))", "c": "user:((pw))@host"}),
    );
    let out = interpolate(&store, "d", &m).await.unwrap();
    let pw = props(&out)["a"].as_str().unwrap();
    assert_eq!(pw.len(), 20);
    assert!(pw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()), "{pw}");
    assert_eq!(props(&out)["b"].as_str().unwrap().len(), 40);
    assert_eq!(props(&out)["c"], json!(format!("user:{pw}@host")));
}

/// A variable is generated once: later interpolations reuse the stored value and id.
#[tokio::test]
async fn interpolate_must_reuse_stored_values_instead_of_regenerating() {
    let (_env, store) = setup().await;
    let m = manifest(
        json!([{"name": "pw", "type": "password"}, {"name": "k", "type": "rsa"}]),
        json!({"a": "((pw))", "k": "((k.private_key))"}),
    );
    let first = interpolate(&store, "d", &m).await.unwrap();
    let ids = list(&store, "d").await.unwrap();
    let second = interpolate(&store, "d", &m).await.unwrap();
    assert_eq!(first, second);
    let again: Vec<String> = list(&store, "d").await.unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(ids.into_iter().map(|i| i.id).collect::<Vec<_>>(), again);
}

/// Two interpolations racing on a fresh deployment agree on one value.
#[tokio::test]
async fn racing_interpolations_must_agree_on_one_value() {
    let (_env, store) = setup().await;
    let m = manifest(json!([{"name": "pw", "type": "password"}]), json!({"a": "((pw))"}));
    let (a, b) = tokio::join!(interpolate(&store, "d", &m), interpolate(&store, "d", &m));
    assert_eq!(a.unwrap(), b.unwrap());
}

/// Certificates chain to their CA, intermediates included, with the
/// requested SANs, key usages and subject.
#[tokio::test]
async fn certificates_must_chain_to_their_ca_with_requested_names() {
    let (_env, store) = setup().await;
    // Declared leaf first: generation must still put the CAs first.
    let m = manifest(
        json!([
            {"name": "leaf", "type": "certificate", "options": {
                "ca": "inter", "common_name": "web.example", "alternative_names": ["web.example", "10.0.0.5"],
                "extended_key_usage": ["client_auth", "server_auth"], "duration": 30}},
            {"name": "inter", "type": "certificate", "options": {"ca": "root", "is_ca": true, "common_name": "inter"}},
            {"name": "root", "type": "certificate", "options": {"is_ca": true, "common_name": "root", "organization": "Acme"}},
        ]),
        json!({"leaf": "((leaf))", "root_ca": "((root.ca))", "root": "((root.certificate))",
            "inter": "((inter.certificate))", "inter_ca": "((inter.ca))"}),
    );
    let out = interpolate(&store, "d", &m).await.unwrap();
    let leaf = &props(&out)["leaf"];
    let inter_pem = props(&out)["inter"].as_str().unwrap();
    assert_eq!(leaf["ca"].as_str().unwrap(), inter_pem, "a leaf's ca is its signer");
    assert_eq!(props(&out)["root_ca"], props(&out)["root"], "a root CA's ca is itself");
    assert_eq!(props(&out)["inter_ca"], props(&out)["root"], "an intermediate's ca is its root");

    let leaf_der = der_of(leaf["certificate"].as_str().unwrap());
    let inter_der = der_of(inter_pem);
    let root_der = der_of(props(&out)["root_ca"].as_str().unwrap());
    let (_, leaf_cert) = X509Certificate::from_der(&leaf_der).unwrap();
    let (_, inter_cert) = X509Certificate::from_der(&inter_der).unwrap();
    let (_, root_cert) = X509Certificate::from_der(&root_der).unwrap();

    root_cert.verify_signature(None).expect("root is self-signed");
    inter_cert.verify_signature(Some(root_cert.public_key())).expect("root signs inter");
    leaf_cert.verify_signature(Some(inter_cert.public_key())).expect("inter signs leaf");
    assert_eq!(leaf_cert.issuer(), inter_cert.subject());
    assert_eq!(inter_cert.issuer(), root_cert.subject());

    assert!(root_cert.is_ca() && inter_cert.is_ca() && !leaf_cert.is_ca());
    assert!(root_cert.subject().to_string().contains("O=Acme"), "{}", root_cert.subject());
    assert!(leaf_cert.subject().to_string().contains("CN=web.example"));
    assert!(leaf_cert.subject().to_string().contains("O=Cloud Foundry"));
    let sans = leaf_cert.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = sans
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => d.to_string(),
            GeneralName::IPAddress(ip) => format!("{ip:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(names, vec!["web.example".to_string(), format!("{:?}", [10u8, 0, 0, 5])]);
    let eku = leaf_cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && eku.server_auth);
    let days = (leaf_cert.validity().not_after.timestamp()
        - leaf_cert.validity().not_before.timestamp())
        / 86_400;
    assert_eq!(days, 30);

    let key = pem::parse(leaf["private_key"].as_str().unwrap()).unwrap();
    assert_eq!(key.tag(), "RSA PRIVATE KEY");
    let key = rsa::PrivateKey::from_pkcs1_der(key.contents()).unwrap();
    use rsa::pkcs8::EncodePublicKey as _;
    assert_eq!(
        key.to_public_key().to_public_key_der().unwrap().as_bytes(),
        leaf_cert.public_key().raw,
        "the private key belongs to the certificate"
    );
}

/// A CA stored by an earlier deploy (and no longer declared) still signs.
#[tokio::test]
async fn a_stored_ca_that_is_no_longer_declared_still_signs() {
    let (_env, store) = setup().await;
    let ca = json!([{"name": "ca", "type": "certificate", "options": {"is_ca": true, "common_name": "ca"}}]);
    interpolate(&store, "d", &manifest(ca, json!({}))).await.unwrap();
    let m = manifest(
        json!([{"name": "tls", "type": "certificate", "options": {"ca": "ca", "common_name": "x"}}]),
        json!({"tls": "((tls))", "ca": "((ca.certificate))"}),
    );
    let out = interpolate(&store, "d", &m).await.unwrap();
    assert_eq!(props(&out)["tls"]["ca"], props(&out)["ca"]);
}

/// RSA variables are a PKCS#1 private key and its PKIX public key.
#[tokio::test]
async fn rsa_variables_are_matching_pem_key_pairs() {
    let (_env, store) = setup().await;
    let m = manifest(json!([{"name": "k", "type": "rsa"}]), json!({"k": "((k))"}));
    let out = interpolate(&store, "d", &m).await.unwrap();
    let k = &props(&out)["k"];
    let private = pem::parse(k["private_key"].as_str().unwrap()).unwrap();
    let public = pem::parse(k["public_key"].as_str().unwrap()).unwrap();
    assert_eq!((private.tag(), public.tag()), ("RSA PRIVATE KEY", "PUBLIC KEY"));
    let key = rsa::PrivateKey::from_pkcs1_der(private.contents()).unwrap();
    use rsa::pkcs8::DecodePublicKey as _;
    let pubkey = rsa::PublicKey::from_public_key_der(public.contents()).unwrap();
    assert_eq!(key.to_public_key(), pubkey);
    assert_eq!(pubkey.n_bytes().len() * 8, generate::RSA_BITS);
}

/// SSH variables carry an OpenSSH public key and its MD5 fingerprint.
#[tokio::test]
async fn ssh_variables_carry_openssh_public_key_and_fingerprint() {
    let (_env, store) = setup().await;
    let m = manifest(json!([{"name": "s", "type": "ssh"}]), json!({"s": "((s))"}));
    let out = interpolate(&store, "d", &m).await.unwrap();
    let s = &props(&out)["s"];
    let public = s["public_key"].as_str().unwrap();
    let b64 = public.strip_prefix("ssh-rsa ").and_then(|r| r.strip_suffix('\n')).expect(public);
    use base64::Engine as _;
    let blob = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let private = pem::parse(s["private_key"].as_str().unwrap()).unwrap();
    assert_eq!(private.tag(), "RSA PRIVATE KEY");
    let key = rsa::PrivateKey::from_pkcs1_der(private.contents()).unwrap();
    assert_eq!(blob, generate::ssh_rsa_blob(&key.to_public_key()));
    let fp = s["public_key_fingerprint"].as_str().unwrap();
    assert_eq!(fp, generate::md5_fingerprint(&blob));
    assert_eq!(fp.split(':').count(), 16);
    // Cross-check the blob encoding against a known key: e = 65537.
    assert_eq!(&blob[..4 + 7], b"\0\0\0\x07ssh-rsa");
    assert_eq!(&blob[11..18], &[0, 0, 0, 3, 1, 0, 1]);
}

/// `list` shows names, types and ids, and never a value.
#[tokio::test]
async fn list_shows_names_types_and_ids_but_no_values() {
    let (_env, store) = setup().await;
    let m = manifest(
        json!([{"name": "pw", "type": "password"}, {"name": "s", "type": "ssh"}]),
        json!({"a": "((pw))", "s": "((s))"}),
    );
    let out = interpolate(&store, "d", &m).await.unwrap();
    let infos = list(&store, "d").await.unwrap();
    let summary: Vec<(&str, &str)> =
        infos.iter().map(|i| (i.name.as_str(), i.type_.as_str())).collect();
    assert_eq!(summary, vec![("pw", "password"), ("s", "ssh")]);
    assert!(infos.iter().all(|i| !i.id.is_empty()));
    let listed = format!("{infos:?} {}", serde_json::to_string(&infos).unwrap());
    let mut secrets = Vec::new();
    secret_strings(props(&out), &mut secrets);
    for s in secrets {
        assert!(!listed.contains(&s), "list shows a value");
    }
    assert!(list(&store, "other").await.unwrap().is_empty());
}

/// `Debug` of a stored value and every error's text leave the value out.
#[tokio::test]
async fn debug_and_error_text_never_contain_values() {
    let (_env, store) = setup().await;
    let m = manifest(json!([{"name": "pw", "type": "password"}]), json!({"a": "((pw))"}));
    let out = interpolate(&store, "d", &m).await.unwrap();
    let pw = props(&out)["a"].as_str().unwrap().to_string();
    let stored = Ctx { store: &store, deployment: "d" }.get("pw").await.unwrap().unwrap();
    assert!(!format!("{stored:?}").contains(&pw));
    assert!(format!("{:?}", stored.value).contains("redacted"));

    // A missing key of a stored variable, and a map embedded in a string.
    let bad = manifest(
        json!([{"name": "pw", "type": "password"}, {"name": "k", "type": "rsa"}]),
        json!({"a": "((pw.nope))", "b": "x-((k))"}),
    );
    let err = interpolate(&store, "d", &bad).await.unwrap_err();
    let mut text = format!("{err} {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(&s.to_string());
        source = s.source();
    }
    assert!(text.contains("Finding variable 'pw.nope'"), "{text}");
    assert!(!text.contains(&pw), "an error shows a value");
    assert!(!text.contains("PRIVATE KEY"), "an error shows a key");
}

/// A placeholder for a variable neither declared nor stored names it and
/// every path that uses it.
#[tokio::test]
async fn undeclared_variables_are_errors_naming_their_paths() {
    let (_env, store) = setup().await;
    let m = manifest(
        json!([{"name": "pw", "type": "password"}]),
        json!({"a": "((pw))", "b": "((nope))", "c": ["x-((nope.key))"], "((other))": 1}),
    );
    let err = interpolate(&store, "d", &m).await.unwrap_err();
    let Error::Undeclared { missing, .. } = &err else { panic!("{err}") };
    let p = "instance_groups[0].jobs[0].properties";
    assert_eq!(
        missing,
        &vec![
            MissingVariable {
                name: "nope".into(),
                paths: vec![format!("{p}.b"), format!("{p}.c[0]")]
            },
            MissingVariable { name: "other".into(), paths: vec![format!("{p}.((other))")] },
        ]
    );
    assert!(err.to_string().contains(&format!("'nope' (at {p}.b, {p}.c[0])")), "{err}");
}

/// A variable stored but no longer declared still resolves, as the config
/// server's values do; `((!name))` means `name`.
#[tokio::test]
async fn stored_undeclared_variables_and_bang_placeholders_resolve() {
    let (_env, store) = setup().await;
    let pw = json!([{"name": "pw", "type": "password"}]);
    let first = interpolate(&store, "d", &manifest(pw, json!({"a": "((pw))"}))).await.unwrap();
    let out =
        interpolate(&store, "d", &manifest(json!([]), json!({"a": "((!pw))"}))).await.unwrap();
    assert_eq!(props(&out)["a"], props(&first)["a"]);
}

/// Certificates naming each other as CA are an error naming the loop.
#[tokio::test]
async fn ca_cycles_are_errors() {
    let (_env, store) = setup().await;
    let m = manifest(
        json!([
            {"name": "a", "type": "certificate", "options": {"ca": "b", "is_ca": true}},
            {"name": "b", "type": "certificate", "options": {"ca": "a", "is_ca": true}},
            {"name": "self", "type": "certificate", "options": {"ca": "self", "is_ca": true}},
        ]),
        json!({}),
    );
    let err = interpolate(&store, "d", &m).await.unwrap_err();
    let Error::CaCycle { cycle, .. } = &err else { panic!("{err}") };
    assert_eq!(cycle, &["a", "b", "a"]);
    assert!(list(&store, "d").await.unwrap().is_empty(), "nothing generated");
}

/// A certificate's CA must be declared or stored, and a leaf needs one.
#[tokio::test]
async fn missing_ca_is_an_error_before_anything_is_generated() {
    let (_env, store) = setup().await;
    let m = manifest(
        json!([
            {"name": "pw", "type": "password"},
            {"name": "tls", "type": "certificate", "options": {"ca": "nope"}},
        ]),
        json!({}),
    );
    let err = interpolate(&store, "d", &m).await.unwrap_err();
    assert!(
        matches!(&err, Error::MissingCa { variable, ca, .. } if variable == "tls" && ca == "nope")
    );
    assert!(list(&store, "d").await.unwrap().is_empty(), "nothing generated");

    let leaf = manifest(json!([{"name": "tls", "type": "certificate", "options": {}}]), json!({}));
    let err = interpolate(&store, "d", &leaf).await.unwrap_err();
    assert!(err.to_string().contains("needs the 'ca' option"), "{err}");

    let pw_as_ca = manifest(
        json!([
            {"name": "pw", "type": "password"},
            {"name": "tls", "type": "certificate", "options": {"ca": "pw"}},
        ]),
        json!({}),
    );
    let err = interpolate(&store, "d", &pw_as_ca).await.unwrap_err();
    assert!(matches!(err, Error::CaNotCertificate { .. }), "{err}");
}

/// Bad options and duplicate names are errors naming the variable.
#[tokio::test]
async fn invalid_declarations_are_errors() {
    let (_env, store) = setup().await;
    let unknown =
        manifest(json!([{"name": "pw", "type": "password", "options": {"lenght": 3}}]), json!({}));
    let err = interpolate(&store, "d", &unknown).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidOptions { variable, .. } if variable == "pw"), "{err}");
    let dup = manifest(
        json!([{"name": "pw", "type": "password"}, {"name": "pw", "type": "rsa"}]),
        json!({}),
    );
    assert!(matches!(interpolate(&store, "d", &dup).await, Err(Error::Duplicate { .. })));
    let eku = manifest(
        json!([{"name": "c", "type": "certificate", "options": {"is_ca": true, "extended_key_usage": ["code_signing"]}}]),
        json!({}),
    );
    assert!(matches!(interpolate(&store, "d", &eku).await, Err(Error::InvalidOptions { .. })));
}

/// `delete_all` removes one deployment's variables and leaves others'.
#[tokio::test]
async fn delete_all_removes_only_that_deployments_variables() {
    let (_env, store) = setup().await;
    let m = manifest(json!([{"name": "pw", "type": "password"}]), json!({"a": "((pw))"}));
    let before = interpolate(&store, "d", &m).await.unwrap();
    interpolate(&store, "d2", &m).await.unwrap();
    delete_all(&store, "d").await.unwrap();
    assert!(list(&store, "d").await.unwrap().is_empty());
    assert_eq!(list(&store, "d2").await.unwrap().len(), 1);
    let after = interpolate(&store, "d", &m).await.unwrap();
    assert_ne!(props(&before)["a"], props(&after)["a"], "regenerated after delete");
}

/// Absolute names are shared between deployments and survive `delete_all`.
#[tokio::test]
async fn absolute_variables_are_shared_between_deployments() {
    let (_env, store) = setup().await;
    let m = manifest(
        json!([{"name": "/shared_pw", "type": "password"}]),
        json!({"a": "((/shared_pw))"}),
    );
    let a = interpolate(&store, "d", &m).await.unwrap();
    delete_all(&store, "d").await.unwrap();
    let b = interpolate(&store, "other", &manifest(json!([]), json!({"a": "((/shared_pw))"})))
        .await
        .unwrap();
    assert_eq!(props(&a)["a"], props(&b)["a"]);
}

/// `substitute` puts stored values (absolute ones too) in place without
/// generating anything, names an unknown variable with its path, never
/// its value; `versions` gives the ids of the values it would use.
#[tokio::test]
async fn substitute_uses_stored_values_only_and_versions_name_them() {
    let (_env, store) = setup().await;
    let m = manifest(
        json!([{"name": "pw", "type": "password"}, {"name": "/shared", "type": "password"}]),
        json!({}),
    );
    interpolate(&store, "d", &m).await.unwrap();
    let env = json!({"bosh": {"password": "((pw))", "other": "((/shared))"}, "x": 1});
    let out = substitute(&store, "d", &env).await.unwrap();
    let pw = out["bosh"]["password"].as_str().unwrap().to_string();
    assert_eq!(pw.len(), 20);
    assert_eq!(out["bosh"]["other"].as_str().unwrap().len(), 20);
    assert_eq!(out["x"], 1);
    let ids = versions(&store, "d", &env).await.unwrap();
    let listed = list(&store, "d").await.unwrap();
    assert_eq!(ids["pw"], listed.iter().find(|v| v.name == "pw").unwrap().id);
    assert!(ids.contains_key("/shared"));

    let err = substitute(&store, "d", &json!({"bosh": {"password": "((nope))"}})).await;
    let msg = err.unwrap_err().to_string();
    assert!(msg.contains("'nope' (at bosh.password)"), "{msg}");
    assert!(list(&store, "d").await.unwrap().iter().all(|v| v.name != "nope"), "generated");
    assert!(!msg.contains(&pw));
}
