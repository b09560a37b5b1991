//! The errand controller: carries out ErrandRuns (`boshctl run-errand`).
//!
//! A run is desired state, like a Kubernetes Job. Its phases:
//!
//! - `pending`: the controller finds what the errand is (a `lifecycle:
//!   errand` group, or a job colocated on service groups), digests the
//!   run's inputs, and either skips it (`whenChanged` and the inputs equal
//!   the errand's last successful run) or marks it `running`;
//! - `running`: the deployment controller sees the run
//!   ([`groups_wanting_instances`]) and gives an errand group its
//!   instances; this controller waits until every targeted instance is
//!   ready at its current spec, then calls the agent's `run_errand` on
//!   each at once, recording each result as it comes; with
//!   `downloadLogs`, each instance's job logs are fetched right after its
//!   `bin/run` (while its VM still exists) and the result names the
//!   tarball's blob;
//! - `succeeded` / `failed` / `skipped` / `cancelled`: the task is
//!   finished with the results; an errand group's instances go again,
//!   unless the run asked to keep them (`keepAlive`) — they stay until a
//!   later run of the same errand without it.
//!
//! A run ends early in two ways, both checked while it waits for its
//! instances and while its `bin/run`s run: its task is cancelled
//! (`boshctl cancel-task`; the run ends `cancelled`, its task
//! `cancelled`), or its timeout (`timeoutSeconds`, else boshd's
//! `--errand-timeout-secs`, counted from when it started running) passes
//! (the run ends `failed`, naming the instances it waited for). Either
//! way running `bin/run`s are cancelled on their agents (which kills
//! them) and not waited for.
//!
//! A director that dies mid-run finds the run `running` when it comes
//! back: instances whose result was recorded are not run again; the others
//! are (the agent's `run_errand` is a long task whose answer went with the
//! old director, and an errand must be safe to re-run in BOSH too). That
//! is the documented choice: at-least-once, never lost.
//!
//! The inputs digest covers the deployment's manifest as written (before
//! variables are interpolated), the errand's name and its selectors: a
//! new release version, changed properties or a changed group show; a
//! variable's new value or a new cloud config do not.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bosh_api::meta::find_condition;
use bosh_api::objects::{
    ConditionType, DeploymentSpec, ErrandInstanceResult, ErrandPhase, ErrandRunSpec, EventState,
    InstanceSpec, Reason, TaskSpec, TaskState,
};
use bosh_api::store::{self, Store};
use bosh_api::{ConditionStatus, Object};
use futures::StreamExt;
use serde_json::Value;
use tracing::{info, warn};

use crate::libs::tasks::{EventLog, set_task_state, task_name};
use crate::runtime::{
    Action, Controller, Ctx, Predicate, Reflector, Trigger, Wiring, Workers, default_error_policy,
};
use crate::world::agent_client::AgentError;
use crate::world::director::Director;

/// The errand controller: woken by new runs and by its deployments'
/// Instances (see `daemon::run_deploy`). Its passes mostly wait on agents.
pub const WIRING: Wiring =
    Wiring { name: "errand", trigger: Trigger::Generation, workers: Workers::AtLeast(4) };

/// How soon a waiting run is looked at again if no instance change wakes
/// it first (the safety net; an instance's progress wakes it at once).
const WAIT: Duration = Duration::from_secs(5);

/// How often a run whose `bin/run`s are running rereads its task for a
/// cancel (one store read; a pass that waits on agents sees no wake-ups).
const CANCEL_POLL: Duration = Duration::from_secs(1);

/// The errand controller's context.
pub struct Errands {
    /// The world's handles (agents).
    pub director: Director,
    /// A run's bound when its spec sets none (boshd's
    /// `--errand-timeout-secs`).
    pub default_timeout: Duration,
}

/// Errors of the errand controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the store failed.
    #[error("store: {0}")]
    Store(#[from] store::Error),
}

/// What an errand name stands for in a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A `lifecycle: errand` group with this many instances; each runs its
    /// first job with `bin/run`.
    Group {
        /// The group's name (the errand's).
        name: String,
        /// Its `instances`.
        instances: u32,
    },
    /// A job colocated on service groups; it runs on every instance that
    /// has it.
    Colocated {
        /// The job's name (the errand's).
        job: String,
    },
}

