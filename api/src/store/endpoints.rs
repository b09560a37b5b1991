//! Keeps a store's requests off etcd members that do not answer.
//!
//! etcd-client spreads requests over its endpoints with tower's
//! power-of-two-choices balancer, which knows nothing of a member being
//! down: the connection to a dead member fails each request sent through
//! it at once (`tcp connect error`), so with one member of three dead about
//! a quarter of all requests fail, for as long as it stays dead, and every
//! controller's reconciles keep failing and backing off (FAULT-MATRIX B1:
//! a deploy did not finish in 3 minutes on the two live members). etcd's
//! own Go client avoids this with health-checked balancing; this does the
//! same. Every [`PROBE_EVERY`] it asks each member for its status on a
//! connection of its own and keeps in the store's balance only the members
//! that do best: those that know a leader; while none does (an election),
//! those that answer within [`PROBE_TIMEOUT`]; a member cut off from a
//! majority that has a leader is left out too. Members come back as soon
//! as they do as well as the rest. The balance is never empty: when no
//! member answers, every member is in it, so that requests fail at once
//! rather than wait for one.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use tracing::{info, warn};

use super::{Result, StoreConfig};

/// How often every member is probed.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How long a member may take to answer a probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The probing task; stops when the last store holding it is dropped.
#[derive(Debug)]
pub(crate) struct EndpointKeeper(tokio::task::JoinHandle<()>);

impl Drop for EndpointKeeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The URI etcd-client keys an endpoint by (what it was given, with the
/// scheme it adds when there is none).
fn balance_key(endpoint: &str, tls: bool) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

/// Starts keeping `client`'s balance to the members of `config` that
/// answer; `None` for a single endpoint (there is nowhere else to go).
pub(crate) async fn keep(
    config: &StoreConfig,
    client: Client,
) -> Result<Option<Arc<EndpointKeeper>>> {
    if config.endpoints.len() < 2 {
        return Ok(None);
    }
    let mut members = Vec::new();
    for e in &config.endpoints {
        let one = StoreConfig { endpoints: vec![e.clone()], ..config.clone() };
        members.push((balance_key(e, config.tls.is_some()), one.client().await?));
    }
    Ok(Some(Arc::new(EndpointKeeper(tokio::spawn(run(client, members))))))
}

/// What a member answered to a probe (better is greater).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    /// No answer in time.
    Silent,
    /// An answer, without a leader (an election, or cut off from the rest).
    Answers,
    /// An answer naming a leader.
    Leader,
}

async fn run(client: Client, mut members: Vec<(String, Client)>) {
    let mut in_balance = vec![true; members.len()];
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let probes = members.iter_mut().map(|(_, c)| async move {
            match tokio::time::timeout(PROBE_TIMEOUT, c.status()).await {
                Ok(Ok(s)) if s.leader() != 0 => Rank::Leader,
                Ok(Ok(_)) => Rank::Answers,
                _ => Rank::Silent,
            }
        });
        let ranks = futures::future::join_all(probes).await;
        // The members that do best: those that know a leader; during an
        // election (none does) those that answer; when none answers, all.
        let best = ranks.iter().copied().max().unwrap_or(Rank::Silent);
        let want: Vec<bool> = ranks.iter().map(|r| *r == best).collect();
        for (i, (uri, _)) in members.iter().enumerate() {
            if want[i] == in_balance[i] {
                continue;
            }
            let changed = if want[i] {
                client.add_endpoint(uri).await
            } else {
                client.remove_endpoint(uri).await
            };
            match changed {
                Ok(()) if want[i] => info!(endpoint = %uri, "etcd member answers again; using it"),
                Ok(()) => warn!(endpoint = %uri, "etcd member does not answer; not using it"),
                Err(e) => {
                    warn!(endpoint = %uri, error = %e, "could not change the etcd balance");
                    continue;
                }
            }
            in_balance[i] = want[i];
        }
    }
}
