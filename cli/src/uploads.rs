//! Releases and stemcells on the director: `upload-release`,
//! `upload-stemcell`, `releases`, `stemcells`, `inspect-release`,
//! `delete-release`, `delete-stemcell`, and `build-local-stemcell`.
//!
//! Uploads stream the file from disk with a progress bar (bytes and rate);
//! nothing is held whole in memory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bosh_api::Object;
use bosh_api::objects::{ReleaseSpec, StemcellSpec, StemcellStatus};
use bosh_api::wire::{ExportRequest, List, ReleaseUpload, Removed, StemcellUpload, UploadQuery};
use comfy_table::{Table, presets::NOTHING};
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;

use crate::director::{Director, DirectorArgs};

/// Flags of `upload-release`.
#[derive(Debug, clap::Args)]
pub struct UploadReleaseArgs {
    /// A release tarball, a release directory (a dev release is created
    /// from it first) or an http(s) URL; default: the current directory.
    pub release: Option<String>,
    /// Upload the blobs again even if the director has the release.
    #[arg(long)]
    pub fix: bool,
    /// Expected digest of a downloaded tarball (`sha256:<hex>` or sha1 hex).
    #[arg(long)]
    pub sha1: Option<String>,
    /// A PEM file of CA certificates trusted for https URLs, besides the
    /// system's.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Flags of `upload-stemcell`.
#[derive(Debug, clap::Args)]
pub struct UploadStemcellArgs {
    /// A stemcell tarball, or an http(s) URL of one.
    pub stemcell: String,
    /// Expected digest of a downloaded tarball (`sha256:<hex>` or sha1 hex).
    #[arg(long)]
    pub sha1: Option<String>,
    /// A PEM file of CA certificates trusted for https URLs, besides the
    /// system's.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Upload the image again even if the director has the stemcell.
    #[arg(long)]
    pub fix: bool,
    /// Return once the director stored the stemcell, without waiting for
    /// its CPI to import it (by default, as bosh's upload-stemcell, the
    /// command ends when the stemcell can be deployed, or fails with the
    /// CPI's error).
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the CPI's import, in seconds.
    #[arg(long, default_value_t = 900)]
    pub import_timeout: u64,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// A `NAME/VERSION` argument.
#[derive(Debug, clap::Args)]
pub struct NameVersionArgs {
    /// `NAME/VERSION`.
    pub name_version: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Flags of listings.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Flags of `export-release`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// `NAME/VERSION` of the release.
    pub release: String,
    /// `OS/VERSION` of the stemcell to export compiled packages for.
    pub stemcell: String,
    /// Directory to write the tarball into.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Flags of `build-local-stemcell`.
#[derive(Debug, clap::Args)]
pub struct BuildLocalStemcellArgs {
    /// The agent binary (default: `bosh-agent` next to this boshctl).
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// Build an image holding only the agent: the local CPI runs its VMs as
    /// process trees sharing the host's network and root (for tests of
    /// more VMs than a bridge holds). Without it the image is an operating
    /// system: a Debian bookworm root filesystem (debootstrap, cached per
    /// machine) with the agent at /var/vcap/bosh/bin/bosh-agent, whose VMs
    /// are runc containers.
    #[arg(long)]
    pub agent_only: bool,
    /// The default, kept so scripts written for it still run.
    #[arg(long, hide = true, conflicts_with = "agent_only")]
    pub rootfs: bool,
    /// Where root filesystems are cached (default:
    /// $XDG_CACHE_HOME/bosh-rs/stemcells or ~/.cache/bosh-rs/stemcells).
    #[arg(long, conflicts_with = "agent_only")]
    pub cache_dir: Option<PathBuf>,
    /// Stemcell name (default: `bosh-local-debian-bookworm`, or
    /// `bosh-local-ubuntu-jammy-go_agent` with `--agent-only`).
    #[arg(long)]
    pub name: Option<String>,
    /// Stemcell version.
    #[arg(long, default_value = "1")]
    pub version: String,
    /// Operating system the manifest's `stemcells: [{os: ...}]` matches
    /// (default: `debian-bookworm`, or `ubuntu-jammy` with `--agent-only`).
    #[arg(long)]
    pub os: Option<String>,
    /// Where to write the tarball.
    #[arg(long, visible_alias = "output", default_value = "bosh-local-stemcell.tgz")]
    pub out: PathBuf,
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Streams `path` to the director's `endpoint` with a progress bar.
pub(crate) async fn upload<T: DeserializeOwned>(
    d: &Director,
    endpoint: &str,
    fix: bool,
    path: &Path,
    what: &str,
) -> Result<T> {
    let file =
        tokio::fs::File::open(path).await.with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().await?.len();
    let pb = progress(len, what);
    let bar = pb.clone();
    let stream =
        tokio_util::io::ReaderStream::new(file).inspect_ok(move |c| bar.inc(c.len() as u64));
    let body = reqwest::Body::wrap_stream(stream);
    let result = d.post_stream(endpoint, &UploadQuery { fix }, body, len).await;
    pb.finish_and_clear();
    result
}

/// Downloads `url` into `dir` with a progress bar, checking `sha1`
/// (`--sha1`, parsed before any byte is fetched).
pub(crate) async fn download(
    url: &str,
    dir: &Path,
    sha1: Option<&str>,
    ca_cert: Option<&Path>,
) -> Result<PathBuf> {
    let want = sha1.map(crate::fetch::Expected::parse).transpose()?;
    let dest = dir.join("download.tgz");
    let pb = progress(0, "Downloading");
    let bar = pb.clone();
    let r = crate::fetch::download(url, &dest, want.as_ref(), ca_cert, move |total, n| {
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.inc(n);
    })
    .await;
    pb.finish_and_clear();
    r?;
    Ok(dest)
}

/// Runs `upload-release`.
pub async fn upload_release(args: UploadReleaseArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let arg = args.release.clone().unwrap_or_else(|| ".".into());
    let scratch = tempfile::tempdir()?;
    let tarball = if crate::fetch::is_url(&arg) {
        download(&arg, scratch.path(), args.sha1.as_deref(), args.ca_cert.as_deref()).await?
    } else if Path::new(&arg).is_dir() {
        let opts = bosh_api::release::CreateOptions {
            tarball: Some(scratch.path().join("release.tgz")),
            force: true,
            cache_dir: crate::release::cache_dir(),
            ..Default::default()
        };
        let created = bosh_api::release::create_release(Path::new(&arg), &opts)?;
        println!("Created release {}/{}", created.manifest.name, created.manifest.version);
        created.tarball.context("create-release wrote no tarball")?
    } else {
        PathBuf::from(&arg)
    };
    let answer =
        upload(&d, "/v1/uploads/releases", args.fix, &tarball, "Uploading release").await?;
    match answer {
        ReleaseUpload::Existing { release, status } => println!("Release {release}: {status}"),
        ReleaseUpload::Created(r) => println!("Uploaded release {}", r.metadata.name),
    }
    Ok(())
}

/// Runs `upload-stemcell`.
pub async fn upload_stemcell(args: UploadStemcellArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let scratch = tempfile::tempdir()?;
    let file = if crate::fetch::is_url(&args.stemcell) {
        let (sha1, ca) = (args.sha1.as_deref(), args.ca_cert.as_deref());
        download(&args.stemcell, scratch.path(), sha1, ca).await?
    } else {
        PathBuf::from(&args.stemcell)
    };
    let answer = upload(&d, "/v1/uploads/stemcells", args.fix, &file, "Uploading stemcell").await?;
    let name = match answer {
        StemcellUpload::Existing { stemcell, status } => {
            println!("Stemcell {stemcell}: {status}");
            stemcell
        }
        StemcellUpload::Created(s) => {
            println!("Uploaded stemcell {}", s.metadata.name);
            s.metadata.name
        }
    };
    if !args.no_wait {
        wait_for_import(&d, &name, Duration::from_secs(args.import_timeout)).await?;
    }
    Ok(())
}

/// Waits until the director's CPI holds stemcell `name` (its status names
/// a cid) or refused it (its import error, as the command's error).
async fn wait_for_import(d: &Director, name: &str, timeout: Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let s: Object<StemcellSpec> = d.get(&format!("/v1/stemcells/{name}")).await?;
        if let Some((cpi, cid)) = s.status.cids.iter().next() {
            println!("Imported stemcell {name} into CPI {cpi} ({cid})");
            return Ok(());
        }
        if let Some(e) = s.status.import_error() {
            bail!("the CPI refused stemcell {name}: {e}");
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "stemcell {name} was not imported within {} s (see `boshctl stemcells`; --import-timeout)",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(header.to_vec());
    t
}

/// Runs `releases`.
pub async fn releases(args: ListArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let list: List<Object<ReleaseSpec>> = d.get("/v1/releases").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list.items)?);
        return Ok(());
    }
    // COMPILED FOR: the stemcells a compiled release (no package sources)
    // deploys on; empty for a source release, which deploys anywhere.
    let mut t = table(&["NAME", "VERSION", "COMMIT HASH", "JOBS", "PACKAGES", "COMPILED FOR"]);
    for r in list.items {
        let dirty = if r.spec.uncommitted_changes { "+" } else { "" };
        let compiled = r.spec.compiled_only_for().join(",");
        t.add_row([
            r.spec.name,
            r.spec.version,
            format!("{}{dirty}", r.spec.commit_hash),
            r.spec.jobs.len().to_string(),
            r.spec.packages.len().to_string(),
            compiled,
        ]);
    }
    println!("{t}");
    Ok(())
}

/// Runs `stemcells`.
pub async fn stemcells(args: ListArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let list: List<Object<StemcellSpec>> = d.get("/v1/stemcells").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list.items)?);
        return Ok(());
    }
    let mut t = table(&["NAME", "VERSION", "OS", "API", "CIDS", "STATUS"]);
    for s in list.items {
        let cids: Vec<String> = s.status.cids.iter().map(|(c, id)| format!("{c}:{id}")).collect();
        let state = stemcell_state(&s.status);
        t.add_row([
            s.spec.name,
            s.spec.version,
            s.spec.operating_system,
            s.spec.api_version.to_string(),
            cids.join(","),
            state,
        ]);
    }
    println!("{t}");
    Ok(())
}

