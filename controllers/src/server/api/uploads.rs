//! Release and stemcell uploads, and their deletion.
//!
//! An upload streams the request body to a scratch file (never into
//! memory), verifies the whole tarball — paths, sizes, every digest in its
//! manifest, job/package references — and only then stores its pieces in
//! the blobstore and writes the Release or Stemcell object that points to
//! them. A tarball that fails any check leaves no object behind.
//!
//! - `POST /v1/uploads/releases[?fix=true]`: a source or compiled release;
//!   tarballs of one version merge ([`super::release_merge`]), and a
//!   compiled one's packages go to the compile cache.
//! - `POST /v1/uploads/stemcells[?fix=true]`
//! - `DELETE /v1/releases/<name>/<version>`, `DELETE /v1/stemcells/<name>/<version>`:
//!   refused (409) while a deployment uses them, naming the deployments.
//!
//! Verifying a tarball costs disk and CPU in proportion to what it unpacks
//! to, not to what was sent: a 4 MB gzip can expand to 4 GiB. So each
//! upload is capped in unpacked bytes and entries ([`UploadLimits`], counted
//! across the tarball and every tarball inside it), and only a few run at
//! once; an upload over a cap is refused (422), and one beyond the
//! concurrency cap is turned away (503) before its body is read. Every
//! refusal names the cap, its value and the boshd flag that sets it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bosh_api::archive::{Limits, Refusal};
use bosh_api::objects::{BlobRef, CompiledPackageSpec, DeploymentSpec, ReleaseSpec, StemcellSpec};
use bosh_api::release::read_release_tarball;
use bosh_api::release::stemcell::read_stemcell_with;
use bosh_api::wire::{ReleaseUpload, Removed, StemcellUpload, UploadQuery, UploadStatus};
use bosh_api::{Object, ObjectMeta};
use bosh_blobstore::Storage;
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::info;

use super::{ApiError, ApiState};

/// Caps on uploads, set by boshd flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Most bytes one upload may unpack to, counting the tarball and every
    /// job, package and license tarball checked inside it
    /// (`--max-upload-unpacked-bytes`). Release and stemcell tarballs hold
    /// compressed pieces, so they unpack to about twice their size at most;
    /// the default (2 GiB) is twice that for the largest compiled releases.
    pub max_unpacked_bytes: u64,
    /// Most entries (files, directories, links) one upload may hold, nested
    /// tarballs included (`--max-upload-entries`; default 100,000).
    pub max_entries: u64,
    /// Most uploads spooled and verified at once (`--max-concurrent-uploads`;
    /// default 2): each holds up to `max_unpacked_bytes` of scratch disk.
    pub max_concurrent: usize,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits { max_unpacked_bytes: 2 << 30, max_entries: 100_000, max_concurrent: 2 }
    }
}

impl UploadLimits {
    /// The unpacking caps of one upload.
    fn archive(&self) -> Limits {
        Limits {
            max_total_bytes: self.max_unpacked_bytes,
            max_entry_bytes: self.max_unpacked_bytes,
            max_entries: self.max_entries,
        }
    }
}

/// The upload caps and the slots of the concurrency cap.
#[derive(Debug, Clone)]
pub(super) struct UploadGate {
    limits: UploadLimits,
    slots: Arc<Semaphore>,
}

impl UploadGate {
    pub(super) fn new(limits: UploadLimits) -> UploadGate {
        UploadGate { limits, slots: Arc::new(Semaphore::new(limits.max_concurrent)) }
    }

    /// A slot for one upload, held until the returned permit drops; 503
    /// naming the cap when all are taken (waiting would hold the client's
    /// connection and body for an unknown time).
    fn enter(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.slots.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many uploads at once: at most {} are verified at a time \
                     (boshd --max-concurrent-uploads); try again when one has finished",
                    self.limits.max_concurrent
                ),
            )
        })
    }
}

