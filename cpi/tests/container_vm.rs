//! The local CPI's container VMs with real runc, overlayfs and the Debian
//! rootfs stemcell, driven through the CPI trait as the director does.
//! The agent here is a stand-in script (the agent protocol is covered by
//! the controllers' integration tests): it records what it sees of the
//! VM, then waits.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bosh_api::local_stemcell::rootfs;
use bosh_cpi::local::LocalCpi;
use bosh_cpi::{Cpi, CreateVm};

/// What the stand-in agent records, under /var/vcap/data/seen/.
const AGENT: &str = r#"#!/bin/sh
mkdir -p /var/vcap/data/seen
hostname > /var/vcap/data/seen/hostname
ls /proc | grep -c '^[0-9]' > /var/vcap/data/seen/procs
echo changed > /etc/issue
exec sleep 100000
"#;

/// The rootfs stemcell image with the stand-in agent, built (or taken from
/// the per-machine cache) once.
fn image(tmp: &Path) -> PathBuf {
    let agent = tmp.join("bosh-agent");
    std::fs::write(&agent, AGENT).unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = tmp.join("stemcell.tgz");
    let cache = rootfs::default_cache().expect("HOME");
    let (_, fs) =
        rootfs::write_stemcell(&agent, &cache, &out, &Default::default(), |l| eprintln!("{l}"))
            .unwrap();
    fs.path.parent().unwrap().join(format!("image-{}.tgz", &fs.agent_sha256[..16]))
}

fn image_cache() -> PathBuf {
    rootfs::default_cache().unwrap().parent().unwrap().join("images")
}

async fn eventually_file(path: &Path) -> String {
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.is_empty()
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display())
}

#[tokio::test]
async fn a_container_vm_is_isolated_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let image = image(tmp.path());
    let root = tmp.path().join("cpi");
    let cpi = LocalCpi::open(&root).unwrap().with_image_cache(&image_cache());
    let stemcell = cpi.create_stemcell(None, &image, &serde_json::json!({})).await.unwrap();
    let req = CreateVm {
        request_id: "r1".into(),
        agent_id: "agent-one".into(),
        stemcell_cid: stemcell.clone(),
        cloud_properties: serde_json::json!({"ram": 256, "cpu": 1, "unknown": true}),
        networks: Default::default(),
        disk_cids: vec![],
        settings: Default::default(),
        env: serde_json::json!({}),
        ..Default::default()
    };
    let vm = cpi.create_vm(None, &req).await.unwrap();
    assert!(cpi.has_vm(&vm).await.unwrap());
    let upper = cpi.vm_dir(&vm).join("upper");
    let seen = upper.join("var/vcap/data/seen");
    assert_eq!(eventually_file(&seen.join("hostname")).await.trim(), "agent-one");
    let procs: usize = eventually_file(&seen.join("procs")).await.trim().parse().unwrap();
    assert!(procs < 10, "the VM sees only its own processes, not the host's: {procs}");
    assert_eq!(eventually_file(&upper.join("etc/issue")).await, "changed\n");
    assert_ne!(std::fs::read_to_string("/etc/issue").unwrap_or_default(), "changed\n");

    // A disk attached to the running VM shows inside it.
    let disk = cpi.create_disk(None, "d1", 10, &serde_json::json!({}), None).await.unwrap();
    std::fs::write(cpi.disk_dir(&disk).join("marker"), "kept").unwrap();
    cpi.attach_disk(None, &vm, &disk).await.unwrap();
    let init = cpi.vm_process(&vm).await.unwrap().pid;
    let inside = std::process::Command::new("nsenter")
        .args(["-t", &init.to_string(), "-m", "cat"])
        .arg(format!("/var/vcap/bosh/disks/{disk}/marker"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&inside.stdout), "kept", "{inside:?}");
    cpi.detach_disk(None, &vm, &disk).await.unwrap();

    // A killed init is a dead VM; reboot brings it back on the same root.
    cpi.vm_process(&vm).await.unwrap().kill_tree();
    for _ in 0..100 {
        if !cpi.has_vm(&vm).await.unwrap() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!cpi.has_vm(&vm).await.unwrap());
    cpi.reboot_vm(None, &vm).await.unwrap();
    assert!(cpi.has_vm(&vm).await.unwrap());
    assert_eq!(std::fs::read_to_string(upper.join("etc/issue")).unwrap(), "changed\n");

    cpi.delete_vm(None, &vm).await.unwrap();
    assert!(!cpi.vm_dir(&vm).exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&vm), "a mount of {vm} is left:\n{mounts}");
    let runc = std::process::Command::new("runc")
        .arg("--root")
        .arg(root.join("runc"))
        .arg("list")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&runc.stdout).contains(&vm));
    cpi.delete_disk(None, &disk).await.unwrap();
}
