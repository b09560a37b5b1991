//! Leases, leader keys and fencing tokens.
//!
//! A controller leads while its leader key `<root>/leases/<name>` exists,
//! bound to its lease. The key's create revision is the fencing token: it
//! only grows across elections, and once the lease expires the key is gone,
//! so a [`Fence`] compare in a write transaction refuses every write from a
//! leader that has been replaced or has lost its lease — even one that was
//! paused and does not yet know it.

use std::fmt;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::{Error, Result, Store};

/// An etcd lease id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

/// Proof of leadership, checked by every fenced write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The leader key.
    pub key: String,
    /// The leader key's create revision: the fencing token.
    pub revision: i64,
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.key, self.revision)
    }
}

/// Who holds a leader key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The holder's identity, as it campaigned.
    pub holder: String,
    /// The fence the holder writes with.
    pub fence: Fence,
    /// The lease the key is bound to.
    pub lease: LeaseId,
}

/// Refreshes one lease over a long-lived keep-alive stream.
pub struct LeaseKeeper {
    keeper: etcd_client::LeaseKeeper,
    stream: etcd_client::LeaseKeepAliveStream,
}

impl LeaseKeeper {
    /// Refreshes the lease; returns the TTL granted, 0 when the lease has
    /// already expired (leadership is then lost for good).
    pub async fn refresh(&mut self) -> Result<i64> {
        self.keeper.keep_alive().await.map_err(Error::etcd("lease keep-alive"))?;
        match self.stream.message().await.map_err(Error::etcd("lease keep-alive"))? {
            Some(resp) => Ok(resp.ttl()),
            None => Ok(0),
        }
    }
}

impl Store {
    /// The leader key of an election.
    pub fn leader_key(&self, election: &str) -> String {
        format!("{}/leases/{election}", self.root)
    }

    /// Grants a lease of `ttl_secs` seconds.
    pub async fn grant_lease(&self, ttl_secs: i64) -> Result<LeaseId> {
        let resp =
            self.client().lease_grant(ttl_secs, None).await.map_err(Error::etcd("lease grant"))?;
        Ok(LeaseId(resp.id()))
    }

    /// Opens a keep-alive stream for `lease`.
    pub async fn lease_keeper(&self, lease: LeaseId) -> Result<LeaseKeeper> {
        let (keeper, stream) = self
            .client()
            .lease_keep_alive(lease.0)
            .await
            .map_err(Error::etcd("lease keep-alive"))?;
        Ok(LeaseKeeper { keeper, stream })
    }

    /// Revokes a lease, deleting every key bound to it.
    pub async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        match self.client().lease_revoke(lease.0).await {
            Ok(_) => Ok(()),
            // Already expired: the outcome the caller wanted.
            Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("not found") => Ok(()),
            Err(e) => Err(Error::Etcd { op: "lease revoke", source: e }),
        }
    }

    /// Tries to become leader of `election` as `holder`, binding the leader
    /// key to `lease`. Returns the fence when this caller leads (also when
    /// it already led with the same lease), `None` when someone else does.
    pub async fn try_acquire(
        &self,
        election: &str,
        holder: &str,
        lease: LeaseId,
    ) -> Result<Option<Fence>> {
        let key = self.leader_key(election);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                holder,
                Some(PutOptions::new().with_lease(lease.0)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self.client().txn(txn).await.map_err(Error::etcd("campaign"))?;
        if resp.succeeded() {
            let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
            return Ok(Some(Fence { key, revision }));
        }
        let existing = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        });
        Ok(existing
            .filter(|kv| kv.value() == holder.as_bytes() && kv.lease() == lease.0)
            .map(|kv| Fence { key, revision: kv.create_revision() }))
    }

    /// Who leads `election` now, if anyone.
    pub async fn leader(&self, election: &str) -> Result<Option<Leader>> {
        let key = self.leader_key(election);
        let resp = self.client().get(key.clone(), None).await.map_err(Error::etcd("get leader"))?;
        Ok(resp.kvs().first().map(|kv| Leader {
            holder: String::from_utf8_lossy(kv.value()).into_owned(),
            fence: Fence { key: key.clone(), revision: kv.create_revision() },
            lease: LeaseId(kv.lease()),
        }))
    }

    /// Whether `fence` holds now, read linearizably and writing nothing:
    /// the etcd revision of the read when its leader key exists with the
    /// fence's create revision, [`Error::Fenced`] when the key is gone or
    /// was created again (another term began). Unlike
    /// [`Store::check_fence`] it takes the fence as an argument, so a
    /// component that is handed a caller's token (the local CPI, admitting
    /// a call) can check it, and the revision returned dates the check.
    pub async fn fence_revision(&self, fence: &Fence) -> Result<i64> {
        let resp =
            self.client().get(fence.key.clone(), None).await.map_err(Error::etcd("check fence"))?;
        let current = resp.kvs().first().map(|kv| kv.create_revision());
        if current != Some(fence.revision) {
            return Err(Error::Fenced { fence: fence.clone() });
        }
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Steps down: deletes the leader key if `fence` still owns it.
    pub async fn resign(&self, fence: &Fence) -> Result<()> {
        let txn = Txn::new()
            .when([Compare::create_revision(fence.key.clone(), CompareOp::Equal, fence.revision)])
            .and_then([TxnOp::delete(fence.key.clone(), None)]);
        self.client().txn(txn).await.map_err(Error::etcd("resign"))?;
        Ok(())
    }
}
