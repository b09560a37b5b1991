//! The quickstart's path, as `hack/up.sh` and `hack/down.sh` take it, on
//! a data dir and subnet of the test's own: `boshctl up` starts etcd and
//! boshd; the Debian stemcell, the sample release (from a copy of
//! `examples/release`) and a cloud config go in through the API; the
//! sample deployment `examples/manifests/hello.yml` deploys onto container
//! VMs whose job answers at each VM's IP; `boshctl down` stops everything
//! and leaves no process, container, mount, network namespace, veth or
//! bridge of the environment on the host.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bosh_cpi::local::container::Runc;
use bosh_cpi::local::network::{NetEnv, leftovers};
use bosh_cpi::local::process::ProcId;
use bosh_test_utils::SubnetLease;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn boshctl(dir: &Path, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_boshctl"))
        .args(args)
        .current_dir(dir)
        .env_remove("BOSH_DIRECTOR")
        .env_remove("BOSH_TOKEN")
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `boshctl down` when the test ends, however it ends.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let data = self.0.join(".bosh-rs");
        let _ = boshctl(&self.0, &["down", "--data-dir", &data.to_string_lossy()]);
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `examples/manifests/cloud-config.yml` with its networks replaced by the
/// leased subnet (no `dns:`: this environment serves no DNS).
fn cloud_config(subnet: &SubnetLease) -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join("examples/manifests/cloud-config.yml")).unwrap();
    let mut cloud = bosh_api::yaml::parse_value(&text, "cloud-config.yml").unwrap();
    cloud["networks"] = serde_json::json!([{
        "name": "default",
        "type": "manual",
        "subnets": [{
            "range": subnet.range(),
            "gateway": subnet.ip(1).to_string(),
            "reserved": [format!("{} - {}", subnet.ip(1), subnet.ip(9))],
            "static": [format!("{} - {}", subnet.ip(10), subnet.ip(49))],
            "azs": ["z1", "z2", "z3"],
        }],
    }]);
    cloud["compilation"]["network"] = "default".into();
    cloud
}

async fn get(url: &str) -> Option<String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().ok()?;
    let r = client.get(url).send().await.ok()?;
    r.status().is_success().then_some(())?;
    r.text().await.ok()
}

/// The boshctl commands run blocking on the test's one thread: nothing
/// else runs on it meanwhile.
#[tokio::test]
async fn up_deploys_the_sample_and_down_leaves_nothing_behind() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: container VMs need root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let subnet = SubnetLease::acquire_bridged();
    let _down = Down(work.to_path_buf());
    let data = work.join(".bosh-rs");

    let o = boshctl(work, &["up", "--data-dir", &data.to_string_lossy(), "--timeout", "120"]);
    assert_eq!(o.code, 0, "up: {}\n{}", o.stdout, o.stderr);
    let pids: Vec<i32> = ["etcd", "boshd"]
        .iter()
        .map(|p| std::fs::read_to_string(data.join(format!("{p}.pid"))).unwrap().trim().parse())
        .collect::<Result<_, _>>()
        .unwrap();

    // From here on boshctl finds the director by itself (./.bosh-rs).
    let stemcell = data.join("bosh-local-stemcell.tgz");
    let o = boshctl(work, &["build-local-stemcell", "--out", &stemcell.to_string_lossy()]);
    assert_eq!(o.code, 0, "build-local-stemcell: {}", o.stderr);
    let o = boshctl(work, &["upload-stemcell", &stemcell.to_string_lossy()]);
    assert_eq!(o.code, 0, "upload-stemcell: {}", o.stderr);
    let release = work.join("release-src");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(repo().join("examples/release"))
        .arg(&release)
        .status()
        .unwrap();
    assert!(copied.success());
    let o = boshctl(work, &["upload-release", &release.to_string_lossy()]);
    assert_eq!(o.code, 0, "upload-release: {}", o.stderr);
    let cloud = work.join("cloud-config.yml");
    std::fs::write(&cloud, serde_json::to_vec(&cloud_config(&subnet)).unwrap()).unwrap();
    let o = boshctl(work, &["update-cloud-config", &cloud.to_string_lossy()]);
    assert_eq!(o.code, 0, "update-cloud-config: {}", o.stderr);
    let manifest = repo().join("examples/manifests/hello.yml");
    let o = boshctl(work, &["deploy", "-d", "hello", &manifest.to_string_lossy()]);
    assert_eq!(o.code, 0, "deploy: {}\n{}", o.stdout, o.stderr);

    let o = boshctl(work, &["instances", "-d", "hello", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let listed: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let ips: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["instance"]["spec"]["networks"][0]["ip"].as_str().map(String::from))
        .collect();
    assert_eq!(ips.len(), 3, "{}", o.stdout);
    for ip in &ips {
        let body = get(&format!("http://{ip}:8080/")).await;
        assert!(
            body.as_deref().is_some_and(|b| b.contains("Hello from bosh-rs")),
            "{ip}: {body:?}"
        );
    }
    let cpi = data.join("boshd/cpi");
    let runc = Runc::new(&cpi.join("runc"));
    assert_eq!(runc.list().unwrap().len(), 3, "three container VMs run");
    assert!(!leftovers(&NetEnv::for_root(&cpi)).unwrap().is_empty());

    let o = boshctl(work, &["down", "--data-dir", &data.to_string_lossy()]);
    assert_eq!(o.code, 0, "down: {}\n{}", o.stdout, o.stderr);
    for pid in pids {
        let alive = ProcId::of(pid).is_some_and(|p| p.is_alive());
        assert!(!alive, "process {pid} is gone");
    }
    assert_eq!(runc.list().unwrap(), Vec::<String>::new(), "no container left");
    assert_eq!(bosh_test_utils::mounts_under(&data), Vec::<String>::new(), "no mount left");
    assert_eq!(leftovers(&NetEnv::for_root(&cpi)).unwrap(), Vec::<String>::new());
    for ip in &ips {
        assert_eq!(get(&format!("http://{ip}:8080/")).await, None, "{ip} no longer answers");
    }
}
