//! Stemcell controller: puts every uploaded stemcell into this director's
//! CPI, and takes it out again before the Stemcell object goes.
//!
//! An upload only stores the image in the blobstore and writes the
//! Stemcell object; which IaaS holds it is observed state, so it lives in
//! `status.cids` keyed by CPI name (several CPIs may share one etcd). The
//! import is idempotent from the controller's side: the cid is written only
//! after `create_stemcell` answered, and a crash in between leaves at most
//! one orphan image in the CPI (stemcells carry no request id in BOSH's CPI
//! API, so there is nothing to adopt by). The `bosh.io/stemcell-cpi`
//! finalizer makes deletion wait until the CPI's copy is gone.
//!
//! An import that fails (an image the CPI cannot use, a missing blob) is
//! not only retried with backoff: the error goes into the `Ready` condition
//! (False, `ImportFailed`), because the upload was accepted long before and
//! the operator's only view of the stemcell is its status.

use std::sync::Arc;
use std::time::Duration;

use bosh_api::meta::set_condition;
use bosh_api::objects::{ConditionType, Finalizer, Reason, StemcellSpec};
use bosh_api::store;
use bosh_api::{Condition, ConditionStatus, Object};
use tokio::io::AsyncWriteExt;
use tracing::info;

use crate::runtime::{Action, Cleanup, Ctx, Trigger, Wiring, Workers, finalizer};
use crate::world::cpi::CpiError;
use crate::world::director::Director;

/// How often an imported stemcell is looked at again.
const REQUEUE: Duration = Duration::from_secs(300);

