//! Supervision of job processes: monit's job, done by the agent itself.
//!
//! Each `check process` of each job's `monit` file gets a monitor task.
//! While the job should run, the task runs the start program (`/bin/sh -c`),
//! waits for the pidfile to name a live process, then checks that process
//! every [`CHECK_INTERVAL`]. When it dies, the process is reported
//! `failing`, an alert is raised and the start program runs again after an
//! exponential backoff (reset once the process stayed up for
//! [`STABLE_AFTER`]). A process that outlived a restarted agent is adopted
//! from its pidfile instead of being started twice.
//!
//! Processes are tracked by pidfile, because BOSH start programs usually
//! background the real process and exit; a start program that stays in the
//! foreground without a pidfile is tracked as the agent's child.

pub mod monit;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use bosh_api::agent::{JobState, ProcessState, ProcessStatus};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::settings::Paths;
pub use monit::MonitProcess;

/// How often a running process is checked.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// How long a process must stay up before its backoff starts over.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How long a dead process is reported `failing` before its first restart
/// (monit waits a cycle; the backoff doubles from here up to 30 s).
pub const FIRST_RESTART_DELAY: Duration = Duration::from_secs(1);
/// Grace between SIGTERM and SIGKILL when stopping.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// A process failure, turned into a NATS alert by the heartbeat module.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The job.
    pub job: String,
    /// The process.
    pub process: String,
    /// What happened.
    pub message: String,
}

/// One process's definition from a job's monit file.
#[derive(Debug, Clone)]
struct Definition {
    job: String,
    spec: MonitProcess,
    pidfile: Option<PathBuf>,
}

struct Entry {
    def: Definition,
    status: ProcessStatus,
}

#[derive(Default)]
struct Inner {
    entries: Vec<Entry>,
    running: bool,
}

/// A running monitor task and the switch that stops it.
type Monitor = (watch::Sender<bool>, JoinHandle<()>);

/// The job supervisor.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Mutex<Inner>>,
    tasks: Arc<tokio::sync::Mutex<Vec<Monitor>>>,
    paths: Paths,
    env: Vec<(String, String)>,
    failures: mpsc::UnboundedSender<Failure>,
}

impl Supervisor {
    /// A supervisor with no jobs; failures are sent to `failures`.
    pub fn new(paths: Paths, failures: mpsc::UnboundedSender<Failure>) -> Supervisor {
        let env = paths.job_env();
        Supervisor { inner: Arc::default(), tasks: Arc::default(), paths, env, failures }
    }

