//! Validation controllers: the first stage of the deployment and config
//! pipelines.
//!
//! Anyone may write spec keys: the API server validates before it writes,
//! but a GitOps tool writing straight into etcd does not. So boshd checks
//! every Deployment and Config spec it sees, and answers a bad one with an
//! `Invalid` condition that lists every error with its path — and does
//! nothing else with it. Status is written only when it changes, so a
//! resync of valid objects makes no etcd write. A deployment is judged
//! against its cloud configs too, so a change of a cloud config re-runs the
//! deployments that use it ([`deployments_using`], a secondary watch).

use std::sync::Arc;
use std::time::Duration;

use bosh_api::manifest::{CloudConfig, Manifest, RuntimeConfig, validate_against_cloud_config};
use bosh_api::meta::set_condition;
use bosh_api::objects::{ConditionType, ConfigSpec, ConfigType, DeploymentSpec, Reason};
use bosh_api::store::{self, Store};
use bosh_api::{Condition, ConditionStatus, Object};

use crate::runtime::{Action, Cache, Ctx, Trigger, Wiring, Workers};

/// Errors of the validation controllers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the store failed.
    #[error("store: {0}")]
    Store(#[from] store::Error),
}

/// Size limits of a deployment, checked with the manifest before anything
/// is written, so a typo such as `instances: 100000` is refused at the door
/// instead of being planned. boshd's flags set them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeploymentLimits {
    /// At most this many instances in one group (`--max-instances-per-group`).
    pub max_instances_per_group: u32,
    /// At most this many instances in one deployment
    /// (`--max-instances-per-deployment`).
    pub max_instances_per_deployment: u32,
    /// At most this many bytes (as JSON) in one property value
    /// (`--max-property-bytes`): every property reaches every render of
    /// the job, so a huge one multiplies through templates and VMs.
    pub max_property_bytes: usize,
}

impl Default for DeploymentLimits {
    fn default() -> Self {
        DeploymentLimits {
            max_instances_per_group: 10_000,
            max_instances_per_deployment: 20_000,
            max_property_bytes: 1024 * 1024,
        }
    }
}

impl DeploymentLimits {
    /// Every limit `manifest` exceeds, each naming the path, the value, the
    /// limit and the flag that sets it.
    pub fn check(&self, manifest: &Manifest, file: &str) -> Vec<String> {
        let mut errors = Vec::new();
        let mut total: u64 = 0;
        for (gi, g) in manifest.instance_groups.iter().enumerate() {
            total += u64::from(g.instances);
            if g.instances > self.max_instances_per_group {
                errors.push(format!(
                    "{file}: instance_groups[{gi}].instances: {} is over the limit of {} instances per group (boshd --max-instances-per-group)",
                    g.instances, self.max_instances_per_group
                ));
            }
        }
        if total > u64::from(self.max_instances_per_deployment) {
            errors.push(format!(
                "{file}: instance_groups: {total} instances in all is over the limit of {} per deployment (boshd --max-instances-per-deployment)",
                self.max_instances_per_deployment
            ));
        }
        let mut props = |path: String, p: &bosh_api::manifest::Properties| {
            for (k, v) in p {
                let size = serde_json::to_vec(v).map_or(0, |b| b.len());
                if size > self.max_property_bytes {
                    errors.push(format!(
                        "{file}: {path}.{k}: {size} bytes is over the limit of {} bytes per property value (boshd --max-property-bytes)",
                        self.max_property_bytes
                    ));
                }
            }
        };
        props("properties".into(), &manifest.properties);
        for (gi, g) in manifest.instance_groups.iter().enumerate() {
            props(format!("instance_groups[{gi}].properties"), &g.properties);
            for (ji, j) in g.jobs.iter().enumerate() {
                props(format!("instance_groups[{gi}].jobs[{ji}].properties"), &j.properties);
            }
        }
        errors
    }
}

/// How often a valid object is looked at again (resync does the rest).
const REQUEUE: Duration = Duration::from_secs(300);

/// The `Invalid` condition for a validation outcome.
fn invalid_condition(errors: &[String], generation: i64) -> Condition {
    let (status, reason, message) = if errors.is_empty() {
        (ConditionStatus::False, Reason::Valid, String::new())
    } else {
        (ConditionStatus::True, Reason::ValidationFailed, errors.join("\n"))
    };
    Condition::new(ConditionType::Invalid, status, reason, message, generation)
}

