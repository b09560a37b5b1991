//! The deployment controller: turns a Deployment into Instance objects and
//! rolls changes out through them.
//!
//! Each reconcile reads the deployment with everything it names (cloud
//! config, releases, stemcells, compiled packages, variables, runtime
//! config addons), plans the instances ([`plan`]), resolves the links
//! its jobs consume from that plan ([`links`]), builds each one's
//! desired spec with its rendered templates ([`desired`]; one Ruby process
//! renders every instance whose inputs changed), and compares with the
//! Instance objects in the store. Instances that are gone from the plan are
//! deleted (their finalizer lets the instance controller delete the VM and
//! orphan the disk); changed ones receive their new spec only as the
//! rollout allows ([`rollout`]: canaries, then `max_in_flight`, serial
//! groups one after another, a failure halts). The instance controller
//! does the work; this controller watches it and finishes the task.
//!
//! It does not poll. It owns its Instances: a change of an instance's
//! spec, `Ready` condition or cloud-check status wakes it
//! ([`instance_progress`]), so a freed rollout slot is refilled as soon as
//! the instance that held it is ready; and it hears the validator's and
//! the compiler's verdicts ([`wakes_on`]) and its task (a cancel). Each
//! pass plans on the shared Instance and CompiledPackage caches first and
//! re-reads etcd only when it is about to change something ([`view`]).
//!
//! A deployment whose instances all hold their desired spec and are ready
//! costs no etcd write, no CPI call, no agent call, and no listing of
//! Instances: its pass runs on the caches.
//!
//! When every instance converged, the running ones run `post-deploy`
//! once per deploy ([`post_deploy`]) before the task is done.
//!
//! Cloud check ([`problems`]) rides on the same pass: the scan token and
//! chosen resolutions in `spec.cloudCheck` go into each Instance's spec at
//! once (not through the rollout: they do not change what an instance
//! runs), and the task is finished only when every instance answered.

pub mod desired;
pub mod links;
pub mod numbers;
pub mod orphan_vms;
pub mod plan;
pub mod post_deploy;
pub mod problems;
pub mod rollout;
pub mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bosh_api::manifest::Manifest;
use bosh_api::meta::{find_condition, join_bounded, set_condition};
use bosh_api::objects::{
    BlobRef, ConditionType, DeploymentSpec, DiskSpec, ErrandRunSpec, EventState, Finalizer,
    InstanceSpec, LinkStatus, Reason, TaskState,
};
use bosh_api::store::{self, Store};
use bosh_api::{Condition, ConditionStatus, Object, ObjectMeta};
use tracing::{debug, info, warn};

use crate::libs::lookup::{Blocked, Failure};
use crate::libs::render::{self, JobTemplates, Limits};
use crate::libs::resolve;
use crate::libs::tasks::{EventLog, set_task_state};
use crate::runtime::{Action, Cleanup, Ctx, Predicate, Trigger, Wiring, Workers, finalizer};
use crate::world::director::Director;
use rollout::{Member, Progress};
use view::{Caches, View};

/// How soon to look again while waiting for something outside.
const WAIT: Duration = Duration::from_secs(2);

/// The deployment controller's context.
pub struct Deployer {
    /// The world's handles.
    pub director: Director,
    /// Limits of one template-rendering Ruby process.
    pub render_limits: Limits,
    /// Job templates by job tarball digest.
    jobs: Mutex<HashMap<String, Arc<JobTemplates>>>,
    /// Rendered templates by render-input digest.
    rendered: Mutex<HashMap<String, BlobRef>>,
    /// Render failures by render-input digest: the same inputs fail the
    /// same way, so a template that loops until the timeout is run once per
    /// change of its inputs, not once per retry (BOSH does not retry a
    /// failed deploy either).
    failed_renders: Mutex<HashMap<String, String>>,
    /// The shared Instance and CompiledPackage caches (`None`: every pass
    /// reads etcd, as a reconcile called outside a controller does).
    caches: Option<Caches>,
}

impl Deployer {
    /// A deployer acting through `director`.
    pub fn new(director: Director) -> Deployer {
        Deployer {
            director,
            render_limits: Limits::default(),
            jobs: Mutex::default(),
            rendered: Mutex::default(),
            failed_renders: Mutex::default(),
            caches: None,
        }
    }

    /// The same deployer, planning on these caches first ([`view`]).
    pub fn with_caches(mut self, caches: Caches) -> Deployer {
        self.caches = Some(caches);
        self
    }

    /// The same deployer, rendering under `limits`.
    pub fn with_render_limits(mut self, limits: Limits) -> Deployer {
        self.render_limits = limits;
        self
    }
}

/// Errors of the deployment controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the store failed.
    #[error("store: {0}")]
    Store(#[from] store::Error),
    /// The blobstore failed.
    #[error("blobstore: {0}")]
    Blob(String),
    /// Rendering could not run (Ruby missing, killed at a limit).
    #[error("rendering templates: {0}")]
    Render(#[from] render::Error),
    /// Templates of some instances failed to render (one line each; the
    /// message shows the first few and counts the rest).
    #[error("rendering templates: {}", join_bounded(.0, "; ", 10))]
    Templates(Vec<String>),
}

/// What a report writes besides `Ready`: the links the plan resolved,
/// and the deploy whose post-deploy ran (in the same write, so a lost
/// reply costs one retry, not two).
#[derive(Debug, Default, Clone, Copy)]
struct Extra<'a> {
    links: Option<&'a [LinkStatus]>,
    post_deploy: Option<&'a str>,
}

