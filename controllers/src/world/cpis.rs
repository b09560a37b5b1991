//! The director's CPIs: the default one boshd was started with, and those
//! of the CPI config (BOSH's `cpis`), by name.
//!
//! A cloud config's `azs[].cpi` names the CPI that serves the AZ; an AZ
//! naming none (and every AZ when there is no CPI config) is served by the
//! default CPI. Whoever makes a VM or a disk records the CPI's name with
//! its cid (`None`: the default), and every later call on it is made
//! through [`CpiRegistry::get`] by that name, so it reaches the CPI that
//! made it whatever the cloud config says by then.
//!
//! The configured CPIs are built from the stored `cpi/*` configs and
//! rebuilt when their content changes: each lookup of a named CPI looks at
//! the configs and rebuilds when they differ from what the registry was
//! built from. boshd hands the registry its watched Config cache
//! ([`CpiRegistry::watch_configs`]), so a lookup reads memory; until that
//! cache has listed (and where there is none, as in some tests) a lookup
//! reads the configs from etcd (one range read). Lookups of the default
//! CPI read nothing, so a director with no CPI config pays nothing for the
//! registry.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bosh_api::objects::{ConfigSpec, ConfigType};
use bosh_api::store::Store;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::libs::cpi_config::{self, CpiEntry};
use crate::runtime::Reflector;
use crate::runtime::shared::Hold;
use crate::world::cpi::external::ExternalCpi;
use crate::world::cpi::local::LocalCpi;
use crate::world::cpi::{Cpi, CpiError};

/// Where a `local` CPI of the CPI config keeps its data when its
/// properties do not say: the director's own local CPI's directories.
#[derive(Clone, Default)]
pub struct LocalDefaults {
    /// The local CPI's data dir (`boshd --cpi-dir`).
    pub data_dir: PathBuf,
    /// Where images are unpacked (none: in the data dir).
    pub image_cache: Option<PathBuf>,
    /// Audit lines carry the etcd revision read from here (as boshd's
    /// embedded local CPI's do).
    pub audit_store: Option<Store>,
}

/// The CPIs of the CPI config, built from the configs last read.
#[derive(Default)]
struct Built {
    /// The configs' content the CPIs were built from.
    source: Option<serde_json::Value>,
    cpis: BTreeMap<String, Arc<dyn Cpi>>,
}

/// The CPI config's CPIs (the default CPI is the `Director`'s `cpi`).
pub struct CpiRegistry {
    local: LocalDefaults,
    built: Mutex<Built>,
    /// The watched Configs, kept watching by the hold.
    configs: std::sync::OnceLock<(Reflector<ConfigSpec>, Hold)>,
}

impl CpiRegistry {
    /// An empty registry; `local` is where a `local` CPI of the config
    /// without `data_dir` keeps its data.
    pub fn new(local: LocalDefaults) -> CpiRegistry {
        CpiRegistry {
            local,
            built: Mutex::new(Built::default()),
            configs: std::sync::OnceLock::new(),
        }
    }

    /// Reads the CPI configs from `configs`' cache from now on (holding its
    /// watch for the registry's life) instead of from etcd on every lookup
    /// of a named CPI. A second call is ignored.
    pub fn watch_configs(&self, configs: Reflector<ConfigSpec>) {
        let hold = configs.hold();
        let _ = self.configs.set((configs, hold));
    }

    /// The CPI called `name`: `None` is `default`; a name the CPI config
    /// does not have is `default` if that is the default's name, else an
    /// error worth retrying (the config may be on its way).
    pub async fn get(
        &self,
        store: &Store,
        default: &Arc<dyn Cpi>,
        name: Option<&str>,
    ) -> Result<Arc<dyn Cpi>, CpiError> {
        let Some(name) = name else { return Ok(default.clone()) };
        let built = self.refresh(store, default.name(), false).await?;
        if let Some(cpi) = built.get(name) {
            return Ok(cpi.clone());
        }
        if name == default.name() {
            return Ok(default.clone());
        }
        Err(CpiError::Transient {
            method: "cpi_config",
            message: format!("no CPI named {name:?} in the CPI config"),
        })
    }

    /// The default CPI and every CPI of the config, each with the name it
    /// is recorded by (`None`: the default).
    pub async fn all(
        &self,
        store: &Store,
        default: &Arc<dyn Cpi>,
    ) -> Result<Vec<(Option<String>, Arc<dyn Cpi>)>, CpiError> {
        self.all_read(store, default, false).await
    }