    /// Reads the `monit` files of `jobs` (in `jobs/<job>/monit`; a job
    /// without one has no processes). Processes that run are stopped and
    /// the new ones started, so the new definitions take effect.
    pub async fn load(&self, jobs: &[String]) -> Result<()> {
        let mut defs = Vec::new();
        for job in jobs {
            let path = self.paths.job(job).join("monit");
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::Io { what: "read", path, source: e }),
            };
            let procs = monit::parse(&text)
                .map_err(|message| Error::Monit { job: job.clone(), message })?;
            for spec in procs {
                let pidfile = spec.pidfile.as_deref().map(PathBuf::from);
                defs.push(Definition { job: job.clone(), spec, pidfile });
            }
        }
        let was_running = self.inner.lock().expect("lock").running;
        if was_running {
            self.stop().await?;
        }
        {
            let mut inner = self.inner.lock().expect("lock");
            inner.entries = defs
                .into_iter()
                .map(|def| Entry {
                    status: ProcessStatus {
                        name: def.spec.name.clone(),
                        job: def.job.clone(),
                        ..Default::default()
                    },
                    def,
                })
                .collect();
        }
        if was_running {
            self.start().await?;
        }
        Ok(())
    }

    /// Starts every process (idempotent: running monitors are kept).
    pub async fn start(&self) -> Result<()> {
        let mut tasks = self.tasks.lock().await;
        if !tasks.is_empty() {
            return Ok(());
        }
        let defs: Vec<(usize, Definition)> = {
            let mut inner = self.inner.lock().expect("lock");
            inner.running = true;
            inner.entries.iter().enumerate().map(|(i, e)| (i, e.def.clone())).collect()
        };
        for (i, def) in defs {
            let (tx, rx) = watch::channel(false);
            let this = self.clone();
            tasks.push((tx, tokio::spawn(async move { this.monitor(i, def, rx).await })));
        }
        Ok(())
    }

    /// Stops every process and waits until they are gone.
    pub async fn stop(&self) -> Result<()> {
        let mut tasks = self.tasks.lock().await;
        self.inner.lock().expect("lock").running = false;
        for (tx, _) in tasks.iter() {
            let _ = tx.send(true);
        }
        for (_, handle) in tasks.drain(..) {
            let _ = handle.await;
        }
        Ok(())
    }

    /// Whether the jobs should be running.
    pub fn is_running(&self) -> bool {
        self.inner.lock().expect("lock").running
    }

    /// The summary state and every process's status.
    pub fn status(&self) -> (JobState, Vec<ProcessStatus>) {
        let inner = self.inner.lock().expect("lock");
        let procs: Vec<ProcessStatus> = inner.entries.iter().map(|e| e.status.clone()).collect();
        (summarize(inner.running, &procs), procs)
    }

    fn set(&self, i: usize, f: impl FnOnce(&mut ProcessStatus)) {
        if let Some(e) = self.inner.lock().expect("lock").entries.get_mut(i) {
            f(&mut e.status);
        }
    }

    fn fail(&self, i: usize, def: &Definition, message: String) {
        tracing::warn!(job = %def.job, process = %def.spec.name, %message, "process failing");
        self.set(i, |s| {
            s.state = ProcessState::Failing;
            s.pid = None;
        });
        let _ = self.failures.send(Failure {
            job: def.job.clone(),
            process: def.spec.name.clone(),
            message,
        });
    }

    /// One process's life while the job should run.
    async fn monitor(self, i: usize, def: Definition, mut stop: watch::Receiver<bool>) {
        let backoff = || {
            backon::ExponentialBuilder::default()
                .with_min_delay(FIRST_RESTART_DELAY)
                .with_max_delay(Duration::from_secs(30))
                .with_factor(2.0)
                .without_max_times()
                .build()
        };
        let mut delays = backoff();
        let mut restarts = false;
        loop {
            self.set(i, |s| s.state = ProcessState::Starting);
            let started = tokio::select! {
                r = self.start_once(&def) => r,
                _ = stop.changed() => { self.stop_process(i, &def, None).await; return; }
            };
            let outcome = match started {
                Ok(mut tracked) => {
                    if restarts {
                        self.set(i, |s| s.restarts += 1);
                    }
                    // Still `starting` until a check finds it alive, as
                    // monit reports `initializing` until its next cycle: a
                    // process that dies at once (a port in use) never shows
                    // `running`, so a director polling for `running` cannot
                    // catch one of its brief lives and call the job up.
                    self.set(i, |s| s.pid = tracked.pid);
                    let since = Instant::now();
                    let mut tick = tokio::time::interval_at(
                        tokio::time::Instant::now() + CHECK_INTERVAL,
                        CHECK_INTERVAL,
                    );
                    let mut confirmed = false;
                    loop {
                        tokio::select! {
                            _ = stop.changed() => {
                                self.stop_process(i, &def, Some(tracked)).await;
                                return;
                            }
                            _ = tick.tick() => {
                                if !tracked.alive() { break; }
                                if !confirmed {
                                    confirmed = true;
                                    self.set(i, |s| s.state = ProcessState::Running);
                                    tracing::info!(job = %def.job, process = %def.spec.name, pid = ?tracked.pid, "process running");
                                }
                            }
                        }
                    }
                    if since.elapsed() >= STABLE_AFTER {
                        delays = backoff();
                    }
                    "process exited".to_string()
                }
                Err(e) => e.chain(),
            };
            restarts = true;
            self.fail(i, &def, outcome);
            let delay = delays.next().unwrap_or(Duration::from_secs(30));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => { self.stop_process(i, &def, None).await; return; }
            }
        }
    }

    /// Runs the start program and waits until the process is alive.
    async fn start_once(&self, def: &Definition) -> Result<Tracked> {
        let proc_err = |message: String| Error::Process { process: def.spec.name.clone(), message };
        // A live process from before (an agent restart) is adopted.
        if let Some(pid) = def.pidfile.as_deref().and_then(read_pid)
            && pid_alive(pid)
        {
            return Ok(Tracked { pid: Some(pid), child: None });
        }
        if let Some(p) = &def.pidfile {
            let _ = std::fs::remove_file(p);
            if let Some(dir) = p.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
        }
        let log_dir = self.paths.sys_log().join(&def.job);
        std::fs::create_dir_all(&log_dir).map_err(Error::io("create", &log_dir))?;
        let log_path = log_dir.join(format!("{}.monit.log", def.spec.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(Error::io("open", &log_path))?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&def.spec.start)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("BOSH_JOB_NAME", &def.job)
            .env("BOSH_PROCESS_NAME", &def.spec.name)
            .current_dir(self.paths.job(&def.job))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(Error::io("open", &log_path))?)
            .stderr(log)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| proc_err(format!("start program: {e}")))?;
        let deadline = Instant::now() + def.spec.start_timeout;
        let mut child_exited = false;
        loop {
            if !child_exited && let Ok(Some(status)) = child.try_wait() {
                if !status.success() {
                    return Err(proc_err(format!(
                        "start program exited with code {}",
                        status.code().unwrap_or(-1)
                    )));
                }
                child_exited = true;
            }
            match &def.pidfile {
                Some(p) => {
                    if let Some(pid) = read_pid(p)
                        && pid_alive(pid)
                    {
                        let child = (!child_exited).then_some(child);
                        return Ok(Tracked { pid: Some(pid), child });
                    }
                }
                None if child_exited => {
                    return Err(proc_err("start program exited and there is no pidfile".into()));
                }
                None => {
                    return Ok(Tracked { pid: child.id(), child: Some(child) });
                }
            }
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                return Err(proc_err(format!(
                    "no live process in pidfile after {:?}",
                    def.spec.start_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs the stop program (or sends SIGTERM) and waits until the process
    /// is gone, killing it after its timeout.
    async fn stop_process(&self, i: usize, def: &Definition, tracked: Option<Tracked>) {
        let mut tracked = tracked.unwrap_or_else(|| Tracked {
            pid: def.pidfile.as_deref().and_then(read_pid).filter(|p| pid_alive(*p)),
            child: None,
        });
        if let Some(stop) = &def.spec.stop {
            let run = crate::exec::Exec::shell(stop, &self.env)
                .cwd(self.paths.job(&def.job))
                .log_to(self.paths.sys_log().join(&def.job).join(format!("{}.stop", def.spec.name)))
                .run();
            if let Ok(Ok(out)) = tokio::time::timeout(def.spec.stop_timeout, run).await
                && out.code != 0
            {
                tracing::warn!(job = %def.job, process = %def.spec.name, code = out.code, "stop program failed");
            }
        } else if let Some(pid) = tracked.pid {
            signal(pid, libc::SIGTERM);
        }
        let grace = if def.spec.stop.is_some() { def.spec.stop_timeout } else { KILL_GRACE };
        if !tracked.wait_gone(grace).await {
            if let Some(pid) = tracked.pid {
                signal(pid, libc::SIGTERM);
            }
            if !tracked.wait_gone(KILL_GRACE).await {
                if let Some(pid) = tracked.pid {
                    signal(pid, libc::SIGKILL);
                }
                if let Some(c) = tracked.child.as_mut() {
                    let _ = c.start_kill();
                }
                tracked.wait_gone(KILL_GRACE).await;
            }
        }
        if let Some(p) = &def.pidfile {
            let _ = std::fs::remove_file(p);
        }
        self.set(i, |s| {
            s.state = ProcessState::Stopped;
            s.pid = None;
        });
        tracing::info!(job = %def.job, process = %def.spec.name, "process stopped");
    }
}

/// What the agent watches for one running process.
struct Tracked {
    pid: Option<u32>,
    child: Option<Child>,
}

impl Tracked {
    fn alive(&mut self) -> bool {
        let child_alive = match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        };
        let child_pid = self.child.as_ref().and_then(|c| c.id());
        match self.pid {
            Some(pid) if Some(pid) == child_pid => child_alive,
            Some(pid) => {
                reap_if_ours(pid);
                pid_alive(pid)
            }
            None => child_alive,
        }
    }

    async fn wait_gone(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.alive() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }
}

/// Summarizes process states into the job state BOSH reports.
pub fn summarize(should_run: bool, procs: &[ProcessStatus]) -> JobState {
    if !should_run {
        return JobState::Stopped;
    }
    if procs.iter().any(|p| p.state == ProcessState::Failing) {
        JobState::Failing
    } else if procs.iter().all(|p| p.state == ProcessState::Running) {
        JobState::Running
    } else if procs.iter().any(|p| p.state == ProcessState::Starting) {
        JobState::Starting
    } else {
        JobState::Failing
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok().filter(|p| *p > 0)
}

/// The process's state letter from `/proc/<pid>/stat` and its parent pid.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` names a live (not zombie) process.
pub fn pid_alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// Reaps `pid` if it is a zombie whose parent is the agent (it was
/// re-parented to us, e.g. when the agent is PID 1 of the VM's namespace).
fn reap_if_ours(pid: u32) {
    if let Some(('Z', ppid)) = proc_stat(pid)
        && ppid == std::process::id()
    {
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid as i32),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory effects; a stale pid at worst gets ESRCH.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Job names → their processes, for `get_state`.
pub fn by_job(procs: &[ProcessStatus]) -> BTreeMap<String, Vec<ProcessStatus>> {
    let mut m: BTreeMap<String, Vec<ProcessStatus>> = BTreeMap::new();
    for p in procs {
        m.entry(p.job.clone()).or_default().push(p.clone());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(state: ProcessState) -> ProcessStatus {
        ProcessStatus { state, ..Default::default() }
    }

    /// One failing process makes the job failing; all running makes it running.
    #[test]
    fn job_state_summarizes_process_states() {
        use ProcessState::*;
        assert_eq!(summarize(true, &[st(Running), st(Running)]), JobState::Running);
        assert_eq!(summarize(true, &[st(Running), st(Failing)]), JobState::Failing);
        assert_eq!(summarize(true, &[st(Running), st(Starting)]), JobState::Starting);
        assert_eq!(summarize(false, &[st(Running)]), JobState::Stopped);
        assert_eq!(summarize(true, &[]), JobState::Running);
    }

    /// A process is restarted after it dies, counted, and reported failing in between.
    #[tokio::test]
    async fn dead_process_is_restarted_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        paths.create_layout().unwrap();
        std::fs::create_dir_all(paths.job("j")).unwrap();
        std::fs::write(
            paths.job("j").join("monit"),
            "check process sleeper\n with pidfile /var/vcap/sys/run/j/s.pid\n \
             start program \"/bin/sh -c 'sleep 600 & echo $! > /var/vcap/sys/run/j/s.pid'\"\n",
        )
        .unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sup = Supervisor::new(paths.clone(), tx);
        sup.load(&["j".into()]).await.unwrap();
        sup.start().await.unwrap();
        let pid = wait_running(&sup).await;
        signal(pid, libc::SIGKILL);
        let failure =
            tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
        assert_eq!(failure.process, "sleeper");
        let pid2 = wait_running(&sup).await;
        assert_ne!(pid, pid2);
        assert_eq!(sup.status().1[0].restarts, 1);
        sup.stop().await.unwrap();
        assert_eq!(sup.status().0, JobState::Stopped);
        assert!(!pid_alive(pid2));
    }

    /// A process that dies moments after it starts (its port in use) is
    /// never reported `running`: a director polling for `running` would
    /// otherwise catch one of its brief lives and call the job up.
    #[tokio::test]
    async fn a_process_that_dies_at_once_never_shows_running() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        paths.create_layout().unwrap();
        std::fs::create_dir_all(paths.job("j")).unwrap();
        std::fs::write(
            paths.job("j").join("monit"),
            "check process brief\n with pidfile /var/vcap/sys/run/j/b.pid\n \
             start program \"/bin/sh -c 'sleep 0.05 & echo $! > /var/vcap/sys/run/j/b.pid'\"\n",
        )
        .unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sup = Supervisor::new(paths.clone(), tx);
        sup.load(&["j".into()]).await.unwrap();
        sup.start().await.unwrap();
        // Two lives: the first, and the restart a second after it died.
        let mut failures = 0;
        let mut seen = Vec::new();
        let until = Instant::now() + Duration::from_secs(10);
        while failures < 2 && Instant::now() < until {
            seen.push(sup.status().0);
            if let Ok(Some(f)) = tokio::time::timeout(Duration::from_millis(5), rx.recv()).await {
                assert_eq!(f.process, "brief");
                failures += 1;
            }
        }
        assert_eq!(failures, 2, "the process died and was restarted");
        assert!(seen.len() > 100, "sampled {} times", seen.len());
        assert!(!seen.contains(&JobState::Running), "a brief life showed running: {seen:?}");
        assert!(seen.contains(&JobState::Failing));
        sup.stop().await.unwrap();
    }

    async fn wait_running(sup: &Supervisor) -> u32 {
        bosh_test_utils::eventually(Duration::from_secs(10), "process running", || async {
            match sup.status() {
                (JobState::Running, procs) => procs[0].pid,
                _ => None,
            }
        })
        .await
        .unwrap()
    }
}
