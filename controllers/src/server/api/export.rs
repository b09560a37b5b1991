//! `export-release`: a compiled release for one stemcell, built from the
//! release's jobs and the compiled packages in the cache, so it deploys
//! without compiling (and without internet access).
//!
//! `POST /v1/exports/releases` `{"release": "NAME/VERSION", "stemcell": "OS/VERSION"}`
//! answers the tarball. Packages not yet compiled for that stemcell are
//! named in a 409: a deployment using the release compiles them.

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bosh_api::Object;
use bosh_api::objects::{CompiledPackageSpec, ReleaseSpec};
use bosh_api::release::ReleaseManifest;
use bosh_api::release::manifest::{CompiledPackageRef, JobRef};
use bosh_api::wire::ExportRequest;
use bosh_blobstore::Storage;
use tokio::io::AsyncWriteExt;

use super::{ApiError, ApiState};

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Copies a blob to a file.
async fn blob_to_file(
    storage: &Arc<dyn Storage>,
    sha256: &str,
    dest: &Path,
) -> Result<(), ApiError> {
    let (mut reader, _) = storage.get(sha256).await.map_err(internal)?;
    let mut out = tokio::fs::File::create(dest).await.map_err(internal)?;
    tokio::io::copy(&mut reader, &mut out).await.map_err(internal)?;
    out.flush().await.map_err(internal)?;
    Ok(())
}

/// `POST /v1/exports/releases`.
pub(super) async fn export_release(
    State(st): State<Arc<ApiState>>,
    Json(req): Json<ExportRequest>,
) -> Result<Response, ApiError> {
    let (Some(storage), Some(scratch)) = (&st.blobstore, &st.scratch) else {
        return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "this director has no blobstore"));
    };
    let Some((os, sc_version)) = req.stemcell.split_once('/') else {
        return Err(ApiError::invalid(
            "bad stemcell",
            vec![format!("stemcell: expected OS/VERSION, found {:?}", req.stemcell)],
        ));
    };
    let rel: Object<ReleaseSpec> = st.store.get(None, &req.release).await?;
    let keys = crate::reconcilers::compile::plan::keys(&rel.spec.packages, os, sc_version);
    let mut compiled = Vec::new();
    let mut missing = Vec::new();
    for p in &rel.spec.packages {
        match st.store.try_get::<CompiledPackageSpec>(None, &keys[&p.name]).await? {
            Some(c) if c.spec.blob.is_some() => compiled.push((p, c)),
            _ => missing.push(p.name.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "release {} has packages not compiled for {}: {} (deploy it on that stemcell first)",
                req.release,
                req.stemcell,
                missing.join(", ")
            ),
        ));
    }

    std::fs::create_dir_all(scratch).map_err(internal)?;
    let work = tempfile::Builder::new().prefix("export-").tempdir_in(scratch).map_err(internal)?;
    let mut w = bosh_api::archive::TgzWriter::new();
    let mut manifest = ReleaseManifest {
        name: rel.spec.name.clone(),
        version: rel.spec.version.clone(),
        commit_hash: rel.spec.commit_hash.clone(),
        uncommitted_changes: rel.spec.uncommitted_changes,
        ..Default::default()
    };
    for j in &rel.spec.jobs {
        let Some(b) = &j.blob else { return Err(internal(format!("job {} has no blob", j.name))) };
        let path = work.path().join(format!("job-{}.tgz", j.name));
        blob_to_file(storage, &b.sha256, &path).await?;
        w.file(&format!("jobs/{}.tgz", j.name), &path).map_err(internal)?;
        manifest.jobs.push(JobRef {
            name: j.name.clone(),
            version: j.version.clone(),
            fingerprint: j.fingerprint.clone(),
            sha1: format!("sha256:{}", b.sha256),
            packages: j.packages.clone(),
        });
    }
    for (p, c) in &compiled {
        let b = c.spec.blob.as_ref().expect("filtered above");
        let path = work.path().join(format!("pkg-{}.tgz", p.name));
        blob_to_file(storage, &b.sha256, &path).await?;
        w.file(&format!("compiled_packages/{}.tgz", p.name), &path).map_err(internal)?;
        manifest.compiled_packages.push(CompiledPackageRef {
            name: p.name.clone(),
            version: p.version.clone(),
            fingerprint: p.fingerprint.clone(),
            sha1: format!("sha256:{}", b.sha256),
            stemcell: req.stemcell.clone(),
            dependencies: p.dependencies.clone(),
        });
    }
    w.bytes("release.MF", manifest.to_yaml().map_err(internal)?.into_bytes(), false);
    let tarball = work.path().join("release.tgz");
    let t = tarball.clone();
    tokio::task::spawn_blocking(move || w.write_to_path(&t))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let file = tokio::fs::File::open(&tarball).await.map_err(internal)?;
    // The temp dir must outlive the stream; it is removed when the body ends.
    let stream = tokio_util::io::ReaderStream::new(file);
    let guard = work;
    let body = Body::from_stream(futures::StreamExt::map(stream, move |chunk| {
        let _keep = &guard;
        chunk
    }));
    let filename =
        format!("{}-{}-{}.tgz", rel.spec.name, rel.spec.version, req.stemcell.replace('/', "-"));
    Ok((
        [
            ("content-type", "application/gzip".to_string()),
            ("content-disposition", format!("attachment; filename=\"{filename}\"")),
        ],
        body,
    )
        .into_response())
}
