//! `prepare` and `apply`: installing packages and rendered jobs in BOSH's
//! layout.
//!
//! As on a BOSH VM, content lives in versioned directories under
//! `data/packages/<name>/<version>` and `data/jobs/<job>/<hash>`, and
//! `/var/vcap/packages/<name>` and `/var/vcap/jobs/<job>` are symlinks
//! swapped into place by rename. An apply therefore never leaves a
//! half-unpacked job where a process could see it, and re-applying an
//! unchanged package costs nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bosh_api::agent::{ApplySpec, BlobRef, PackageRef};

use crate::archive::{self, Limits};
use crate::context::Agent;
use crate::error::{Error, Result};
use crate::settings::Paths;

/// Downloads and verifies every blob of `spec` into the cache, so that the
/// following `apply` does not wait on the network.
pub async fn prepare(agent: &Arc<Agent>, spec: &ApplySpec) -> Result<()> {
    for p in spec.packages.values() {
        agent.blobs.fetch(&p.blob, &format!("package {}", p.name)).await?;
    }
    if let Some(t) = &spec.rendered_templates_archive {
        agent.blobs.fetch(t, "rendered templates").await?;
    }
    Ok(())
}

/// Installs `spec`'s packages and jobs, removes what it no longer lists,
/// records it as the applied spec and reloads the supervisor.
pub async fn apply(agent: &Arc<Agent>, spec: ApplySpec) -> Result<()> {
    let _l = agent.lifecycle.lock().await;
    let paths = &agent.paths;
    paths.create_layout()?;
    for p in spec.packages.values() {
        install_package(agent, p).await?;
    }
    if let Some(t) = &spec.rendered_templates_archive {
        install_jobs(agent, &spec, t).await?;
    } else if !spec.jobs.is_empty() {
        return Err(Error::Arguments {
            method: "apply",
            message: "spec lists jobs but has no rendered_templates_archive".into(),
        });
    }
    let jobs: Vec<String> = spec.jobs.iter().map(|j| j.name.clone()).collect();
    let pkgs: Vec<String> = spec.packages.keys().cloned().collect();
    remove_unlisted(&paths.jobs(), &jobs)?;
    remove_unlisted(&paths.packages(), &pkgs)?;
    let file = paths.spec_file();
    let bytes = serde_json::to_vec_pretty(&spec).expect("spec serializes");
    write_atomic(&file, &bytes)?;
    let config = spec.configuration_hash.clone();
    *agent.spec.lock().expect("lock") = Some(spec);
    agent.supervisor.load(&jobs).await?;
    // Only now, with the new processes' definitions loaded, is old content unused.
    prune_versions(&paths.data().join("jobs"), &paths.jobs());
    prune_versions(&paths.data().join("packages"), &paths.packages());
    let _ = std::fs::remove_dir_all(paths.blob_cache());
    tracing::info!(jobs = ?jobs, packages = ?pkgs, %config, "applied");
    Ok(())
}

/// Removes versions under `store/<name>/` that `links/<name>` does not
/// point at, and names with no link at all, so repeated applies do not
/// fill the ephemeral disk. Best effort: a leftover is retried next time.
fn prune_versions(store: &Path, links: &Path) {
    let Ok(names) = std::fs::read_dir(store) else { return };
    for name in names.flatten() {
        let current = std::fs::read_link(links.join(name.file_name())).ok();
        let Ok(versions) = std::fs::read_dir(name.path()) else { continue };
        for v in versions.flatten() {
            if current.as_deref() != Some(v.path().as_path()) {
                let _ = std::fs::remove_dir_all(v.path());
            }
        }
        let _ = std::fs::remove_dir(name.path()); // only succeeds when now empty
    }
}

/// Installs one package at `packages/<name>` (a no-op when that version is
/// already in place).
pub async fn install_package(agent: &Agent, p: &PackageRef) -> Result<()> {
    check_name("package", &p.name)?;
    let version = if p.version.is_empty() { &p.blob.sha256 } else { &p.version };
    check_name("package version", version)?;
    let dir = agent.paths.data().join("packages").join(&p.name).join(version);
    if !dir.join(".bosh-complete").exists() {
        let blob = agent.blobs.fetch(&p.blob, &format!("package {}", p.name)).await?;
        unpack_fresh(&agent.paths, &blob, &dir, format!("package {}", p.name)).await?;
    }
    swap_symlink(&agent.paths.packages().join(&p.name), &dir)
}