/// The STATUS column of `stemcells`: the CPI's error when importing failed
/// (otherwise an empty CIDS column would be all the operator sees),
/// `importing` until a CPI holds it, `imported` after.
fn stemcell_state(s: &StemcellStatus) -> String {
    match s.import_error() {
        Some(e) => format!("import failed: {e}"),
        None if s.cids.is_empty() => "importing".into(),
        None => "imported".into(),
    }
}

/// Runs `inspect-release NAME/VERSION`: every job and package with its
/// fingerprint, digest and blob, and the stemcells a package was uploaded
/// compiled for.
pub async fn inspect_release(args: NameVersionArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let r: Object<ReleaseSpec> = d.get(&format!("/v1/releases/{}", args.name_version)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r.spec)?);
        return Ok(());
    }
    let blob = |b: &Option<bosh_api::objects::BlobRef>| {
        b.as_ref().map(|b| b.sha256.clone()).unwrap_or_default()
    };
    let mut jobs = table(&["JOB", "FINGERPRINT", "SHA1", "BLOB (sha256)", "PACKAGES"]);
    for j in &r.spec.jobs {
        jobs.add_row([&j.name, &j.fingerprint, &j.sha1, &blob(&j.blob), &j.packages.join(",")]);
    }
    // A package without a source blob came in a compiled release: it
    // deploys only on the stemcells it was compiled for.
    let mut pkgs =
        table(&["PACKAGE", "FINGERPRINT", "SHA1", "BLOB (sha256)", "DEPENDENCIES", "COMPILED FOR"]);
    for p in &r.spec.packages {
        let source = match &p.blob {
            Some(b) => b.sha256.clone(),
            None => "(no source)".to_string(),
        };
        let row = [&p.name, &p.fingerprint, &p.sha1, &source, &p.dependencies.join(",")];
        let mut row: Vec<String> = row.into_iter().cloned().collect();
        row.push(p.compiled_for.join(","));
        pkgs.add_row(row);
    }
    println!("{jobs}\n\n{pkgs}");
    Ok(())
}

