//! The persistent disk: a Disk object (the record of intent) named like its
//! instance, created through the CPI, attached to the VM and mounted at
//! `/var/vcap/store` by the agent; detached before its VM goes, and
//! orphaned — never destroyed — when its instance goes.

use bosh_api::objects::{DiskPhase, DiskSpec, DiskStatus, InstanceSpec};
use bosh_api::store::Store;
use bosh_api::{Object, ObjectMeta};
use tracing::info;

use super::{Error, Instances, patch};
use crate::failpoints as fp;
use crate::runtime::Ctx;

fn cpi(method: &'static str) -> impl FnOnce(crate::world::cpi::CpiError) -> Error {
    move |source| Error::Cpi { method, source }
}

/// A CPI's name as recorded, for messages: `None` is the default CPI,
/// called `default` (its own name).
pub fn cpi_label<'a>(name: Option<&'a str>, default: &'a str) -> &'a str {
    name.unwrap_or(default)
}

async fn set_status(
    store: &Store,
    disk: &mut Object<DiskSpec>,
    edit: impl Fn(&mut DiskStatus),
) -> Result<(), Error> {
    crate::failpoint!(fp::DISK_BEFORE_STATUS_WRITE);
    crate::runtime::status::patch(store, disk, edit).await?;
    Ok(())
}

