//! boshd's controllers, wired together.

use std::sync::Arc;
use std::time::Duration;

use bosh_api::objects::{ConfigSpec, DeploymentSpec};
use bosh_api::store::Store;
use tokio_util::sync::CancellationToken;

use crate::runtime::{Config, Controller, ElectionConfig, Trigger};
use crate::validate;

/// What boshd's controllers share.
#[derive(Debug, Clone)]
pub struct Options {
    /// Workers per controller.
    pub workers: usize,
    /// Period of the full resync.
    pub resync: Duration,
    /// Identity and lease TTL for leader election.
    pub election: ElectionConfig,
    /// The health monitor's and resurrection's tuning.
    pub health: crate::health::HealthConfig,
    /// Size limits every deployment is validated against.
    pub limits: validate::DeploymentLimits,
    /// Limits of one template-rendering Ruby process.
    pub render: crate::render::Limits,
    /// The periodic orphaned-VM scan (`None`: not run).
    pub orphan_vms: Option<crate::deployment::orphan_vms::OrphanVmConfig>,
}

impl Options {
    /// One controller's tuning under these options.
    pub fn controller_config(&self, trigger: Trigger) -> Config {
        Config {
            workers: self.workers,
            resync: Some(self.resync),
            trigger,
            election: self.election.clone(),
            ..Config::default()
        }
    }
}

/// Runs every controller until `shutdown`, then waits for running
/// reconciles to finish and resigns leadership.
pub async fn run(store: Store, opts: Options, shutdown: CancellationToken) {
    // Validators, and the task controller.
    let cfg = |trigger| opts.controller_config(trigger);
    // Validators write only status and need not hear their own writes.
    let limits = Arc::new(opts.limits);
    let deployments = Controller::<DeploymentSpec, _, validate::Error>::new(
        "deployment-validator",
        store.clone(),
        limits.clone(),
        cfg(Trigger::Generation),
        validate::reconcile_deployment,
        validate::error_policy,
    );
    let configs = Controller::<ConfigSpec, _, validate::Error>::new(
        "config-validator",
        store.clone(),
        limits,
        cfg(Trigger::Generation),
        validate::reconcile_config,
        validate::error_policy,
    );
    let tasks = task_controller(&store, &opts);
    tokio::join!(
        deployments.run(shutdown.clone()),
        configs.run(shutdown.clone()),
        tasks.run(shutdown.clone())
    );
}

/// The task controller: ends superseded, cancelled and orphaned tasks.
pub fn task_controller(
    store: &Store,
    opts: &Options,
) -> Controller<bosh_api::objects::TaskSpec, (), crate::tasks::supersede::Error> {
    use crate::tasks::supersede;
    Controller::new(
        supersede::NAME,
        store.clone(),
        Arc::new(()),
        opts.controller_config(Trigger::Generation),
        supersede::reconcile,
        supersede::error_policy,
    )
}

/// Runs the controllers that act on the world through `director` — the
/// stemcell importer, the compilation, deployment and instance
/// controllers — until `shutdown`.
pub async fn run_world(
    director: crate::director::Director,
    opts: &Options,
    shutdown: CancellationToken,
) {
    tokio::join!(
        run_build(director.clone(), opts, shutdown.clone()),
        run_deploy(director, opts, shutdown),
    );
}

/// Runs the stemcell importer and the compilation controller.
pub async fn run_build(
    director: crate::director::Director,
    opts: &Options,
    shutdown: CancellationToken,
) {
    use bosh_api::objects::StemcellSpec;

    use crate::{compile, stemcell};

    let cfg = |trigger| opts.controller_config(trigger);
    let store = director.store.clone();
    let stemcells = Controller::<StemcellSpec, _, stemcell::Error>::new(
        "stemcell",
        store.clone(),
        Arc::new(director.clone()),
        cfg(Trigger::Generation),
        stemcell::reconcile,
        stemcell::error_policy,
    );
    // Spec changes only: a status write (its own, or the validator's) must
    // not cut a failing compile's backoff short; it polls for validity.
    let compiler = Controller::<DeploymentSpec, _, compile::Error>::new(
        "compilation",
        store,
        Arc::new(compile::Compiler::new(director)),
        cfg(Trigger::Generation),
        compile::reconcile,
        compile::error_policy,
    );
    tokio::join!(stemcells.run(shutdown.clone()), compiler.run(shutdown.clone()));
}

