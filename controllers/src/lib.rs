//! boshd: the reconcile runtime and the controllers that drive the world
//! toward what etcd says it should be.
//!
//! # Layout
//!
//! - [`agent_client`]: typed client for the agent protocol over NATS.
//! - [`api`]: the HTTP API (bearer token): objects and watches.
//! - [`bus`]: per-agent NATS credentials and permissions.
//! - [`compile`]: compiles the packages a deployment needs on compile VMs,
//!   once per (package, stemcell, dependencies).
//! - [`cpi`]: the Cloud Provider Interface and its `local` and `external`
//!   implementations: the `bosh-cpi` crate (`cpi/`), re-exported.
//! - [`ipam`]: IP pools of manual networks, shared by compile VMs and instances.
//! - [`nats_server`]: the nats-server boshd runs for a local environment.
//! - [`runtime`]: leader election, shared reflector caches, secondary watches,
//!   work queue, workers, and the helpers reconciles share (finalizers,
//!   status writes, the default error policy).
//! - [`secret_file`]: private, atomic writes of files holding credentials
//!   (`bosh_api::secret_file`, re-exported).
//! - [`stemcell`]: imports uploaded stemcells into the CPI.
//! - [`tasks`]: numbered tasks and their event logs.
//! - [`render`]: job templates rendered with Ruby's ERB, a batch per process.
//! - [`variables`]: generated credentials, stored as secrets, interpolated.
//! - [`validate`]: the first controllers: they check Deployment and Config
//!   specs written by anyone (API or GitOps) and report `Valid`/`Invalid`.
//! - [`deployment`]: plans a deployment's instances and rolls changes out.
//! - [`instance`]: drives each Instance onto a VM: create, disk, apply, start.
//! - [`director`]: the handles controllers act on the world with.
//! - [`daemon`]: wiring of boshd's controllers for the binary.
//! - [`lookup`]: what a deployment names (cloud config, releases, stemcells), looked up.
//! - [`blobs`]: whole-blob reads (sha256-checked) and writes for the director.
//! - [`errors`]: an error and its causes as one line.
//! - [`health`]: the health monitor: heartbeats into each Instance's observed health.
//! - [`failpoints`]: named fault-injection points (feature `failpoints`).

pub mod agent_client;
pub mod api;
pub mod blobs;
pub mod bus;
pub mod compile;
pub use bosh_cpi as cpi;
pub mod daemon;
pub mod deployment;
pub mod director;
pub mod errors;
pub mod failpoints;
pub mod health;
pub mod instance;
pub mod ipam;
pub mod lookup;
pub mod nats_server;
pub mod render;
pub mod runtime;
pub use bosh_api::secret_file;
pub mod stemcell;
pub mod tasks;
#[cfg(feature = "testing")]
pub mod testing;
pub mod validate;
pub mod variables;
