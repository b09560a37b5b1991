//! `boshctl upload-release URL` and `upload-stemcell URL` (issue 16
//! item 3) against an HTTPS server started here (rustls, a CA made here)
//! and a real API server over etcd: the digest is checked, a wrong one,
//! an untrusted certificate and a redirect from https to http are refused
//! naming the URL, and nothing is stored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bosh_controllers::server::api::{self, ApiState};
use bosh_test_utils::TestEnv;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use sha1::Digest as _;

const TOKEN: &str = "cli-https-token";

/// The API over a fresh etcd, with a blobstore.
async fn director(env: &TestEnv) -> (String, bosh_api::store::Store) {
    let store = bosh_api::store::Store::connect(&env.store_config(), "/bosh").await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let storage = Arc::new(bosh_blobstore::LocalStorage::new(env.dir().join("blobs")));
    let state =
        ApiState::new(store.clone(), TOKEN).with_blobstore(storage, env.dir().join("scratch"));
    tokio::spawn(api::serve(listener, api::router(Arc::new(state)), std::future::pending()));
    (url, store)
}

/// Serves `files` by path over HTTPS with `pki`'s server certificate
/// (127.0.0.1), and `/to-http` as a redirect to `http_url`.
async fn https_server(pki: &Path, files: BTreeMap<String, Vec<u8>>, http_url: String) -> String {
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(pki.join("server.crt"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(pki.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let files = Arc::new(files);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, files, http_url) = (acceptor.clone(), files.clone(), http_url.clone());
            tokio::spawn(async move {
                // A client that refuses our certificate ends the handshake.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |req| {
                    let (files, http_url) = (files.clone(), http_url.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        let resp = if path == "/to-http" {
                            hyper::Response::builder()
                                .status(302)
                                .header("location", format!("{http_url}/release.tgz"))
                                .body(Full::new(Bytes::new()))
                        } else if let Some(body) = files.get(&path) {
                            hyper::Response::builder().body(Full::new(Bytes::from(body.clone())))
                        } else {
                            hyper::Response::builder().status(404).body(Full::new(Bytes::new()))
                        };
                        Ok::<_, std::convert::Infallible>(resp.unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    url
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn boshctl(url: &str, args: &[&str]) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_boshctl"))
        .args(args)
        .env("BOSH_DIRECTOR", url)
        .env("BOSH_TOKEN", TOKEN)
        // No system bundle trusts the test's CA; only `--ca-cert` may.
        .env("SSL_CERT_FILE", "/nonexistent")
        .output()
        .await
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The example release as a tarball (and its version), and an
/// agent-only stemcell.
fn artifacts(tmp: &Path) -> (PathBuf, String, PathBuf) {
    let rel = tmp.join("release");
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/release");
    bosh_test_utils::copy_dir(&examples, &rel).unwrap();
    let opts = bosh_api::release::CreateOptions {
        tarball: Some(tmp.join("release.tgz")),
        force: true,
        cache_dir: tmp.join("cache"),
        ..Default::default()
    };
    let created = bosh_api::release::create_release(&rel, &opts).unwrap();
    let agent = tmp.join("bosh-agent");
    std::fs::write(&agent, "#!/bin/sh\n").unwrap();
    let image = tmp.join("image");
    bosh_api::local_stemcell::build_image(&agent, &image).unwrap();
    let manifest = bosh_api::release::stemcell::StemcellManifest {
        name: "bosh-https".into(),
        version: "7".into(),
        operating_system: "local".into(),
        bosh_protocol: "1".into(),
        api_version: Some(3),
        stemcell_formats: vec![bosh_api::local_stemcell::FORMAT.into()],
        ..Default::default()
    };
    let sc = tmp.join("stemcell.tgz");
    bosh_api::release::stemcell::write_stemcell(&sc, &manifest, &image, None).unwrap();
    (created.tarball.unwrap(), created.manifest.version, sc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_uploads_check_the_digest_and_refuse_what_is_not_trusted() {
    let env = TestEnv::etcd_only().await.unwrap();
    let (director, store) = director(&env).await;
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let ca = bosh_api::pki::EtcdPki::ensure(&pki).unwrap().ca();
    let (release, version, stemcell) = artifacts(tmp.path());
    let (rel_bytes, sc_bytes) =
        (std::fs::read(&release).unwrap(), std::fs::read(&stemcell).unwrap());
    let sha256 = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&rel_bytes)));
    let sc_sha1 = hex::encode(sha1::Sha1::digest(&sc_bytes));
    let files = BTreeMap::from([
        ("/release.tgz".to_string(), rel_bytes),
        ("/stemcell.tgz".to_string(), sc_bytes),
    ]);
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_url = format!("http://{}", plain.local_addr().unwrap());
    let server = https_server(&pki, files, plain_url.clone()).await;
    let ca = ca.to_str().unwrap();
    let rel_url = format!("{server}/release.tgz");
    let stored = || async {
        let releases = store.list::<bosh_api::objects::ReleaseSpec>("").await.unwrap().items;
        let stemcells = store.list::<bosh_api::objects::StemcellSpec>("").await.unwrap().items;
        (releases.len(), stemcells.len())
    };

    // Not trusted: no --ca-cert.
    let o = boshctl(&director, &["upload-release", &rel_url, "--sha1", &sha256]).await;
    assert_ne!(o.code, 0, "{}", o.stdout);
    assert!(o.stderr.contains(&rel_url) && o.stderr.contains("certificate"), "{}", o.stderr);
    // A wrong digest, in either form.
    let wrong = format!("sha256:{}", "0".repeat(64));
    for bad in [wrong.as_str(), "da39a3ee5e6b4b0d3255bfef95601890afd80709"] {
        let o =
            boshctl(&director, &["upload-release", &rel_url, "--ca-cert", ca, "--sha1", bad]).await;
        assert_ne!(o.code, 0, "{}", o.stdout);
        assert!(
            o.stderr.contains("does not match --sha1") && o.stderr.contains(bad),
            "{}",
            o.stderr
        );
        assert!(o.stderr.contains(&rel_url), "{}", o.stderr);
    }
    // A malformed digest is refused before anything is fetched.
    let o =
        boshctl(&director, &["upload-release", &rel_url, "--ca-cert", ca, "--sha1", "abc"]).await;
    assert!(o.code != 0 && o.stderr.contains("expected 40 hex digits"), "{}", o.stderr);
    // A redirect from https to http.
    let to_http = format!("{server}/to-http");
    let o = boshctl(&director, &["upload-release", &to_http, "--ca-cert", ca]).await;
    assert_ne!(o.code, 0, "{}", o.stdout);
    assert!(
        o.stderr.contains("redirect from https") && o.stderr.contains(&plain_url),
        "{}",
        o.stderr
    );
    assert_eq!(stored().await, (0, 0), "nothing stored after the refusals");

    // `deploy` of a manifest naming the release by URL uploads it first
    // (once trusted and matching), then writes the deployment.
    let cc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests");
    let o =
        boshctl(&director, &["update-cloud-config", cc.join("cloud-config.yml").to_str().unwrap()])
            .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let hello = std::fs::read_to_string(cc.join("hello.yml")).unwrap();
    let entry = format!(
        "- name: hello\n  version: \"{version}\"\n  url: {rel_url}\n  sha1: \"{sha256}\"\n"
    );
    let manifest = tmp.path().join("hello.yml");
    std::fs::write(&manifest, hello.replace("- name: hello\n  version: latest\n", &entry)).unwrap();
    let m = manifest.to_str().unwrap();
    let o = boshctl(&director, &["deploy", "-d", "hello", m, "--no-follow"]).await;
    assert_ne!(o.code, 0, "untrusted: {}", o.stdout);
    assert!(o.stderr.contains("certificate"), "{}", o.stderr);
    assert_eq!(stored().await, (0, 0), "nothing uploaded");
    assert!(store.list::<bosh_api::objects::DeploymentSpec>("").await.unwrap().items.is_empty());
    let o = boshctl(&director, &["deploy", "-d", "hello", m, "--ca-cert", ca, "--no-follow"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains(&format!("Uploaded release hello/{version}")), "{}", o.stdout);
    assert_eq!(store.list::<bosh_api::objects::DeploymentSpec>("").await.unwrap().items.len(), 1);
    // The director has it now: another deploy fetches nothing (no CA
    // needed), and upload-release finds it stored.
    let second = tmp.path().join("hello-2.yml");
    let text =
        std::fs::read_to_string(&manifest).unwrap().replace("\nname: hello\n", "\nname: hello-2\n");
    std::fs::write(&second, text).unwrap();
    let o = boshctl(&director, &["deploy", second.to_str().unwrap(), "--no-follow"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stdout.contains("Uploaded release"), "{}", o.stdout);
    let o =
        boshctl(&director, &["upload-release", &rel_url, "--ca-cert", ca, "--sha1", &sha256]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains(&format!("hello/{version}")), "{}", o.stdout);
    let sc_url = format!("{server}/stemcell.tgz");
    let args = ["upload-stemcell", &sc_url, "--ca-cert", ca, "--sha1", &sc_sha1, "--no-wait"];
    let o = boshctl(&director, &args).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("Uploaded stemcell bosh-https/7"), "{}", o.stdout);
    assert_eq!(stored().await, (1, 1));
}
