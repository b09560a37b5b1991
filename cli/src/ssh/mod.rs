//! `boshctl ssh` and `boshctl scp`, as the bosh CLI does them: the
//! director makes a throwaway user with a throwaway key on the targeted
//! instances ([`session`]), the system's `ssh`/`scp` connect with only that
//! key and only the host keys the director answered, and the user is
//! removed afterwards, also after an error or a Ctrl-C.
//!
//! `ssh -c CMD` runs without a TTY, passes stdout and stderr through, and
//! exits with the remote command's exit code, so scripts can use it;
//! without `-c` it is an interactive shell on one instance. `exec` stays
//! the agent-mediated way to run a command.

use anyhow::{Context, Result, anyhow, bail};
use bosh_api::wire::SshTarget;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::deployments::DeploymentArg;
use crate::director::{Director, DirectorArgs};

pub mod session;

use session::{Host, SCP, SSH, Session};

/// A gateway (jump host) between here and the instances, as the bosh
/// CLI's `--gw-*` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GatewayArgs {
    /// Connect through this host.
    #[arg(long)]
    pub gw_host: Option<String>,
    /// The gateway's user.
    #[arg(long, requires = "gw_host")]
    pub gw_user: Option<String>,
    /// The gateway's private key file.
    #[arg(long, requires = "gw_host")]
    pub gw_private_key: Option<String>,
}

