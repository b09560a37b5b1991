//! Release-engineering verbs that work on a local release directory or
//! tarball, with the bosh CLI's names and flags: `init-release`,
//! `generate-job`, `generate-package`, `add-blob`, `blobs`, `sync-blobs`,
//! `upload-blobs`, `create-release`, `finalize-release` and
//! `inspect-local-release`. Uploads to boshd come with its API.
//!
//! The blob verbs, `create-release` and `finalize-release` reach the
//! release's blobstore (blobs and final builds alike) through
//! [`open_blobstore`]: `local` is bosh-api's, `s3` is [`s3`]'s, `gcs` is
//! [`gcs`]'s, with what those two share in [`remote`] (network and TLS
//! live in this crate, the digest checks and `config/blobs.yml` /
//! `.final_builds` bookkeeping in bosh-api's `release`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use bosh_api::release::{
    self as rel, CreateOptions,
    blobs::{Blobstore, LocalBlobstore, add_blob, sync_blobs_with, upload_blobs_with},
    config::{FinalConfig, read_blobs},
    generate,
};

mod gcs;
mod remote;
mod s3;
mod show;

/// The release's blobstore from `config/final.yml` (+ `config/private.yml`):
/// `local`, `s3` or `gcs`; any other provider is refused naming the option.
pub(crate) fn open_blobstore(dir: &Path) -> rel::Result<Box<dyn Blobstore>> {
    let bs = FinalConfig::read(dir)?.blobstore(dir)?;
    let store: Result<Box<dyn Blobstore>, Box<dyn std::error::Error + Send + Sync>> =
        match bs.provider.as_str() {
            "local" => return Ok(Box::new(LocalBlobstore::from_config(dir, &bs)?)),
            "s3" => match s3::S3Blobstore::new(&bs.options) {
                Ok(s) => Ok(Box::new(s)),
                Err(s3::S3Error::Option(o)) => return Err(option_error(o)),
                Err(e) => Err(e.into()),
            },
            "gcs" => match gcs::GcsBlobstore::new(&bs.options) {
                Ok(s) => Ok(Box::new(s)),
                Err(gcs::GcsError::Option(o)) => return Err(option_error(o)),
                Err(e) => Err(e.into()),
            },
            other => {
                return Err(rel::Error::entry(
                    remote::FINAL_YML,
                    "blobstore.provider",
                    format!(
                        "provider '{other}' is not supported by boshctl (supported: local, s3, gcs)"
                    ),
                ));
            }
        };
    store.map_err(|error| rel::Error::Blobstore { blob: "blobstore".into(), error })
}

/// A provider's option mistake as bosh-api names entries of a file.
fn option_error(o: remote::BadOption) -> rel::Error {
    rel::Error::entry(o.file, format!("blobstore.options.{}", o.key), o.message)
}

/// `--dir`: the release directory (default: the current one).
#[derive(Debug, Clone, clap::Args)]
pub struct DirArg {
    /// Release directory path if not the current working directory.
    #[arg(long = "dir", value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

/// Flags of `init-release`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Also `git init` the directory and write a `.gitignore`.
    #[arg(long)]
    git: bool,
}

/// Flags of `generate-job` and `generate-package`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// The job's or package's name.
    name: String,
    #[command(flatten)]
    dir: DirArg,
}

/// Flags of `add-blob`.
#[derive(Debug, clap::Args)]
pub struct AddBlobArgs {
    /// The file to add.
    path: PathBuf,
    /// Where it goes under `blobs/` (e.g. `python/Python-3.12.tgz`).
    blob_path: String,
    #[command(flatten)]
    dir: DirArg,
}

/// Flags of `create-release`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// A recorded release (`dev_releases/<n>/<n>-<v>.yml`) to write a tarball of, instead of building.
    #[arg(value_name = "PATH")]
    manifest: Option<PathBuf>,
    #[command(flatten)]
    dir: DirArg,
    /// Custom release name (default: `config/final.yml`'s).
    #[arg(long)]
    name: Option<String>,
    /// Custom release version (e.g. 1.0.0, 1.0-beta.2+dev.10).
    #[arg(long)]
    version: Option<String>,
    /// Use the timestamp as the dev version (e.g. 1+dev.TIMESTAMP).
    #[arg(long = "timestamp-version")]
    timestamp_version: bool,
    /// Make it a final release.
    #[arg(long = "final")]
    final_release: bool,
    /// Write the release tarball here (`((name))` and `((version))` are substituted).
    #[arg(long, value_name = "PATH")]
    tarball: Option<PathBuf>,
    /// Ignore the git dirty-state check.
    #[arg(long)]
    force: bool,
}