impl<'a> Extra<'a> {
    fn links(links: &'a [LinkStatus]) -> Extra<'a> {
        Extra { links: Some(links), post_deploy: None }
    }
}

/// Sets `Ready` on the deployment (only when it changes) and, with a task,
/// finishes it.
async fn report(
    store: &Store,
    obj: &Object<DeploymentSpec>,
    ready: Option<bool>,
    reason: Reason,
    message: String,
    counts: BTreeMap<String, u32>,
    extra: Extra<'_>,
) -> Result<(), Error> {
    let generation = obj.metadata.generation;
    // Compilation and validation write conditions into the same status:
    // a conflict re-reads and applies this edit again instead of failing
    // the pass (which cost a backoff per conflict in a busy rollout).
    let mut cur = obj.clone();
    crate::runtime::status::patch(store, &mut cur, |s| {
        let ok = ready.unwrap_or(false);
        let cond = Condition::ready(ok, reason.clone(), message.clone(), generation);
        // Keep the transition time when only the message moved on.
        let same = find_condition(&s.conditions, ConditionType::Ready).is_some_and(|c| {
            c.status == cond.status
                && c.reason == cond.reason
                && c.message == cond.message
                && c.observed_revision == generation
        });
        if !same {
            set_condition(&mut s.conditions, cond);
        }
        if ready == Some(true) {
            s.observed_revision = generation;
        }
        s.ready_instances = counts.clone();
        if let Some(links) = extra.links {
            s.links = links.to_vec();
        }
        if let Some(inputs) = extra.post_deploy {
            s.post_deploy_inputs = inputs.to_string();
        }
    })
    .await?;
    if let (Some(task), Some(ok)) = (obj.spec.task, ready) {
        let (state, result) = if ok {
            (TaskState::Done, format!("/deployments/{}", obj.metadata.name))
        } else {
            (TaskState::Error, message)
        };
        finish_task(store, task, state, &result).await?;
    }
    Ok(())
}

/// Finishes a task unless it already is (reads only, then).
async fn finish_task(
    store: &Store,
    task: u64,
    state: TaskState,
    result: &str,
) -> Result<(), Error> {
    let t = store
        .try_get::<bosh_api::objects::TaskSpec>(None, &crate::libs::tasks::task_name(task))
        .await?;
    match t {
        Some(t)
            if !matches!(
                t.status.state,
                TaskState::Done | TaskState::Error | TaskState::Cancelled
            ) =>
        {
            set_task_state(store, task, state, result).await?;
        }
        _ => {}
    }
    Ok(())
}

/// The deployment's current task, if it names one that exists.
async fn current_task(
    store: &Store,
    task: Option<u64>,
) -> Result<Option<Object<bosh_api::objects::TaskSpec>>, Error> {
    let Some(task) = task else { return Ok(None) };
    Ok(store.try_get(None, &crate::libs::tasks::task_name(task)).await?)
}

/// Marks a task processing (reads only when it already is).
async fn start_task(store: &Store, task: Option<u64>) -> Result<(), Error> {
    let Some(task) = task else { return Ok(()) };
    let t = store
        .try_get::<bosh_api::objects::TaskSpec>(None, &crate::libs::tasks::task_name(task))
        .await?;
    if t.is_some_and(|t| t.status.state == TaskState::Queued) {
        set_task_state(store, task, TaskState::Processing, "").await?;
    }
    Ok(())
}

/// Records an event in the deployment's task, best effort.
async fn event(
    store: &Store,
    task: Option<u64>,
    stage: &str,
    object: &str,
    state: EventState,
    error: &str,
) {
    let Some(task) = task else { return };
    if let Err(e) = EventLog::new(store.clone(), task).record(stage, object, state, error).await {
        warn!(task, object, error = %e, "could not record an event");
    }
}

/// Where a condition of the deployment stands at its current generation.
fn verdict(obj: &Object<DeploymentSpec>, type_: ConditionType) -> Option<&Condition> {
    find_condition(&obj.status.conditions, type_)
        .filter(|c| c.observed_revision == obj.metadata.generation)
}

/// The deployment controller: woken by its spec, by [`wakes_on`]'s
/// verdicts, by its Instances' progress ([`instance_progress`], it owns
/// them) and by its task (a cancel); it reads Instances and compiled
/// packages from their shared caches.
pub const WIRING: Wiring =
    Wiring { name: "deployment", trigger: Trigger::Generation, workers: Workers::Shared };

/// What wakes the deployment controller besides its own spec: the
/// validator's and the compiler's verdicts, which they write into the
/// deployment's status. Its own status writes (`Ready`) do not wake it.
pub fn wakes_on() -> Predicate<DeploymentSpec> {
    Predicate::<DeploymentSpec>::new(|old, new| {
        old.metadata.resource_version != new.metadata.resource_version
            || [ConditionType::Invalid, ConditionType::PackagesCompiled].into_iter().any(|t| {
                condition_key(&old.status.conditions, t.clone())
                    != condition_key(&new.status.conditions, t)
            })
    })
}

/// What of an Instance its deployment decides on: the spec, the `Ready`
/// condition, and what cloud check found. Other status writes (phases,
/// agent ids, health, processes) do not wake the deployment.
pub fn instance_progress() -> Predicate<InstanceSpec> {
    Predicate::<InstanceSpec>::new(|old, new| {
        old.metadata.resource_version != new.metadata.resource_version
            || condition_key(&old.status.conditions, ConditionType::Ready)
                != condition_key(&new.status.conditions, ConditionType::Ready)
            || old.status.cloud_check != new.status.cloud_check
    })
}

/// An Instance's spec changed (or it came or went): what another
/// deployment consuming its deployment's shared links renders from.
pub fn instance_spec_changed() -> Predicate<InstanceSpec> {
    Predicate::<InstanceSpec>::new(|old, new| {
        old.metadata.resource_version != new.metadata.resource_version
    })
}

/// The deployments (from the deployment cache) that consume a shared link
/// of an instance's deployment, as their status's links record: a
/// provider's scale, address or property change wakes its consumers in
/// other deployments at once, not at their next resync.
pub fn consumers_of(
    deployments: Arc<crate::runtime::Cache<DeploymentSpec>>,
) -> impl Fn(&Object<InstanceSpec>) -> Vec<String> + Send + Sync + 'static {
    move |i| {
        let Some(provider) = i.metadata.deployment.as_deref() else { return vec![] };
        deployments
            .list()
            .iter()
            .filter(|d| d.status.links.iter().any(|l| l.deployment.as_deref() == Some(provider)))
            .map(|d| d.metadata.name.clone())
            .collect()
    }
}

/// A condition without its transition time: what a change of it is.
fn condition_key(
    conditions: &[Condition],
    type_: ConditionType,
) -> Option<(ConditionStatus, &str, &str, i64)> {
    find_condition(conditions, type_)
        .map(|c| (c.status, c.reason.as_str(), c.message.as_str(), c.observed_revision))
}

