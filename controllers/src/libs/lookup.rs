//! What a deployment names, looked up: its cloud config, its releases and
//! its stemcells. Shared by the compilation and deployment controllers, so
//! both read a manifest the same way and block with the same reasons.

use std::collections::BTreeMap;

use bosh_api::Object;
use bosh_api::manifest::{CloudConfig, Manifest};
use bosh_api::objects::{
    ConfigSpec, ConfigType, DeploymentSpec, Reason, ReleaseSpec, StemcellSpec,
};
use bosh_api::release::version::pick as pick_version;
use bosh_api::store::{self, Store};

/// Why a deployment cannot go on yet: a condition reason and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The condition reason, e.g. `StemcellMissing`.
    pub reason: Reason,
    /// What is missing or wrong.
    pub message: String,
}

impl Blocked {
    /// A blocked verdict.
    pub fn new(reason: Reason, message: impl Into<String>) -> Blocked {
        Blocked { reason, message: message.into() }
    }
}

/// Resolution failed: the store, or something the deployment names.
#[derive(Debug)]
pub enum Failure {
    /// Reading the store failed.
    Store(store::Error),
    /// Something named is missing or unusable.
    Blocked(Blocked),
}

impl From<store::Error> for Failure {
    fn from(e: store::Error) -> Failure {
        Failure::Store(e)
    }
}

impl From<Blocked> for Failure {
    fn from(b: Blocked) -> Failure {
        Failure::Blocked(b)
    }
}

/// The merged cloud configs a deployment names (`default` when none).
pub async fn cloud_config(
    store: &Store,
    obj: &Object<DeploymentSpec>,
) -> Result<CloudConfig, Failure> {
    let names = if obj.spec.cloud_configs.is_empty() {
        vec!["default".to_string()]
    } else {
        obj.spec.cloud_configs.clone()
    };
    let mut clouds = Vec::new();
    for name in names {
        let key = format!("{}/{name}", ConfigType::Cloud.as_str());
        let c = store.try_get::<ConfigSpec>(None, &key).await?.ok_or_else(|| {
            Blocked::new(
                Reason::CloudConfigMissing,
                format!("cloud config {name:?} does not exist"),
            )
        })?;
        clouds.push(CloudConfig::from_value(&c.spec.content, &key).map_err(|e| {
            Blocked::new(Reason::CloudConfigInvalid, format!("cloud config {name:?}: {e}"))
        })?);
    }
    Ok(CloudConfig::merged(clouds))
}

/// Every runtime config, by name (for addons).
pub async fn runtime_configs(
    store: &Store,
) -> Result<Vec<(String, bosh_api::manifest::RuntimeConfig)>, Failure> {
    let prefix = format!("{}/", ConfigType::Runtime.as_str());
    let list = store.list::<ConfigSpec>(&prefix).await?;
    let mut out = Vec::new();
    for c in list.items {
        let rc = bosh_api::manifest::RuntimeConfig::from_value(&c.spec.content, &c.metadata.name)
            .map_err(|e| {
            Blocked::new(Reason::RuntimeConfigInvalid, format!("{}: {e}", c.metadata.name))
        })?;
        out.push((c.metadata.name.clone(), rc));
    }
    Ok(out)
}

/// The uploaded Release object for each release the manifest names.
pub async fn releases(
    store: &Store,
    manifest: &Manifest,
) -> Result<BTreeMap<String, Object<ReleaseSpec>>, Failure> {
    let mut releases = BTreeMap::new();
    for r in &manifest.releases {
        let list = store.list::<ReleaseSpec>(&format!("{}/", r.name)).await?;
        let versions: Vec<&str> = list.items.iter().map(|o| o.spec.version.as_str()).collect();
        let v = pick_version(&versions, &r.version.0).ok_or_else(|| {
            Blocked::new(
                Reason::ReleaseMissing,
                format!("release {}/{} is not uploaded", r.name, r.version),
            )
        })?;
        let o = list.items.iter().find(|o| o.spec.version == v).cloned().expect("resolved");
        releases.insert(r.name.clone(), o);
    }
    Ok(releases)
}

/// The uploaded stemcell a manifest's stemcell `alias` resolves to.
pub fn stemcell<'a>(
    manifest: &Manifest,
    alias: &str,
    uploaded: &'a [Object<StemcellSpec>],
) -> Result<&'a Object<StemcellSpec>, Blocked> {
    let ms = manifest.stemcells.iter().find(|s| s.alias == alias).ok_or_else(|| {
        Blocked::new(Reason::StemcellMissing, format!("no stemcell with alias {alias:?}"))
    })?;
    let candidates: Vec<&Object<StemcellSpec>> = uploaded
        .iter()
        .filter(|s| ms.os.as_ref().is_none_or(|os| &s.spec.operating_system == os))
        .filter(|s| ms.name.as_ref().is_none_or(|n| &s.spec.name == n))
        .collect();
    let versions: Vec<&str> = candidates.iter().map(|s| s.spec.version.as_str()).collect();
    let v = pick_version(&versions, &ms.version.0).ok_or_else(|| {
        Blocked::new(
            Reason::StemcellMissing,
            format!(
                "stemcell {} {} is not uploaded",
                ms.os.clone().or_else(|| ms.name.clone()).unwrap_or_default(),
                ms.version
            ),
        )
    })?;
    Ok(candidates.into_iter().find(|s| s.spec.version == v).expect("resolved"))
}
