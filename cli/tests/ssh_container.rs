//! `boshctl ssh` and `boshctl scp` end to end (issue 14): the example
//! release deployed on a container VM of the Debian rootfs stemcell by the
//! whole director, then reached with the system's ssh and scp through a
//! throwaway user the agent makes inside the VM and removes afterwards.

use std::path::Path;
use std::time::Duration;

use bosh_api::objects::InstanceSpec;
use bosh_controllers::testing::{Harness, HarnessOptions, TOKEN, WebManifest, example_release};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs boshctl against the harness's API, with its temp files under `tmp`.
async fn boshctl(h: &Harness, tmp: &Path, args: &[&str]) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_boshctl"))
        .args(args)
        .env("BOSH_DIRECTOR", &h.api_url)
        .env("BOSH_TOKEN", TOKEN)
        .env("TMPDIR", tmp)
        .env_remove("BOSH_DEPLOYMENT")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `script` in the instance's VM through its agent (not through ssh).
async fn agent_sh(h: &Harness, i: &bosh_api::Object<InstanceSpec>, script: &str) -> String {
    let agent = h.director.agents.for_agent(i.status.agent_id.clone().unwrap());
    let cmd = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let r = agent.exec(&cmd, Some(20)).await.unwrap();
    format!("{}{}", r.stdout, r.stderr)
}

/// `ssh -c` runs as a fresh bosh_ user with password-less sudo, passes
/// stdout and stderr through and exits with the remote code; `scp` copies
/// both ways; afterwards the VM has no bosh_ user left, the host never had
/// one, and boshctl left no key behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_and_scp_reach_a_container_vm_and_clean_up() {
    let h = Harness::start(HarnessOptions::containers()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path()).unwrap()).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let task = h.create_deployment("sshd", WebManifest::hello("sshd", 1).value()).await.unwrap();
    h.task_done(task, Duration::from_secs(600)).await.unwrap();
    let inst = h.store.list::<InstanceSpec>("sshd/").await.unwrap().items.remove(0);
    let boshctl_tmp = tmp.path().join("boshctl-tmp");
    std::fs::create_dir(&boshctl_tmp).unwrap();

    let script = "echo out; echo err >&2; id -un; sudo -n true && echo sudo-ok; exit 7";
    let o = boshctl(&h, &boshctl_tmp, &["ssh", "-d", "sshd", "web/0", "-c", script]).await;
    assert_eq!(o.code, 7, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"out"), "{}", o.stdout);
    assert!(lines.iter().any(|l| l.starts_with("bosh_")), "ran as a bosh_ user: {}", o.stdout);
    assert!(lines.contains(&"sudo-ok"), "{}", o.stdout);
    assert!(o.stderr.contains("err"), "{}", o.stderr);

    let local = tmp.path().join("up.txt");
    std::fs::write(&local, "to the vm\n").unwrap();
    let o = boshctl(
        &h,
        &boshctl_tmp,
        &[
            "scp",
            "-d",
            "sshd",
            local.to_str().unwrap(),
            &format!("web/{}:/tmp/up.txt", inst.spec.id),
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(agent_sh(&h, &inst, "cat /tmp/up.txt").await, "to the vm\n");
    let back = tmp.path().join("back.txt");
    let o = boshctl(
        &h,
        &boshctl_tmp,
        &["scp", "-d", "sshd", "web/0:/tmp/up.txt", back.to_str().unwrap()],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "to the vm\n");

    let users = agent_sh(&h, &inst, "cut -d: -f1 /etc/passwd | grep '^bosh_' || true").await;
    assert_eq!(users, "", "every session's user was removed");
    let host = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(!host.lines().any(|l| l.starts_with("bosh_")), "the host got no bosh_ user");
    let left: Vec<_> = std::fs::read_dir(&boshctl_tmp).unwrap().collect();
    assert!(left.is_empty(), "boshctl removed its key directories: {left:?}");
    h.stop().await.unwrap();
}