/// Runs the deployment and instance controllers.
pub async fn run_deploy(
    director: crate::director::Director,
    opts: &Options,
    shutdown: CancellationToken,
) {
    use bosh_api::objects::InstanceSpec;

    use crate::{deployment, instance};

    let cfg = |trigger| opts.controller_config(trigger);
    let store = director.store.clone();
    // The deployment controller polls its instances while a rollout runs,
    // so it needs to hear only spec changes.
    let deployments = Controller::<DeploymentSpec, _, deployment::Error>::new(
        "deployment",
        store.clone(),
        Arc::new(
            deployment::Deployer::new(director.clone()).with_render_limits(opts.render.clone()),
        ),
        cfg(Trigger::Generation),
        deployment::reconcile,
        deployment::error_policy,
    );
    // Instances are many and each reconcile may wait on an agent: more
    // workers than the others (max_in_flight caps what runs at once).
    // It hears every change, status included: the health monitor's
    // verdicts are what resurrection reconciles on.
    let mut instance_cfg = cfg(Trigger::Any);
    instance_cfg.workers = instance_cfg.workers.max(32);
    let mut instances = instance::Instances::new(director.clone());
    instances.health = opts.health.clone();
    let instances = Controller::<InstanceSpec, _, instance::Error>::new(
        "instance",
        store.clone(),
        Arc::new(instances),
        instance_cfg,
        instance::reconcile,
        instance::error_policy,
    );
    tokio::join!(
        deployments.run(shutdown.clone()),
        instances.run(shutdown.clone()),
        run_orphan_scan(director.clone(), opts, shutdown.clone()),
        run_health(director, opts, shutdown.clone()),
    );
}

/// Runs the periodic orphaned-VM scan, if configured.
pub async fn run_orphan_scan(
    director: crate::director::Director,
    opts: &Options,
    shutdown: CancellationToken,
) {
    use crate::deployment::orphan_vms;

    let Some(config) = opts.orphan_vms else { return };
    let store = director.store.clone();
    // Spec changes (a new deployment) and its own requeues drive it; its
    // status writes need not wake it.
    let mut cfg = opts.controller_config(Trigger::Generation);
    cfg.workers = 1;
    let scanner = Controller::<DeploymentSpec, _, orphan_vms::Error>::new(
        orphan_vms::NAME,
        store,
        Arc::new(orphan_vms::Scanner::new(director, config)),
        cfg,
        orphan_vms::reconcile,
        orphan_vms::error_policy,
    );
    scanner.run(shutdown).await;
}

/// Runs the health monitor: a heartbeat listener in this replica, and the
/// controller that writes observed health when it leads.
pub async fn run_health(
    director: crate::director::Director,
    opts: &Options,
    shutdown: CancellationToken,
) {
    use bosh_api::objects::InstanceSpec;

    use crate::health;

    let heartbeats = Arc::new(health::Heartbeats::default());
    let sinks = health::alerts::Sinks::new(opts.health.webhook.clone());
    let listener = tokio::spawn(health::listen(
        director.agents.nats(),
        heartbeats.clone(),
        sinks.clone(),
        // Long past any verdict: resurrection or an operator has acted.
        (opts.health.agent_timeout * 10).max(Duration::from_secs(600)),
    ));
    let monitor = Controller::<InstanceSpec, _, health::Error>::new(
        "health-monitor",
        director.store.clone(),
        Arc::new(health::Monitor { heartbeats, config: opts.health.clone(), sinks }),
        opts.controller_config(Trigger::Any),
        health::reconcile,
        health::error_policy,
    );
    monitor.run(shutdown).await;
    listener.abort();
}
