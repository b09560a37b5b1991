//! Leader election per controller, on an etcd lease.
//!
//! Every boshd replica runs every controller, but a controller only works
//! while its replica holds the controller's leader key. Holding it yields a
//! [`Fence`] that the store attaches to every write, so leadership is
//! enforced by etcd itself: a replica that was paused past its lease and
//! resumes believing it still leads cannot change anything. Locally, the
//! term ends (and the workers stop) as soon as a refresh fails or a full
//! TTL passes without one.

use std::time::Duration;

use bosh_api::store::{Fence, LeaseId, Store};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How a replica campaigns.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// Lease TTL; a dead leader is replaced within about this long. etcd
    /// rounds TTLs below its minimum (about 2 s) up.
    pub ttl: Duration,
    /// This replica's identity, stored in the leader key.
    pub holder: String,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            ttl: Duration::from_secs(15),
            holder: format!("boshd-{}", uuid::Uuid::new_v4()),
        }
    }
}

/// One leadership term.
pub struct Term {
    /// Proof of leadership for fenced writes.
    pub fence: Fence,
    /// Cancelled when leadership is lost (or given up).
    pub lost: CancellationToken,
    lease: LeaseId,
    keeper: tokio::task::JoinHandle<()>,
}

impl Drop for Term {
    /// Ends the keep-alive with the term, so a dropped term (a crashed
    /// controller) lets its lease expire instead of holding it forever.
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl Term {
    /// Gives leadership up: deletes the leader key and revokes the lease so
    /// another replica can take over at once instead of after the TTL.
    pub async fn resign(self, store: &Store) {
        self.keeper.abort();
        self.lost.cancel();
        if let Err(e) = store.resign(&self.fence).await {
            warn!(error = %e, "resign failed; the lease will expire");
        }
        let _ = store.revoke_lease(self.lease).await;
    }
}

/// How soon a failed lease refresh is tried again.
const RETRY: Duration = Duration::from_millis(250);

/// How often a follower checks whether the leader key is free.
fn poll_interval(ttl: Duration) -> Duration {
    (ttl / 8).clamp(Duration::from_millis(50), Duration::from_millis(500))
}

/// Campaigns for `election` until this replica leads (`Some`) or
/// `shutdown` fires (`None`). Errors talking to etcd are retried.
pub async fn acquire(
    store: &Store,
    election: &str,
    cfg: &ElectionConfig,
    shutdown: &CancellationToken,
) -> Option<Term> {
    let ttl_secs = cfg.ttl.as_secs().max(1) as i64;
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        match campaign_once(store, election, cfg, ttl_secs).await {
            Ok(Some(term)) => return Some(term),
            Ok(None) => {}
            Err(e) => debug!(election, error = %e, "campaign failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(poll_interval(cfg.ttl)) => {}
        }
    }
}

async fn campaign_once(
    store: &Store,
    election: &str,
    cfg: &ElectionConfig,
    ttl_secs: i64,
) -> bosh_api::store::Result<Option<Term>> {
    // Only take a lease when the key looks free, so followers do not
    // churn leases while a healthy leader holds the key.
    if let Some(l) = store.leader(election).await?
        && l.holder != cfg.holder
    {
        return Ok(None);
    }
    let lease = store.grant_lease(ttl_secs).await?;
    match store.try_acquire(election, &cfg.holder, lease).await {
        Ok(Some(fence)) => {
            info!(election, holder = %cfg.holder, %fence, "acquired leadership");
            let lost = CancellationToken::new();
            let keeper = tokio::spawn(keep(
                store.clone(),
                lease,
                cfg.ttl,
                lost.clone(),
                election.to_string(),
            ));
            Ok(Some(Term { fence, lost, lease, keeper }))
        }
        Ok(None) => {
            let _ = store.revoke_lease(lease).await;
            Ok(None)
        }
        Err(e) => {
            let _ = store.revoke_lease(lease).await;
            Err(e)
        }
    }
}

/// Refreshes the lease every third of the TTL; cancels `lost` when the
/// lease is gone or a full TTL passed without a successful refresh. A
/// failed refresh is tried again after [`RETRY`], not a third of the TTL
/// later, so that a lease outlives an etcd leader election (or a member's
/// death) that is shorter than its TTL (FAULT-MATRIX B1).
async fn keep(
    store: Store,
    lease: LeaseId,
    ttl: Duration,
    lost: CancellationToken,
    election: String,
) {
    let every = ttl / 3;
    let mut last_ok = Instant::now();
    let mut keeper = None;
    let mut wait = every;
    loop {
        tokio::select! {
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        // A process paused past its TTL notices here first, before any
        // refresh could wrongly look successful.
        if last_ok.elapsed() >= ttl {
            break;
        }
        let attempt = async {
            if keeper.is_none() {
                keeper = Some(store.lease_keeper(lease).await?);
            }
            keeper.as_mut().expect("just set").refresh().await
        };
        wait = every.min(RETRY);
        match timeout(every, attempt).await {
            Ok(Ok(granted)) if granted > 0 => {
                last_ok = Instant::now();
                wait = every;
            }
            Ok(Ok(_)) => break,
            Ok(Err(e)) => {
                debug!(election, error = %e, "lease refresh failed");
                keeper = None;
            }
            Err(_) => keeper = None,
        }
        if last_ok.elapsed() >= ttl {
            break;
        }
    }
    warn!(election, "leadership lost");
    lost.cancel();
}
