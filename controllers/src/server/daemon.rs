//! boshd's controllers, wired together.
//!
//! Every kind is watched once ([`Options::reflectors`]): the controllers of
//! a kind share its reflector, and a controller that waits on another kind
//! registers a secondary watch of that kind's reflector with a mapper to
//! its own keys, instead of polling.

use std::sync::Arc;
use std::time::Duration;

use bosh_api::objects::{ConfigSpec, DeploymentSpec, TaskSpec};
use bosh_api::store::Store;
use tokio_util::sync::CancellationToken;

use crate::reconcilers::validate;
use crate::runtime::{
    Config, Controller, ElectionConfig, Predicate, Reflectors, Wiring, default_error_policy,
};

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
    pub health: crate::reconcilers::health::HealthConfig,
    /// Size limits every deployment is validated against.
    pub limits: validate::DeploymentLimits,
    /// Limits of one template-rendering Ruby process.
    pub render: crate::libs::render::Limits,
    /// The periodic orphaned-VM scan (`None`: not run).
    pub orphan_vms: Option<crate::reconcilers::deployment::orphan_vms::OrphanVmConfig>,
    /// How long an errand run may take when it sets no `timeoutSeconds`
    /// (boshd's `--errand-timeout-secs`).
    pub errand_timeout: Duration,
    /// One reflector per kind, shared by every controller these options
    /// run (clones share them).
    pub reflectors: Reflectors,
}

impl Options {
    /// A reconciler's tuning under these options, as its wiring declares.
    pub fn controller_config(&self, wiring: &Wiring) -> Config {
        Config {
            workers: wiring.workers.count(self.workers),
            resync: Some(self.resync),
            trigger: wiring.trigger,
            election: self.election.clone(),
            ..Config::default()
        }
    }
}

/// Runs every controller until `shutdown`, then waits for running
/// reconciles to finish and resigns leadership.
pub async fn run(store: Store, opts: Options, shutdown: CancellationToken) {
    let configs = Controller::<ConfigSpec, _, validate::Error>::new(
        validate::CONFIG_WIRING.name,
        store.clone(),
        Arc::new(opts.limits),
        opts.controller_config(&validate::CONFIG_WIRING),
        validate::reconcile_config,
        default_error_policy,
    )
    .with_reflector(opts.reflectors.get(&store));
    let deployments = deployment_validator(&store, &opts);
    let tasks = task_controller(&store, &opts);
    tokio::join!(
        deployments.run(shutdown.clone()),
        configs.run(shutdown.clone()),
        tasks.run(shutdown.clone())
    );
}

/// The deployment validator.
pub fn deployment_validator(
    store: &Store,
    opts: &Options,
) -> Controller<DeploymentSpec, validate::DeploymentLimits, validate::Error> {
    let deployments = opts.reflectors.get::<DeploymentSpec>(store);
    let cache = deployments.cache();
    Controller::new(
        validate::DEPLOYMENT_WIRING.name,
        store.clone(),
        Arc::new(opts.limits),
        opts.controller_config(&validate::DEPLOYMENT_WIRING),
        validate::reconcile_deployment,
        default_error_policy,
    )
    .with_reflector(deployments)
    .watches(&opts.reflectors.get::<ConfigSpec>(store), Predicate::generation(), move |c| {
        validate::deployments_using(&cache, c)
    })
}

/// The task controller: ends superseded, cancelled and orphaned tasks.
pub fn task_controller(
    store: &Store,
    opts: &Options,
) -> Controller<TaskSpec, (), crate::reconcilers::supersede::Error> {
    use crate::reconcilers::supersede;
    Controller::new(
        supersede::WIRING.name,
        store.clone(),
        Arc::new(()),
        opts.controller_config(&supersede::WIRING),
        supersede::reconcile,
        default_error_policy,
    )
    .with_reflector(opts.reflectors.get(store))
}

/// Runs the controllers that act on the world through `director` — the
/// stemcell importer, the compilation, deployment and instance
/// controllers — until `shutdown`.
pub async fn run_world(
    director: crate::world::director::Director,
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
    director: crate::world::director::Director,
    opts: &Options,
    shutdown: CancellationToken,
) {
    use bosh_api::objects::StemcellSpec;

    use crate::reconcilers::{compile, stemcell};

    let store = director.store.clone();
    let stemcells = Controller::<StemcellSpec, _, stemcell::Error>::new(
        stemcell::WIRING.name,
        store.clone(),
        Arc::new(director.clone()),
        opts.controller_config(&stemcell::WIRING),
        stemcell::reconcile,
        default_error_policy,
    )
    .with_reflector(opts.reflectors.get(&store));
    let compiler = Controller::<DeploymentSpec, _, compile::Error>::new(
        compile::WIRING.name,
        store.clone(),
        Arc::new(compile::Compiler::new(director)),
        opts.controller_config(&compile::WIRING),
        compile::reconcile,
        default_error_policy,
    )
    .with_reflector(opts.reflectors.get(&store))
    .wake_when(compile::wakes_on());
    tokio::join!(stemcells.run(shutdown.clone()), compiler.run(shutdown.clone()));
}

