//! The instance controller: drives one Instance object onto a VM until the
//! VM runs what the spec says, in the state the spec asks for.
//!
//! The spec carries everything (stemcell, cloud properties, networks,
//! compiled packages, rendered templates, the disk) and two digests:
//! `vmHash` differs from the status' ⇒ the VM is recreated; `configHash`
//! differs ⇒ the jobs are drained, stopped, re-applied and started. An
//! instance whose `Ready` condition is True at its current generation is
//! converged and costs nothing: no CPI call, no agent call, no write.
//!
//! Every side effect is preceded by a record of intent in the status: the
//! agent id and create request id before `create_vm` (a crash or lost
//! reply is adopted by request id, never repeated), the Disk object before
//! `create_disk`. Failure sets `Ready` False with reason `UpdateFailed`,
//! which halts the deployment's rollout, and the runtime retries the
//! instance with backoff.
//!
//! # Layout
//!
//! - this file: reconcile, convergence, status and event bookkeeping.
//! - [`vm`]: creating, adopting and deleting the VM.
//! - [`disk`]: the persistent disk: create, attach, mount, orphan.
//! - [`jobs`]: the agent side: apply, drain, stop, scripts, start, watch.
//! - [`problems`]: cloud check on this instance: scans for problems and
//!   carries out the resolutions chosen for them, when asked.
//! - [`resurrect`]: recreating what the health monitor found unresponsive.

pub mod disk;
pub mod jobs;
pub mod problems;
pub mod resurrect;
pub mod vm;

use std::sync::Arc;
use std::time::Duration;

use bosh_api::meta::{find_condition, set_condition};
use bosh_api::objects::{
    ConditionType, DeploymentSpec, DesiredState, EventState, Finalizer, InstancePhase,
    InstanceSpec, InstanceStatus, Reason,
};
use bosh_api::store::{self, Store};
use bosh_api::{Condition, ConditionStatus, Object};
use tracing::{info, warn};

use crate::libs::tasks::EventLog;
// CPI calls made for a task log to it (`boshctl task N --cpi`).
use crate::runtime::{Action, Cleanup, Ctx, Trigger, Wiring, Workers, finalizer};
use crate::world::agent_client::AgentError;
use crate::world::cpi::CpiError;
use crate::world::cpi::call_log::in_task;
use crate::world::director::Director;

/// The annotation `delete-deployment --force` sets: agent failures do not
/// stop a teardown.
pub const FORCE_DELETE: &str = "bosh.io/force-delete";

/// The instance controller's context.
pub struct Instances {
    /// The world's handles.
    pub director: Director,
    /// How long a new VM's agent may take to answer (BOSH: 600 s).
    pub agent_wait: Duration,
    /// How long a running VM's agent may take to answer before teardown
    /// goes on without it.
    pub agent_grace: Duration,
    /// Meltdown thresholds (and the agent timeout the monitor uses).
    pub health: crate::reconcilers::health::HealthConfig,
}

impl Instances {
    /// An instance controller acting through `director`.
    pub fn new(director: Director) -> Instances {
        Instances {
            director,
            agent_wait: Duration::from_secs(600),
            agent_grace: Duration::from_secs(10),
            health: crate::reconcilers::health::HealthConfig::default(),
        }
    }
}