/// Checks a deployment's manifest, and what it takes from its cloud configs.
pub async fn check_deployment(
    store: &Store,
    obj: &Object<DeploymentSpec>,
    limits: &DeploymentLimits,
) -> Result<Vec<String>, store::Error> {
    let file = format!("deployment {}", obj.metadata.name);
    let manifest = match Manifest::from_value(&obj.spec.manifest, &file) {
        Ok(m) => m,
        Err(errs) => return Ok(errs.to_string().lines().map(str::to_string).collect()),
    };
    let mut errors = limits.check(&manifest, &file);
    if manifest.name != obj.metadata.name {
        errors.push(format!(
            "{file}: name: expected {:?} (the deployment's name), found {:?}",
            obj.metadata.name, manifest.name
        ));
    }
    let names = if obj.spec.cloud_configs.is_empty() {
        vec!["default".to_string()]
    } else {
        obj.spec.cloud_configs.clone()
    };
    let mut clouds = Vec::new();
    for name in &names {
        let key = format!("{}/{name}", ConfigType::Cloud.as_str());
        match store.try_get::<ConfigSpec>(None, &key).await? {
            Some(c) => match CloudConfig::from_value(&c.spec.content, &format!("config {key}")) {
                Ok(cc) => clouds.push(cc),
                Err(_) => errors.push(format!("{file}: cloud config {name:?} is invalid")),
            },
            None => errors.push(format!("{file}: cloud config {name:?} does not exist")),
        }
    }
    if errors.is_empty() {
        let cloud = CloudConfig::merged(clouds);
        match validate_against_cloud_config(&manifest, &cloud, &file) {
            Err(errs) => errors.extend(errs.to_string().lines().map(str::to_string)),
            Ok(()) => errors.extend(
                crate::reconcilers::deployment::plan::capacity_errors(&manifest, &cloud)
                    .into_iter()
                    .map(|e| format!("{file}: {e}")),
            ),
        }
    }
    Ok(errors)
}

/// The deployments (in `deployments`) that use cloud config `config`: those
/// naming it, and those naming none when it is `cloud/default`. What a
/// change of the config re-validates.
pub fn deployments_using(
    deployments: &Cache<DeploymentSpec>,
    config: &Object<ConfigSpec>,
) -> Vec<String> {
    if config.spec.type_ != ConfigType::Cloud {
        return Vec::new();
    }
    let prefix = format!("{}/", ConfigType::Cloud.as_str());
    let Some(name) = config.metadata.name.strip_prefix(&prefix) else { return Vec::new() };
    deployments
        .list()
        .iter()
        .filter(|d| {
            let names = &d.spec.cloud_configs;
            names.iter().any(|n| n == name) || (names.is_empty() && name == "default")
        })
        .map(|d| d.key_name())
        .collect()
}

/// The deployment validator writes only status and need not hear its own
/// writes; a cloud config's change re-runs it through
/// [`deployments_using`].
pub const DEPLOYMENT_WIRING: Wiring =
    Wiring { name: "deployment-validator", trigger: Trigger::Generation, workers: Workers::Shared };

/// The config validator writes only status and need not hear its own
/// writes.
pub const CONFIG_WIRING: Wiring =
    Wiring { name: "config-validator", trigger: Trigger::Generation, workers: Workers::Shared };

/// Reconciles a Deployment's validity.
pub async fn reconcile_deployment(
    obj: Arc<Object<DeploymentSpec>>,
    ctx: Arc<Ctx<DeploymentLimits>>,
) -> Result<Action, Error> {
    if obj.metadata.is_deleting() {
        return Ok(Action::await_change());
    }
    let errors = check_deployment(&ctx.store, &obj, &ctx.data).await?;
    let generation = obj.metadata.generation;
    crate::runtime::status::patch(&ctx.store, &mut (*obj).clone(), |s| {
        set_condition(&mut s.conditions, invalid_condition(&errors, generation));
        if errors.is_empty() {
            s.observed_revision = generation;
        }
    })
    .await?;
    Ok(Action::requeue(REQUEUE))
}

