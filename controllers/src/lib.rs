//! boshd: the reconcile runtime and the controllers that drive the world
//! toward what etcd says it should be.
//!
//! # Layout
//!
//! The folders are the layers, each using only those above it:
//!
//! - [`runtime`]: the generic controller runtime (kube-runtime's share):
//!   leader election, shared reflectors, work queue, secondary watches,
//!   finalizers, the status writer.
//! - [`libs`]: logic the others share, with no handle on the world:
//!   templates, variables, IP pools, lookups, tasks.
//! - [`world`]: handles on the world: the director's bundle, the CPI, the
//!   agent client, the bus, nats-server, blobs.
//! - [`reconcilers`]: one per kind, acting on the world until desired and
//!   observed match.
//! - [`server`]: the HTTP API and the daemon that wires the reconcilers.
//!
//! [`failpoints`] names the fault-injection points (feature `failpoints`);
//! `testing` (feature `testing`) is the in-process director world the
//! integration tests and benchmarks run.

pub mod failpoints;
pub mod libs;
pub mod reconcilers;
pub mod runtime;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;
pub mod world;
