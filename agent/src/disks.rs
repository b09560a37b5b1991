//! Persistent disks with local semantics: a disk is a directory (named in
//! the settings' `disks.persistent`, which the CPI rewrites on attach), and
//! mounting it makes it visible at `/var/vcap/store` as a symlink. What is
//! mounted is read back from that symlink, so it survives agent restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::apply::swap_symlink;
use crate::context::Agent;
use crate::error::{Error, Result};

fn disk_path(agent: &Agent, cid: &str) -> Result<PathBuf> {
    let settings = agent.current_settings();
    let path = settings.disks.persistent.get(cid).ok_or_else(|| Error::Disk {
        cid: cid.into(),
        message: "not attached (not in the settings' disks.persistent)".into(),
    })?;
    let path = PathBuf::from(path);
    std::fs::create_dir_all(&path).map_err(Error::io("create", &path))?;
    Ok(path)
}

/// Makes disk `cid` visible at `/var/vcap/store`.
pub async fn mount(agent: &Arc<Agent>, cid: &str) -> Result<()> {
    let _l = agent.lifecycle.lock().await;
    let path = disk_path(agent, cid)?;
    let store = agent.paths.store();
    match std::fs::symlink_metadata(&store) {
        Ok(m) if m.file_type().is_symlink() => {
            if std::fs::read_link(&store).ok().as_deref() == Some(path.as_path()) {
                return Ok(()); // already mounted: mount is idempotent
            }
            return Err(Error::Disk {
                cid: cid.into(),
                message: "another disk is mounted at /var/vcap/store".into(),
            });
        }
        Ok(m) if m.is_dir() => {
            // An empty mount point is replaced; data there would be hidden.
            std::fs::remove_dir(&store).map_err(|_| Error::Disk {
                cid: cid.into(),
                message: "/var/vcap/store is a non-empty directory".into(),
            })?;
        }
        _ => {}
    }
    swap_symlink(&store, &path)?;
    tracing::info!(disk = cid, "mounted");
    Ok(())
}

/// Hides disk `cid` again (an empty `/var/vcap/store` stays behind).
pub async fn unmount(agent: &Arc<Agent>, cid: &str) -> Result<()> {
    let _l = agent.lifecycle.lock().await;
    if !list(agent).iter().any(|c| c == cid) {
        return Ok(()); // not mounted: nothing to do
    }
    let store = agent.paths.store();
    std::fs::remove_file(&store).map_err(Error::io("remove", &store))?;
    std::fs::create_dir_all(&store).map_err(Error::io("create", &store))?;
    tracing::info!(disk = cid, "unmounted");
    Ok(())
}

/// The CIDs of mounted disks.
pub fn list(agent: &Agent) -> Vec<String> {
    let Ok(target) = std::fs::read_link(agent.paths.store()) else { return Vec::new() };
    agent
        .current_settings()
        .disks
        .persistent
        .into_iter()
        .filter(|(_, p)| Path::new(p) == target)
        .map(|(cid, _)| cid)
        .collect()
}

/// Copies disk `old`'s contents onto disk `new` and mounts `new` instead.
pub async fn migrate(agent: &Arc<Agent>, old: &str, new: &str) -> Result<()> {
    let (from, to) = (disk_path(agent, old)?, disk_path(agent, new)?);
    let (f, t) = (from.clone(), to.clone());
    tokio::task::spawn_blocking(move || copy_tree(&f, &t)).await.expect("copy does not panic")?;
    unmount(agent, old).await?;
    mount(agent, new).await?;
    tracing::info!(from = old, to = new, "migrated disk");
    Ok(())
}

/// Copies a directory tree, keeping modes and symlinks as symlinks.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(Error::io("create", to))?;
    for e in std::fs::read_dir(from).map_err(Error::io("read", from))? {
        let e = e.map_err(Error::io("read", from))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().map_err(Error::io("stat", &src))?;
        if ft.is_symlink() {
            let target = std::fs::read_link(&src).map_err(Error::io("read link", &src))?;
            let _ = std::fs::remove_file(&dst);
            std::os::unix::fs::symlink(target, &dst).map_err(Error::io("symlink", &dst))?;
        } else if ft.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(Error::io("copy", &src))?;
        }
    }
    Ok(())
}