/// Checks a config document against its type's format.
pub fn check_config(obj: &Object<ConfigSpec>) -> Vec<String> {
    let file = format!("config {}", obj.metadata.name);
    let result = match obj.spec.type_ {
        ConfigType::Cloud => CloudConfig::from_value(&obj.spec.content, &file).map(|_| ()),
        ConfigType::Runtime => RuntimeConfig::from_value(&obj.spec.content, &file).map(|_| ()),
        // A format of its own arrives with the resurrection issue; until
        // then any mapping is accepted.
        ConfigType::Resurrection => Ok(()),
        ConfigType::Cpi => Ok(()),
    };
    let mut errors: Vec<String> = match result {
        Ok(()) => Vec::new(),
        Err(errs) => errs.to_string().lines().map(str::to_string).collect(),
    };
    if obj.spec.type_ == ConfigType::Cpi
        && let Err(errs) = crate::libs::cpi_config::parse(&obj.spec.content, &file)
    {
        errors.extend(errs);
    }
    let prefix = format!("{}/", obj.spec.type_.as_str());
    if !obj.metadata.name.starts_with(&prefix) {
        errors.push(format!(
            "{file}: metadata.name: expected to start with {prefix:?} (the config's type)"
        ));
    }
    errors
}

/// Reconciles a Config's validity.
pub async fn reconcile_config(
    obj: Arc<Object<ConfigSpec>>,
    ctx: Arc<Ctx<DeploymentLimits>>,
) -> Result<Action, Error> {
    if obj.metadata.is_deleting() {
        return Ok(Action::await_change());
    }
    let errors = check_config(&obj);
    let generation = obj.metadata.generation;
    crate::runtime::status::patch(&ctx.store, &mut (*obj).clone(), |s| {
        set_condition(&mut s.conditions, invalid_condition(&errors, generation));
        if errors.is_empty() {
            s.observed_revision = generation;
        }
    })
    .await?;
    Ok(Action::requeue(REQUEUE))
}

#[cfg(test)]
mod tests {

    /// A cloud config maps to the deployments naming it, and `default` also
    /// to those naming none; other config types map to none.
    #[test]
    fn a_cloud_config_maps_to_the_deployments_that_use_it() {
        let cache = Cache::<DeploymentSpec>::default();
        let dep = |name: &str, clouds: &[&str]| {
            let spec = DeploymentSpec {
                cloud_configs: clouds.iter().map(|c| c.to_string()).collect(),
                ..Default::default()
            };
            let mut o = Object::new(ObjectMeta::named(name), spec);
            o.metadata.resource_version = 1;
            o
        };
        let objects = vec![dep("a", &[]), dep("b", &["x"]), dep("c", &["default", "x"])];
        let relist = WatchEvent::Relisted { objects, quarantined: Vec::new(), revision: 1 };
        cache.apply_changes(relist, |_| {});
        let config = |name: &str, type_| {
            let spec = ConfigSpec { type_, content: serde_json::json!({}) };
            Object::new(ObjectMeta::named(name), spec)
        };
        let using = |c| deployments_using(&cache, &c);
        assert_eq!(using(config("cloud/default", ConfigType::Cloud)), ["a", "c"]);
        assert_eq!(using(config("cloud/x", ConfigType::Cloud)), ["b", "c"]);
        assert!(using(config("cloud/y", ConfigType::Cloud)).is_empty());
        assert!(using(config("runtime/default", ConfigType::Runtime)).is_empty());
    }

    use bosh_api::ObjectMeta;
    use bosh_api::store::WatchEvent;
    use serde_json::json;

    use super::*;

    /// A property value over `--max-property-bytes` is refused with its
    /// path, its size, the limit and the flag; smaller ones pass.
    #[test]
    fn a_huge_property_value_is_refused_naming_path_limit_and_flag() {
        let big = "x".repeat(2000);
        let manifest = Manifest::from_value(
            &json!({
                "name": "d",
                "releases": [{"name": "r", "version": "1"}],
                "stemcells": [{"alias": "s", "os": "o", "version": "1"}],
                "update": {"canaries": 1, "max_in_flight": 1, "canary_watch_time": 1000, "update_watch_time": 1000},
                "instance_groups": [{
                    "name": "web", "instances": 1, "azs": ["z1"], "vm_type": "small",
                    "stemcell": "s", "networks": [{"name": "default"}],
                    "jobs": [{"name": "j", "release": "r", "properties": {"small": "ok", "big": big}}],
                }],
            }),
            "m.yml",
        )
        .unwrap();
        let limits = DeploymentLimits { max_property_bytes: 1000, ..Default::default() };
        let errors = limits.check(&manifest, "m.yml");
        assert_eq!(
            errors,
            [
                "m.yml: instance_groups[0].jobs[0].properties.big: 2002 bytes is over the limit of 1000 bytes per property value (boshd --max-property-bytes)"
            ]
        );
        assert!(DeploymentLimits::default().check(&manifest, "m.yml").is_empty());
    }
}