/// The instance's Disk object, created (intent only) when missing.
async fn object(store: &Store, cur: &Object<InstanceSpec>) -> Result<Object<DiskSpec>, Error> {
    let dep = cur.metadata.deployment.clone().unwrap_or_default();
    if let Some(d) = store.try_get::<DiskSpec>(Some(&dep), &cur.metadata.name).await? {
        return Ok(d);
    }
    let spec = DiskSpec {
        instance: cur.metadata.name.clone(),
        size_mb: cur.spec.persistent_disk_mb,
        disk_type: cur.spec.persistent_disk_type.clone(),
        cloud_properties: cur.spec.persistent_disk_cloud_properties.clone(),
    };
    match store.create(&Object::new(ObjectMeta::scoped(&dep, &cur.metadata.name), spec)).await {
        Ok(d) => Ok(d),
        Err(bosh_api::store::Error::AlreadyExists { .. }) => {
            Ok(store.get::<DiskSpec>(Some(&dep), &cur.metadata.name).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Makes sure the disk exists, is attached to the instance's VM and mounted.
pub async fn ensure(ctx: &Ctx<Instances>, cur: &mut Object<InstanceSpec>) -> Result<(), Error> {
    let d = &ctx.data.director;
    let vm = cur.status.vm_cid.clone().expect("ensure runs with a VM");
    let mut disk = object(&ctx.store, cur).await?;
    // A disk lives in the CPI of the VM it is made beside, and can be
    // attached only to VMs of that CPI (the deployment refuses an AZ move
    // across CPIs before it gets here).
    if disk.status.cid.is_some() && disk.status.cpi != cur.status.cpi {
        return Err(Error::Missing(format!(
            "disk {} is in CPI {} and the VM in CPI {}: a disk cannot move across CPIs",
            disk.metadata.name,
            cpi_label(disk.status.cpi.as_deref(), d.cpi.name()),
            cpi_label(cur.status.cpi.as_deref(), d.cpi.name())
        )));
    }
    let vm_cpi = d
        .fenced_cpi_named(cur.status.cpi.as_deref(), &ctx.fence)
        .await
        .map_err(cpi("cpi_config"))?;
    let cid = match disk.status.cid.clone() {
        Some(cid) => cid,
        None => {
            // The Disk object's uid tags the create, so a retry adopts.
            let request = format!("disk-{}", disk.metadata.uid);
            ctx.store.check_fence().await?;
            let found = vm_cpi.find_disk_by_request(&request).await;
            let cid = match crate::world::cpi::unsupported_as_none(found)
                .map_err(cpi("find_disk_by_request"))?
            {
                Some(cid) => cid,
                None => vm_cpi
                    .create_disk(
                        &request,
                        disk.spec.size_mb,
                        &disk.spec.cloud_properties,
                        Some(&vm),
                    )
                    .await
                    .map_err(cpi("create_disk"))?,
            };
            crate::failpoint!(
                fp::CPI_AFTER_CREATE_DISK,
                Err(cpi("create_disk")(fp::lost_reply("create_disk")))
            );
            info!(instance = %cur.metadata.name, disk = %cid, size_mb = disk.spec.size_mb, "disk created");
            let (c, n) = (cid.clone(), cur.status.cpi.clone());
            set_status(&ctx.store, &mut disk, |s| {
                s.cid = Some(c.clone());
                s.cpi = n.clone();
                s.phase = DiskPhase::Detached;
            })
            .await?;
            cid
        }
    };
    if disk.status.attached_to.as_deref() != Some(vm.as_str())
        || disk.status.phase != DiskPhase::Attached
    {
        ctx.store.check_fence().await?;
        vm_cpi.attach_disk(&vm, &cid).await.map_err(cpi("attach_disk"))?;
        crate::failpoint!(
            fp::CPI_AFTER_ATTACH_DISK,
            Err(cpi("attach_disk")(fp::lost_reply("attach_disk")))
        );
        let v = vm.clone();
        set_status(&ctx.store, &mut disk, |s| {
            s.attached_to = Some(v.clone());
            s.phase = DiskPhase::Attached;
        })
        .await?;
    }
    let agent = d.agents.for_agent(cur.status.agent_id.clone().unwrap_or_default());
    agent.mount_disk(&cid).await.map_err(|source| Error::Agent { step: "mount_disk", source })?;
    patch(&ctx.store, cur, |s| s.disk_cid = Some(cid.clone())).await
}

/// Unmounts (best effort) and detaches the disk from VM `vm`, if attached.
pub async fn detach(
    ctx: &Ctx<Instances>,
    cur: &mut Object<InstanceSpec>,
    vm: &str,
) -> Result<(), Error> {
    let dep = cur.metadata.deployment.clone().unwrap_or_default();
    let Some(mut disk) = ctx.store.try_get::<DiskSpec>(Some(&dep), &cur.metadata.name).await?
    else {
        return Ok(());
    };
    let Some(cid) = disk.status.cid.clone() else { return Ok(()) };
    if disk.status.attached_to.as_deref() != Some(vm) {
        return Ok(());
    }
    let d = &ctx.data.director;
    if let Some(agent) = cur.status.agent_id.as_ref().filter(|_| !cur.status.is_unresponsive()) {
        // The VM goes next: a failed unmount must not keep it.
        let _ = d.agents.for_agent(agent.clone()).unmount_disk(&cid).await;
    }
    // The disk's CPI: the one that made it (and the VM it is attached to).
    let disk_cpi = d
        .fenced_cpi_named(disk.status.cpi.as_deref(), &ctx.fence)
        .await
        .map_err(cpi("cpi_config"))?;
    ctx.store.check_fence().await?;
    match disk_cpi.detach_disk(vm, &cid).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(cpi("detach_disk")(e)),
    }
    crate::failpoint!(
        fp::CPI_AFTER_DETACH_DISK,
        Err(cpi("detach_disk")(fp::lost_reply("detach_disk")))
    );
    set_status(&ctx.store, &mut disk, |s| {
        s.attached_to = None;
        s.phase = DiskPhase::Detached;
    })
    .await?;
    patch(&ctx.store, cur, |s| s.disk_cid = None).await
}

/// Marks the instance's disk orphaned: kept in the IaaS for recovery.
pub async fn orphan(ctx: &Ctx<Instances>, cur: &Object<InstanceSpec>) -> Result<(), Error> {
    let dep = cur.metadata.deployment.clone().unwrap_or_default();
    let Some(mut disk) = ctx.store.try_get::<DiskSpec>(Some(&dep), &cur.metadata.name).await?
    else {
        return Ok(());
    };
    if disk.status.cid.is_none() {
        // A create whose reply was lost is found by its request id;
        // otherwise the disk never existed and its record goes.
        let request = format!("disk-{}", disk.metadata.uid);
        let d = &ctx.data.director;
        // Made (if at all) beside the instance's VM, in its CPI.
        let name = cur.status.cpi.clone().or_else(|| cur.spec.cpi.clone());
        let found = d
            .cpi_named(name.as_deref())
            .await
            .map_err(cpi("cpi_config"))?
            .find_disk_by_request(&request)
            .await;
        match crate::world::cpi::unsupported_as_none(found).map_err(cpi("find_disk_by_request"))? {
            Some(cid) => {
                set_status(&ctx.store, &mut disk, |s| {
                    s.cid = Some(cid.clone());
                    s.cpi = name.clone();
                })
                .await?
            }
            None => {
                ctx.store.delete::<DiskSpec>(Some(&dep), &disk.metadata.name, None).await?;
                return Ok(());
            }
        }
    }
    info!(instance = %cur.metadata.name, disk = ?disk.status.cid, "disk orphaned");
    set_status(&ctx.store, &mut disk, |s| {
        s.attached_to = None;
        s.phase = DiskPhase::Orphaned;
    })
    .await
}