/// What errands a manifest offers, for `boshctl errands`: errand groups
/// and the jobs of service groups (`bin/run` is checked when they run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offered {
    /// `lifecycle: errand` groups.
    pub groups: Vec<String>,
    /// Jobs of service groups.
    pub jobs: BTreeSet<String>,
}

/// The groups and jobs of a manifest as written (JSON), by lifecycle.
pub fn offered(manifest: &Value) -> Offered {
    let mut out = Offered::default();
    for g in manifest["instance_groups"].as_array().into_iter().flatten() {
        let Some(name) = g["name"].as_str() else { continue };
        if g["lifecycle"].as_str() == Some("errand") {
            out.groups.push(name.to_string());
        } else {
            for j in g["jobs"].as_array().into_iter().flatten() {
                if let Some(job) = j["name"].as_str() {
                    out.jobs.insert(job.to_string());
                }
            }
        }
    }
    out
}

/// What `errand` names in `manifest` (as written): an errand group first,
/// else a colocated job; an error lists what there is.
pub fn target(manifest: &Value, errand: &str) -> Result<Target, String> {
    for g in manifest["instance_groups"].as_array().into_iter().flatten() {
        if g["name"].as_str() == Some(errand) && g["lifecycle"].as_str() == Some("errand") {
            let instances = g["instances"].as_u64().unwrap_or(0) as u32;
            return Ok(Target::Group { name: errand.to_string(), instances });
        }
    }
    let o = offered(manifest);
    if o.jobs.contains(errand) {
        return Ok(Target::Colocated { job: errand.to_string() });
    }
    let jobs: Vec<&str> = o.jobs.iter().map(String::as_str).collect();
    Err(format!(
        "no errand {errand:?}: errand groups are [{}], colocated jobs are [{}]",
        o.groups.join(", "),
        jobs.join(", ")
    ))
}

/// The errand groups whose instances a deployment should have now: those
/// whose latest run (by task) is running, or finished — not skipped —
/// with `keepAlive`. A pending run wants nothing yet (it may be skipped).
pub fn groups_wanting_instances<'a>(
    runs: impl Iterator<Item = &'a Object<ErrandRunSpec>>,
) -> BTreeSet<String> {
    let mut latest: BTreeMap<&str, &Object<ErrandRunSpec>> = BTreeMap::new();
    for r in runs.filter(|r| r.status.phase != ErrandPhase::Pending) {
        let e = latest.entry(r.spec.errand.as_str()).or_insert(r);
        if r.spec.task > e.spec.task {
            *e = r;
        }
    }
    latest
        .into_iter()
        .filter(|(_, r)| match r.status.phase {
            ErrandPhase::Running => true,
            ErrandPhase::Succeeded | ErrandPhase::Failed | ErrandPhase::Cancelled => {
                r.spec.keep_alive
            }
            ErrandPhase::Pending | ErrandPhase::Skipped => false,
        })
        .map(|(e, _)| e.to_string())
        .collect()
}

/// Whether `selector` (`group`, `group/id`, `group/index`) picks `i`.
fn selects(selector: &str, i: &InstanceSpec) -> bool {
    match selector.split_once('/') {
        None => selector == i.group,
        Some((g, x)) => g == i.group && (x == i.id || x == i.index.to_string()),
    }
}

/// The instances a run targets, in group/index order.
pub fn targets<'a>(
    target: &Target,
    selectors: &[String],
    instances: &'a [Object<InstanceSpec>],
) -> Vec<&'a Object<InstanceSpec>> {
    let mut out: Vec<&Object<InstanceSpec>> = instances
        .iter()
        .filter(|i| !i.metadata.is_deleting())
        .filter(|i| match target {
            Target::Group { name, .. } => i.spec.group == *name,
            Target::Colocated { job } => i.spec.jobs.iter().any(|j| j.name == *job),
        })
        .filter(|i| selectors.is_empty() || selectors.iter().any(|s| selects(s, &i.spec)))
        .collect();
    out.sort_by_key(|i| (i.spec.group.clone(), i.spec.index));
    out
}