/// Reconciles one Deployment.
pub async fn reconcile(
    obj: Arc<Object<DeploymentSpec>>,
    ctx: Arc<Ctx<Deployer>>,
) -> Result<Action, Error> {
    let store = &ctx.store;
    let name = obj.metadata.name.clone();
    // What a reconcile decides — above all which instances to delete — is
    // decided on a linearizable read of the Deployment, not on the cache: a
    // cache that lags would plan from an old manifest and delete instances
    // the current one keeps, or undo a newer change (FAULT-MATRIX A5).
    let Some(fresh) = store.try_get::<DeploymentSpec>(None, &name).await? else {
        return Ok(Action::await_change());
    };
    if fresh.metadata.resource_version != obj.metadata.resource_version {
        info!(
            deployment = %name,
            cached = obj.metadata.resource_version,
            current = fresh.metadata.resource_version,
            "the cache lags: deciding on the current spec"
        );
    }
    finalizer(
        &ctx,
        Arc::new(fresh),
        Finalizer::Instances,
        |obj| apply(&ctx, obj),
        |obj| delete(&ctx, obj),
    )
    .await
}

/// Rolls the living deployment toward its spec.
async fn apply(ctx: &Ctx<Deployer>, obj: Arc<Object<DeploymentSpec>>) -> Result<Action, Error> {
    let store = &ctx.store;
    let name = obj.metadata.name.clone();
    // The validator and the compiler go first. A change of their verdicts
    // wakes this controller ([`wakes_on`]), so waiting for them is
    // `await_change`.
    match verdict(&obj, ConditionType::Invalid) {
        Some(c) if c.status == ConditionStatus::True => {
            let msg = format!("deployment {name} is invalid: {}", c.message);
            report(
                store,
                &obj,
                Some(false),
                Reason::Invalid,
                msg,
                BTreeMap::new(),
                Extra::default(),
            )
            .await?;
            return Ok(Action::await_change());
        }
        Some(_) => {}
        None => return Ok(Action::await_change()),
    }
    // A cancelled change goes no further: no instance gets its new spec
    // until the next change (those that already have it finish, as BOSH
    // finishes the step under way). Nothing to do until the spec changes.
    if let Some(t) = current_task(store, obj.spec.task).await?
        && t.status.state == TaskState::Cancelled
    {
        let msg = format!("task {} was cancelled: {}", t.spec.id, t.status.result);
        report(store, &obj, Some(false), Reason::Cancelled, msg, BTreeMap::new(), Extra::default())
            .await?;
        return Ok(Action::await_change());
    }
    start_task(store, obj.spec.task).await?;
    match verdict(&obj, ConditionType::PackagesCompiled) {
        Some(c) if c.status == ConditionStatus::True => {}
        Some(c) if c.reason != Reason::Compiling => {
            // A blocked or failed compile fails the task; the compiler keeps
            // retrying, and its success wakes this controller.
            let msg = format!("compiling packages: {}", c.message);
            report(
                store,
                &obj,
                Some(false),
                c.reason.clone(),
                msg,
                BTreeMap::new(),
                Extra::default(),
            )
            .await?;
            return Ok(Action::await_change());
        }
        _ => return Ok(Action::await_change()),
    }
    match converge(ctx, &obj).await {
        Ok(a) => Ok(a),
        Err(Failure::Blocked(b)) => {
            // The task fails now; the deployment is looked at again only
            // with growing delays (and at once when its spec changes), so a
            // failed deploy stays failed instead of being redone forever.
            report(
                store,
                &obj,
                Some(false),
                b.reason,
                b.message,
                BTreeMap::new(),
                Extra::default(),
            )
            .await?;
            Ok(Action::backoff())
        }
        Err(Failure::Store(e)) => Err(e.into()),
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        match e {
            Error::Store(e) => Failure::Store(e),
            other => Failure::Blocked(Blocked::new(Reason::RenderFailed, other.to_string())),
        }
    }
}

/// `interpolated` with each instance group's `env` as `original` (the
/// manifest before interpolation) has it: placeholders, not values. `env`
/// carries the VM's password (`env.bosh.password`) and other credentials,
/// and the Instance spec it goes into is stored in etcd and shown by watches
/// and the API; the instance controller substitutes the values right before
/// `create_vm` (`variables::substitute`), as BOSH does (FAULT-MATRIX G5).
/// A group is matched by its position and name; an `env` that is not a map
/// before interpolation (one `((placeholder))` for all of it) is left
/// interpolated.
fn env_placeholders(
    original: &serde_json::Value,
    mut interpolated: serde_json::Value,
) -> serde_json::Value {
    let before = original["instance_groups"].as_array();
    let after = interpolated.get_mut("instance_groups").and_then(|v| v.as_array_mut());
    if let (Some(before), Some(after)) = (before, after) {
        for (b, a) in before.iter().zip(after.iter_mut()) {
            if let Some(env) = b.get("env").filter(|e| e.is_object())
                && b.get("name").is_some()
                && b.get("name") == a.get("name")
            {
                a["env"] = env.clone();
            }
        }
    }
    interpolated
}

/// What a deployment names, resolved once per pass.
struct Resolved {
    /// Manifest (variables interpolated, addons applied), cloud config,
    /// releases, stemcells.
    deployment: resolve::Deployment,
    /// Job templates by (release name, job name).
    jobs: BTreeMap<(String, String), Arc<JobTemplates>>,
    /// Variable versions each group's `env` placeholders stand for.
    env_versions: BTreeMap<String, BTreeMap<String, String>>,
    /// The other deployments whose shared links consumers name.
    foreign: BTreeMap<String, links::Foreign>,
}

/// What one pass decided: the instance writes of a rollout step and what
/// to report.
struct Pass {
    /// Instances gone from the plan, to delete now (names).
    delete: Vec<String>,
    /// Instances being deleted, or about to be.
    deleting: usize,
    /// Instances whose cloud-check request changed (ids), with it.
    checks: Vec<(String, bosh_api::objects::InstanceCloudCheck)>,
    /// Desired specs by `group/id`.
    desired: BTreeMap<String, InstanceSpec>,
    /// The rollout step.
    decision: rollout::Decision,
    /// Instances of the plan.
    total: usize,
    /// Ready instances holding their desired spec, by group.
    counts: BTreeMap<String, u32>,
    /// The links the plan resolved.
    links: Vec<LinkStatus>,
}

impl Pass {
    /// Whether the pass changes no instance and fails nothing: the only
    /// passes decided on the caches alone ([`view`]).
    fn is_quiet(&self, obj: &Object<DeploymentSpec>) -> bool {
        self.delete.is_empty()
            && self.checks.is_empty()
            && self.decision.write.is_empty()
            && self.decision.failed.is_none()
            // Cloud check calls the CPI and reads instances afresh itself.
            && obj.spec.cloud_check.is_empty()
            && obj.status.cloud_check == Default::default()
    }
}

