//! Named failpoints for fault-injection tests (FAULT-MATRIX A2, D1): one
//! after every mutating CPI call of the instance controller and the
//! compile VMs, and one before every status write of the instance
//! controller (Instance and Disk status).
//!
//! They are [`fail`] failpoints, compiled in only with this crate's
//! `failpoints` feature; without it [`failpoint!`] expands to nothing. A
//! test arms one with `fail::cfg(name, "1*panic")` (or `return`, which
//! makes the site fail as if the CPI's reply had been lost after the call
//! took effect) inside a `fail::FailScenario`. Every pass through a
//! failpoint is counted ([`hits`]) whatever its action, so a test can fail
//! when a failpoint it armed was never reached.
//!
//! The store's own failpoints (lost replies, dropped or broken watches;
//! FAULT-MATRIX B2, B3, B5) live with the store, in
//! [`bosh_api::store::failpoints`], and are named per kind; [`hits`]
//! counts them too. This crate's `failpoints` feature turns them on.

/// After `create_vm` of an instance VM returned a cid.
pub const CPI_AFTER_CREATE_VM: &str = "cpi-after-create-vm";
/// After `set_vm_metadata` of an instance VM.
pub const CPI_AFTER_SET_VM_METADATA: &str = "cpi-after-set-vm-metadata";
/// After `delete_vm` of an instance VM.
pub const CPI_AFTER_DELETE_VM: &str = "cpi-after-delete-vm";
/// After `create_disk` (or its adoption by request id).
pub const CPI_AFTER_CREATE_DISK: &str = "cpi-after-create-disk";
/// After `attach_disk`.
pub const CPI_AFTER_ATTACH_DISK: &str = "cpi-after-attach-disk";
/// After `detach_disk`.
pub const CPI_AFTER_DETACH_DISK: &str = "cpi-after-detach-disk";
/// After `create_vm` of a compile VM.
pub const CPI_AFTER_CREATE_COMPILE_VM: &str = "cpi-after-create-compile-vm";
/// After `delete_vm` of a compile VM.
pub const CPI_AFTER_DELETE_COMPILE_VM: &str = "cpi-after-delete-compile-vm";
/// Before every write of an Instance's status by the instance controller.
pub const INSTANCE_BEFORE_STATUS_WRITE: &str = "instance-before-status-write";
/// Before every write of a Disk's status by the instance controller.
pub const DISK_BEFORE_STATUS_WRITE: &str = "disk-before-status-write";

/// The failpoints after CPI calls.
pub const AFTER_CPI_CALLS: [&str; 8] = [
    CPI_AFTER_CREATE_VM,
    CPI_AFTER_SET_VM_METADATA,
    CPI_AFTER_DELETE_VM,
    CPI_AFTER_CREATE_DISK,
    CPI_AFTER_ATTACH_DISK,
    CPI_AFTER_DETACH_DISK,
    CPI_AFTER_CREATE_COMPILE_VM,
    CPI_AFTER_DELETE_COMPILE_VM,
];

/// The failpoints before status writes.
pub const BEFORE_STATUS_WRITES: [&str; 2] =
    [INSTANCE_BEFORE_STATUS_WRITE, DISK_BEFORE_STATUS_WRITE];

#[cfg(feature = "failpoints")]
static HITS: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Counts a pass through failpoint `name` (nothing without the feature).
#[inline]
pub fn hit(name: &'static str) {
    #[cfg(feature = "failpoints")]
    {
        *HITS.lock().unwrap_or_else(|p| p.into_inner()).entry(name).or_default() += 1;
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// How often failpoint `name` (one of this crate's, or a store failpoint
/// of [`bosh_api::store::failpoints`]) was passed in this process (always
/// 0 without the feature).
pub fn hits(name: &str) -> u64 {
    #[cfg(feature = "failpoints")]
    {
        HITS.lock().unwrap_or_else(|p| p.into_inner()).get(name).copied().unwrap_or(0)
            + bosh_api::store::failpoints::hits(name)
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        0
    }
}

/// The error a `return` action makes a site after a CPI call fail with:
/// the call took effect, its reply was lost (FAULT-MATRIX D1).
pub fn lost_reply(method: &'static str) -> crate::world::cpi::CpiError {
    crate::world::cpi::CpiError::Transient {
        method,
        message: "failpoint: the reply was lost".into(),
    }
}

/// A counted [`fail::fail_point!`]: `failpoint!(NAME)` (a `return` action
/// is ignored), or `failpoint!(NAME, value)` to return `value` (evaluated
/// only then) from the enclosing function on a `return` action.
#[macro_export]
macro_rules! failpoint {
    ($name:expr) => {{
        $crate::failpoints::hit($name);
        ::fail::fail_point!($name);
    }};
    ($name:expr, $e:expr) => {{
        $crate::failpoints::hit($name);
        #[cfg(feature = "failpoints")]
        if ::fail::eval($name, |_| ()).is_some() {
            return $e;
        }
    }};
}
