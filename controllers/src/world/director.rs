//! What controllers that act on the world share: the CPI, the bus, the
//! agents and the blobstore. boshd builds one at start; tests build one
//! from `testing::LocalWorld`.

use std::collections::BTreeMap;
use std::sync::Arc;

use bosh_api::agent::{BlobstoreSettings, MbusSettings, NetworkSettings, Settings};
use bosh_api::store::{Fence, Store};
use bosh_blobstore::Storage;

use crate::world::agent_client::AgentClient;
use crate::world::bus::{Bus, Credentials};
use crate::world::cpi::{Cpi, CpiError, FencedCpi};
use crate::world::cpis::CpiRegistry;

/// The director's name, as its `/info` gives it: the first part of the
/// groups (`<director>-<deployment>-<instance group>`) a VM is created in.
pub const DIRECTOR_NAME: &str = "boshd";

/// The director's handles on the world.
#[derive(Clone)]
pub struct Director {
    /// The store (controllers use their fenced copy from `Ctx`).
    pub store: Store,
    /// The default CPI: the one boshd was started with, which serves every
    /// AZ that names no CPI of the CPI config. Controllers mutate through
    /// [`Director::fenced_cpi`] / [`Director::fenced_cpi_named`]; their
    /// mutations need a fence.
    pub cpi: Arc<dyn Cpi>,
    /// The CPI config's CPIs, by name (see [`crate::world::cpis`]).
    pub cpis: Arc<CpiRegistry>,
    /// Agents' NATS credentials.
    pub bus: Arc<Bus>,
    /// The URL agents reach NATS at.
    pub nats_url: String,
    /// Requests to agents.
    pub agents: AgentClient,
    /// The blobstore, for the director's own reads and writes.
    pub blobs: Arc<dyn Storage>,
    /// How agents reach the blobstore.
    pub blobstore: BlobstoreSettings,
    /// Seconds between an agent's heartbeats (BOSH: 30).
    pub heartbeat_interval_secs: u64,
    /// Addresses planned but not yet written, shared by every controller
    /// that hands out addresses (deployments, compile VMs).
    pub addresses: Arc<crate::libs::ipam::AddressBook>,
}

impl Director {
    /// The CPI bound to a controller term: a reconcile passes its
    /// `ctx.fence`, and every mutation made through the handle carries it.
    pub fn fenced_cpi(&self, fence: &Fence) -> FencedCpi {
        FencedCpi::new(self.cpi.clone(), fence.clone())
    }

    /// The CPI recorded as `name` (`None`: the default CPI), for reads.
    pub async fn cpi_named(&self, name: Option<&str>) -> Result<Arc<dyn Cpi>, CpiError> {
        self.cpis.get(&self.store, &self.cpi, name).await
    }

    /// The CPI recorded as `name`, bound to a controller term (see
    /// [`Director::fenced_cpi`]).
    pub async fn fenced_cpi_named(
        &self,
        name: Option<&str>,
        fence: &Fence,
    ) -> Result<FencedCpi, CpiError> {
        Ok(FencedCpi::new(self.cpi_named(name).await?, fence.clone()))
    }

    /// Every CPI: the default (`None`) and the CPI config's, by name.
    pub async fn all_cpis(&self) -> Result<Vec<(Option<String>, Arc<dyn Cpi>)>, CpiError> {
        self.cpis.all(&self.store, &self.cpi).await
    }

    /// [`Director::all_cpis`] as etcd holds the CPI configs now.
    pub async fn all_cpis_fresh(&self) -> Result<Vec<(Option<String>, Arc<dyn Cpi>)>, CpiError> {
        self.cpis.all_fresh(&self.store, &self.cpi).await
    }

    /// Bootstrap settings for a new VM's agent.
    pub fn agent_settings(
        &self,
        agent_id: &str,
        creds: Credentials,
        networks: BTreeMap<String, NetworkSettings>,
        env: serde_json::Value,
    ) -> Settings {
        Settings {
            agent_id: agent_id.to_string(),
            mbus: MbusSettings {
                url: self.nats_url.clone(),
                user: creds.user,
                password: creds.password,
            },
            blobstore: self.blobstore.clone(),
            networks,
            env,
            heartbeat_interval_secs: self.heartbeat_interval_secs,
            ..Default::default()
        }
    }
}