/// Flags of `ssh`.
#[derive(Debug, clap::Args)]
pub struct SshArgs {
    #[command(flatten)]
    pub deployment: DeploymentArg,
    /// `GROUP`, `GROUP/INDEX` or `GROUP/ID`; absent, every instance.
    pub target: Option<String>,
    /// Run this command (no TTY) instead of a shell; exits with its code.
    #[arg(short, long)]
    pub command: Option<String>,
    /// An extra argument for ssh (repeatable), e.g. `--opts=-L8080:localhost:8080`.
    #[arg(long = "opts", allow_hyphen_values = true)]
    pub opts: Vec<String>,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Flags of `scp`.
#[derive(Debug, clap::Args)]
pub struct ScpArgs {
    #[command(flatten)]
    pub deployment: DeploymentArg,
    /// Copy directories recursively.
    #[arg(short, long)]
    pub recursive: bool,
    /// Source: a local path or `GROUP[/ID|/INDEX]:PATH`.
    pub source: String,
    /// Destination: a local path or `GROUP[/ID|/INDEX]:PATH` (exactly one
    /// of the two is remote).
    pub destination: String,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// `GROUP[/ID|/INDEX]` as BOSH's target: the part after `/` is sent as
/// both an index and an id, and the director matches either.
pub fn parse_target(s: Option<&str>) -> Result<SshTarget> {
    let Some(s) = s.filter(|s| !s.is_empty()) else { return Ok(SshTarget::default()) };
    let (job, which) = match s.split_once('/') {
        Some((j, w)) => (j, Some(w)),
        None => (s, None),
    };
    if job.is_empty() || which.is_some_and(|w| w.is_empty() || w.contains('/')) {
        bail!("target {s:?} is not GROUP, GROUP/INDEX or GROUP/ID");
    }
    let which: Vec<String> = which.map(str::to_string).into_iter().collect();
    Ok(SshTarget { job: Some(job.to_string()), indexes: which.clone(), ids: which })
}

/// One side of `scp`: remote when it is `GROUP[/X]:PATH` with a group
/// name of letters, digits, `_`, `-` or `.` not starting with `.` (so
/// `./a:b` and `/a:b` stay local paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A path here.
    Local(String),
    /// A path on the instances `target` names.
    Remote {
        /// `GROUP[/X]`.
        target: String,
        /// The path there.
        path: String,
    },
}

impl Endpoint {
    /// Reads one side of `scp`.
    pub fn parse(s: &str) -> Endpoint {
        let name_ok = |n: &str| {
            !n.is_empty()
                && !n.starts_with('.')
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        };
        if let Some((t, path)) = s.split_once(':') {
            let remote = match t.split_once('/') {
                Some((g, x)) => name_ok(g) && name_ok(x),
                None => name_ok(t),
            };
            if remote {
                return Endpoint::Remote { target: t.to_string(), path: path.to_string() };
            }
        }
        Endpoint::Local(s.to_string())
    }
}

/// `user@host`, bracketing an IPv6 address for scp.
fn at(user: &str, ip: &str) -> String {
    if ip.contains(':') { format!("{user}@[{ip}]") } else { format!("{user}@{ip}") }
}

/// `-o ProxyCommand=...` for a gateway.
fn gateway_options(gw: &GatewayArgs) -> Vec<String> {
    let Some(host) = &gw.gw_host else { return Vec::new() };
    let mut proxy = "ssh -o BatchMode=yes".to_string();
    if let Some(k) = &gw.gw_private_key {
        proxy.push_str(&format!(" -o IdentityFile={k}"));
    }
    let dest = match &gw.gw_user {
        Some(u) => format!("{u}@{host}"),
        None => host.clone(),
    };
    vec!["-o".into(), format!("ProxyCommand={proxy} -W %h:%p {dest}")]
}

/// The ssh command line for `host` (without the program).
pub fn ssh_argv(s: &[String], user: &str, host: &Host, args: &SshArgs) -> Vec<String> {
    let mut argv = s.to_vec();
    argv.extend(gateway_options(&args.gateway));
    argv.push(if args.command.is_some() { "-T".into() } else { "-t".into() });
    argv.extend(args.opts.iter().cloned());
    argv.push(at(user, &host.ip));
    if let Some(c) = &args.command {
        argv.push("--".into());
        argv.push(c.clone());
    }
    argv
}

/// SIGINT, SIGTERM and SIGHUP, caught for the whole session so that the
/// cleanup runs (the child ssh gets its own copy of a terminal's Ctrl-C).
struct Signals(Vec<(&'static str, Signal)>);

impl Signals {
    fn new() -> Result<Signals> {
        let kinds = [
            ("SIGINT", SignalKind::interrupt()),
            ("SIGTERM", SignalKind::terminate()),
            ("SIGHUP", SignalKind::hangup()),
        ];
        let mut v = Vec::new();
        for (name, k) in kinds {
            v.push((name, signal(k).with_context(|| format!("catching {name}"))?));
        }
        Ok(Signals(v))
    }

    /// The name of the next signal received.
    async fn next(&mut self) -> &'static str {
        let waits = self.0.iter_mut().map(|(name, s)| {
            Box::pin(async move {
                s.recv().await;
                *name
            })
        });
        futures::future::select_all(waits).await.0
    }
}

/// Sets up a session on `target`, runs `work` in it, and cleans up
/// whatever happened: success, error or a signal (which drops `work`, and
/// with it any running ssh, killed on drop).
async fn with_session(
    d: &Director,
    deployment: &str,
    target: SshTarget,
    work: impl AsyncFnOnce(&Session) -> Result<i32>,
) -> Result<i32> {
    let user = session::new_user()?;
    let mut signals = Signals::new()?;
    let run = async {
        let s = Session::open(d, deployment, target.clone(), user.clone()).await?;
        work(&s).await
    };
    let outcome = tokio::select! {
        r = run => r,
        sig = signals.next() => Err(anyhow!("interrupted by {sig}")),
    };
    session::cleanup(d, deployment, &target, &user).await;
    outcome
}

/// Runs a program to its end with stdio passed through; its exit code
/// (128 + the signal when killed, as a shell reports it).
async fn run(program: &str, argv: &[String]) -> Result<i32> {
    let status = tokio::process::Command::new(program)
        .args(argv)
        .kill_on_drop(true)
        .status()
        .await
        .with_context(|| format!("running {program} (install openssh-client)"))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Exits with `code` unless it is 0. Called once the session is gone, so
/// its directory is removed and its user cleaned up first.
fn exit_with(code: i32) -> Result<()> {
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// Runs `ssh`.
pub async fn ssh(args: SshArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let target = parse_target(args.target.as_deref())?;
    let deployment = args.deployment.deployment.clone();
    let code = with_session(&d, &deployment, target, async |s: &Session| {
        if args.command.is_none() && s.hosts.len() != 1 {
            bail!(
                "an interactive shell needs one instance, and {} matched: pass GROUP/INDEX or GROUP/ID, or -c CMD",
                s.hosts.len()
            );
        }
        let mut first_failure = 0;
        for host in &s.hosts {
            if s.hosts.len() > 1 {
                eprintln!("{}:", host.name);
            }
            let code = run(SSH, &ssh_argv(&s.options(), &s.user, host, &args)).await?;
            if first_failure == 0 {
                first_failure = code;
            }
        }
        Ok(first_failure)
    })
    .await?;
    exit_with(code)
}

/// Runs `scp`.
pub async fn scp(args: ScpArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let (src, dst) = (Endpoint::parse(&args.source), Endpoint::parse(&args.destination));
    let (target, upload) = match (&src, &dst) {
        (Endpoint::Local(_), Endpoint::Remote { target, .. }) => (target.clone(), true),
        (Endpoint::Remote { target, .. }, Endpoint::Local(_)) => (target.clone(), false),
        _ => bail!(
            "scp needs exactly one remote side, GROUP/ID:PATH or GROUP/INDEX:PATH, and one local path"
        ),
    };
    let ssh_target = parse_target(Some(&target))?;
    let deployment = args.deployment.deployment.clone();
    let code = with_session(&d, &deployment, ssh_target, async |s: &Session| {
        if !upload && s.hosts.len() != 1 {
            bail!("download from one instance: {target} matches {}", s.hosts.len());
        }
        let mut first_failure = 0;
        for host in &s.hosts {
            let side = |e: &Endpoint| match e {
                Endpoint::Local(p) => p.clone(),
                Endpoint::Remote { path, .. } => format!("{}:{path}", at(&s.user, &host.ip)),
            };
            let mut argv = s.options();
            argv.extend(gateway_options(&args.gateway));
            if args.recursive {
                argv.push("-r".into());
            }
            argv.extend([side(&src), side(&dst)]);
            let code = run(SCP, &argv).await?;
            if first_failure == 0 {
                first_failure = code;
            }
        }
        Ok(first_failure)
    })
    .await?;
    exit_with(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GROUP/X` is sent as both an index and an id; a bare group as the job alone; nothing as every instance.
    #[test]
    fn targets_become_boshs_target() {
        let t = parse_target(Some("web/1")).unwrap();
        assert_eq!(
            (t.job.as_deref(), t.indexes, t.ids),
            (Some("web"), vec!["1".into()], vec!["1".into()])
        );
        let t = parse_target(Some("web")).unwrap();
        assert_eq!((t.job.as_deref(), t.indexes.len()), (Some("web"), 0));
        assert_eq!(parse_target(None).unwrap(), SshTarget::default());
        for bad in ["/1", "web/", "web/1/2"] {
            assert!(parse_target(Some(bad)).is_err(), "{bad}");
        }
    }

    /// `GROUP/X:PATH` and `GROUP:PATH` are remote; paths (even with a colon) are local.
    #[test]
    fn scp_sides_are_told_apart() {
        let remote = |t: &str, p: &str| Endpoint::Remote { target: t.into(), path: p.into() };
        assert_eq!(Endpoint::parse("web/0:/tmp/x"), remote("web/0", "/tmp/x"));
        assert_eq!(Endpoint::parse("web:x"), remote("web", "x"));
        assert_eq!(Endpoint::parse("web/4f1c-9a:"), remote("web/4f1c-9a", ""));
        for local in ["/tmp/a:b", "./a:b", "a/b/c:d", "plain.txt", "../x:y"] {
            assert_eq!(Endpoint::parse(local), Endpoint::Local(local.into()), "{local}");
        }
    }

    fn args(command: Option<&str>, opts: &[&str]) -> SshArgs {
        SshArgs {
            deployment: DeploymentArg { deployment: "d".into() },
            target: Some("web/0".into()),
            command: command.map(str::to_string),
            opts: opts.iter().map(|s| s.to_string()).collect(),
            gateway: GatewayArgs::default(),
            director: DirectorArgs::default(),
        }
    }

    /// With -c: no TTY and the command as one argument after `--`; without: a TTY.
    #[test]
    fn ssh_command_lines_follow_the_mode() {
        let host = Host { name: "web/a".into(), ip: "10.0.0.5".into() };
        let o = vec!["-o".to_string(), "StrictHostKeyChecking=yes".into()];
        let argv = ssh_argv(&o, "bosh_ab", &host, &args(Some("echo hi; exit 3"), &["-v"]));
        assert_eq!(argv[2..], ["-T", "-v", "bosh_ab@10.0.0.5", "--", "echo hi; exit 3"]);
        let argv = ssh_argv(&o, "bosh_ab", &host, &args(None, &[]));
        assert_eq!(argv[2..], ["-t", "bosh_ab@10.0.0.5"]);
        let mut a = args(None, &[]);
        a.gateway = GatewayArgs {
            gw_host: Some("jump".into()),
            gw_user: Some("me".into()),
            gw_private_key: Some("/k".into()),
        };
        let argv = ssh_argv(&o, "bosh_ab", &host, &a).join(" ");
        assert!(
            argv.contains("ProxyCommand=ssh -o BatchMode=yes -o IdentityFile=/k -W %h:%p me@jump"),
            "{argv}"
        );
        assert_eq!(at("u", "fd00::5"), "u@[fd00::5]");
    }
}
