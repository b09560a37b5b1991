//! Compilation controller: compiles every package a valid deployment needs,
//! once per compile key, on temporary compile VMs.
//!
//! A compiled package is a function of its inputs (source fingerprint,
//! stemcell OS and version, compiled dependencies), so its result is cached
//! under a key made of them ([`bosh_api::objects::compile_key`]) and shared
//! by every deployment: the second deployment on a stemcell creates no VM.
//!
//! The CompiledPackage object is the cache entry *and* the job record. It is
//! created (inputs only) before any VM; its status names the compile VM's
//! agent id, request id and address before `create_vm` is called, so a
//! reconcile that crashed or lost the CPI's reply adopts the VM by request
//! id instead of making a second one, and two compile VMs never get one
//! address. Stale records are cleaned up level-triggered: a record owned by
//! this deployment whose package is compiled (or no longer needed) means
//! its VM is deleted.
//!
//! One reconcile walks the dependency graph ([`plan`]): a package starts as
//! soon as its dependencies are compiled, up to `compilation.workers` at
//! once. A failing packaging script ends the walk with `PackagesCompiled`
//! False (package, exit code, output tail) and an error, so the runtime's
//! per-key backoff — not a loop here — decides when to try again.
//!
//! # Layout
//!
//! - this file: reconcile, looking up releases and stemcells, the walk.
//! - [`plan`]: pure planning (keys, readiness, addresses, versions).
//! - [`vms`]: compile VM lifecycle.

pub mod plan;
pub mod vms;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bosh_api::agent::{CompilePackage, PackageRef};
use bosh_api::manifest::NetworkType;
use bosh_api::meta::{find_condition, set_condition};
use bosh_api::objects::{
    BlobRef, CompiledPackageSpec, ConditionType, DeploymentSpec, EventState, Reason, ReleaseSpec,
};
use bosh_api::store::{self, Store};
use bosh_api::{Condition, ConditionStatus, Object, ObjectMeta};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::libs::{lookup, resolve};
use crate::runtime::{Action, Ctx, Predicate, Trigger, Wiring, Workers};
use crate::world::agent_client::AgentError;
use crate::world::cpi::CpiError;
use crate::world::director::Director;
use vms::CompileEnv;

/// How often a compiled deployment is looked at again.
const REQUEUE: Duration = Duration::from_secs(300);
/// How soon to look again while waiting for something outside (a stemcell
/// import, another deployment's compile).
const WAIT: Duration = Duration::from_secs(2);

/// The compilation controller's context.
pub struct Compiler {
    /// The world's handles.
    pub director: Director,
    /// How long a compile VM's agent may take to answer (BOSH: 600 s).
    pub agent_wait: Duration,
}

impl Compiler {
    /// A compiler acting through `director`.
    pub fn new(director: Director) -> Compiler {
        Compiler { director, agent_wait: Duration::from_secs(600) }
    }
}

/// Errors of the compilation controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the store failed.
    #[error("store: {0}")]
    Store(#[from] store::Error),
    /// The deployment cannot be compiled as configured (yet): a release or
    /// stemcell is missing, the compilation block is unusable, ...
    #[error("deployment {deployment}: {message}")]
    Config {
        /// The deployment.
        deployment: String,
        /// The condition reason, e.g. `StemcellNotImported`.
        reason: Reason,
        /// What is wrong.
        message: String,
    },
    /// A CPI call for a compile VM failed.
    #[error("CPI call for compile VM {agent} failed")]
    Cpi {
        /// The compile VM's agent id.
        agent: String,
        /// What the CPI said.
        #[source]
        source: CpiError,
    },
    /// Bus credentials could not be issued or revoked.
    #[error("bus credentials of compile VM {agent}")]
    Bus {
        /// The agent id.
        agent: String,
        /// What failed.
        #[source]
        source: crate::world::bus::Error,
    },
    /// A compile VM's agent never answered.
    #[error("compile VM agent {agent} did not answer ping within {waited:?}")]
    AgentUnresponsive {
        /// The agent id.
        agent: String,
        /// How long it was given.
        waited: Duration,
    },
    /// Compiling a package failed (e.g. its packaging script exited non-zero).
    #[error("package {package} from {release} failed to compile")]
    Compile {
        /// Package name.
        package: String,
        /// `name/version`.
        release: String,
        /// The agent's answer (with exit code and output tail).
        #[source]
        source: AgentError,
    },
}

