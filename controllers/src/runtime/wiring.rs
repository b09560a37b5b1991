//! What a reconciler knows about how it should be run, declared beside its
//! `reconcile` so that the daemon wires it without explaining it.

use super::reflector::Trigger;

/// A reconciler's name (its leader key, log and metric label), which of its
/// own kind's changes wake it, and how many keys it reconciles at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wiring {
    /// The controller's name.
    pub name: &'static str,
    /// Which changes of its own kind wake it.
    pub trigger: Trigger,
    /// Concurrent reconciles.
    pub workers: Workers,
}

/// How many keys a reconciler works on at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// The daemon's `--workers`.
    Shared,
    /// The daemon's `--workers`, or this many if that is fewer: for a
    /// reconciler whose passes mostly wait (on an agent, a CPI call).
    AtLeast(usize),
    /// Exactly this many, whatever the daemon's setting: for a reconciler
    /// whose passes must not overlap.
    Exactly(usize),
}

impl Workers {
    /// The worker count under a daemon setting of `shared`.
    pub fn count(self, shared: usize) -> usize {
        match self {
            Workers::Shared => shared,
            Workers::AtLeast(n) => shared.max(n),
            Workers::Exactly(n) => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_counts_follow_the_daemon_setting_as_declared() {
        assert_eq!(Workers::Shared.count(4), 4);
        assert_eq!(Workers::AtLeast(32).count(4), 32);
        assert_eq!(Workers::AtLeast(32).count(64), 64);
        assert_eq!(Workers::Exactly(1).count(4), 1);
    }
}