/// Runs `delete-release` or `delete-stemcell`.
pub async fn delete(plural: &str, args: NameVersionArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let removed: Removed = d.delete(&format!("/v1/{plural}/{}", args.name_version), &()).await?;
    println!("Deleted {}", removed.deleted);
    Ok(())
}

/// Runs `export-release`: downloads the compiled release for a stemcell.
pub async fn export_release(args: ExportArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let name =
        format!("{}-{}.tgz", args.release.replace('/', "-"), args.stemcell.replace('/', "-"));
    let dest = args.dir.join(name);
    let body = ExportRequest { release: args.release.clone(), stemcell: args.stemcell.clone() };
    let n = d.post_to_file("/v1/exports/releases", &body, &dest).await;
    if n.is_err() {
        let _ = std::fs::remove_file(&dest);
    }
    println!("Exported {} ({} bytes)", dest.display(), n?);
    Ok(())
}

/// Runs `build-local-stemcell`.
pub fn build_local_stemcell(args: BuildLocalStemcellArgs) -> Result<()> {
    let agent = match &args.agent {
        Some(a) => a.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("boshctl has no directory")?
            .join(bosh_api::local_stemcell::AGENT_BINARY),
    };
    if !agent.is_file() {
        bail!(
            "{}: no agent binary (build it with `cargo build -p bosh-agent`, or pass --agent)",
            agent.display()
        );
    }
    if !args.agent_only {
        return build_rootfs_stemcell(args, &agent);
    }
    let scratch = tempfile::tempdir()?;
    let image = scratch.path().join("image");
    bosh_api::local_stemcell::build_image(&agent, &image)?;
    let manifest = bosh_api::release::stemcell::StemcellManifest {
        name: args.name.unwrap_or_else(|| "bosh-local-ubuntu-jammy-go_agent".into()),
        version: args.version,
        operating_system: args.os.unwrap_or_else(|| "ubuntu-jammy".into()),
        bosh_protocol: "1".into(),
        api_version: Some(3),
        stemcell_formats: vec![bosh_api::local_stemcell::FORMAT.into()],
        ..Default::default()
    };
    let m = bosh_api::release::stemcell::write_stemcell(&args.out, &manifest, &image, None)?;
    println!("Wrote {} ({}/{}, agent {})", args.out.display(), m.name, m.version, agent.display());
    Ok(())
}