impl Error {
    /// The condition reason for this error.
    fn reason(&self) -> Reason {
        match self {
            Error::Store(_) => Reason::StoreError,
            Error::Config { reason, .. } => reason.clone(),
            Error::Cpi { .. } | Error::Bus { .. } => Reason::CompileVmFailed,
            Error::AgentUnresponsive { .. } => Reason::AgentUnresponsive,
            Error::Compile { .. } => Reason::PackageCompileFailed,
        }
    }

    /// The full chain, for condition messages. Stable across retries (no
    /// compile VM ids), so a repeated failure writes no new status.
    fn chain(&self) -> String {
        if let Error::Compile { source: AgentError::Exception { message, .. }, .. } = self {
            return format!("{self}: {message}");
        }
        crate::libs::errors::chain(self)
    }
}

/// The compilation controller: woken by spec changes and by
/// [`wakes_on`]'s verdicts only, so that its own status writes do not cut a
/// failing compile's backoff short (a failing packaging script is retried
/// later and later, never hot).
pub const WIRING: Wiring =
    Wiring { name: "compilation", trigger: Trigger::Generation, workers: Workers::Shared };

/// What wakes the compilation controller: a spec change, or a change of
/// the validator's verdict (it compiles only valid deployments). Its own
/// status writes do not: they must not cut a failing compile's backoff
/// short.
pub fn wakes_on() -> Predicate<DeploymentSpec> {
    Predicate::<DeploymentSpec>::new(|old, new| {
        let verdict = |o: &Object<DeploymentSpec>| {
            find_condition(&o.status.conditions, ConditionType::Invalid)
                .map(|c| (c.status, c.observed_revision))
        };
        old.metadata.resource_version != new.metadata.resource_version
            || verdict(old) != verdict(new)
    })
}

/// Sets `PackagesCompiled` on the deployment's current status, writing only
/// on change.
async fn set_compiled(
    store: &Store,
    name: &str,
    status: ConditionStatus,
    reason: Reason,
    message: String,
) -> Result<(), Error> {
    let Some(obj) = store.try_get::<DeploymentSpec>(None, name).await? else {
        return Ok(());
    };
    let generation = obj.metadata.generation;
    crate::runtime::status::patch(store, &mut obj.clone(), |s| {
        set_condition(
            &mut s.conditions,
            Condition::new(
                ConditionType::PackagesCompiled,
                status,
                reason.clone(),
                message.clone(),
                generation,
            ),
        );
    })
    .await?;
    Ok(())
}

/// What a deployment needs compiled: one plan and compile environment per
/// stemcell it uses.
struct CompilePlans {
    plans: Vec<(plan::Plan, CompileEnv)>,
}

