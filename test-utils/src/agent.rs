//! Real `bosh-agent` processes for tests: finding (or building) the binary
//! and running it tied to the test process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

/// The `bosh-agent` binary next to the running test executable
/// (`target/<profile>/bosh-agent`). When it is missing or older than any
/// source it is built from, `cargo build -p bosh-agent` brings it up to
/// date first, so a test never runs a stale agent; an up-to-date binary is
/// used as it is (rebuilding it with `-p` would flip bosh-api's features
/// against the workspace build). `BOSH_AGENT_BIN` overrides it.
pub fn agent_binary() -> Result<PathBuf> {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let sources = ["agent", "api/src", "api/Cargo.toml", "blobstore/src", "Cargo.lock"];
    workspace_binary("bosh-agent", "bosh-agent", "BOSH_AGENT_BIN", &sources, &BUILT)
}

/// The `bosh-local-cpi` executable (the local CPI behind BOSH's external
/// CPI protocol), found or built as [`agent_binary`] is.
/// `BOSH_LOCAL_CPI_BIN` overrides it.
pub fn local_cpi_binary() -> Result<PathBuf> {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let sources = ["cpi", "api/src", "api/Cargo.toml", "Cargo.lock"];
    workspace_binary("bosh-cpi", "bosh-local-cpi", "BOSH_LOCAL_CPI_BIN", &sources, &BUILT)
}

/// Binary `bin` of package `package` in the running executable's target
/// profile dir, built with `cargo build -p` unless newer than `sources`
/// (paths under the workspace root); `env` names an override.
fn workspace_binary(
    package: &str,
    bin: &str,
    env: &str,
    sources: &[&str],
    built: &Mutex<Option<PathBuf>>,
) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> (tests) or target/<profile>/<bin>
    // (benchmarks) → target/<profile>
    let parent = exe.parent().context("the executable has no directory")?;
    let profile_dir = if parent.file_name().is_some_and(|n| n == "deps") {
        parent.parent().context("deps/ has no parent")?.to_path_buf()
    } else {
        parent.to_path_buf()
    };
    let path = profile_dir.join(bin);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = built.as_ref() {
        return Ok(b.clone());
    }
    if is_fresh(&path, sources) {
        *built = Some(path.clone());
        return Ok(path);
    }
    let target_dir = profile_dir.parent().context("no target dir")?;
    let profile = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", package, "--bin", bin]).env("CARGO_TARGET_DIR", target_dir);
    if profile != "debug" {
        cmd.args(["--profile", profile]);
    }
    let status = cmd.status().with_context(|| format!("running cargo build -p {package}"))?;
    if !status.success() || !path.is_file() {
        bail!("cargo build -p {package} failed ({status}); {} missing", path.display());
    }
    *built = Some(path.clone());
    Ok(path)
}

/// Whether `bin` is newer than every file under `sources`.
fn is_fresh(bin: &Path, sources: &[&str]) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return false;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    sources.iter().all(|s| newest(&root.join(s)).is_some_and(|t| t <= built))
}

/// The newest modification time under `path`.
fn newest(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    let mut t = meta.modified().ok()?;
    if meta.is_dir() {
        for e in std::fs::read_dir(path).ok()?.flatten() {
            t = t.max(newest(&e.path())?);
        }
    }
    Some(t)
}

/// A running agent process, killed when dropped (and with the test process).
pub struct AgentProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl AgentProcess {
    /// Starts `binary --settings <settings>`, its log in `log`, as a VM
    /// whose `/var/vcap` is `var/vcap` beside the settings file: in a
    /// private mount namespace that directory is bound onto `/var/vcap`, so
    /// the agent and the jobs it runs see BOSH's plain paths and the test
    /// reads what they wrote under its temporary directory. Needs root.
    pub fn spawn(binary: &Path, settings: &Path, log: &Path) -> Result<AgentProcess> {
        use std::os::unix::process::CommandExt;
        let vcap = settings.parent().context("settings file has no directory")?.join("var/vcap");
        std::fs::create_dir_all(&vcap)?;
        std::fs::create_dir_all("/var/vcap")?;
        let out = std::fs::File::create(log)?;
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(r#"mount --bind "$0" /var/vcap || exit 111; exec "$@""#)
            .arg(&vcap)
            .arg(binary)
            .arg("--settings")
            .arg(settings)
            .env("RUST_LOG", std::env::var("AGENT_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", binary.display()))?;
        Ok(AgentProcess { child: Some(child), log: log.to_path_buf() })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
