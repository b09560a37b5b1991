//! Failpoints in the store's etcd path, for the fault matrix's etcd
//! scenarios (FAULT-MATRIX B2, B3, B5), in the manner of the controllers'
//! (`bosh_controllers::failpoints`): [`fail`] failpoints, compiled in only
//! with this crate's `failpoints` feature (without it every check is
//! `false` and costs nothing).
//!
//! Each one is armed per kind: its name is a base below followed by
//! `/<plural>` (and for [`REPLY_LOST`], `/<operation>`), e.g.
//! `store-reply-lost/instances/status` or
//! `store-watch-drop-events/configs`, so a test can aim at one controller's
//! objects. Only a `return` action makes a site misbehave. Every pass is
//! counted ([`hits`]), so a test can tell a failpoint it armed was reached.
//!
//! Why failpoints and not a TCP proxy: etcd's traffic is TLS gRPC with
//! every call multiplexed on one HTTP/2 connection, so a proxy can drop
//! the connection but cannot drop only the watch events in it, nor only
//! the reply of one committed transaction.

/// `store-reply-lost/<plural>/<op>`, `<op>` one of `create`, `spec`,
/// `status`, `delete`: the transaction committed, then its reply is lost
/// (the write reports an etcd error although it took effect).
pub const REPLY_LOST: &str = "store-reply-lost";
/// `store-watch-drop-events/<plural>`: a watch response's events are
/// swallowed (the connection stays open and later responses flow).
pub const WATCH_DROP_EVENTS: &str = "store-watch-drop-events";
/// `store-watch-break/<plural>`: a watch session ends as if its
/// connection broke, before the response's events are applied (the watch
/// resumes from the last revision it applied, relisting if compacted).
pub const WATCH_BREAK: &str = "store-watch-break";

/// The failpoint `base` for the kind stored as `plural`.
pub fn for_kind(base: &str, plural: &str) -> String {
    format!("{base}/{plural}")
}

#[cfg(feature = "failpoints")]
static HITS: std::sync::Mutex<std::collections::BTreeMap<String, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// How often failpoint `name` (a full name, with its kind) was passed in
/// this process (always 0 without the feature).
pub fn hits(name: &str) -> u64 {
    #[cfg(feature = "failpoints")]
    {
        HITS.lock().unwrap_or_else(|p| p.into_inner()).get(name).copied().unwrap_or(0)
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        0
    }
}

/// Counts a pass through the failpoint `name()` and says whether a
/// `return` action fired there. Without the feature: `false`, and `name`
/// is never called.
#[inline]
pub(crate) fn fires(name: impl FnOnce() -> String) -> bool {
    #[cfg(feature = "failpoints")]
    {
        let name = name();
        *HITS.lock().unwrap_or_else(|p| p.into_inner()).entry(name.clone()).or_default() += 1;
        fail::eval(&name, |_| ()).is_some()
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        false
    }
}

/// After a committed write of `op` (`create`, `spec`, `status`, `delete`)
/// on kind `plural`: the error a lost reply looks like when
/// [`REPLY_LOST`] fires, else `Ok`.
#[inline]
pub(crate) fn reply_lost(plural: &str, op: &str) -> super::Result<()> {
    if fires(|| format!("{REPLY_LOST}/{plural}/{op}")) {
        return Err(super::Error::Etcd {
            op: "txn",
            source: etcd_client::Error::IoError(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "failpoint: the reply was lost after the transaction committed",
            )),
        });
    }
    Ok(())
}