/// How far an instance is with the spec it holds.
enum Readiness {
    Ready,
    Waiting,
    Failed(String),
}

fn readiness(i: &Object<InstanceSpec>) -> Readiness {
    match find_condition(&i.status.conditions, ConditionType::Ready) {
        Some(c) if c.observed_revision == i.metadata.generation => match c.status {
            ConditionStatus::True => Readiness::Ready,
            _ if c.reason == Reason::UpdateFailed => Readiness::Failed(c.message.clone()),
            _ => Readiness::Waiting,
        },
        _ => Readiness::Waiting,
    }
}

/// The digest of a run's inputs (see the module docs for what it covers).
pub fn inputs_digest(manifest: &Value, spec: &ErrandRunSpec) -> String {
    use sha2::{Digest, Sha256};
    // serde_json's maps are sorted, so this is canonical.
    let doc = serde_json::json!({
        "manifest": manifest,
        "errand": spec.errand,
        "instances": spec.instances,
    });
    let hex: String =
        Sha256::digest(doc.to_string().as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The last successful run of `errand` before task `before`, if any.
pub fn last_success<'a>(
    runs: &'a [Object<ErrandRunSpec>],
    errand: &str,
    before: u64,
) -> Option<&'a Object<ErrandRunSpec>> {
    runs.iter()
        .filter(|r| r.spec.errand == errand && r.spec.task < before)
        .filter(|r| r.status.phase == ErrandPhase::Succeeded)
        .max_by_key(|r| r.spec.task)
}

/// The task result of a finished run: one JSON object per instance with
/// its job and exit code (or error). Output stays in the ErrandRun's
/// status, which `boshctl run-errand` prints: a task result is one
/// size-capped line, and BOSH's errand output can be long.
pub fn task_result(results: &[ErrandInstanceResult]) -> String {
    let brief: Vec<ErrandInstanceResult> = results
        .iter()
        .map(|r| ErrandInstanceResult {
            stdout: String::new(),
            stderr: String::new(),
            logs: None,
            logs_error: None,
            ..r.clone()
        })
        .collect();
    serde_json::to_string(&brief).unwrap_or_default()
}

/// Reconciles one ErrandRun.
pub async fn reconcile(
    obj: Arc<Object<ErrandRunSpec>>,
    ctx: Arc<Ctx<Errands>>,
) -> Result<Action, Error> {
    let store = &ctx.store;
    let dep = obj.metadata.deployment.clone().unwrap_or_default();
    // Decide on the stored run, not the cache's copy: results recorded by
    // an earlier pass must be seen so they are not run again.
    let Some(run) = store.try_get::<ErrandRunSpec>(Some(&dep), &obj.metadata.name).await? else {
        return Ok(Action::await_change());
    };
    if run.status.phase.is_finished() {
        // Nothing more to do; a finished run never changes again.
        return Ok(Action::await_change());
    }
    let Some(d) = store.try_get::<DeploymentSpec>(None, &dep).await? else {
        finish(store, run, ErrandPhase::Failed, format!("deployment {dep} does not exist")).await?;
        return Ok(Action::await_change());
    };
    if cancel_asked(store, run.spec.task).await? {
        let msg = cancelled_message(&run);
        finish(store, run, ErrandPhase::Cancelled, msg).await?;
        return Ok(Action::await_change());
    }
    let target = match target(&d.spec.manifest, &run.spec.errand) {
        Ok(t) => t,
        Err(msg) => {
            finish(store, run, ErrandPhase::Failed, format!("deployment {dep}: {msg}")).await?;
            return Ok(Action::await_change());
        }
    };
    match run.status.phase {
        ErrandPhase::Pending => start(store, run, &d).await,
        _ => carry_out(&ctx, run, &target).await,
    }
}

/// Whether a user asked to cancel the run's task (a missing task: no).
async fn cancel_asked(store: &Store, task: u64) -> Result<bool, Error> {
    Ok(store.try_get::<TaskSpec>(None, &task_name(task)).await?.is_some_and(|t| t.spec.cancel))
}

