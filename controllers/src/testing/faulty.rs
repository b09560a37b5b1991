//! A CPI that misbehaves as IaaSes do, on demand (FAULT-MATRIX D2–D4): it
//! passes every call on to a real CPI and, as its [`CpiFaults`] say,
//!
//! - fails a seeded random share of calls with a transient error, before
//!   the call reaches the IaaS (D3);
//! - fails chosen methods permanently, e.g. `create_vm` with "quota
//!   exceeded" (D4);
//! - hides new VMs from reads (`has_vm`, `list_vms`, `find_vm_by_request`)
//!   for a while after their creation, as an eventually consistent API
//!   does (D2);
//! - holds `create_vm` calls until the test lets them go, so a change is
//!   surely in flight when another fault strikes (B6).
//!
//! Every call is logged ([`CallRecord`]) so a test can measure call rates
//! and retry spacing.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::{Rng, SeedableRng};

use bosh_api::store::Fence;

use crate::world::cpi::{Cpi, CpiError, CpiInfo, CpiResult, CreateVm, ListedVm};

/// What to inject. The default injects nothing.
#[derive(Debug, Clone, Default)]
pub struct CpiFaults {
    /// The share of calls (0.0–1.0) failed with a transient error.
    pub transient_rate: f64,
    /// Seeds the choice of calls to fail.
    pub seed: u64,
    /// Methods that fail permanently, with the message they fail with.
    pub permanent: BTreeMap<&'static str, String>,
    /// How long a new VM stays invisible to reads.
    pub hide_new_vms: Duration,
    /// While this reads `true`, `create_vm` calls wait (after being
    /// recorded, before reaching the IaaS).
    pub hold_creates: Option<tokio::sync::watch::Receiver<bool>>,
    /// How many `create_vm` calls make their VM and then lose the reply
    /// (a transient error, as when the CPI process is killed after the
    /// IaaS acted): the caller must adopt the VM, not make a second one.
    pub lose_create_replies: usize,
}

/// One call as the faulty CPI saw it.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// When it was made.
    pub at: Instant,
    /// The method.
    pub method: &'static str,
    /// What it acted on (a cid or request id), if anything.
    pub subject: String,
    /// Whether this CPI failed it on purpose.
    pub injected: bool,
}

struct State {
    faults: CpiFaults,
    rng: rand::rngs::StdRng,
    /// When each VM was created (by cid), and its request id.
    born: HashMap<String, (Instant, String)>,
}

/// See the module documentation.
pub struct FaultyCpi {
    inner: Arc<dyn Cpi>,
    state: Mutex<State>,
    calls: Mutex<Vec<CallRecord>>,
}