fn props(p: &bosh_api::manifest::Properties) -> serde_json::Map<String, serde_json::Value> {
    p.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Looks up the deployment's releases, stemcells and compilation block,
/// and plans what to compile.
async fn plan_compiles(
    store: &Store,
    director: &Director,
    agent_wait: Duration,
    obj: &Object<DeploymentSpec>,
) -> Result<CompilePlans, Error> {
    let name = obj.metadata.name.clone();
    let blocked = |reason: Reason, message: String| Error::Config {
        deployment: name.clone(),
        reason,
        message,
    };
    // The stored manifest: compiling needs no variable's value.
    let resolved =
        resolve::resolve(store, obj, &obj.spec.manifest, &name).await.map_err(|f| match f {
            lookup::Failure::Store(e) => Error::Store(e),
            lookup::Failure::Blocked(b) => blocked(b.reason, b.message),
        })?;
    let resolve::Deployment { manifest, cloud, releases, stemcells, .. } = resolved;
    let comp = cloud.compilation.clone().ok_or_else(|| {
        blocked(Reason::NoCompilation, "the cloud config has no compilation block".into())
    })?;
    let network =
        cloud.networks.iter().find(|n| n.name == comp.network).ok_or_else(|| {
            blocked(Reason::NoCompilation, format!("no network {:?}", comp.network))
        })?;
    if network.network_type() != NetworkType::Manual {
        return Err(blocked(
            Reason::NoCompilation,
            format!("compilation network {:?} must be manual", comp.network),
        ));
    }
    let subnet = network
        .subnets
        .iter()
        .find(|s| {
            comp.az
                .as_deref()
                .is_none_or(|az| s.az_names().is_empty() || s.az_names().contains(&az))
        })
        .cloned()
        .ok_or_else(|| {
            blocked(Reason::NoCompilation, format!("network {:?} has no subnet", comp.network))
        })?;
    let mut cloud_properties = props(&comp.cloud_properties);
    let az = comp.az.as_deref().and_then(|az| cloud.azs.iter().find(|a| a.name == az));
    if let Some(az) = az {
        cloud_properties.extend(props(&az.cloud_properties));
    }
    // Compile VMs are made by the compilation AZ's CPI.
    let cpi_name = az.and_then(|az| az.cpi.clone());
    let cpi = director.cpi_named(cpi_name.as_deref()).await.map_err(|e| {
        blocked(Reason::NoCompilation, format!("compilation az {:?}: {e}", comp.az))
    })?;
    if let Some(vt) = comp.vm_type.as_deref() {
        let vt = cloud
            .vm_types
            .iter()
            .find(|v| v.name == vt)
            .ok_or_else(|| blocked(Reason::NoCompilation, format!("no vm_type {vt:?}")))?;
        cloud_properties.extend(props(&vt.cloud_properties));
    }

    // Stemcells, and the packages each one's instance groups need.
    let mut by_alias: BTreeMap<String, BTreeMap<String, Vec<(String, String)>>> = BTreeMap::new();
    for ig in &manifest.instance_groups {
        let wants = by_alias.entry(ig.stemcell.clone()).or_default();
        for job in &ig.jobs {
            let rel = releases.get(&job.release).ok_or_else(|| {
                blocked(
                    Reason::ReleaseMissing,
                    format!("job {} names release {:?}", job.name, job.release),
                )
            })?;
            let rj = rel.spec.jobs.iter().find(|j| j.name == job.name).ok_or_else(|| {
                blocked(
                    Reason::JobMissing,
                    format!("release {} has no job {:?}", rel.metadata.name, job.name),
                )
            })?;
            let w = wants.entry(job.release.clone()).or_default();
            for p in &rj.packages {
                w.push((p.clone(), format!("job {}", job.name)));
            }
        }
    }
    let mut plans = Vec::new();
    for (alias, wants) in by_alias {
        let sc = lookup::stemcell(&manifest, &alias, &stemcells)
            .map_err(|b| blocked(b.reason, b.message))?;
        let Some(cid) = crate::reconcilers::stemcell::cid_in(sc, cpi.name()) else {
            return Err(blocked(
                Reason::StemcellNotImported,
                format!("stemcell {} is not yet in CPI {}", sc.metadata.name, cpi.name()),
            ));
        };
        let needed: Vec<(&ReleaseSpec, Vec<(String, String)>)> =
            wants.into_iter().map(|(r, w)| (&releases[&r].spec, w)).collect();
        let p = plan::plan(&needed, &sc.spec.operating_system, &sc.spec.version)
            .map_err(|e| blocked(Reason::PlanFailed, e.to_string()))?;
        let env = CompileEnv {
            deployment: name.clone(),
            cpi: cpi_name.clone(),
            stemcell_cid: cid.to_string(),
            cloud_properties: serde_json::Value::Object(cloud_properties.clone()),
            network: comp.network.clone(),
            subnet: subnet.clone(),
            env: serde_json::Value::Object(props(&comp.env)),
            workers: comp.workers.max(1) as usize,
            reuse: comp.reuse_compilation_vms.unwrap_or(false),
            agent_wait,
            task: obj.spec.task,
        };
        plans.push((p, env));
    }
    Ok(CompilePlans { plans })
}

/// Why the plans cannot be compiled: a package that has no source (it came
/// in a compiled release) and is not compiled for the plan's stemcell, as
/// BOSH's "can't use release ... no source". Names the release, the
/// stemcell, and each such package with the stemcells it was compiled for.
fn no_source(planned: &CompilePlans, compiled: &BTreeMap<String, BlobRef>) -> Option<String> {
    for (p, _) in &planned.plans {
        let mut by_release: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for pkg in
            p.packages.iter().filter(|x| x.source.is_none() && !compiled.contains_key(&x.key))
        {
            let was = match pkg.compiled_for.as_slice() {
                [] => "no stemcell".to_string(),
                list => list.join(", "),
            };
            by_release
                .entry(&pkg.release)
                .or_default()
                .push(format!("{} (compiled for {was} only)", pkg.name));
        }
        if let Some((release, packages)) = by_release.into_iter().next() {
            return Some(format!(
                "can't use release {release} on stemcell {}/{}: no source for package {}; \
                 upload its source release or a release compiled for {}/{}",
                p.os,
                p.version,
                packages.join(", "),
                p.os,
                p.version,
            ));
        }
    }
    None
}

/// Reconciles one Deployment's compilation.
pub async fn reconcile(
    obj: Arc<Object<DeploymentSpec>>,
    ctx: Arc<Ctx<Compiler>>,
) -> Result<Action, Error> {
    if obj.metadata.is_deleting() {
        // Compiled packages outlive deployments; nothing to undo here.
        return Ok(Action::await_change());
    }
    let valid = find_condition(&obj.status.conditions, ConditionType::Invalid).is_some_and(|c| {
        c.status == ConditionStatus::False && c.observed_revision == obj.metadata.generation
    });
    if !valid {
        // Not judged valid (yet): the validator's next verdict wakes this
        // controller ([`wakes_on`]).
        return Ok(Action::await_change());
    }
    let name = obj.metadata.name.clone();
    let store = &ctx.store;
    let planned = match plan_compiles(store, &ctx.data.director, ctx.data.agent_wait, &obj).await {
        Ok(r) => r,
        Err(Error::Config { reason, message, .. }) => {
            set_compiled(store, &name, ConditionStatus::False, reason, message).await?;
            // Uploads and imports do not touch the deployment: look again.
            return Ok(Action::requeue(WAIT));
        }
        Err(e) => return Err(e),
    };
    let existing = store.list::<CompiledPackageSpec>("").await?;
    let mut compiled: BTreeMap<String, BlobRef> = existing
        .items
        .iter()
        .filter_map(|o| o.spec.blob.clone().map(|b| (o.metadata.name.clone(), b)))
        .collect();
    // A compiled release deploys only where it was compiled: refuse now,
    // before any VM, rather than compile a package that has no source.
    if let Some(message) = no_source(&planned, &compiled) {
        set_compiled(store, &name, ConditionStatus::False, Reason::PackageNotCompiled, message)
            .await?;
        return Ok(Action::requeue(WAIT));
    }
    // Stale compile VM records of this deployment: delete their VMs.
    let pending: BTreeSet<&str> = planned
        .plans
        .iter()
        .flat_map(|(p, _)| p.packages.iter())
        .filter(|p| !compiled.contains_key(&p.key))
        .map(|p| p.key.as_str())
        .collect();
    for o in &existing.items {
        if let Some(w) = &o.status.worker
            && w.deployment == name
            && (o.spec.blob.is_some() || !pending.contains(o.metadata.name.as_str()))
        {
            vms::delete(&ctx.store, &ctx.fence, &ctx.data, w).await?;
            vms::record(store, &o.metadata.name, None).await?;
        }
    }
    let total: usize = planned.plans.iter().map(|(p, _)| p.packages.len()).sum();
    if pending.is_empty() {
        set_compiled(
            store,
            &name,
            ConditionStatus::True,
            Reason::Compiled,
            format!("{total} packages compiled"),
        )
        .await?;
        return Ok(Action::requeue(REQUEUE));
    }
    set_compiled(
        store,
        &name,
        ConditionStatus::False,
        Reason::Compiling,
        format!("compiling {} of {total} packages", pending.len()),
    )
    .await?;
    let mut busy = false;
    for (p, env) in &planned.plans {
        match walk(&ctx, p, env, &mut compiled).await {
            Ok(b) => busy |= b,
            Err(e) => {
                set_compiled(store, &name, ConditionStatus::False, e.reason(), e.chain()).await?;
                return Err(e);
            }
        }
    }
    if busy {
        // Another deployment is compiling a package this one needs.
        return Ok(Action::requeue(WAIT));
    }
    set_compiled(
        store,
        &name,
        ConditionStatus::True,
        Reason::Compiled,
        format!("{total} packages compiled"),
    )
    .await?;
    Ok(Action::requeue(REQUEUE))
}

/// How one package's compile ended.
enum Outcome {
    /// Compiled; the VM comes back for reuse if it was kept.
    Compiled(BlobRef, Option<vms::Worker>),
    /// Another deployment is compiling it.
    Busy,
}

/// How a compile task ends; a failed one hands back a VM kept for reuse.
type CompileResult = Result<Outcome, (Error, Option<vms::Worker>)>;

/// Walks one plan's DAG, up to `env.workers` compiles at once. Returns
/// whether some package was left to another deployment's compile.
async fn walk(
    ctx: &Arc<Ctx<Compiler>>,
    p: &plan::Plan,
    env: &CompileEnv,
    compiled: &mut BTreeMap<String, BlobRef>,
) -> Result<bool, Error> {
    let mut running: BTreeSet<String> = BTreeSet::new();
    let mut skipped: BTreeSet<String> = BTreeSet::new();
    let mut pool: Vec<vms::Worker> = Vec::new();
    let mut set: JoinSet<(String, CompileResult)> = JoinSet::new();
    let mut failure: Option<Error> = None;
    loop {
        if failure.is_none() {
            let done: BTreeSet<String> = compiled.keys().cloned().collect();
            let unavailable: BTreeSet<String> = running.union(&skipped).cloned().collect();
            let free = env.workers.saturating_sub(running.len());
            for pkg in plan::ready(p, &done, &unavailable, usize::MAX).into_iter().take(free) {
                let deps: BTreeMap<String, PackageRef> = pkg
                    .dependencies
                    .iter()
                    .map(|(n, k)| {
                        let b = &compiled[k];
                        let fp =
                            p.packages.iter().find(|x| &x.key == k).map(|x| x.fingerprint.clone());
                        (
                            n.clone(),
                            PackageRef {
                                name: n.clone(),
                                version: fp.unwrap_or_default(),
                                blob: b.clone(),
                            },
                        )
                    })
                    .collect();
                let (ctx, env, pkg2, reuse) = (ctx.clone(), env.clone(), pkg.clone(), pool.pop());
                let (os, version) = (p.os.clone(), p.version.clone());
                running.insert(pkg.key.clone());
                // The task holds the `Ctx`, and with it the term's fence.
                set.spawn(async move {
                    let key = pkg2.key.clone();
                    let task = env.task;
                    let one = compile_one(&ctx, &env, &os, &version, &pkg2, deps, reuse);
                    // Its CPI calls log to the deployment's task.
                    (key, crate::world::cpi::call_log::in_task(task, one).await)
                });
            }
        }
        let Some(joined) = set.join_next().await else { break };
        let (key, result) = joined.expect("compile tasks do not panic");
        running.remove(&key);
        match result {
            Ok(Outcome::Compiled(blob, worker)) => {
                compiled.insert(key, blob);
                pool.extend(worker);
            }
            Ok(Outcome::Busy) => {
                skipped.insert(key);
            }
            Err((e, worker)) => {
                pool.extend(worker);
                warn!(error = %e.chain(), "compile failed");
                failure.get_or_insert(e);
            }
        }
    }
    // Reused VMs are deleted when the walk is done.
    for w in pool {
        vms::delete(&ctx.store, &ctx.fence, &ctx.data, &w.worker).await?;
        vms::record(&ctx.store, &w.key, None).await?;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(!skipped.is_empty()),
    }
}

/// Compiles one package: ensures its CompiledPackage object, gets a VM
/// (reused, adopted or new), compiles, records the blob, and deletes the
/// VM unless it is kept for reuse.
async fn compile_one(
    ctx: &Ctx<Compiler>,
    env: &CompileEnv,
    os: &str,
    version: &str,
    pkg: &plan::Planned,
    dependencies: BTreeMap<String, PackageRef>,
    reuse: Option<vms::Worker>,
) -> CompileResult {
    let store = &ctx.store;
    let c = &ctx.data;
    let fence = &ctx.fence;
    let obj = match ensure_object(store, os, version, pkg).await {
        Ok(o) => o,
        Err(e) => return Err((e, reuse)),
    };
    if let Some(b) = obj.spec.blob.clone() {
        return Ok(Outcome::Compiled(b, reuse));
    }
    if let Some(w) = &obj.status.worker
        && w.deployment != env.deployment
    {
        return Ok(Outcome::Busy);
    }
    let mut vm = match reuse {
        Some(mut vm) => {
            // A kept VM moves its record to the package it works on now;
            // a stale VM of ours recorded there goes first.
            let moved = async {
                if let Some(stale) = &obj.status.worker {
                    vms::delete(store, fence, c, stale).await?;
                }
                vms::record(store, &vm.key, None).await?;
                vms::record(store, &pkg.key, Some(vm.worker.clone())).await
            }
            .await;
            vm.key = pkg.key.clone();
            if let Err(e) = moved {
                return Err((e, Some(vm)));
            }
            vm
        }
        None => {
            // A record of ours is a VM that may exist: adopt it by request id.
            let worker = match &obj.status.worker {
                Some(w) => w.clone(),
                None => match vms::claim(store, c, env, &pkg.key).await {
                    Ok(Some(w)) => w,
                    Ok(None) => return Ok(Outcome::Busy),
                    Err(e) => return Err((e, None)),
                },
            };
            let mut vm = vms::Worker { key: pkg.key.clone(), worker };
            let up = async {
                vms::ensure_vm(store, fence, c, env, &pkg.key, &mut vm.worker).await?;
                vms::wait_for_agent(c, env, &vm.worker).await
            }
            .await;
            if let Err(e) = up {
                let _ = finish(ctx, env, vm, false).await;
                return Err((e, None));
            }
            vm
        }
    };
    vm.key = pkg.key.clone();
    let req = CompilePackage {
        name: pkg.name.clone(),
        version: pkg.fingerprint.clone(),
        source: pkg.source.clone().unwrap_or_default(),
        dependencies,
    };
    info!(package = %pkg.name, key = %pkg.key, agent = %vm.worker.agent_id, "compiling");
    let what = format!("{}/{}", pkg.name, pkg.fingerprint);
    event(store, env, &what, EventState::Started, "").await;
    let result =
        c.director.agents.for_agent(vm.worker.agent_id.clone()).compile_package(&req).await;
    match result {
        Ok(blob) => {
            let saved = async {
                let mut o = store.get::<CompiledPackageSpec>(None, &pkg.key).await?;
                o.spec.blob = Some(blob.clone());
                let o = store.update_spec(&o).await?;
                let mut o2 = o.clone();
                o2.status.conditions.retain(|c| c.type_ != ConditionType::Failed);
                o2.status.observed_revision = o.metadata.generation;
                if o2.status != o.status {
                    store.update_status(&o2).await?;
                }
                Ok::<_, Error>(())
            }
            .await;
            if let Err(e) = saved {
                return Err((e, Some(vm)));
            }
            info!(package = %pkg.name, key = %pkg.key, sha256 = %blob.sha256, "compiled");
            event(store, env, &what, EventState::Finished, "").await;
            let kept = finish(ctx, env, vm, true).await.map_err(|e| (e, None))?;
            Ok(Outcome::Compiled(blob, kept))
        }
        Err(source) => {
            let e =
                Error::Compile { package: pkg.name.clone(), release: pkg.release.clone(), source };
            let _ = mark_failed(store, &pkg.key, &e).await;
            event(store, env, &what, EventState::Failed, &e.chain()).await;
            let kept = finish(ctx, env, vm, true).await.map_err(|e| (e, None))?;
            Err((e, kept))
        }
    }
}

/// Appends a "Compiling packages" event to the deployment's task, if it has
/// one. Best effort: a lost event must not fail or repeat a compile.
async fn event(store: &Store, env: &CompileEnv, object: &str, state: EventState, error: &str) {
    let Some(task) = env.task else { return };
    let log = crate::libs::tasks::EventLog::new(store.clone(), task);
    if let Err(e) = log.record("Compiling packages", object, state, error).await {
        tracing::warn!(task, object, error = %e, "could not record a compile event");
    }
}

/// Returns the VM for reuse, or deletes it and clears its record.
async fn finish(
    ctx: &Ctx<Compiler>,
    env: &CompileEnv,
    vm: vms::Worker,
    healthy: bool,
) -> Result<Option<vms::Worker>, Error> {
    if env.reuse && healthy {
        return Ok(Some(vm));
    }
    vms::delete(&ctx.store, &ctx.fence, &ctx.data, &vm.worker).await?;
    vms::record(&ctx.store, &vm.key, None).await?;
    Ok(None)
}

/// The package's CompiledPackage object, created with its inputs if new.
async fn ensure_object(
    store: &Store,
    os: &str,
    version: &str,
    pkg: &plan::Planned,
) -> Result<Object<CompiledPackageSpec>, Error> {
    if let Some(o) = store.try_get::<CompiledPackageSpec>(None, &pkg.key).await? {
        return Ok(o);
    }
    let spec = CompiledPackageSpec {
        package: pkg.name.clone(),
        fingerprint: pkg.fingerprint.clone(),
        release: pkg.release.clone(),
        stemcell_os: os.into(),
        stemcell_version: version.into(),
        dependencies: pkg.dependencies.clone(),
        blob: None,
    };
    match store.create(&Object::new(ObjectMeta::named(&pkg.key), spec)).await {
        Ok(o) => Ok(o),
        Err(store::Error::AlreadyExists { .. }) => {
            Ok(store.get::<CompiledPackageSpec>(None, &pkg.key).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Records a compile failure on the package.
async fn mark_failed(store: &Store, key: &str, e: &Error) -> Result<(), Error> {
    let o = store.get::<CompiledPackageSpec>(None, key).await?;
    let generation = o.metadata.generation;
    crate::runtime::status::patch(store, &mut o.clone(), |s| {
        set_condition(
            &mut s.conditions,
            Condition::new(ConditionType::Failed, true, e.reason(), e.chain(), generation),
        );
    })
    .await?;
    Ok(())
}