/// Errors of the instance controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the store failed.
    #[error("store: {0}")]
    Store(#[from] store::Error),
    /// A CPI call failed.
    #[error("CPI {method} failed")]
    Cpi {
        /// The CPI method.
        method: &'static str,
        /// What the CPI said.
        #[source]
        source: CpiError,
    },
    /// An agent call failed.
    #[error("agent {step} failed")]
    Agent {
        /// The step (`apply`, `pre-start`, ...).
        step: &'static str,
        /// What the agent said.
        #[source]
        source: AgentError,
    },
    /// The VM's agent never answered.
    #[error("agent {agent} did not answer within {waited:?}")]
    Unresponsive {
        /// The agent id.
        agent: String,
        /// How long it was given.
        waited: Duration,
    },
    /// The jobs did not reach `running` within the watch time.
    #[error("jobs not running after {waited_ms} ms: {detail}")]
    NotRunning {
        /// How long it was watched.
        waited_ms: u64,
        /// Processes and their states.
        detail: String,
    },
    /// Bus credentials could not be issued or revoked.
    #[error("bus credentials: {0}")]
    Bus(#[from] crate::world::bus::Error),
    /// Something the spec names is not there (a stemcell not imported).
    #[error("{0}")]
    Missing(String),
    /// The variables `env` names could not be substituted (names them,
    /// never values).
    #[error("env: {0}")]
    Variables(#[from] crate::libs::variables::Error),
}

impl Error {
    /// The error with its causes, as one line (never carries secrets:
    /// agent and CPI messages name files and exit codes, not values).
    pub fn chain(&self) -> String {
        if let Error::Agent { source: AgentError::Exception { message, .. }, .. } = self {
            return format!("{self}: {message}");
        }
        crate::libs::errors::chain(self)
    }
}

/// How long an instance whose CPI call failed permanently (a quota, a
/// bad cloud property: retrying soon will not help) waits before it is
/// tried again: its `Ready` condition already says why, and an operator
/// fixing the cause changes the spec or asks for a recreate, which wakes it
/// at once. With a retry costing two CPI calls (`find_vm_by_request`,
/// `create_vm`) this keeps a stuck instance under 20 calls an hour
/// (FAULT-MATRIX D4); the exponential backoff (200 ms doubling to 5 min)
/// would spend some 22 tries in its first hour.
pub const PERMANENT_RETRY: Duration = Duration::from_secs(600);

/// Back off per key on any error; a permanent CPI failure waits
/// [`PERMANENT_RETRY`].
pub fn error_policy(_: Arc<Object<InstanceSpec>>, e: &Error, _: Arc<Ctx<Instances>>) -> Action {
    match e {
        Error::Cpi { source: CpiError::Permanent { .. }, .. } => Action::requeue(PERMANENT_RETRY),
        _ => Action::backoff(),
    }
}

/// The deployment-wide settings an instance is driven with.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Skip drain (`--skip-drain`).
    pub skip_drain: bool,
    /// Tear down even when the agent fails (`delete-deployment --force`).
    pub force: bool,
    /// Recreate a VM whose agent does not answer (`--fix`).
    pub fix: bool,
    /// The deployment's task, whose event log records each step.
    pub task: Option<u64>,
    /// The deployment is gone or going (pre-stop's
    /// `BOSH_DEPLOYMENT_NEXT_STATE`).
    pub deployment_deleted: bool,
}

/// Writes `edit` into the instance's status (see [`crate::runtime::status::patch`]).
pub(crate) async fn patch(
    store: &Store,
    obj: &mut Object<InstanceSpec>,
    edit: impl Fn(&mut InstanceStatus),
) -> Result<(), Error> {
    crate::failpoint!(crate::failpoints::INSTANCE_BEFORE_STATUS_WRITE);
    crate::runtime::status::patch(store, obj, edit).await?;
    Ok(())
}

/// How an instance is named in events: `web/<uuid> (0)`.
pub fn display(obj: &Object<InstanceSpec>) -> String {
    format!("{} ({})", obj.metadata.name, obj.spec.index)
}

async fn event(
    o: &Options,
    stage: &str,
    object: &str,
    state: EventState,
    error: &str,
    store: &Store,
) {
    let Some(task) = o.task else { return };
    if let Err(e) = EventLog::new(store.clone(), task).record(stage, object, state, error).await {
        warn!(task, object, error = %e, "could not record an event");
    }
}

/// Whether the instance is converged on its current spec.
pub fn is_converged(obj: &Object<InstanceSpec>) -> bool {
    find_condition(&obj.status.conditions, ConditionType::Ready).is_some_and(|c| {
        c.status == ConditionStatus::True && c.observed_revision == obj.metadata.generation
    })
}

/// The instance controller hears every change, status included: the
/// health monitor's verdicts are what resurrection reconciles on.
/// Instances are many and each pass may wait on an agent, so it has more
/// workers than the others (`max_in_flight` caps what runs at once).
pub const WIRING: Wiring =
    Wiring { name: "instance", trigger: Trigger::Any, workers: Workers::AtLeast(32) };

/// Reconciles one Instance.
pub async fn reconcile(
    obj: Arc<Object<InstanceSpec>>,
    ctx: Arc<Ctx<Instances>>,
) -> Result<Action, Error> {
    let store = &ctx.store;
    let mut cur = (*obj).clone();
    // Whatever this reconcile is about to do (tear down, recreate, create,
    // resurrect, resolve) it decides on a linearizable read, never on the
    // cache alone: a cache that lags (a slow watch, a relist from an old
    // revision) would have it delete a VM already replaced, forget the one
    // that runs, or make a second one (FAULT-MATRIX A5); and it may lag
    // this controller's own writes (one whose reply was lost committed
    // without it knowing, FAULT-MATRIX B5). An instance at rest costs no
    // read: it is left alone until it wakes us again.
    let at_rest = !cur.metadata.is_deleting()
        && is_converged(&cur)
        && !cur.status.is_unresponsive()
        && !problems::pending(&cur);
    if !at_rest {
        let dep = cur.metadata.deployment.clone().unwrap_or_default();
        match store.try_get::<InstanceSpec>(Some(&dep), &cur.metadata.name).await? {
            Some(fresh) => cur = fresh,
            None => return Ok(Action::await_change()),
        }
    }
    finalizer(&ctx, Arc::new(cur), Finalizer::Vm, |o| apply(&ctx, o, at_rest), |o| delete(&ctx, o))
        .await
}

/// The deployment-wide settings the instance is driven with, read from its
/// Deployment.
async fn options(ctx: &Ctx<Instances>, obj: &Object<InstanceSpec>) -> Result<Options, Error> {
    let dep_name = obj.metadata.deployment.clone().unwrap_or_default();
    let dep = ctx.store.try_get::<DeploymentSpec>(None, &dep_name).await?;
    Ok(Options {
        skip_drain: dep.as_ref().is_some_and(|d| d.spec.options.skip_drain),
        fix: dep.as_ref().is_some_and(|d| d.spec.options.fix),
        force: dep
            .as_ref()
            .is_some_and(|d| d.metadata.annotations.get(FORCE_DELETE).is_some_and(|v| v == "true")),
        task: dep.as_ref().and_then(|d| d.spec.task),
        deployment_deleted: dep.as_ref().is_none_or(|d| d.metadata.is_deleting()),
    })
}

/// Drives a living instance toward its spec (`at_rest`: converged, read
/// from the cache, nothing to do).
async fn apply(
    ctx: &Ctx<Instances>,
    obj: Arc<Object<InstanceSpec>>,
    at_rest: bool,
) -> Result<Action, Error> {
    if at_rest {
        return Ok(Action::await_change());
    }
    let store = &ctx.store;
    let opts = options(ctx, &obj).await?;
    let dep_name = obj.metadata.deployment.clone().unwrap_or_default();
    let mut cur = (*obj).clone();
    let what = display(&cur);
    if problems::pending(&cur) {
        // Read above, not from the cache, which may lag this controller's
        // own last writes: a resolution must not be carried out twice.
        in_task(opts.task, problems::run(ctx, &mut cur, &opts)).await?;
    }
    if is_converged(&cur) {
        if cur.spec.desired_state != DesiredState::Detached && cur.status.is_unresponsive() {
            return resurrect::run(ctx, cur, opts).await;
        }
        return Ok(Action::await_change());
    }
    let generation = cur.metadata.generation;
    event(&opts, "Updating instance", &what, EventState::Started, "", store).await;
    let started = std::time::Instant::now();
    match in_task(opts.task, drive(ctx, &mut cur, &opts)).await {
        Ok(()) => {
            let state = format!("{:?}", cur.spec.desired_state).to_lowercase();
            let digest = problems::digest(&cur.spec);
            patch(store, &mut cur, |s| {
                s.converged_digest = digest.clone();
                set_condition(
                    &mut s.conditions,
                    Condition::ready(true, Reason::Converged, state.clone(), generation),
                );
                s.observed_revision = generation;
            })
            .await?;
            event(&opts, "Updating instance", &what, EventState::Finished, "", store).await;
            info!(deployment = %dep_name, instance = %what, elapsed_ms = started.elapsed().as_millis() as u64, "instance converged");
            Ok(Action::await_change())
        }
        Err(e) => {
            let msg = e.chain();
            warn!(deployment = %dep_name, instance = %what, error = %msg, "instance update failed");
            let _ = patch(store, &mut cur, |s| {
                set_condition(
                    &mut s.conditions,
                    Condition::ready(false, Reason::UpdateFailed, msg.clone(), generation),
                );
                s.observed_revision = generation;
            })
            .await;
            event(&opts, "Updating instance", &what, EventState::Failed, &msg, store).await;
            Err(e)
        }
    }
}

/// Tears a deleted instance down: jobs stopped, VM deleted, disk orphaned;
/// the finalizer then lets the Instance go.
async fn delete(ctx: &Ctx<Instances>, obj: Arc<Object<InstanceSpec>>) -> Result<Cleanup, Error> {
    let store = &ctx.store;
    let opts = options(ctx, &obj).await?;
    let mut cur = (*obj).clone();
    let what = display(&cur);
    event(&opts, "Deleting instance", &what, EventState::Started, "", store).await;
    if let Err(e) = in_task(opts.task, teardown(ctx, &mut cur, &opts)).await {
        event(&opts, "Deleting instance", &what, EventState::Failed, &e.chain(), store).await;
        return Err(e);
    }
    disk::orphan(ctx, &cur).await?;
    event(&opts, "Deleting instance", &what, EventState::Finished, "", store).await;
    let dep_name = cur.metadata.deployment.clone().unwrap_or_default();
    info!(deployment = %dep_name, instance = %what, "instance deleted");
    Ok(Cleanup::Done)
}

/// One pass toward the spec: VM, disk, jobs.
async fn drive(
    ctx: &Ctx<Instances>,
    cur: &mut Object<InstanceSpec>,
    o: &Options,
) -> Result<(), Error> {
    let store = &ctx.store;
    let spec = cur.spec.clone();
    if spec.desired_state == DesiredState::Detached {
        if cur.status.vm_cid.is_some() || cur.status.pending_create.is_some() {
            jobs::quiesce(ctx, cur, o, jobs::NextState::VM_DELETED).await?;
            vm::delete(ctx, cur).await?;
        }
        // No VM, no agent: no health to show (nor a stale one).
        return patch(store, cur, |s| {
            s.phase = Some(InstancePhase::Detached);
            s.health = None;
        })
        .await;
    }
    // An unresponsive agent's VM is replaced (resurrection, or an update
    // that found it so); with `--fix`, so is one that does not answer now.
    let mut stale = cur.status.vm_hash != spec.vm_hash
        || cur.status.recreate_token != spec.recreate_token
        || cur.status.is_unresponsive();
    if o.fix && !stale && cur.status.vm_cid.is_some() {
        let agent = cur.status.agent_id.clone().unwrap_or_default();
        stale = !vm::responsive(ctx, &agent, ctx.data.agent_grace).await;
    }
    if stale && (cur.status.vm_cid.is_some() || cur.status.pending_create.is_some()) {
        info!(instance = %cur.metadata.name, "recreating VM");
        jobs::quiesce(ctx, cur, o, jobs::NextState::VM_DELETED).await?;
        vm::delete(ctx, cur).await?;
    }
    if cur.status.vm_cid.is_none() {
        vm::create(ctx, cur).await?;
    }
    vm::wait_for_agent(ctx, cur, ctx.data.agent_wait).await?;
    if spec.persistent_disk_mb > 0 {
        disk::ensure(ctx, cur).await?;
    }
    jobs::converge(ctx, cur, o).await
}

/// Stops the jobs and deletes the VM (the disk is detached and kept).
async fn teardown(
    ctx: &Ctx<Instances>,
    cur: &mut Object<InstanceSpec>,
    o: &Options,
) -> Result<(), Error> {
    if cur.status.vm_cid.is_some() || cur.status.pending_create.is_some() {
        let going = jobs::NextState::instance_deleted(o.deployment_deleted);
        jobs::quiesce(ctx, cur, o, going).await?;
        vm::delete(ctx, cur).await?;
    }
    Ok(())
}