async fn install_jobs(agent: &Agent, spec: &ApplySpec, archive_ref: &BlobRef) -> Result<()> {
    let paths = &agent.paths;
    let blob = agent.blobs.fetch(archive_ref, "rendered templates").await?;
    let staging = paths.tmp().join(format!("templates-{}", uuid::Uuid::new_v4()));
    unpack_fresh(paths, &blob, &staging, "rendered templates".into()).await?;
    let result = async {
        for job in &spec.jobs {
            check_name("job", &job.name)?;
            let src = staging.join(&job.name);
            if !src.is_dir() {
                return Err(Error::Archive {
                    name: "rendered templates".into(),
                    source: format!("no directory for job {}", job.name).into(),
                });
            }
            make_bin_executable(&src)?;
            restrict_modes(&src)?;
            let hash = if spec.configuration_hash.is_empty() {
                &archive_ref.sha256
            } else {
                &spec.configuration_hash
            };
            check_name("configuration hash", hash)?;
            let dest = paths.data().join("jobs").join(&job.name).join(hash);
            if dest.exists() {
                std::fs::remove_dir_all(&dest).map_err(Error::io("remove", &dest))?;
            }
            std::fs::create_dir_all(dest.parent().expect("has parent"))
                .map_err(Error::io("create", &dest))?;
            std::fs::rename(&src, &dest).map_err(Error::io("move", &src))?;
            swap_symlink(&paths.job(&job.name), &dest)?;
            std::fs::create_dir_all(paths.sys_log().join(&job.name))
                .map_err(Error::io("create", paths.sys_log()))?;
            std::fs::create_dir_all(paths.sys_run().join(&job.name))
                .map_err(Error::io("create", paths.sys_run()))?;
        }
        Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// Unpacks `blob` into `dir` from scratch and marks it complete.
async fn unpack_fresh(paths: &Paths, blob: &Path, dir: &Path, name: String) -> Result<()> {
    let tmp = paths.tmp().join(format!("unpack-{}", uuid::Uuid::new_v4()));
    let (b, t) = (blob.to_path_buf(), tmp.clone());
    let unpacked =
        tokio::task::spawn_blocking(move || archive::unpack_tgz(&b, &t, &Limits::default(), &name))
            .await
            .expect("unpack does not panic");
    if let Err(e) = unpacked {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    std::fs::write(tmp.join(".bosh-complete"), "").map_err(Error::io("write", &tmp))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(Error::io("remove", dir))?;
    }
    std::fs::create_dir_all(dir.parent().expect("has parent")).map_err(Error::io("create", dir))?;
    std::fs::rename(&tmp, dir).map_err(Error::io("move", &tmp))
}

/// Points `link` at `target`, replacing whatever was there by rename.
pub fn swap_symlink(link: &Path, target: &Path) -> Result<()> {
    let tmp = link.with_file_name(format!(
        ".{}.{}",
        link.file_name().and_then(|n| n.to_str()).unwrap_or("link"),
        uuid::Uuid::new_v4()
    ));
    std::os::unix::fs::symlink(target, &tmp).map_err(Error::io("symlink", &tmp))?;
    if let Ok(m) = std::fs::symlink_metadata(link)
        && m.is_dir()
    {
        std::fs::remove_dir_all(link).map_err(Error::io("remove", link))?;
    }
    std::fs::rename(&tmp, link).map_err(Error::io("rename", &tmp))
}

/// Removes entries of `dir` not named in `keep` (jobs and packages no
/// longer in the spec).
fn remove_unlisted(dir: &Path, keep: &[String]) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Ok(()) };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if keep.contains(&name) {
            continue;
        }
        let p = e.path();
        let is_link = e.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        let r = if is_link || !p.is_dir() {
            std::fs::remove_file(&p)
        } else {
            std::fs::remove_dir_all(&p)
        };
        r.map_err(Error::io("remove", &p))?;
    }
    Ok(())
}

/// BOSH installs `bin/*` executable whatever the archive says.
fn make_bin_executable(job_dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let bin = job_dir.join("bin");
    let Ok(rd) = std::fs::read_dir(&bin) else { return Ok(()) };
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            let p = e.path();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                .map_err(Error::io("chmod", &p))?;
        }
    }
    Ok(())
}

/// Rendered templates hold credentials: like bosh-agent (which makes job
/// directories root:vcap, 0750 and 0640), take every permission from
/// others and write from the group. Directories become 0750; files keep
/// their owner and group read and exec bits (`bin/*`: 0750, the rest
/// usually 0640). Symlinks are not followed.
fn restrict_modes(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir).map_err(Error::io("stat", dir))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.is_dir() {
        for e in std::fs::read_dir(dir).map_err(Error::io("read", dir))? {
            restrict_modes(&e.map_err(Error::io("read", dir))?.path())?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
            .map_err(Error::io("chmod", dir))
    } else {
        let mode = meta.permissions().mode() & 0o750;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(Error::io("chmod", dir))
    }
}

/// Names become path components: refuse anything that is not one plain
/// name, by the same rule the director checked at upload
/// ([`bosh_api::names`]), so what the director accepted the agent accepts.
pub fn check_name(what: &'static str, name: &str) -> Result<()> {
    bosh_api::names::check_name(name).map_err(|e| Error::Arguments {
        method: "apply",
        message: format!("invalid {what} name: {e}"),
    })
}

/// Writes a file by rename so readers never see half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp: PathBuf = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
    std::fs::write(&tmp, bytes).map_err(Error::io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io("rename", &tmp))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names that could leave their directory are refused.
    #[test]
    fn path_like_names_are_refused() {
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a b"] {
            assert!(check_name("job", bad).is_err(), "{bad:?}");
        }
        for good in ["web", "nginx-1.2", "pkg_a", "c++"] {
            check_name("job", good).unwrap();
        }
    }

    /// Swapping a symlink replaces an old link and an old plain directory.
    #[test]
    fn symlink_swap_replaces_links_and_directories() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, link) = (d.path().join("a"), d.path().join("b"), d.path().join("link"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::create_dir_all(&link).unwrap();
        swap_symlink(&link, &a).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), a);
        swap_symlink(&link, &b).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), b);
    }
}
