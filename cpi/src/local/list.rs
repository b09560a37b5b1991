//! Listing the local CPI's VMs for cloud-check's orphaned-VM scan.
//!
//! Read from the records on disk: a listing is rare (only when a scan is
//! asked for) and sees every record another replica wrote.

use super::{CpiResult, LocalCpi, io};
use crate::ListedVm;

impl LocalCpi {
    /// Every VM recorded, with its tags.
    pub(super) fn listed_vms(&self) -> CpiResult<Vec<ListedVm>> {
        let inv = super::Inventory::load(&self.root).map_err(io("list_vms"))?;
        Ok(inv.vms.into_iter().map(|(cid, vm)| ListedVm { cid, metadata: vm.metadata }).collect())
    }
}