    /// [`CpiRegistry::all`] from the configs as etcd holds them now, not
    /// as the watched cache last saw them: for a verdict that fails a
    /// deploy, which a CPI config written a moment earlier must not lose.
    pub async fn all_fresh(
        &self,
        store: &Store,
        default: &Arc<dyn Cpi>,
    ) -> Result<Vec<(Option<String>, Arc<dyn Cpi>)>, CpiError> {
        self.all_read(store, default, true).await
    }

    async fn all_read(
        &self,
        store: &Store,
        default: &Arc<dyn Cpi>,
        fresh: bool,
    ) -> Result<Vec<(Option<String>, Arc<dyn Cpi>)>, CpiError> {
        let built = self.refresh(store, default.name(), fresh).await?;
        let mut all = vec![(None, default.clone())];
        all.extend(built.into_iter().map(|(n, c)| (Some(n), c)));
        Ok(all)
    }

    /// The configured CPIs, rebuilt first if the stored configs changed.
    /// An entry named as the default CPI (`default_name`) is left out:
    /// stemcell cids are keyed by CPI name, and two CPIs under one key
    /// would share cids that only one of them has.
    async fn refresh(
        &self,
        store: &Store,
        default_name: &str,
        fresh: bool,
    ) -> Result<BTreeMap<String, Arc<dyn Cpi>>, CpiError> {
        let prefix = format!("{}/", ConfigType::Cpi.as_str());
        let cached = self.configs.get().map(|(r, _)| r.cache()).filter(|c| !fresh && c.is_synced());
        let configs: Vec<bosh_api::Object<ConfigSpec>> = match cached {
            Some(cache) => cache
                .list()
                .into_iter()
                .filter(|c| c.metadata.name.starts_with(&prefix))
                .map(|c| (*c).clone())
                .collect(),
            None => {
                let read = store.list::<ConfigSpec>(&prefix).await;
                read.map_err(|e| CpiError::Transient {
                    method: "cpi_config",
                    message: format!("reading: {e}"),
                })?
                .items
            }
        };
        let mut configs: Vec<_> =
            configs.into_iter().filter(|c| c.spec.type_ == ConfigType::Cpi).collect();
        configs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let source = serde_json::Value::Array(
            configs.iter().map(|c| serde_json::json!([c.metadata.name, c.spec.content])).collect(),
        );
        let mut built = self.built.lock().await;
        if built.source.as_ref() != Some(&source) {
            let mut cpis = BTreeMap::new();
            for c in &configs {
                let file = format!("config {}", c.metadata.name);
                // An invalid config carries an `Invalid` condition (the
                // config validator's); its CPIs are not made.
                let Ok(entries) = cpi_config::parse(&c.spec.content, &file) else {
                    warn!(config = %c.metadata.name, "invalid CPI config left out");
                    continue;
                };
                for e in entries {
                    if e.name == default_name {
                        warn!(config = %c.metadata.name, cpi = %e.name, "CPI named as the default CPI left out");
                        continue;
                    }
                    if cpis.contains_key(&e.name) {
                        warn!(config = %c.metadata.name, cpi = %e.name, "CPI named twice; the first kept");
                        continue;
                    }
                    match self.make(&e) {
                        Ok(cpi) => {
                            cpis.insert(e.name.clone(), cpi);
                        }
                        Err(err) => warn!(cpi = %e.name, error = %err, "CPI left out"),
                    }
                }
            }
            info!(cpis = ?cpis.keys().collect::<Vec<_>>(), "CPI config read");
            *built = Built { source: Some(source), cpis };
        }
        Ok(built.cpis.clone())
    }

    /// The CPI of one config entry.
    fn make(&self, e: &CpiEntry) -> std::io::Result<Arc<dyn Cpi>> {
        if e.type_ == cpi_config::LOCAL {
            let path =
                |key: &str| e.properties.get(key).and_then(|v| v.as_str()).map(PathBuf::from);
            let dir = path("data_dir").unwrap_or_else(|| self.local.data_dir.clone());
            let mut cpi = LocalCpi::open(&dir)?.with_name(&e.name);
            if let Some(cache) = path("image_cache").or_else(|| self.local.image_cache.clone()) {
                cpi = cpi.with_image_cache(&cache);
            }
            if let Some(store) = &self.local.audit_store {
                cpi = cpi.with_audit_store(store.clone());
            }
            return Ok(Arc::new(cpi));
        }
        let exe = e.exec_path.clone().ok_or_else(|| std::io::Error::other("no exec_path"))?;
        Ok(Arc::new(ExternalCpi::new(&e.name, &exe, e.properties.clone())))
    }
}
