//! Listing the local CPI's VMs for cloud-check's orphaned-VM scan.
//!
//! Read fresh from the inventory file rather than through the in-memory
//! inventory: a listing is rare (only when a scan is asked for), must not
//! wait behind a VM being created, and sees every save that completed.

use super::{CpiResult, LocalCpi, io};
use crate::cpi::ListedVm;

impl LocalCpi {
    /// Every VM in the inventory on disk, with its tags.
    pub(super) fn listed_vms(&self) -> CpiResult<Vec<ListedVm>> {
        let inv = super::Inventory::load(&self.root).map_err(io("list_vms"))?;
        Ok(inv.vms.into_iter().map(|(cid, vm)| ListedVm { cid, metadata: vm.metadata }).collect())
    }
}