/// What a cancelled run reports.
fn cancelled_message(run: &Object<ErrandRunSpec>) -> String {
    let ran = run.status.results.iter().filter(|r| r.exit_code.is_some()).count();
    format!("cancelled by user ({ran} instances had run bin/run)")
}

/// The run's bound: its own `timeoutSeconds`, else the default.
pub fn timeout_of(spec: &ErrandRunSpec, default: Duration) -> Duration {
    spec.timeout_seconds.map(Duration::from_secs).unwrap_or(default)
}

/// How much of its bound a run started at `started_at` has left at `now`
/// (zero: it is over).
pub fn time_left(
    started_at: chrono::DateTime<chrono::Utc>,
    timeout: Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Duration {
    let spent = (now - started_at).to_std().unwrap_or_default();
    timeout.saturating_sub(spent)
}

/// Why a run's `bin/run`s were stopped before they ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    /// Its task was cancelled.
    Cancelled,
    /// Its timeout passed.
    TimedOut,
}

/// Yields once the run's task is cancelled or `left` has passed, whichever
/// comes first.
async fn stop_signal(store: Store, task: u64, left: Duration) -> Stop {
    let deadline = tokio::time::Instant::now() + left;
    loop {
        if let Ok(true) = cancel_asked(&store, task).await {
            return Stop::Cancelled;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Stop::TimedOut;
        }
        tokio::time::sleep((deadline - now).min(CANCEL_POLL)).await;
    }
}

/// A pending run: skipped, or marked running.
async fn start(
    store: &Store,
    mut run: Object<ErrandRunSpec>,
    d: &Object<DeploymentSpec>,
) -> Result<Action, Error> {
    let dep = d.metadata.name.clone();
    let inputs = inputs_digest(&d.spec.manifest, &run.spec);
    run.status.inputs = inputs.clone();
    if run.spec.when_changed {
        let runs = store.list::<ErrandRunSpec>(&format!("{dep}/")).await?.items;
        if let Some(last) = last_success(&runs, &run.spec.errand, run.spec.task)
            && last.status.inputs == inputs
        {
            let msg = format!("skipped: nothing changed since task {}", last.spec.task);
            finish(store, run, ErrandPhase::Skipped, msg).await?;
            return Ok(Action::await_change());
        }
    }
    set_task_state(store, run.spec.task, TaskState::Processing, "").await?;
    run.status.phase = ErrandPhase::Running;
    run.status.message = "preparing instances".into();
    run.status.started_at = Some(chrono::Utc::now());
    store.update_status(&run).await?;
    info!(deployment = %dep, errand = %run.spec.errand, task = run.spec.task, "errand run starts");
    // Its own status write does not wake it (it reconciles on spec changes).
    Ok(Action::requeue(Duration::ZERO))
}