/// Everything resolved, planned and rolled out one step.
async fn converge(ctx: &Ctx<Deployer>, obj: &Object<DeploymentSpec>) -> Result<Action, Failure> {
    let name = obj.metadata.name.as_str();
    let started = std::time::Instant::now();
    let resolved = resolve_all(ctx, obj).await?;
    let resolve_ms = started.elapsed().as_millis() as u64;
    // First on the caches (no read); a pass that would change anything is
    // decided again on etcd's view (see [`view`]).
    let caches = ctx.data.caches.as_ref();
    let mut cached = None;
    if let Some(view) = caches.and_then(|c| View::cached(c, name)) {
        let pass = assess(ctx, obj, &resolved, &view).await;
        if let Ok(p) = &pass
            && p.is_quiet(obj)
        {
            let action = act(ctx, obj, &view, p).await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            debug!(deployment = name, resolve_ms, elapsed_ms, "quiet pass on the caches");
            return action;
        }
        cached = Some((view, pass));
    }
    let view = View::fresh(&ctx.store, caches, name).await?;
    let (pass, again) = match cached {
        Some((seen, pass)) if seen.same_as(&view) => (pass?, false),
        _ => (assess(ctx, obj, &resolved, &view).await?, true),
    };
    let action = act(ctx, obj, &view, &pass).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    debug!(deployment = name, resolve_ms, elapsed_ms, planned_again = again, "pass on etcd's view");
    action
}

/// Reads what the deployment names: variables, manifest and addons, cloud
/// config, releases, stemcells, job templates.
async fn resolve_all(
    ctx: &Ctx<Deployer>,
    obj: &Object<DeploymentSpec>,
) -> Result<Resolved, Failure> {
    let store = &ctx.store;
    let name = obj.metadata.name.as_str();
    let file = format!("deployment {name}");
    let raw = crate::libs::variables::interpolate(store, name, &obj.spec.manifest)
        .await
        .map_err(|e| Blocked::new(Reason::VariablesFailed, e.to_string()))?;
    let raw = env_placeholders(&obj.spec.manifest, raw);
    let mut env_versions = BTreeMap::new();
    for g in obj.spec.manifest["instance_groups"].as_array().into_iter().flatten() {
        if let (Some(group), Some(env)) = (g["name"].as_str(), g.get("env")) {
            let versions = crate::libs::variables::versions(store, name, env)
                .await
                .map_err(|e| Blocked::new(Reason::VariablesFailed, e.to_string()))?;
            env_versions.insert(group.to_string(), versions);
        }
    }
    let deployment = resolve::resolve(store, obj, &raw, &file).await?;
    let jobs = load_jobs(ctx, &deployment.manifest, &deployment.releases).await?;
    let mut foreign = BTreeMap::new();
    for other in links::foreign_deployments(&deployment.manifest, name) {
        if let Some(f) = foreign_of(ctx, &other).await? {
            foreign.insert(other, f);
        }
    }
    Ok(Resolved { deployment, jobs, env_versions, foreign })
}

/// What a consumer needs of deployment `name` to take its shared links:
/// its manifest (interpolated, with addons), job specs and instances
/// (`None` when it does not exist; link resolution then says so). Its
/// failures block this deployment with `LinksInvalid`, naming it.
///
/// A change of the other deployment's instances reaches consumers on
/// their next pass (a change of their own, or the periodic resync).
async fn foreign_of(ctx: &Ctx<Deployer>, name: &str) -> Result<Option<links::Foreign>, Failure> {
    let store = &ctx.store;
    let Some(obj) = store.try_get::<DeploymentSpec>(None, name).await? else {
        return Ok(None);
    };
    if obj.metadata.is_deleting() {
        return Ok(None);
    }
    let fail = |e: String| Blocked::new(Reason::LinksInvalid, format!("deployment {name}: {e}"));
    let raw = crate::libs::variables::interpolate(store, name, &obj.spec.manifest)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let file = format!("deployment {name}");
    let dep = resolve::resolve(store, &obj, &raw, &file).await.map_err(|e| match e {
        Failure::Blocked(b) => fail(b.message).into(),
        other => other,
    })?;
    let specs = load_jobs(ctx, &dep.manifest, &dep.releases).await.map_err(|e| match e {
        Failure::Blocked(b) => fail(b.message).into(),
        other => other,
    })?;
    let instances = store.list::<InstanceSpec>(&format!("{name}/")).await?.items;
    let planned = instances
        .iter()
        .filter(|i| !i.metadata.is_deleting())
        .map(|i| plan::Desired {
            id: i.spec.id.clone(),
            group: i.spec.group.clone(),
            index: i.spec.index,
            az: i.spec.az.clone(),
            bootstrap: i.spec.bootstrap,
            ips: i.spec.networks.iter().map(|n| (n.name.clone(), n.ip.parse().ok())).collect(),
            existing: true,
        })
        .collect();
    Ok(Some(links::Foreign { manifest: dep.manifest, specs, planned }))
}

/// Refuses, before anything changes, a plan that places an instance in an
/// AZ whose `cpi` names a CPI the director does not have (not in any valid
/// CPI config, nor the default's name): every VM call for it would fail,
/// and BOSH fails such a deploy naming the CPI. A plan whose AZs name no
/// CPI reads nothing; one whose CPIs are all known reads the registry's
/// watched configs only; an unknown name is confirmed against etcd before
/// it fails the deploy, so a CPI config written a moment earlier counts.
async fn refuse_unknown_cpis(
    ctx: &Ctx<Deployer>,
    deployment: &str,
    built: &[desired::Built],
) -> Result<(), Failure> {
    let named: BTreeSet<(&str, &str)> = built
        .iter()
        .filter_map(|b| Some((b.spec.az.as_deref().unwrap_or("(none)"), b.spec.cpi.as_deref()?)))
        .collect();
    if named.is_empty() {
        return Ok(());
    }
    let director = &ctx.data.director;
    let failed = |e: crate::world::cpi::CpiError| {
        Blocked::new(Reason::PlacementFailed, format!("deployment {deployment}: {e}"))
    };
    let names = |all: Vec<(Option<String>, _)>| -> BTreeSet<String> {
        all.into_iter().map(|(n, _)| n.unwrap_or_else(|| director.cpi.name().into())).collect()
    };
    let mut known = names(director.all_cpis().await.map_err(failed)?);
    if named.iter().any(|(_, cpi)| !known.contains(*cpi)) {
        known = names(director.all_cpis_fresh().await.map_err(failed)?);
    }
    let unknown: Vec<String> = named
        .iter()
        .filter(|(_, cpi)| !known.contains(*cpi))
        .map(|(az, cpi)| format!("cloud config az {az} names CPI {cpi:?}"))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let known: Vec<String> = known.into_iter().collect();
    Err(Blocked::new(
        Reason::PlacementFailed,
        format!(
            "deployment {deployment}: {}, which no CPI config defines (CPIs: {})",
            unknown.join("; "),
            known.join(", ")
        ),
    )
    .into())
}

