//! Handles on the world: the only code here that reaches outside the
//! store. Reconcilers act through these and nothing else, so a test can
//! stand a fake or a faulty one in front of any of them.
//!
//! - [`director`]: the bundle of handles a reconcile gets (store, CPI,
//!   agents, blobstore, bus), and the fence its CPI mutations carry.
//! - [`cpi`]: the Cloud Provider Interface and its `local` and `external`
//!   implementations (the `bosh-cpi` crate, re-exported).
//! - [`cpis`]: the CPI config's CPIs beside the default one, by name.
//! - [`agent_client`]: typed client for the agent protocol over NATS.
//! - [`bus`]: per-agent NATS credentials and permissions.
//! - [`nats_server`]: the nats-server boshd runs for a local environment.
//! - [`blobs`]: whole-blob reads (sha256-checked) and writes.

pub mod agent_client;
pub mod blobs;
pub mod bus;
pub use bosh_cpi as cpi;
pub mod cpis;
pub mod director;
pub mod nats_server;