/// A running run: wait for its instances, then run what has no result;
/// stop at its timeout or its task's cancel.
async fn carry_out(
    ctx: &Ctx<Errands>,
    mut run: Object<ErrandRunSpec>,
    target: &Target,
) -> Result<Action, Error> {
    let store = &ctx.store;
    let dep = run.metadata.deployment.clone().unwrap_or_default();
    // A run written `running` by hand (or by an older director) has no
    // start: its bound counts from now.
    let started_at = match run.status.started_at {
        Some(t) => t,
        None => {
            let now = chrono::Utc::now();
            run.status.started_at = Some(now);
            run = store.update_status(&run).await?;
            now
        }
    };
    let timeout = timeout_of(&run.spec, ctx.data.default_timeout);
    let left = time_left(started_at, timeout, chrono::Utc::now());
    let all = store.list::<InstanceSpec>(&format!("{dep}/")).await?.items;
    let chosen = targets(target, &run.spec.instances, &all);
    let missing = match target {
        Target::Group { instances, .. } if run.spec.instances.is_empty() => {
            (*instances as usize).saturating_sub(chosen.len())
        }
        _ => 0,
    };
    if chosen.is_empty() && missing == 0 {
        let msg = match target {
            Target::Colocated { job } => format!("no instance has job {job}"),
            Target::Group { name, .. } => format!("no instance of {name} matches the selectors"),
        };
        finish(store, run, ErrandPhase::Failed, msg).await?;
        return Ok(Action::await_change());
    }
    let mut pending = Vec::new();
    for i in &chosen {
        match readiness(i) {
            Readiness::Ready => {}
            Readiness::Waiting => pending.push(i.metadata.name.clone()),
            Readiness::Failed(m) => {
                let msg = format!("instance {} failed: {m}", i.metadata.name);
                finish(store, run, ErrandPhase::Failed, msg).await?;
                return Ok(Action::await_change());
            }
        }
    }
    if missing > 0 || !pending.is_empty() {
        let mut waited = pending.clone();
        if missing > 0 {
            waited.push(format!("{missing} instances still to be created"));
        }
        if left.is_zero() {
            let msg = format!(
                "timed out after {} s waiting for instances to be ready: {} ({} of {} ready)",
                timeout.as_secs(),
                waited.join(", "),
                chosen.len() - pending.len(),
                chosen.len() + missing,
            );
            finish(store, run, ErrandPhase::Failed, msg).await?;
            return Ok(Action::await_change());
        }
        let msg = format!("waiting for instances ({} of them ready)", chosen.len() - pending.len());
        if run.status.message != msg {
            run.status.message = msg;
            store.update_status(&run).await?;
        }
        // Instances' progress and a cancel wake it; the bound must too.
        return Ok(Action::requeue(WAIT.min(left)));
    }
    let job = match target {
        Target::Group { .. } => None,
        Target::Colocated { job } => Some(job.clone()),
    };
    let done: BTreeSet<String> = run.status.results.iter().map(|r| r.instance.clone()).collect();
    let log = EventLog::new(store.clone(), run.spec.task);
    let stage = format!("Running errand {}", run.spec.errand);
    // One signal for every call: once it fires, each call cancels its
    // agent's task and returns at once.
    let stop = tokio_util::sync::CancellationToken::new();
    let why = Arc::new(std::sync::Mutex::new(String::new()));
    let stopped = |stop: &tokio_util::sync::CancellationToken| {
        let (stop, why) = (stop.clone(), why.clone());
        async move {
            stop.cancelled().await;
            why.lock().expect("lock").clone()
        }
    };
    let download_logs = run.spec.download_logs;
    let mut calls = futures::stream::FuturesUnordered::new();
    for i in chosen.iter().filter(|i| !done.contains(&i.metadata.name)) {
        let agent =
            ctx.data.director.agents.for_agent(i.status.agent_id.clone().unwrap_or_default());
        let (name, job, log, stage) = (i.metadata.name.clone(), job.clone(), &log, &stage);
        let (until_run, until_logs) = (stopped(&stop), stopped(&stop));
        calls.push(async move {
            record(log, stage, &name, EventState::Started, "").await;
            let r = agent.run_errand_until(job.as_deref(), until_run).await;
            let was_stopped = matches!(r, Err(AgentError::Stopped { .. }));
            let mut result = match r {
                Ok(r) => ErrandInstanceResult {
                    instance: name.clone(),
                    job: r.job,
                    exit_code: Some(r.exit_code),
                    stdout: r.stdout,
                    stderr: r.stderr,
                    ..Default::default()
                },
                Err(e) => ErrandInstanceResult {
                    instance: name.clone(),
                    job: job.unwrap_or_default(),
                    error: Some(e.to_string()),
                    ..Default::default()
                },
            };
            // Logs of a bin/run that ran (or failed to), fetched before
            // anything deletes the VM; a stopped run fetches nothing.
            if download_logs && !was_stopped {
                match agent.fetch_logs_until(until_logs).await {
                    Ok(blob) => result.logs = Some(blob),
                    Err(e) => result.logs_error = Some(e.to_string()),
                }
            }
            let (state, err) = match (&result.error, result.exit_code) {
                (Some(e), _) => (EventState::Failed, e.clone()),
                (None, Some(0)) => (EventState::Finished, String::new()),
                (None, code) => (EventState::Failed, format!("exit code {}", code.unwrap_or(-1))),
            };
            record(log, stage, &name, state, &err).await;
            result
        });
    }
    let total = chosen.len();
    let signal = stop_signal(store.clone(), run.spec.task, left);
    let mut signal = std::pin::pin!(signal);
    let mut reason: Option<Stop> = None;
    // Each result is recorded as it comes, so a director that dies now
    // runs only the instances whose results it never saw.
    loop {
        tokio::select! {
            next = calls.next() => {
                let Some(result) = next else { break };
                run.status.results.push(result);
                run.status.results.sort_by(|a, b| a.instance.cmp(&b.instance));
                run.status.message =
                    format!("{} of {total} instances ran", run.status.results.len());
                run = store.update_status(&run).await?;
            }
            r = &mut signal, if reason.is_none() => {
                *why.lock().expect("lock") = match r {
                    Stop::Cancelled => "its task was cancelled".to_string(),
                    Stop::TimedOut => format!("the run's timeout of {} s passed", timeout.as_secs()),
                };
                reason = Some(r);
                stop.cancel();
            }
        }
    }
    match reason {
        Some(Stop::Cancelled) => {
            let msg = cancelled_message(&run);
            finish(store, run, ErrandPhase::Cancelled, msg).await?;
        }
        Some(Stop::TimedOut) => {
            let unfinished: Vec<&str> = run
                .status
                .results
                .iter()
                .filter(|r| r.exit_code.is_none())
                .map(|r| r.instance.as_str())
                .collect();
            let msg = format!(
                "timed out after {} s waiting for bin/run on {}",
                timeout.as_secs(),
                unfinished.join(", ")
            );
            finish(store, run, ErrandPhase::Failed, msg).await?;
        }
        None => {
            let failed = run.status.results.iter().filter(|r| !r.succeeded()).count();
            let n = run.status.results.len();
            let (phase, msg) = if failed == 0 {
                (ErrandPhase::Succeeded, format!("{n} instances ran the errand"))
            } else {
                (ErrandPhase::Failed, format!("{failed} of {n} instances failed"))
            };
            finish(store, run, phase, msg).await?;
        }
    }
    Ok(Action::await_change())
}