/// Flags of `finalize-release`.
#[derive(Debug, clap::Args)]
pub struct FinalizeArgs {
    /// The release tarball to finalize.
    tarball: PathBuf,
    #[command(flatten)]
    dir: DirArg,
    /// Custom release name.
    #[arg(long)]
    name: Option<String>,
    /// Custom release version (default: the next final version).
    #[arg(long)]
    version: Option<String>,
    /// Ignore the git dirty-state check.
    #[arg(long)]
    force: bool,
}

/// Flags of `inspect-local-release`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The release tarball.
    tarball: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// Where built tarballs are cached, like bosh-cli's `~/.bosh/cache`.
pub(crate) fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".bosh/cache")
}

fn ctx(dir: &Path) -> String {
    format!("release directory {}", dir.display())
}

/// `init-release`.
pub fn init(a: InitArgs) -> anyhow::Result<()> {
    generate::init_release(&a.dir.dir, a.git).with_context(|| ctx(&a.dir.dir))?;
    println!("Succeeded");
    Ok(())
}

/// `generate-job`.
pub fn generate_job(a: GenerateArgs) -> anyhow::Result<()> {
    generate::generate_job(&a.dir.dir, &a.name).with_context(|| ctx(&a.dir.dir))?;
    println!("Succeeded");
    Ok(())
}

/// `generate-package`.
pub fn generate_package(a: GenerateArgs) -> anyhow::Result<()> {
    generate::generate_package(&a.dir.dir, &a.name).with_context(|| ctx(&a.dir.dir))?;
    println!("Succeeded");
    Ok(())
}

/// `add-blob`.
pub fn add(a: AddBlobArgs) -> anyhow::Result<()> {
    let e = add_blob(&a.dir.dir, &a.path, &a.blob_path).with_context(|| ctx(&a.dir.dir))?;
    println!("Added blob '{}' ({} bytes, {})", a.blob_path, e.size, e.sha);
    Ok(())
}

/// `blobs`: the blobs `config/blobs.yml` tracks.
pub fn blobs(a: DirArg) -> anyhow::Result<()> {
    let index = read_blobs(&a.dir).with_context(|| ctx(&a.dir))?;
    show::blobs(&index);
    Ok(())
}

/// `sync-blobs`: fetches missing blobs from the release's blobstore.
pub fn sync(a: DirArg) -> anyhow::Result<()> {
    let index = sync_blobs_with(&a.dir, &open_blobstore).with_context(|| ctx(&a.dir))?;
    println!("Synced {} blob(s)", index.len());
    Ok(())
}

/// `upload-blobs`: stores blobs without an object id in the release's blobstore.
pub fn upload(a: DirArg) -> anyhow::Result<()> {
    let n = upload_blobs_with(&a.dir, &open_blobstore).with_context(|| ctx(&a.dir))?;
    println!("Uploaded {n} blob(s)");
    Ok(())
}

/// `create-release`.
pub fn create(a: CreateArgs) -> anyhow::Result<()> {
    if let Some(manifest) = &a.manifest {
        let file = manifest.display().to_string();
        let m = match &a.tarball {
            Some(t) => rel::create::write_recorded_release_with(
                &a.dir.dir,
                manifest,
                &cache_dir(),
                t,
                &open_blobstore,
            ),
            None => std::fs::read_to_string(manifest)
                .map_err(|source| rel::Error::Io { path: manifest.clone(), source })
                .and_then(|src| rel::ReleaseManifest::parse(&src, &file)),
        }
        .with_context(|| format!("failed to use recorded release {file}"))?;
        show::release(&m, a.tarball.as_deref());
        return Ok(());
    }
    let opts = CreateOptions {
        name: a.name,
        version: a.version,
        final_release: a.final_release,
        tarball: a.tarball,
        force: a.force,
        timestamp_version: a.timestamp_version,
        cache_dir: cache_dir(),
    };
    let created = rel::create_release_with(&a.dir.dir, &opts, &open_blobstore)
        .with_context(|| ctx(&a.dir.dir))?;
    show::release(&created.manifest, created.tarball.as_deref());
    Ok(())
}

/// `finalize-release`.
pub fn finalize(a: FinalizeArgs) -> anyhow::Result<()> {
    let created = rel::finalize_release_with(
        &a.dir.dir,
        &a.tarball,
        a.name.as_deref(),
        a.version.as_deref(),
        a.force,
        &open_blobstore,
    )
    .with_context(|| format!("failed to finalize {}", a.tarball.display()))?;
    show::release(&created.manifest, None);
    Ok(())
}

/// `inspect-local-release`: verifies a tarball and lists its jobs and packages.
pub fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir().context("failed to create a temp dir")?;
    let archive =
        rel::read_release_tarball(&a.tarball, &scratch.path().join("r"), &Default::default())
            .with_context(|| format!("failed to read release tarball {}", a.tarball.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&show::json(&archive))?);
    } else {
        show::release(&archive.manifest, Some(&a.tarball));
    }
    Ok(())
}
