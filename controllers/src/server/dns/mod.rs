//! BOSH DNS, served by boshd itself.
//!
//! Why here and not on every VM as bosh-dns does: every Instance with its
//! addresses and its health (written by the health monitor) is already in
//! etcd, and every boshd replica already watches Instances. So each replica
//! answers `<id|index|q-…>.<group>.<network>.<deployment>.bosh`, the short
//! `q-….q-g<n>.bosh` and the runtime configs' aliases from a table in
//! memory, rebuilt whole when an Instance, the director's DNS numbers
//! (`DnsNumbers`) or a config changes ([`follow`]),
//! with no etcd read or write per query and no leader: replicas answer
//! alike because they read the same objects.
//!
//! Names outside the domain go to the operator's recursors
//! (`--dns-recursor`); with none they are REFUSED, so a listener reachable
//! from VMs is never an open resolver.
//!
//! # Layout
//!
//! - `query.rs`: what a name asks for (pure: BOSH's forms and criteria).
//! - `records.rs`: the answer table and bosh-dns's health filter.
//! - `handler.rs`: the hickory request handler.
//! - `forward.rs`: forwarding to recursors, with a deadline.
//! - `bind.rs`: listeners bound before their address exists (`IP_FREEBIND`).

mod bind;
mod forward;
mod handler;
pub mod query;
pub mod records;

use std::sync::Arc;
use std::time::Duration;

use bosh_api::objects::{ConfigSpec, DNS_NUMBERS_NAME, DnsNumbersSpec, InstanceSpec};
use hickory_server::Server;
use hickory_server::proto::rr::Name;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

pub use bind::{BindError, bind};
pub use forward::{ForwardError, Forwarder};
pub use handler::Handler;
pub use records::{Aliases, Records, Table, aliases_of};

use crate::runtime::Reflector;

/// How long a TCP client may stay idle before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Why the DNS server stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The domain is not a DNS name.
    #[error("DNS domain {domain:?} is not a valid name")]
    Domain {
        /// As given.
        domain: String,
        /// What hickory found wrong.
        #[source]
        source: hickory_server::proto::ProtoError,
    },
    /// A listener failed.
    #[error("DNS server failed")]
    Serve(#[source] hickory_server::net::NetError),
}

/// What the DNS server answers and where it forwards.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The root domain (BOSH's default `bosh`).
    pub domain: String,
    /// Recursors for other names (none: REFUSED).
    pub recursors: Vec<std::net::SocketAddr>,
    /// Deadline of each recursor.
    pub recursor_timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            domain: "bosh".into(),
            recursors: vec![],
            recursor_timeout: Duration::from_secs(2),
        }
    }
}

/// Keeps the table following the Instance reflector until dropped.
pub struct Following {
    _holds: Vec<crate::runtime::shared::Hold>,
    _subscriptions: Vec<crate::runtime::shared::Subscription>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Following {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the table is built from: Instances, the director's numbers and
/// the configs (runtime configs' aliases).
pub struct Sources {
    /// Every Instance.
    pub instances: Reflector<InstanceSpec>,
    /// The DnsNumbers object.
    pub numbers: Reflector<DnsNumbersSpec>,
    /// Every Config.
    pub configs: Reflector<ConfigSpec>,
}

/// Watches the sources (holding their reflectors: this replica watches
/// whether or not it leads anything) and rebuilds `records` after every
/// change. Changes that come while a rebuild runs are folded into the next
/// one.
pub fn follow(sources: &Sources, records: Records) -> Following {
    let changed = Arc::new(tokio::sync::Notify::new());
    let notify = |c: &Arc<tokio::sync::Notify>| {
        let c = c.clone();
        move || c.notify_one()
    };
    let subscriptions = vec![
        sources.instances.subscribe({
            let n = notify(&changed);
            move |_| n()
        }),
        sources.numbers.subscribe({
            let n = notify(&changed);
            move |_| n()
        }),
        sources.configs.subscribe({
            let n = notify(&changed);
            move |_| n()
        }),
    ];
    let holds = vec![sources.instances.hold(), sources.numbers.hold(), sources.configs.hold()];
    let (instances, numbers, configs) =
        (sources.instances.cache(), sources.numbers.cache(), sources.configs.cache());
    let task = tokio::spawn(async move {
        loop {
            let list = instances.list();
            let numbers = numbers
                .list()
                .into_iter()
                .find(|n| n.metadata.name == DNS_NUMBERS_NAME)
                .map(|n| n.spec.clone())
                .unwrap_or_default();
            let configs = configs.list();
            let aliases = records::aliases_of(configs.iter().map(|c| c.as_ref()));
            let table = Table::build_with(list.iter().map(|i| i.as_ref()), &numbers, aliases);
            tracing::debug!(groups = table.len(), "DNS records rebuilt");
            records.set(table);
            changed.notified().await;
        }
    });
    Following { _holds: holds, _subscriptions: subscriptions, task }
}

/// Serves DNS on the bound sockets until `shutdown`.
pub async fn serve(
    records: Records,
    config: DnsConfig,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let domain = Name::from_ascii(&config.domain)
        .map_err(|source| Error::Domain { domain: config.domain.clone(), source })?;
    let forwarder = (!config.recursors.is_empty()).then(|| Forwarder {
        recursors: config.recursors.clone(),
        timeout: config.recursor_timeout,
    });
    let mut server = Server::new(Handler::new(records, domain, forwarder));
    for s in udp {
        server.register_socket(s);
    }
    for l in tcp {
        server.register_listener(l, TCP_IDLE, 64);
    }
    tokio::select! {
        r = server.block_until_done() => r.map_err(Error::Serve),
        () = shutdown.cancelled() => server.shutdown_gracefully().await.map_err(Error::Serve),
    }
}