/// Records an event in the run's task, best effort.
async fn record(log: &EventLog, stage: &str, object: &str, state: EventState, error: &str) {
    if let Err(e) = log.record(stage, object, state, error).await {
        warn!(task = log.task(), object, error = %e, "could not record an event");
    }
}

/// Ends a run in `phase` and finishes its task: done when it succeeded or
/// was skipped, error otherwise; the result holds the instances' results
/// (or the message, when none ran).
async fn finish(
    store: &Store,
    mut run: Object<ErrandRunSpec>,
    phase: ErrandPhase,
    message: String,
) -> Result<(), Error> {
    info!(errand = %run.spec.errand, task = run.spec.task, ?phase, message = %message, "errand run ends");
    run.status.phase = phase;
    run.status.message = message.clone();
    let task = run.spec.task;
    let result =
        if run.status.results.is_empty() { message } else { task_result(&run.status.results) };
    store.update_status(&run).await?;
    let state = match phase {
        ErrandPhase::Succeeded | ErrandPhase::Skipped => TaskState::Done,
        ErrandPhase::Cancelled => TaskState::Cancelled,
        _ => TaskState::Error,
    };
    match set_task_state(store, task, state, &result).await {
        // A task deleted by hand (or never written, for a GitOps run that
        // named none) leaves the run's status as the only report.
        Err(store::Error::NotFound { .. }) => Ok(()),
        other => Ok(other?),
    }
}

/// What of an ErrandRun its deployment decides on: its phase (which
/// errand groups want instances).
pub fn phase_changed() -> Predicate<ErrandRunSpec> {
    Predicate::<ErrandRunSpec>::new(|old, new| old.status.phase != new.status.phase)
}

/// What of an Instance a running errand waits for: its spec, its `Ready`
/// condition, its deletion.
fn instance_progress() -> Predicate<InstanceSpec> {
    crate::reconcilers::deployment::instance_progress()
}

/// What of a Task a run acts on at once: a cancel being asked.
fn cancel_asked_changed() -> Predicate<TaskSpec> {
    Predicate::<TaskSpec>::new(|old, new| old.spec.cancel != new.spec.cancel)
}