/// Errors of the stemcell controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the store failed.
    #[error("store: {0}")]
    Store(#[from] store::Error),
    /// The CPI refused to import or delete the stemcell.
    #[error("CPI {method} of stemcell {stemcell} failed")]
    Cpi {
        /// `create_stemcell` or `delete_stemcell`.
        method: &'static str,
        /// `name/version`.
        stemcell: String,
        /// What the CPI said.
        #[source]
        source: CpiError,
    },
    /// The image could not be read from the blobstore.
    #[error("image of stemcell {stemcell} could not be read from the blobstore")]
    Blob {
        /// `name/version`.
        stemcell: String,
        /// What the blobstore said.
        #[source]
        source: bosh_blobstore::Error,
    },
    /// The Stemcell object has no image.
    #[error("stemcell {stemcell} has no image blob")]
    NoImage {
        /// `name/version`.
        stemcell: String,
    },
    /// The image could not be spooled to a local file.
    #[error("spooling the image of stemcell {stemcell}")]
    Io {
        /// `name/version`.
        stemcell: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The stemcell importer: woken by spec changes and deletion; it writes
/// the status itself.
pub const WIRING: Wiring =
    Wiring { name: "stemcell", trigger: Trigger::Generation, workers: Workers::Shared };

/// Reconciles one Stemcell: finalizer, deletion, import.
pub async fn reconcile(
    obj: Arc<Object<StemcellSpec>>,
    ctx: Arc<Ctx<Director>>,
) -> Result<Action, Error> {
    finalizer(
        &ctx,
        obj,
        Finalizer::StemcellCpi,
        |obj| import_once(obj, &ctx),
        |obj| reconcile_delete(obj, &ctx),
    )
    .await
}

/// Imports the stemcell into every CPI of the director (the default and
/// the CPI config's) that does not have it yet: an AZ of any of them may
/// place a VM of it. Each import is recorded as it succeeds, so a failure
/// in one CPI repeats no other's.
async fn import_once(obj: Arc<Object<StemcellSpec>>, ctx: &Ctx<Director>) -> Result<Action, Error> {
    let d = &ctx.data;
    let name = obj.metadata.name.clone();
    let cpis = d.all_cpis().await.map_err(|source| Error::Cpi {
        method: "cpi_config",
        stemcell: name.clone(),
        source,
    })?;
    let mut obj = (*obj).clone();
    let mut failed = None;
    for (_, cpi) in cpis {
        let cpi_name = cpi.name().to_string();
        if obj.status.cids.contains_key(&cpi_name) {
            continue;
        }
        let generation = obj.metadata.generation;
        let fenced = crate::world::cpi::FencedCpi::new(cpi, ctx.fence.clone());
        let imported = import(&obj, d, &fenced).await;
        let (status, reason, message) = match &imported {
            Ok(cid) => {
                info!(stemcell = %name, cpi = %cpi_name, %cid, "stemcell imported");
                (ConditionStatus::True, Reason::Imported, format!("in CPI {cpi_name} as {cid}"))
            }
            Err(e) => (
                ConditionStatus::False,
                Reason::ImportFailed,
                format!("import into CPI {cpi_name} failed: {}", error_chain(e)),
            ),
        };
        crate::runtime::status::patch(&ctx.store, &mut obj, |s| {
            if let Ok(cid) = &imported {
                s.cids.insert(cpi_name.clone(), cid.clone());
                s.observed_revision = generation;
            }
            set_condition(
                &mut s.conditions,
                Condition::new(
                    ConditionType::Ready,
                    status,
                    reason.clone(),
                    message.clone(),
                    generation,
                ),
            );
        })
        .await?;
        if let Err(e) = imported {
            failed = Some(e);
            break;
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(Action::requeue(REQUEUE)),
    }
}

/// Reads the image from the blobstore and hands it to the CPI (in the
/// term of `fence`); the cid.
async fn import(
    obj: &Object<StemcellSpec>,
    d: &Director,
    cpi: &crate::world::cpi::FencedCpi,
) -> Result<String, Error> {
    let name = obj.metadata.name.clone();
    let image = obj.spec.image.as_ref().ok_or(Error::NoImage { stemcell: name.clone() })?;
    let io = |source| Error::Io { stemcell: name.clone(), source };
    let dir = tempfile::Builder::new().prefix("stemcell-").tempdir().map_err(io)?;
    let path = dir.path().join("image");
    let (mut reader, _) = d
        .blobs
        .get(&image.sha256)
        .await
        .map_err(|source| Error::Blob { stemcell: name.clone(), source })?;
    let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
    tokio::io::copy(&mut reader, &mut file).await.map_err(io)?;
    file.flush().await.map_err(io)?;
    drop(file);
    cpi.create_stemcell(&path, &obj.spec.cloud_properties).await.map_err(|source| Error::Cpi {
        method: "create_stemcell",
        stemcell: name.clone(),
        source,
    })
}

/// An error and its sources, `: `-joined, for a condition's message.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// Deletes the copy in each CPI that has one; the finalizer then lets the
/// object go. A copy in a CPI the director no longer has (its CPI config
/// entry removed) cannot be reached and is left, with a warning.
async fn reconcile_delete(
    obj: Arc<Object<StemcellSpec>>,
    ctx: &Ctx<Director>,
) -> Result<Cleanup, Error> {
    let d = &ctx.data;
    let stemcell = obj.metadata.name.clone();
    let cpis = d.all_cpis().await.map_err(|source| Error::Cpi {
        method: "cpi_config",
        stemcell: stemcell.clone(),
        source,
    })?;
    for (cpi_name, cid) in &obj.status.cids {
        let Some((_, cpi)) = cpis.iter().find(|(_, c)| c.name() == cpi_name) else {
            tracing::warn!(%stemcell, cpi = %cpi_name, %cid, "stemcell left in a CPI the director no longer has");
            continue;
        };
        let fenced = crate::world::cpi::FencedCpi::new(cpi.clone(), ctx.fence.clone());
        match fenced.delete_stemcell(cid).await {
            Ok(()) => info!(%stemcell, cpi = %cpi_name, %cid, "stemcell deleted from CPI"),
            Err(e) if e.is_not_found() => {}
            Err(source) => {
                return Err(Error::Cpi { method: "delete_stemcell", stemcell, source });
            }
        }
    }
    Ok(Cleanup::Done)
}

/// The cid of `stemcell` in the CPI named `cpi` (its [`Cpi::name`]), if
/// imported.
///
/// [`Cpi::name`]: crate::world::cpi::Cpi::name
pub fn cid_in<'a>(stemcell: &'a Object<StemcellSpec>, cpi: &str) -> Option<&'a str> {
    stemcell.status.cids.get(cpi).map(String::as_str)
}