/// `build-local-stemcell`: the cached Debian rootfs, packed as the
/// stemcell's image.
fn build_rootfs_stemcell(args: BuildLocalStemcellArgs, agent: &Path) -> Result<()> {
    use bosh_api::local_stemcell::rootfs;
    let cache = match args.cache_dir {
        Some(d) => d,
        None => rootfs::default_cache().context("HOME is not set; pass --cache-dir")?,
    };
    let started = std::time::Instant::now();
    let d = rootfs::Identity::default();
    let id = rootfs::Identity {
        name: args.name.unwrap_or(d.name),
        version: args.version,
        os: args.os.unwrap_or(d.os),
    };
    let (m, fs) =
        rootfs::write_stemcell(agent, &cache, &args.out, &id, |line| eprintln!("{line}"))?;
    if !fs.cached {
        eprintln!("Built {} in {:.0?}", fs.path.display(), started.elapsed());
    }
    println!(
        "Wrote {} ({}/{}, os {}, rootfs {}{})",
        args.out.display(),
        m.name,
        m.version,
        m.operating_system,
        fs.key,
        if fs.cached { ", cached" } else { "" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use bosh_api::Condition;
    use bosh_api::objects::{ConditionType, Reason};

    use super::*;

    /// A failed import shows the CPI's error; otherwise the state follows the cids.
    #[test]
    fn stemcell_state_shows_the_import_error() {
        let mut s = StemcellStatus::default();
        assert_eq!(stemcell_state(&s), "importing");
        s.conditions.push(Condition::new(
            ConditionType::Ready,
            false,
            Reason::ImportFailed,
            "import into CPI local failed: image holds no agent",
            1,
        ));
        assert_eq!(
            stemcell_state(&s),
            "import failed: import into CPI local failed: image holds no agent"
        );
        s.conditions.clear();
        s.cids.insert("local".into(), "sc-1".into());
        assert_eq!(stemcell_state(&s), "imported");
    }
}