/// The errand controller, woken by its runs, by the Instances of
/// deployments with an unfinished run (mapped through the runs' cache),
/// and by a cancel of a run's task (a run is named after its task).
pub fn controller(
    director: &Director,
    opts: &crate::server::daemon::Options,
    runs: &Reflector<ErrandRunSpec>,
    instances: &Reflector<InstanceSpec>,
    tasks: &Reflector<TaskSpec>,
) -> Controller<ErrandRunSpec, Errands, Error> {
    let cache = runs.cache();
    let errands = Errands { director: director.clone(), default_timeout: opts.errand_timeout };
    Controller::new(
        WIRING.name,
        director.store.clone(),
        Arc::new(errands),
        opts.controller_config(&WIRING),
        reconcile,
        default_error_policy,
    )
    .with_reflector(runs.clone())
    .watches(instances, instance_progress(), move |i| {
        let dep = i.metadata.deployment.as_deref();
        cache
            .list()
            .iter()
            .filter(|r| r.metadata.deployment.as_deref() == dep && !r.status.phase.is_finished())
            .map(|r| r.key_name())
            .collect()
    })
    .watches(tasks, cancel_asked_changed(), |t| {
        let run = t.metadata.name.clone();
        t.spec
            .deployment
            .iter()
            .map(|d| bosh_api::objects::key_name::<ErrandRunSpec>(Some(d), &run))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use bosh_api::ObjectMeta;
    use bosh_api::objects::InstanceJob;
    use serde_json::json;

    use super::*;

    fn manifest() -> Value {
        json!({"instance_groups": [
            {"name": "web", "instances": 2, "jobs": [{"name": "nginx"}, {"name": "smoke"}]},
            {"name": "db", "instances": 1, "jobs": [{"name": "pg"}]},
            {"name": "tests", "instances": 1, "lifecycle": "errand", "jobs": [{"name": "t"}]},
        ]})
    }

    fn run(errand: &str, task: u64, phase: ErrandPhase, keep: bool) -> Object<ErrandRunSpec> {
        let spec =
            ErrandRunSpec { errand: errand.into(), task, keep_alive: keep, ..Default::default() };
        let mut o = Object::new(ObjectMeta::scoped("d", format!("{task:010}")), spec);
        o.status.phase = phase;
        o
    }

    fn instance(group: &str, index: u32, jobs: &[&str]) -> Object<InstanceSpec> {
        let spec = InstanceSpec {
            group: group.into(),
            id: format!("{group}-id-{index}"),
            index,
            jobs: jobs
                .iter()
                .map(|j| InstanceJob { name: j.to_string(), ..Default::default() })
                .collect(),
            ..Default::default()
        };
        Object::new(ObjectMeta::scoped("d", format!("{group}/{group}-id-{index}")), spec)
    }

    /// An errand group is found before a job of the same name; a colocated
    /// job is found on service groups; an unknown name lists what there is.
    #[test]
    fn errand_names_resolve_to_groups_then_colocated_jobs() {
        let m = manifest();
        assert_eq!(target(&m, "tests"), Ok(Target::Group { name: "tests".into(), instances: 1 }));
        assert_eq!(target(&m, "smoke"), Ok(Target::Colocated { job: "smoke".into() }));
        let err = target(&m, "nope").unwrap_err();
        assert!(err.contains("errand groups are [tests]"), "{err}");
        assert!(err.contains("colocated jobs are [nginx, pg, smoke]"), "{err}");
        // A job of an errand group is not a colocated errand.
        assert!(target(&m, "t").is_err());
    }

    /// Only the latest run of each errand decides; pending and skipped
    /// runs want nothing; finished runs keep instances only with keepAlive.
    #[test]
    fn groups_want_instances_while_running_or_kept_alive() {
        let want = |runs: &[Object<ErrandRunSpec>]| groups_wanting_instances(runs.iter());
        assert!(want(&[run("t", 1, ErrandPhase::Pending, false)]).is_empty());
        assert_eq!(want(&[run("t", 1, ErrandPhase::Running, false)]), ["t".to_string()].into());
        assert!(want(&[run("t", 1, ErrandPhase::Succeeded, false)]).is_empty());
        assert_eq!(want(&[run("t", 1, ErrandPhase::Failed, true)]), ["t".to_string()].into());
        let later_without_keep =
            [run("t", 1, ErrandPhase::Succeeded, true), run("t", 2, ErrandPhase::Succeeded, false)];
        assert!(want(&later_without_keep).is_empty());
        let later_pending =
            [run("t", 1, ErrandPhase::Succeeded, true), run("t", 2, ErrandPhase::Pending, false)];
        assert_eq!(want(&later_pending), ["t".to_string()].into());
        assert!(want(&[run("t", 1, ErrandPhase::Skipped, true)]).is_empty());
        // A cancelled run lets its VMs go, unless kept alive.
        assert!(want(&[run("t", 1, ErrandPhase::Cancelled, false)]).is_empty());
        assert_eq!(want(&[run("t", 1, ErrandPhase::Cancelled, true)]), ["t".to_string()].into());
    }

    /// A run's own bound wins over the default; what is left counts from
    /// its start and never goes below zero.
    #[test]
    fn a_runs_bound_counts_from_its_start() {
        let default = Duration::from_secs(3600);
        let spec = ErrandRunSpec { timeout_seconds: Some(30), ..Default::default() };
        assert_eq!(timeout_of(&spec, default), Duration::from_secs(30));
        assert_eq!(timeout_of(&ErrandRunSpec::default(), default), default);
        let t0 = chrono::Utc::now();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let bound = Duration::from_secs(30);
        assert_eq!(time_left(t0, bound, at(10)), Duration::from_secs(20));
        assert_eq!(time_left(t0, bound, at(30)), Duration::ZERO);
        assert_eq!(time_left(t0, bound, at(99)), Duration::ZERO);
        // A clock that went back leaves the whole bound.
        assert_eq!(time_left(t0, bound, at(-5)), bound);
    }

    /// Selectors pick by group, id or index; colocated errands go to every
    /// instance with the job.
    #[test]
    fn targets_follow_the_errand_and_the_selectors() {
        let all = [
            instance("web", 0, &["nginx", "smoke"]),
            instance("web", 1, &["nginx", "smoke"]),
            instance("db", 0, &["pg"]),
        ];
        let smoke = Target::Colocated { job: "smoke".into() };
        let names = |v: Vec<&Object<InstanceSpec>>| {
            v.iter().map(|i| i.metadata.name.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(targets(&smoke, &[], &all)), ["web/web-id-0", "web/web-id-1"]);
        assert_eq!(names(targets(&smoke, &["web/1".into()], &all)), ["web/web-id-1"]);
        assert_eq!(names(targets(&smoke, &["web/web-id-0".into()], &all)), ["web/web-id-0"]);
        assert!(targets(&smoke, &["db".into()], &all).is_empty());
        let group = Target::Group { name: "db".into(), instances: 1 };
        assert_eq!(names(targets(&group, &[], &all)), ["db/db-id-0"]);
    }

    /// `whenChanged` compares with the latest successful earlier run only,
    /// and the digest moves with the manifest and the errand.
    #[test]
    fn when_changed_compares_with_the_last_successful_run() {
        let m = manifest();
        let spec = ErrandRunSpec { errand: "tests".into(), ..Default::default() };
        let d1 = inputs_digest(&m, &spec);
        assert_eq!(d1, inputs_digest(&m, &spec));
        let mut m2 = m.clone();
        m2["instance_groups"][2]["instances"] = json!(2);
        assert_ne!(d1, inputs_digest(&m2, &spec));
        let other = ErrandRunSpec { errand: "smoke".into(), ..Default::default() };
        assert_ne!(d1, inputs_digest(&m, &other));

        let runs = [
            run("tests", 1, ErrandPhase::Succeeded, false),
            run("tests", 2, ErrandPhase::Failed, false),
            run("smoke", 3, ErrandPhase::Succeeded, false),
            run("tests", 5, ErrandPhase::Succeeded, false),
        ];
        assert_eq!(last_success(&runs, "tests", 4).map(|r| r.spec.task), Some(1));
        assert_eq!(last_success(&runs, "tests", 6).map(|r| r.spec.task), Some(5));
        assert!(last_success(&runs, "tests", 1).is_none());
    }
}
