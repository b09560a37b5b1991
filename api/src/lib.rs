//! The bosh-rs object model and the formats BOSH users bring with them.
//!
//! Everything boshd knows lives in etcd as versioned objects: the kinds in
//! [`objects`] each pair a user-written `spec` with a controller-written
//! `status`, kept under separate keys so neither side can clobber the other
//! (see `docs/architecture.md`). Manifests, cloud configs and ops files are
//! parsed here too, so the CLI, the API server and the controllers all reject
//! bad input with the same precise messages.
//!
//! # Layout
//!
//! - [`archive`]: hostile-input-safe tarball unpacking (caps, no escapes)
//!   and deterministic `.tgz` writing, for release tarballs and agents.
//! - [`agent`]: bootstrap settings and the NATS protocol between boshd
//!   and agents.
//! - [`names`]: the one rule for names (deployments, groups, jobs, packages,
//!   releases, networks...) that every door checks.
//! - [`meta`]: object metadata and Kubernetes-style conditions.
//! - [`objects`]: the kinds (Release, Stemcell, Config, Deployment, Instance,
//!   Disk, Task, Event) and the [`objects::Kind`] trait that ties a spec to
//!   its status and its etcd key; and the vocabulary controllers share
//!   through them: condition types and reasons, finalizers, instance phases
//!   and health.
//! - [`yaml`]: the single YAML entry point, with BOSH's YAML 1.1 habits.
//! - [`local_stemcell`]: the local CPI's stemcell image format.
//! - [`manifest`]: deployment manifest v2, cloud config and runtime config,
//!   with validation that reports every error with its path.
//! - [`interpolate`]: ops files (go-patch) and `((var))` substitution, the
//!   semantics of `bosh interpolate`.
//! - [`release`]: BOSH release directories, fingerprints (exactly as the
//!   bosh CLI computes them), release and stemcell tarballs.
//! - [`store`] (feature `store`): the typed etcd client every write goes
//!   through: create-if-absent, compare-and-swap, fenced writes, leases and
//!   watches that survive reconnects and compaction.
//! - [`pki`] (feature `pki`, part of `store`): the certificates etcd
//!   requires of its clients, without the etcd client.
//! - [`wire`]: the HTTP API's request and answer bodies, shared by boshd's
//!   API and `boshctl`.
//! - [`schema`]: the JSON Schemas checked in under `crds-schemas/`.
//! - [`secret_file`]: private, atomic writes of files holding credentials
//!   (boshd's and the local CPI's).

pub mod agent;
pub mod archive;
pub mod interpolate;
pub mod local_stemcell;
pub mod manifest;
pub mod meta;
pub mod names;
pub mod objects;
#[cfg(feature = "pki")]
pub mod pki;
pub mod release;
pub mod schema;
pub mod secret_file;
#[cfg(feature = "store")]
pub mod store;
pub mod wire;
pub mod yaml;

pub use meta::{Condition, ConditionStatus, ObjectMeta};
pub use objects::{Kind, Object};