impl FaultyCpi {
    /// Wraps `inner`, injecting nothing until [`FaultyCpi::set`].
    pub fn new(inner: Arc<dyn Cpi>) -> FaultyCpi {
        FaultyCpi {
            inner,
            state: Mutex::new(State {
                faults: CpiFaults::default(),
                rng: rand::rngs::StdRng::seed_from_u64(0),
                born: HashMap::new(),
            }),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Injects `faults` from now on (reseeding the random choice).
    pub fn set(&self, faults: CpiFaults) {
        let mut st = self.state.lock().unwrap();
        st.rng = rand::rngs::StdRng::seed_from_u64(faults.seed);
        st.faults = faults;
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.calls.lock().unwrap().clone()
    }

    /// Calls so far.
    pub fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// Records a call and decides whether it fails.
    fn enter(&self, method: &'static str, subject: &str) -> CpiResult<()> {
        let mut st = self.state.lock().unwrap();
        let failure = if let Some(msg) = st.faults.permanent.get(method) {
            Some(CpiError::Permanent { method, message: msg.clone() })
        } else if st.faults.transient_rate > 0.0 {
            let rate = st.faults.transient_rate;
            st.rng.random_bool(rate.min(1.0)).then(|| CpiError::Transient {
                method,
                message: "injected: the IaaS is busy, try again".into(),
            })
        } else {
            None
        };
        drop(st);
        self.calls.lock().unwrap().push(CallRecord {
            at: Instant::now(),
            method,
            subject: subject.to_string(),
            injected: failure.is_some(),
        });
        failure.map_or(Ok(()), Err)
    }

    /// Whether VM `cid` is still hidden from reads.
    fn hidden(&self, cid: &str) -> bool {
        let st = self.state.lock().unwrap();
        let hide = st.faults.hide_new_vms;
        !hide.is_zero() && st.born.get(cid).is_some_and(|(at, _)| at.elapsed() < hide)
    }
}

#[async_trait]
impl Cpi for FaultyCpi {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn info(&self) -> CpiResult<CpiInfo> {
        self.enter("info", "")?;
        self.inner.info().await
    }
    async fn create_stemcell(
        &self,
        fence: Option<&Fence>,
        p: &Path,
        cp: &serde_json::Value,
    ) -> CpiResult<String> {
        self.enter("create_stemcell", "")?;
        self.inner.create_stemcell(fence, p, cp).await
    }
    async fn delete_stemcell(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()> {
        self.enter("delete_stemcell", cid)?;
        self.inner.delete_stemcell(fence, cid).await
    }
    async fn create_vm(&self, fence: Option<&Fence>, req: &CreateVm) -> CpiResult<String> {
        self.enter("create_vm", &req.request_id)?;
        let hold = self.state.lock().unwrap().faults.hold_creates.clone();
        if let Some(mut hold) = hold {
            // A dropped sender lets the call go as well.
            let _ = hold.wait_for(|held| !held).await;
        }
        let cid = self.inner.create_vm(fence, req).await?;
        let mut st = self.state.lock().unwrap();
        st.born.entry(cid.clone()).or_insert_with(|| (Instant::now(), req.request_id.clone()));
        if st.faults.lose_create_replies > 0 {
            st.faults.lose_create_replies -= 1;
            drop(st);
            self.calls.lock().unwrap().push(CallRecord {
                at: Instant::now(),
                method: "create_vm",
                subject: req.request_id.clone(),
                injected: true,
            });
            let message = format!("the reply for {cid} was lost");
            return Err(CpiError::Transient { method: "create_vm", message });
        }
        Ok(cid)
    }
    async fn delete_vm(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()> {
        self.enter("delete_vm", cid)?;
        self.inner.delete_vm(fence, cid).await
    }
    async fn has_vm(&self, cid: &str) -> CpiResult<bool> {
        self.enter("has_vm", cid)?;
        if self.hidden(cid) {
            return Ok(false);
        }
        self.inner.has_vm(cid).await
    }
    async fn reboot_vm(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()> {
        self.enter("reboot_vm", cid)?;
        self.inner.reboot_vm(fence, cid).await
    }
    async fn set_vm_metadata(
        &self,
        fence: Option<&Fence>,
        cid: &str,
        m: &BTreeMap<String, String>,
    ) -> CpiResult<()> {
        self.enter("set_vm_metadata", cid)?;
        self.inner.set_vm_metadata(fence, cid, m).await
    }
    async fn calculate_vm_cloud_properties(
        &self,
        r: &serde_json::Value,
    ) -> CpiResult<serde_json::Value> {
        self.enter("calculate_vm_cloud_properties", "")?;
        self.inner.calculate_vm_cloud_properties(r).await
    }
    async fn find_vm_by_request(&self, id: &str) -> CpiResult<Option<String>> {
        self.enter("find_vm_by_request", id)?;
        Ok(self.inner.find_vm_by_request(id).await?.filter(|cid| !self.hidden(cid)))
    }
    async fn create_disk(
        &self,
        fence: Option<&Fence>,
        id: &str,
        size: u64,
        cp: &serde_json::Value,
        vm: Option<&str>,
    ) -> CpiResult<String> {
        self.enter("create_disk", id)?;
        self.inner.create_disk(fence, id, size, cp, vm).await
    }
    async fn delete_disk(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()> {
        self.enter("delete_disk", cid)?;
        self.inner.delete_disk(fence, cid).await
    }
    async fn has_disk(&self, cid: &str) -> CpiResult<bool> {
        self.enter("has_disk", cid)?;
        self.inner.has_disk(cid).await
    }
    async fn attach_disk(&self, fence: Option<&Fence>, vm: &str, disk: &str) -> CpiResult<()> {
        self.enter("attach_disk", disk)?;
        self.inner.attach_disk(fence, vm, disk).await
    }
    async fn detach_disk(&self, fence: Option<&Fence>, vm: &str, disk: &str) -> CpiResult<()> {
        self.enter("detach_disk", disk)?;
        self.inner.detach_disk(fence, vm, disk).await
    }
    async fn get_disks(&self, vm: &str) -> CpiResult<Vec<String>> {
        self.enter("get_disks", vm)?;
        self.inner.get_disks(vm).await
    }
    async fn resize_disk(&self, fence: Option<&Fence>, cid: &str, size: u64) -> CpiResult<()> {
        self.enter("resize_disk", cid)?;
        self.inner.resize_disk(fence, cid, size).await
    }
    async fn snapshot_disk(
        &self,
        fence: Option<&Fence>,
        cid: &str,
        m: &BTreeMap<String, String>,
    ) -> CpiResult<String> {
        self.enter("snapshot_disk", cid)?;
        self.inner.snapshot_disk(fence, cid, m).await
    }
    async fn delete_snapshot(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()> {
        self.enter("delete_snapshot", cid)?;
        self.inner.delete_snapshot(fence, cid).await
    }
    async fn find_disk_by_request(&self, id: &str) -> CpiResult<Option<String>> {
        self.enter("find_disk_by_request", id)?;
        self.inner.find_disk_by_request(id).await
    }
    async fn list_vms(&self) -> CpiResult<Vec<ListedVm>> {
        self.enter("list_vms", "")?;
        let all = self.inner.list_vms().await?;
        Ok(all.into_iter().filter(|vm| !self.hidden(&vm.cid)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded share of calls fails transiently, the same calls for the
    /// same seed; permanent failures are always; new VMs hide for a while.
    #[tokio::test]
    async fn faults_are_seeded_permanent_and_hiding() {
        let dir = tempfile::tempdir().unwrap();
        let local = crate::world::cpi::local::LocalCpi::open(dir.path()).unwrap();
        let cpi = FaultyCpi::new(Arc::new(local));
        let run = |seed| {
            cpi.set(CpiFaults { transient_rate: 0.3, seed, ..Default::default() });
            (0..200).map(|_| cpi.enter("has_disk", "d").is_err()).collect::<Vec<_>>()
        };
        let (a, b) = (run(7), run(7));
        assert_eq!(a, b, "the same seed fails the same calls");
        let failed = a.iter().filter(|f| **f).count();
        assert!((30..=90).contains(&failed), "about 30% of 200 failed: {failed}");

        let mut permanent = BTreeMap::new();
        permanent.insert("create_disk", "quota exceeded".to_string());
        cpi.set(CpiFaults { permanent, ..Default::default() });
        let e = cpi.create_disk(None, "r", 1, &serde_json::json!({}), None).await.unwrap_err();
        assert!(!e.is_retryable() && e.to_string().contains("quota"), "{e}");

        cpi.set(CpiFaults { hide_new_vms: Duration::from_secs(60), ..Default::default() });
        cpi.state.lock().unwrap().born.insert("vm-1".into(), (Instant::now(), "r".into()));
        assert!(cpi.hidden("vm-1") && !cpi.hidden("vm-2"));
    }
}