impl ApiState {
    /// Sets the upload caps (default [`UploadLimits::default`]).
    pub fn with_upload_limits(mut self, limits: UploadLimits) -> ApiState {
        self.uploads = UploadGate::new(limits);
        self
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// 422 for a tarball that failed verification; when a cap stopped it, a
/// second detail names the cap, its value and the flag that sets it.
fn bad_input(what: &str, e: bosh_api::release::Error) -> ApiError {
    let mut details = vec![e.to_string()];
    let refusal = match &e {
        bosh_api::release::Error::Archive(a) => a.refusal(),
        _ => None,
    };
    match refusal {
        Some(Refusal::TotalTooLarge { limit } | Refusal::EntryTooLarge { limit }) => {
            details.push(format!(
                "an upload may unpack to at most {limit} bytes, counting the tarballs inside it \
                 (boshd --max-upload-unpacked-bytes)"
            ))
        }
        Some(Refusal::TooManyEntries { limit }) => details.push(format!(
            "an upload may hold at most {limit} entries, counting the tarballs inside it \
             (boshd --max-upload-entries)"
        )),
        _ => {}
    }
    ApiError::invalid(format!("the uploaded {what} was refused"), details)
}

/// Streams a request body into a new scratch directory (removed when the
/// returned guard drops) and returns it with the file's path.
async fn spool(
    st: &ApiState,
    body: Body,
    what: &str,
) -> Result<(tempfile::TempDir, PathBuf), ApiError> {
    let scratch = st.scratch.as_deref().ok_or_else(no_blobstore)?;
    std::fs::create_dir_all(scratch).map_err(internal)?;
    let work = tempfile::Builder::new()
        .prefix(&format!("{what}-"))
        .tempdir_in(scratch)
        .map_err(internal)?;
    let path = work.path().join(format!("{what}.tgz"));
    let mut file = tokio::fs::File::create(&path).await.map_err(internal)?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.flush().await.map_err(internal)?;
    Ok((work, path))
}

/// Stores a file in the blobstore, streaming it.
async fn put_file(storage: &Arc<dyn Storage>, path: &Path) -> Result<BlobRef, ApiError> {
    let file = tokio::fs::File::open(path).await.map_err(internal)?;
    let stream = tokio_util::io::ReaderStream::new(file).map_err(std::io::Error::other);
    storage.put_stream(Box::pin(stream), None).await.map_err(internal)
}

fn no_blobstore() -> ApiError {
    ApiError::new(StatusCode::NOT_IMPLEMENTED, "this director has no blobstore")
}

fn storage(st: &ApiState) -> Result<&Arc<dyn Storage>, ApiError> {
    st.blobstore.as_ref().ok_or_else(no_blobstore)
}

/// Creates the object, or replaces the spec of the one read before.
async fn save<S: bosh_api::Kind>(
    st: &ApiState,
    existing: Option<Object<S>>,
    name: &str,
    spec: S,
) -> Result<Object<S>, ApiError> {
    Ok(match existing {
        Some(mut e) => {
            e.spec = spec;
            st.store.update_spec(&e).await?
        }
        None => st.store.create(&Object::new(ObjectMeta::named(name), spec)).await?,
    })
}

/// `POST /v1/uploads/releases`.
pub(super) async fn upload_release(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let blobs = storage(&st)?;
    let _slot = st.uploads.enter()?;
    let (work, tarball) = spool(&st, body, "release").await?;
    let dest = work.path().join("unpacked");
    let archive = {
        let (t, d, limits) = (tarball.clone(), dest.clone(), st.uploads.limits.archive());
        tokio::task::spawn_blocking(move || read_release_tarball(&t, &d, &limits))
            .await
            .map_err(internal)?
            .map_err(|e| bad_input("release", e))?
    };
    let mf = &archive.manifest;
    let name = format!("{}/{}", mf.name, mf.version);
    let existing = st.store.try_get::<ReleaseSpec>(None, &name).await?;
    let merged = super::release_merge::merge(existing.as_ref().map(|e| &e.spec), &archive, q.fix)
        .map_err(|m| ApiError::new(StatusCode::CONFLICT, m))?;
    // Cache entries already holding a blob stay as they are: their key
    // says their result is interchangeable with this one, and instances
    // may be running it.
    let mut missing = Vec::new();
    for c in &merged.compiled {
        let cached = st.store.try_get::<CompiledPackageSpec>(None, &c.key).await?;
        if cached.is_none_or(|o| o.spec.blob.is_none()) {
            missing.push(c);
        }
    }
    if existing.is_some() && !merged.changed && missing.is_empty() && !q.fix {
        let existing =
            ReleaseUpload::Existing { release: name, status: UploadStatus::AlreadyUploaded };
        return Ok((StatusCode::OK, Json(existing)).into_response());
    }
    let mut spec = merged.spec;
    if spec.tarball.is_none() || q.fix {
        spec.tarball = Some(put_file(blobs, &tarball).await?);
    }
    for &(si, ai) in &merged.jobs {
        spec.jobs[si].blob = Some(put_file(blobs, &archive.jobs[ai].tgz).await?);
    }
    for &(si, ai) in &merged.sources {
        spec.packages[si].blob = Some(put_file(blobs, &archive.packages[ai].tgz).await?);
    }
    for c in missing {
        let blob = put_file(blobs, &archive.packages[c.archive_index].tgz).await?;
        record_compiled(&st, &c.key, CompiledPackageSpec { blob: Some(blob), ..c.spec.clone() })
            .await?;
        info!(package = %c.spec.package, key = %c.key, release = %name, "compiled package uploaded");
    }
    let saved = match existing {
        Some(e) if !merged.changed && !q.fix => e,
        existing => save(&st, existing, &name, spec).await?,
    };
    Ok((StatusCode::CREATED, Json(ReleaseUpload::Created(Box::new(saved)))).into_response())
}

/// Records an uploaded compiled package in the compile cache: creates its
/// CompiledPackage object, or gives its blob to one that has none yet (a
/// compile that failed or is under way; the compiler then deletes its VM,
/// as for any package compiled meanwhile). One that has a blob is kept.
async fn record_compiled(
    st: &ApiState,
    key: &str,
    spec: CompiledPackageSpec,
) -> Result<(), ApiError> {
    loop {
        let written = match st.store.try_get::<CompiledPackageSpec>(None, key).await? {
            Some(o) if o.spec.blob.is_some() => return Ok(()),
            Some(mut o) => {
                o.spec.blob = spec.blob.clone();
                st.store.update_spec(&o).await.map(drop)
            }
            None => {
                st.store.create(&Object::new(ObjectMeta::named(key), spec.clone())).await.map(drop)
            }
        };
        match written {
            Ok(()) => return Ok(()),
            Err(e)
                if e.is_conflict() || matches!(e, bosh_api::store::Error::AlreadyExists { .. }) =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `POST /v1/uploads/stemcells`.
pub(super) async fn upload_stemcell(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let blobs = storage(&st)?;
    let _slot = st.uploads.enter()?;
    let (work, tarball) = spool(&st, body, "stemcell").await?;
    let dest = work.path().join("unpacked");
    let (mf, image) = {
        let (t, d, limits) = (tarball.clone(), dest.clone(), st.uploads.limits.archive());
        tokio::task::spawn_blocking(move || read_stemcell_with(&t, &d, &limits))
            .await
            .map_err(internal)?
            .map_err(|e| bad_input("stemcell", e))?
    };
    let name = format!("{}/{}", mf.name, mf.version);
    let existing = st.store.try_get::<StemcellSpec>(None, &name).await?;
    if existing.is_some() && !q.fix {
        let existing =
            StemcellUpload::Existing { stemcell: name, status: UploadStatus::AlreadyUploaded };
        return Ok((StatusCode::OK, Json(existing)).into_response());
    }
    let spec = StemcellSpec {
        name: mf.name.clone(),
        version: mf.version.clone(),
        operating_system: mf.operating_system.clone(),
        api_version: mf.api_version.unwrap_or(1),
        sha1: mf.sha1.clone(),
        cloud_properties: serde_json::to_value(&mf.cloud_properties).map_err(internal)?,
        image: Some(put_file(blobs, &image).await?),
    };
    let saved = save(&st, existing, &name, spec).await?;
    Ok((StatusCode::CREATED, Json(StemcellUpload::Created(Box::new(saved)))).into_response())
}

/// Deployments whose manifest's `section` (`releases` or `stemcells`) names
/// `name` (matched on `key`) at `version` or at `latest`.
async fn users(
    st: &ApiState,
    section: &str,
    keys: &[&str],
    name: &str,
    version: &str,
    is_latest: bool,
) -> Result<Vec<String>, ApiError> {
    let deployments = st.store.list::<DeploymentSpec>("").await?;
    Ok(deployments
        .items
        .iter()
        .filter(|d| {
            d.spec.manifest[section].as_array().into_iter().flatten().any(|r| {
                keys.iter().any(|k| r[*k].as_str() == Some(name))
                    && match r["version"]
                        .as_str()
                        .map(str::to_string)
                        .or_else(|| r["version"].as_f64().map(|v| v.to_string()))
                    {
                        Some(v) if v == "latest" => is_latest,
                        Some(v) => v == version,
                        None => false,
                    }
            })
        })
        .map(|d| d.metadata.name.clone())
        .collect())
}

/// Whether `version` is the highest of `versions` (BOSH's `latest`).
fn is_latest(version: &str, versions: &[String]) -> bool {
    use bosh_api::release::version::compare;
    versions.iter().all(|v| compare(v, version).is_le())
}

/// Refuses (409) while any deployment uses `name`/`version` of a release
/// or stemcell, naming the deployments.
async fn refuse_if_used(
    st: &ApiState,
    what: &str,
    full: &str,
    section: &str,
    matches: &[(&str, &str)],
    version: &str,
    versions: Vec<String>,
) -> Result<(), ApiError> {
    let latest = is_latest(version, &versions);
    let mut used = Vec::new();
    for (key, name) in matches {
        used.extend(users(st, section, &[key], name, version, latest).await?);
    }
    used.sort();
    used.dedup();
    if used.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        format!("{what} {full} is used by deployment(s) {}", used.join(", ")),
    ))
}

/// `DELETE /v1/releases/<name>/<version>`.
pub(super) async fn delete_release(
    State(st): State<Arc<ApiState>>,
    UrlPath(full): UrlPath<String>,
) -> Result<Json<Removed>, ApiError> {
    let obj: Object<ReleaseSpec> = st.store.get(None, &full).await?;
    let prefix = format!("{}/", obj.spec.name);
    let versions = st.store.list::<ReleaseSpec>(&prefix).await?.items;
    let versions = versions.into_iter().map(|r| r.spec.version).collect();
    let matches = [("name", obj.spec.name.as_str())];
    refuse_if_used(&st, "release", &full, "releases", &matches, &obj.spec.version, versions)
        .await?;
    st.store.delete::<ReleaseSpec>(None, &full, Some(obj.metadata.resource_version)).await?;
    Ok(Json(Removed { deleted: full }))
}

/// `DELETE /v1/stemcells/<name>/<version>`: a stemcell is named in
/// manifests by `name` or by `os`.
pub(super) async fn delete_stemcell(
    State(st): State<Arc<ApiState>>,
    UrlPath(full): UrlPath<String>,
) -> Result<Json<Removed>, ApiError> {
    let obj: Object<StemcellSpec> = st.store.get(None, &full).await?;
    let prefix = format!("{}/", obj.spec.name);
    let versions = st.store.list::<StemcellSpec>(&prefix).await?.items;
    let versions = versions.into_iter().map(|s| s.spec.version).collect();
    let matches = [("name", obj.spec.name.as_str()), ("os", obj.spec.operating_system.as_str())];
    refuse_if_used(&st, "stemcell", &full, "stemcells", &matches, &obj.spec.version, versions)
        .await?;
    st.store.delete::<StemcellSpec>(None, &full, Some(obj.metadata.resource_version)).await?;
    Ok(Json(Removed { deleted: full }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `latest` is decided by numeric parts, not by string order.
    #[test]
    fn is_latest_compares_numerically() {
        let vs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(is_latest("10.0", &vs(&["9.1", "10.0", "2"])));
        assert!(!is_latest("9.1", &vs(&["9.1", "10.0"])));
        assert!(is_latest("0+dev.10", &vs(&["0+dev.9", "0+dev.10"])));
    }
}