/// Runs the deployment and instance controllers.
pub async fn run_deploy(
    director: crate::world::director::Director,
    opts: &Options,
    shutdown: CancellationToken,
) {
    use bosh_api::objects::{CompiledPackageSpec, ErrandRunSpec, InstanceSpec};

    use crate::reconcilers::{deployment, errand, instance};

    let store = director.store.clone();
    let reflectors = &opts.reflectors;
    let instance_reflector = reflectors.get::<InstanceSpec>(&store);
    let packages = reflectors.get::<CompiledPackageSpec>(&store);
    let errand_runs = reflectors.get::<ErrandRunSpec>(&store);
    let dns_numbers = reflectors.get::<bosh_api::objects::DnsNumbersSpec>(&store);
    let caches = deployment::view::Caches {
        instances: instance_reflector.cache(),
        packages: packages.cache(),
        errands: errand_runs.cache(),
        numbers: dns_numbers.cache(),
    };
    let deployment_reflector = reflectors.get::<DeploymentSpec>(&store);
    let consumers = deployment::consumers_of(deployment_reflector.cache());
    let deployments = Controller::<DeploymentSpec, _, deployment::Error>::new(
        deployment::WIRING.name,
        store.clone(),
        Arc::new(
            deployment::Deployer::new(director.clone())
                .with_render_limits(opts.render.clone())
                .with_caches(caches),
        ),
        opts.controller_config(&deployment::WIRING),
        deployment::reconcile,
        default_error_policy,
    )
    .with_reflector(deployment_reflector)
    .wake_when(deployment::wakes_on())
    .owns(&instance_reflector, deployment::instance_progress(), |i| i.metadata.deployment.clone())
    .watches(&instance_reflector, deployment::instance_spec_changed(), consumers)
    .watches(&reflectors.get::<TaskSpec>(&store), task_state(), |t| {
        t.spec.deployment.clone().into_iter().collect()
    })
    .watches(&errand_runs, errand::phase_changed(), |r| {
        r.metadata.deployment.clone().into_iter().collect()
    })
    .reads(&packages)
    .reads(&dns_numbers);
    let errands = errand::controller(
        &director,
        opts,
        &errand_runs,
        &instance_reflector,
        &reflectors.get::<TaskSpec>(&store),
    );
    let mut instances = instance::Instances::new(director.clone());
    instances.health = opts.health.clone();
    let instances = Controller::<InstanceSpec, _, instance::Error>::new(
        instance::WIRING.name,
        store.clone(),
        Arc::new(instances),
        opts.controller_config(&instance::WIRING),
        instance::reconcile,
        instance::error_policy,
    )
    .with_reflector(instance_reflector);
    tokio::join!(
        deployments.run(shutdown.clone()),
        instances.run(shutdown.clone()),
        errands.run(shutdown.clone()),
        run_orphan_scan(director.clone(), opts, shutdown.clone()),
        run_health(director, opts, shutdown.clone()),
    );
}

/// Runs the periodic orphaned-VM scan, if configured.
pub async fn run_orphan_scan(
    director: crate::world::director::Director,
    opts: &Options,
    shutdown: CancellationToken,
) {
    use crate::reconcilers::deployment::orphan_vms;

    let Some(config) = opts.orphan_vms else { return };
    let store = director.store.clone();
    let scanner = Controller::<DeploymentSpec, _, orphan_vms::Error>::new(
        orphan_vms::WIRING.name,
        store.clone(),
        Arc::new(orphan_vms::Scanner::new(director, config)),
        opts.controller_config(&orphan_vms::WIRING),
        orphan_vms::reconcile,
        default_error_policy,
    )
    .with_reflector(opts.reflectors.get(&store));
    scanner.run(shutdown).await;
}

/// Runs the health monitor: a heartbeat listener in this replica, and the
/// controller that writes observed health when it leads.
pub async fn run_health(
    director: crate::world::director::Director,
    opts: &Options,
    shutdown: CancellationToken,
) {
    use bosh_api::objects::InstanceSpec;

    use crate::reconcilers::health;

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
        health::WIRING.name,
        director.store.clone(),
        Arc::new(health::Monitor { heartbeats, config: opts.health.clone(), sinks }),
        opts.controller_config(&health::WIRING),
        health::reconcile,
        default_error_policy,
    )
    .with_reflector(opts.reflectors.get(&director.store));
    monitor.run(shutdown).await;
    listener.abort();
}

/// Serves BOSH DNS from this replica's view of the Instances until
/// `shutdown`. Every replica runs it: answers come from the shared
/// Instance reflector, which it holds (and so watches) whether or not
/// this replica leads anything.
pub async fn run_dns(
    store: Store,
    reflectors: Reflectors,
    config: crate::server::dns::DnsConfig,
    udp: Vec<tokio::net::UdpSocket>,
    tcp: Vec<tokio::net::TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), crate::server::dns::Error> {
    use crate::server::dns;

    let records = dns::Records::default();
    let sources = dns::Sources {
        instances: reflectors.get(&store),
        numbers: reflectors.get(&store),
        configs: reflectors.get(&store),
    };
    let _following = dns::follow(&sources, records.clone());
    dns::serve(records, config, udp, tcp, shutdown).await
}

/// A task's state changed: what the deployment controller hears of its
/// tasks (a cancel ends its rollout).
fn task_state() -> Predicate<TaskSpec> {
    Predicate::<TaskSpec>::new(|old, new| old.status.state != new.status.state)
}