/// Refuses, before anything changes, a plan that would move an instance
/// with a persistent disk into an AZ of another CPI: a disk is attached
/// only to VMs of the CPI it lives in (BOSH migrates disks within a CPI,
/// never across). Only instances whose AZ's CPI changes are looked at,
/// so a deploy that moves nothing across CPIs reads no Disk.
async fn refuse_disk_moves_across_cpis(
    ctx: &Ctx<Deployer>,
    deployment: &str,
    view: &View,
    built: &[desired::Built],
) -> Result<(), Failure> {
    let default = ctx.data.director.cpi.name();
    let label =
        |n: Option<&'_ str>| crate::reconcilers::instance::disk::cpi_label(n, default).to_string();
    let mut refused = Vec::new();
    for b in built {
        let Some(cur) = view.mine.iter().find(|i| i.spec.id == b.spec.id) else { continue };
        if cur.spec.cpi == b.spec.cpi {
            continue;
        }
        let key = &cur.metadata.name;
        let Some(disk) = ctx.store.try_get::<DiskSpec>(Some(deployment), key).await? else {
            continue;
        };
        if disk.status.cid.is_none() || disk.status.cpi == b.spec.cpi {
            continue;
        }
        let az = |az: &Option<String>| az.clone().unwrap_or_else(|| "(none)".into());
        refused.push(format!(
            "instance {}/{} (index {}) cannot move from az {} (CPI {}) to az {} (CPI {}): its persistent disk {} is in CPI {}, and a disk cannot move across CPIs",
            b.spec.group,
            b.spec.id,
            b.spec.index,
            az(&cur.spec.az),
            label(cur.spec.cpi.as_deref()),
            az(&b.spec.az),
            label(b.spec.cpi.as_deref()),
            disk.status.cid.as_deref().unwrap_or_default(),
            label(disk.status.cpi.as_deref()),
        ));
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(Blocked::new(
        Reason::PlacementFailed,
        format!("deployment {deployment}: {}", join_bounded(&refused, "; ", 10)),
    )
    .into())
}

/// Plans the deployment on `view` and decides the rollout step (writing
/// nothing but the plan's addresses into the address book, and rendered
/// templates into the blobstore).
async fn assess(
    ctx: &Ctx<Deployer>,
    obj: &Object<DeploymentSpec>,
    resolved: &Resolved,
    view: &View,
) -> Result<Pass, Failure> {
    let name = obj.metadata.name.as_str();
    let dep = &resolved.deployment;
    // An instance of this deployment whose stored value cannot be read
    // may hold a VM, a disk and addresses nobody can see: planning around
    // it could hand its addresses out again or replace it. Nothing moves
    // until it is fixed or removed. (Others' unreadable instances cannot be
    // told apart from garbage keys and do not hold this one up.)
    let unreadable = quarantined_instances(&view.unreadable, name);
    if !unreadable.is_empty() {
        return Err(Blocked::new(Reason::InstanceUnreadable, unreadable).into());
    }
    // Plan under the address book's lock, against every address held
    // elsewhere (other deployments' instances and plans, compile VMs), and
    // record the plan's addresses before letting go: rendering comes later,
    // outside the lock, so one deployment's slow or stuck templates never
    // hold up another's planning.
    let mut book = ctx.data.director.addresses.lock().await;
    let outside: BTreeSet<Ipv4Addr> =
        view.outside.iter().copied().chain(book.others(name)).collect();
    let existing: Vec<plan::Existing> = view
        .mine
        .iter()
        .filter(|i| !i.metadata.is_deleting())
        .map(|i| plan::Existing {
            id: i.spec.id.clone(),
            group: i.spec.group.clone(),
            index: i.spec.index,
            az: i.spec.az.clone(),
            bootstrap: i.spec.bootstrap,
            ips: i
                .spec
                .networks
                .iter()
                .filter_map(|n| n.ip.parse().ok().map(|ip| (n.name.clone(), ip)))
                .collect(),
        })
        .collect();
    // Planning is CPU work in proportion to the instances: off the async
    // workers that serve the API and talk to agents.
    let planned = {
        let (manifest, cloud) = (dep.manifest.clone(), dep.cloud.clone());
        let running = view.running_errands.clone();
        let seed = format!("{}/{}", obj.metadata.uid, obj.metadata.generation);
        tokio::task::spawn_blocking(move || {
            plan::plan_with_errands(
                &manifest,
                &cloud,
                &running,
                &existing,
                &outside,
                &mut |group, index| instance_id(&seed, group, index),
            )
        })
        .await
        .map_err(|e| Blocked::new(Reason::PlacementFailed, format!("planning panicked: {e}")))?
        .map_err(|e| Blocked::new(Reason::PlacementFailed, join_bounded(&e, "; ", 10)))?
    };
    book.set(
        name,
        planned.instances.iter().flat_map(|d| d.ips.values().filter_map(|ip| *ip)).collect(),
    );
    drop(book);

    // DNS numbers (AZs, networks, groups, instances) before rendering:
    // addresses carry them. Other deployments' providers are numbered too,
    // so a link to them can be written short.
    let link_groups = links::link_groups(&dep.manifest, &resolved.jobs);
    let mut wanted =
        numbers::wanted(name, &dep.manifest, &dep.cloud, &planned.instances, &link_groups);
    for (other, f) in &resolved.foreign {
        let link_groups = links::link_groups(&f.manifest, &f.specs);
        let more =
            numbers::wanted(other, &f.manifest, &Default::default(), &f.planned, &link_groups);
        wanted.groups.extend(more.groups);
        wanted.instances.extend(more.instances);
        wanted.links.extend(more.links);
    }
    let dns = numbers::ensure(&ctx.store, caches_of(ctx).map(|c| &*c.numbers), &wanted).await?;

    // Links come from the plan (the providers' instances and addresses)
    // and are resolved before anything renders or any VM changes.
    let links = links::resolve_with(
        name,
        &dep.manifest,
        &resolved.jobs,
        &planned.instances,
        &resolved.foreign,
        &dns,
    )
    .map_err(|e| Blocked::new(Reason::LinksInvalid, join_bounded(&e, "\n", 20)))?;
    let inputs = Arc::new(desired::Inputs {
        deployment: name.to_string(),
        manifest: dep.manifest.clone(),
        cloud: dep.cloud.clone(),
        releases: dep.releases.clone(),
        stemcells: dep.stemcells.clone(),
        compiled: view.compiled.clone(),
        jobs: resolved.jobs.clone(),
        overrides: obj.spec.instances.clone(),
        cloud_check: obj.spec.cloud_check.clone(),
        env_versions: resolved.env_versions.clone(),
        links: links.by_job,
        dns,
    });
    let link_summary = links.summary;
    // Specs and their render keys (canonical JSON and a digest each).
    let (mut built, keys) = {
        let (inputs, planned) = (inputs.clone(), planned.instances.clone());
        tokio::task::spawn_blocking(move || {
            let cx = inputs.context();
            let built =
                planned.iter().map(|d| desired::build(&cx, d)).collect::<Result<Vec<_>, _>>()?;
            let keys: Vec<String> = built.iter().map(|b| desired::render_key(&b.render)).collect();
            Ok::<_, Blocked>((built, keys))
        })
        .await
        .map_err(|e| Blocked::new(Reason::BuildFailed, format!("building specs panicked: {e}")))??
    };
    refuse_unknown_cpis(ctx, name, &built).await?;
    refuse_disk_moves_across_cpis(ctx, name, view, &built).await?;
    render_all(ctx, &mut built, &keys).await.map_err(Failure::from)?;

    // Deletions first, all at once: BOSH deletes unneeded instances before
    // it updates the rest.
    let by_id: BTreeMap<&str, &Object<InstanceSpec>> =
        view.mine.iter().map(|i| (i.spec.id.as_str(), i)).collect();
    let delete: Vec<String> = planned
        .delete
        .iter()
        .filter_map(|id| by_id.get(id.as_str()))
        .filter(|i| !i.metadata.is_deleting())
        .map(|i| i.metadata.name.clone())
        .collect();
    let deleting = view
        .mine
        .iter()
        .filter(|i| i.metadata.is_deleting() || planned.delete.contains(&i.spec.id))
        .count();
    // Cloud-check requests reach every instance now; the rest of a change
    // waits for the rollout.
    let checks = built
        .iter()
        .filter_map(|b| {
            let cur = by_id.get(b.spec.id.as_str())?;
            (!cur.metadata.is_deleting() && cur.spec.cloud_check != b.spec.cloud_check)
                .then(|| (b.spec.id.clone(), b.spec.cloud_check.clone()))
        })
        .collect();
    let mut members = Vec::new();
    let mut desired = BTreeMap::new();
    for b in built {
        let key = format!("{}/{}", b.spec.group, b.spec.id);
        let current = by_id.get(b.spec.id.as_str()).copied();
        let changed = current.is_none_or(|c| {
            let mut theirs = c.spec.clone();
            theirs.cloud_check = b.spec.cloud_check.clone();
            theirs != b.spec
        });
        let progress = current.map(progress_of).unwrap_or(Progress::InFlight);
        members.push(Member {
            name: key.clone(),
            group: b.spec.group.clone(),
            index: b.spec.index,
            changed,
            progress,
        });
        desired.insert(key, b.spec);
    }
    let groups: Vec<rollout::GroupUpdate> =
        dep.manifest.instance_groups.iter().map(|g| desired::update_of(&dep.manifest, g)).collect();
    let decision = rollout::decide(&groups, &members);
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for m in &members {
        if !m.changed && m.progress == Progress::Ready {
            *counts.entry(m.group.clone()).or_default() += 1;
        }
    }
    Ok(Pass {
        delete,
        deleting,
        checks,
        desired,
        decision,
        total: members.len(),
        counts,
        links: link_summary,
    })
}

/// Carries out a pass on the view it was decided on: deletions,
/// cloud-check requests, the rollout step, cloud check's own step, and
/// the report.
async fn act(
    ctx: &Ctx<Deployer>,
    obj: &Object<DeploymentSpec>,
    view: &View,
    pass: &Pass,
) -> Result<Action, Failure> {
    let store = &ctx.store;
    let name = obj.metadata.name.as_str();
    for i in &pass.delete {
        info!(deployment = name, instance = %i, "deleting unneeded instance");
        event(store, obj.spec.task, "Deleting unneeded instances", i, EventState::Info, "").await;
        store.delete::<InstanceSpec>(Some(name), i, None).await?;
    }
    let by_id: BTreeMap<&str, &Object<InstanceSpec>> =
        view.mine.iter().map(|i| (i.spec.id.as_str(), i)).collect();
    let mut checked: BTreeMap<String, Object<InstanceSpec>> = BTreeMap::new();
    for (id, check) in &pass.checks {
        if let Some(cur) = by_id.get(id.as_str()) {
            let mut next = (*cur).clone();
            next.spec.cloud_check = check.clone();
            checked.insert(id.clone(), store.update_spec(&next).await?);
        }
    }
    for (key, canary) in &pass.decision.write {
        let spec = pass.desired[key].clone();
        let what = format!("{key} ({}){}", spec.index, if *canary { " (canary)" } else { "" });
        match checked.get(&spec.id).or_else(|| by_id.get(spec.id.as_str()).copied()) {
            Some(cur) => {
                let mut next = cur.clone();
                next.spec = spec;
                store.update_spec(&next).await?;
            }
            None => {
                let mut meta = ObjectMeta::scoped(name, key.clone());
                meta.add_finalizer(Finalizer::Vm);
                store.create(&Object::new(meta, spec)).await?;
            }
        }
        info!(deployment = name, instance = %what, "instance takes its new spec");
    }
    let counts = pass.counts.clone();
    let mut dep = obj.clone();
    let check = problems::step(ctx, &mut dep, &view.mine).await?;
    let obj = &dep;
    // Every return below waits for a change: what this controller waits
    // for now is its instances (an instance's progress wakes it, see
    // [`instance_progress`]) or a new spec.
    if let Some((inst, msg)) = &pass.decision.failed {
        let message = format!("instance {inst} failed: {msg}");
        report(
            store,
            obj,
            Some(false),
            Reason::UpdateFailed,
            message,
            counts,
            Extra::links(&pass.links),
        )
        .await?;
        return Ok(Action::await_change());
    }
    if pass.decision.done && pass.deleting == 0 {
        if let problems::Progress::Waiting(message) = check {
            report(
                store,
                obj,
                None,
                Reason::CloudCheck,
                message,
                counts,
                Extra::links(&pass.links),
            )
            .await?;
            return Ok(Action::await_change());
        }
        let ran = match post_deploy::run(ctx, obj, &view.mine).await? {
            post_deploy::Outcome::Done => None,
            post_deploy::Outcome::Ran(inputs) => Some(inputs),
            post_deploy::Outcome::Failed(message) => {
                let links = Extra::links(&pass.links);
                report(store, obj, Some(false), Reason::UpdateFailed, message, counts, links)
                    .await?;
                return Ok(Action::await_change());
            }
            post_deploy::Outcome::Retry(message) => {
                let links = Extra::links(&pass.links);
                report(store, obj, None, Reason::RollingOut, message, counts, links).await?;
                return Ok(Action::requeue(WAIT));
            }
        };
        let total: u32 = counts.values().sum();
        let message = format!("{total} instances ready");
        let extra = Extra { post_deploy: ran.as_deref(), ..Extra::links(&pass.links) };
        report(store, obj, Some(true), Reason::Deployed, message, counts, extra).await?;
        return Ok(Action::await_change());
    }
    let ready: u32 = counts.values().sum();
    let message = format!("{ready} of {} instances ready", pass.total);
    report(store, obj, None, Reason::RollingOut, message, counts, Extra::links(&pass.links))
        .await?;
    Ok(Action::await_change())
}

/// The shared caches, when this deployer reads them.
fn caches_of(ctx: &Ctx<Deployer>) -> Option<&Caches> {
    ctx.data.caches.as_ref()
}

/// The id of a new instance: random-looking like BOSH's, but the same for
/// every pass over one generation of the deployment, so that a pass that
/// fails before its Instance objects are written (a template that does not
/// render) plans the same instances next time — and its render failure,
/// remembered by its inputs, is not rendered again.
fn instance_id(seed: &str, group: &str, index: u32) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{seed}/{group}/{index}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// How far an instance is with the spec it holds.
fn progress_of(i: &Object<InstanceSpec>) -> Progress {
    match find_condition(&i.status.conditions, ConditionType::Ready) {
        Some(c) if c.observed_revision == i.metadata.generation => match c.status {
            ConditionStatus::True => Progress::Ready,
            _ if c.reason == Reason::UpdateFailed => Progress::Failed(c.message.clone()),
            _ => Progress::InFlight,
        },
        _ => Progress::InFlight,
    }
}

/// Locks one of the deployer's caches. A cache is only ever a copy of what
/// the blobstore or a render would give again, so a panic elsewhere while
/// it was held (which poisons it) must not fail every later reconcile.
fn caches<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads (once per tarball) the templates of every job the manifest uses.
async fn load_jobs(
    ctx: &Ctx<Deployer>,
    manifest: &Manifest,
    releases: &BTreeMap<String, Object<bosh_api::objects::ReleaseSpec>>,
) -> Result<BTreeMap<(String, String), Arc<JobTemplates>>, Failure> {
    let mut out = BTreeMap::new();
    for g in &manifest.instance_groups {
        for j in &g.jobs {
            let key = (j.release.clone(), j.name.clone());
            if out.contains_key(&key) {
                continue;
            }
            let Some(rel) = releases.get(&j.release) else { continue };
            let Some(rj) = rel.spec.jobs.iter().find(|x| x.name == j.name) else { continue };
            let blob = rj.blob.clone().ok_or_else(|| {
                Blocked::new(
                    Reason::JobMissing,
                    format!("job {} of {} has no blob", j.name, rel.metadata.name),
                )
            })?;
            let cached = caches(&ctx.data.jobs).get(&blob.sha256).cloned();
            let t = match cached {
                Some(t) => t,
                None => {
                    let bytes = crate::world::blobs::read(&ctx.data.director.blobs, &blob.sha256)
                        .await
                        .map_err(|e| {
                            Blocked::new(Reason::BlobMissing, format!("job {}: {e}", j.name))
                        })?;
                    let t = Arc::new(JobTemplates::from_job_tgz(&bytes).map_err(|e| {
                        Blocked::new(
                            Reason::JobInvalid,
                            format!("job {} of {}: {e}", j.name, rel.metadata.name),
                        )
                    })?);
                    caches(&ctx.data.jobs).insert(blob.sha256.clone(), t.clone());
                    t
                }
            };
            out.insert(key, t);
        }
    }
    Ok(out)
}

/// Renders the templates of every built instance whose inputs are new (one
/// Ruby process for all of them), stores the archives, and finishes specs.
///
/// The cache is looked up once: each spec is finished from that lookup or
/// from this pass's renders, never from a second lookup, because the cache
/// may be cleared in between (at its size cap, by this pass's own inserts
/// or another deployment's). Issue 12: a 10,000-instance batch crossing
/// the cap panicked here holding the lock, and the poisoned lock then
/// failed every later reconcile.
async fn render_all(
    ctx: &Ctx<Deployer>,
    built: &mut [desired::Built],
    keys: &[String],
) -> Result<(), Error> {
    let mut blobs: Vec<Option<BlobRef>> = {
        let cache = caches(&ctx.data.rendered);
        keys.iter().map(|k| cache.get(k).cloned()).collect()
    };
    let missing: Vec<usize> = (0..built.len()).filter(|i| blobs[*i].is_none()).collect();
    let label = |i: usize| {
        format!("{}/{} ({})", built[i].spec.group, built[i].spec.id, built[i].spec.index)
    };
    if !missing.is_empty() {
        // Inputs that failed before fail again: answer from memory.
        let known: Option<Vec<String>> = {
            let failed = caches(&ctx.data.failed_renders);
            missing
                .iter()
                .map(|i| failed.get(&keys[*i]).map(|e| format!("{}: {e}", label(*i))))
                .collect()
        };
        if let Some(errors) = known {
            return Err(Error::Templates(errors));
        }
        let remember = |i: usize, e: &str| {
            let mut failed = caches(&ctx.data.failed_renders);
            if failed.len() > 10_000 {
                failed.clear();
            }
            failed.insert(keys[i].clone(), e.to_string());
        };
        let reqs: Vec<render::RenderRequest> =
            missing.iter().map(|i| built[*i].render.clone()).collect();
        let results = match render::render_batch(&reqs, &ctx.data.render_limits).await {
            Ok(r) => r,
            Err(e) => {
                // The whole batch failed (a timeout, an output limit): every
                // input in it is remembered with the batch's error.
                if e.is_deterministic() {
                    for i in &missing {
                        remember(*i, &e.to_string());
                    }
                }
                return Err(e.into());
            }
        };
        let mut errors = Vec::new();
        for (i, r) in missing.iter().zip(results) {
            match r {
                Ok(rendered) => {
                    let blob = crate::world::blobs::put(&ctx.data.director.blobs, rendered.archive)
                        .await
                        .map_err(Error::Blob)?;
                    let mut cache = caches(&ctx.data.rendered);
                    if cache.len() > 50_000 {
                        cache.clear();
                    }
                    cache.insert(keys[*i].clone(), blob.clone());
                    blobs[*i] = Some(blob);
                }
                Err(e) => {
                    if e.is_deterministic() {
                        remember(*i, &e.to_string());
                    }
                    errors.push(format!("{}: {e}", label(*i)));
                }
            }
        }
        if !errors.is_empty() {
            return Err(Error::Templates(errors));
        }
    }
    for (b, blob) in built.iter_mut().zip(blobs) {
        // Every instance was a cache hit or rendered: a failed render
        // returned above, and `render_batch` answers every request.
        let blob = blob.expect("every instance is cached or rendered");
        desired::finish(&mut b.spec, &b.env_versions, blob);
    }
    Ok(())
}

/// Deletes every instance, waits for them to be gone, and forgets the
/// deployment's variables; the finalizer then lets the Deployment go.
async fn delete(ctx: &Ctx<Deployer>, obj: Arc<Object<DeploymentSpec>>) -> Result<Cleanup, Error> {
    let store = &ctx.store;
    let name = obj.metadata.name.as_str();
    start_task(store, obj.spec.task).await?;
    // Deletions are decided on etcd's view, never on the cache.
    let listing = store.list::<InstanceSpec>(&format!("{name}/")).await?;
    let unreadable = quarantined_instances(&listing.quarantined, name);
    if !unreadable.is_empty() {
        // Letting the deployment go would leave its VMs behind unseen.
        warn!(deployment = name, %unreadable, "deletion waits");
        return Ok(Cleanup::Wait(Action::requeue(WAIT)));
    }
    let instances = listing.items;
    for i in &instances {
        if !i.metadata.is_deleting() {
            event(
                store,
                obj.spec.task,
                "Deleting instances",
                &i.metadata.name,
                EventState::Info,
                "",
            )
            .await;
            store.delete::<InstanceSpec>(Some(name), &i.metadata.name, None).await?;
        }
    }
    if !instances.is_empty() {
        // Each instance's removal wakes this controller (it owns them).
        return Ok(Cleanup::Wait(Action::await_change()));
    }
    ctx.data.director.addresses.lock().await.remove(name);
    // Its errand runs go with it: a later deployment of the same name must
    // not inherit a kept-alive errand group. An unfinished run's task ends
    // first (nobody would end it after); the log tarballs runs recorded
    // (`downloadLogs`) go first too, as nothing names them after (best
    // effort: a blob left behind is only space).
    for r in store.list::<ErrandRunSpec>(&format!("{name}/")).await?.items {
        if !r.status.phase.is_finished() {
            finish_task(store, r.spec.task, TaskState::Cancelled, "deployment deleted").await?;
        }
        for blob in r.status.results.iter().filter_map(|x| x.logs.as_ref()) {
            if let Err(e) = ctx.data.director.blobs.delete(&blob.sha256).await {
                warn!(deployment = name, blob = %blob.sha256, error = %e, "could not delete an errand's logs");
            }
        }
        store.delete::<ErrandRunSpec>(Some(name), &r.metadata.name, None).await?;
    }
    if let Err(e) = crate::libs::variables::delete_all(store, name).await {
        warn!(deployment = name, error = %e, "could not delete the deployment's variables");
        return Ok(Cleanup::Wait(Action::requeue(WAIT)));
    }
    // The deployment goes before its task says done (a crash in between
    // leaves the task to the task controller, which ends a deletion's task
    // done once its deployment is gone).
    crate::runtime::finalizer::remove(ctx, &obj, Finalizer::Instances).await?;
    if let Some(task) = obj.spec.task {
        finish_task(store, task, TaskState::Done, &format!("/deployments/{name}")).await?;
    }
    info!(deployment = name, "deployment deleted");
    Ok(Cleanup::Done)
}

/// What says which of `name`'s instances cannot be read, if any do:
/// empty when none.
fn quarantined_instances(quarantined: &[store::Quarantined], name: &str) -> String {
    let prefix = format!("{name}/");
    let mine: Vec<String> = quarantined
        .iter()
        .filter(|q| q.name.starts_with(&prefix))
        .map(|q| format!("{} ({})", q.name, q.reason))
        .collect();
    if mine.is_empty() {
        return String::new();
    }
    format!(
        "instance(s) of this deployment cannot be read from etcd; fix or delete their keys: {}",
        join_bounded(&mine, "; ", 5)
    )
}

#[cfg(test)]
mod tests {
    /// New instance ids are stable within a generation, differ across
    /// generations, groups and indexes, and are well-formed UUIDs.
    #[test]
    fn new_instance_ids_are_stable_per_generation() {
        let a = super::instance_id("uid/7", "web", 0);
        assert_eq!(a, super::instance_id("uid/7", "web", 0));
        assert_ne!(a, super::instance_id("uid/8", "web", 0));
        assert_ne!(a, super::instance_id("uid/7", "web", 1));
        assert_ne!(a, super::instance_id("uid/7", "db", 0));
        let u = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(u.get_version_num(), 4);
    }

    /// Groups' `env` keeps its placeholders; everything else, and an
    /// `env` that was one placeholder, stays interpolated.
    #[test]
    fn env_keeps_its_placeholders() {
        use serde_json::json;
        let before = json!({"instance_groups": [
            {"name": "a", "env": {"bosh": {"password": "((pw))"}}, "properties": {"p": "((pw))"}},
            {"name": "b", "env": "((whole))"},
        ]});
        let after = json!({"instance_groups": [
            {"name": "a", "env": {"bosh": {"password": "s3cret"}}, "properties": {"p": "s3cret"}},
            {"name": "b", "env": {"bosh": {"password": "s3cret"}}},
        ]});
        let out = super::env_placeholders(&before, after);
        assert_eq!(out["instance_groups"][0]["env"]["bosh"]["password"], "((pw))");
        assert_eq!(out["instance_groups"][0]["properties"]["p"], "s3cret");
        assert_eq!(out["instance_groups"][1]["env"]["bosh"]["password"], "s3cret");
    }
}
