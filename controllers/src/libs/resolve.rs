//! A deployment resolved once: its manifest with the runtime configs'
//! addons applied, its merged cloud config, and the releases and stemcells
//! it names. The compilation and the deployment controllers both start
//! from one [`Deployment`], so they read a deployment the same way and
//! block for the same reasons, with the same messages.

use std::collections::BTreeMap;

use bosh_api::Object;
use bosh_api::manifest::{CloudConfig, Manifest, RuntimeConfig};
use bosh_api::objects::{DeploymentSpec, Reason, ReleaseSpec, StemcellSpec};
use bosh_api::store::Store;

use super::lookup::{self, Blocked, Failure};

/// What a deployment names, looked up and assembled.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The manifest, with the runtime configs' addons applied.
    pub manifest: Manifest,
    /// The merged cloud configs the deployment names (`default` when none).
    pub cloud: CloudConfig,
    /// The uploaded Release object of each release the manifest names, by
    /// release name (`latest` resolved).
    pub releases: BTreeMap<String, Object<ReleaseSpec>>,
    /// Every uploaded stemcell; a group's stemcell alias picks among them
    /// ([`lookup::stemcell`]).
    pub stemcells: Vec<Object<StemcellSpec>>,
    /// Every runtime config, by name: the addons applied to `manifest`.
    pub runtime_configs: Vec<(String, RuntimeConfig)>,
}

/// Resolves deployment `obj`, reading `manifest` as its manifest: the
/// stored one for compilation (which needs no variable's value), the one
/// with variables interpolated for the deployment controller. `file`
/// names the manifest in parse errors.
///
/// Blocks with `ManifestInvalid`, `RuntimeConfigInvalid`, `AddonsInvalid`,
/// `CloudConfigMissing`/`CloudConfigInvalid` or `ReleaseMissing`, in that
/// order, each with the message saying what is wrong.
pub async fn resolve(
    store: &Store,
    obj: &Object<DeploymentSpec>,
    manifest: &serde_json::Value,
    file: &str,
) -> Result<Deployment, Failure> {
    let mut manifest = Manifest::from_value(manifest, file)
        .map_err(|e| Blocked::new(Reason::ManifestInvalid, e.to_string()))?;
    let runtime_configs = lookup::runtime_configs(store).await?;
    if !runtime_configs.is_empty() {
        bosh_api::manifest::addons::apply_addons(&mut manifest, &runtime_configs)
            .map_err(|e| Blocked::new(Reason::AddonsInvalid, e.join("; ")))?;
    }
    let cloud = lookup::cloud_config(store, obj).await?;
    let releases = lookup::releases(store, &manifest).await?;
    let stemcells = store.list::<StemcellSpec>("").await?.items;
    Ok(Deployment { manifest, cloud, releases, stemcells, runtime_configs })
}
