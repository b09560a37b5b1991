//! The reconcilers: each compares one kind's desired state with what is
//! observed and acts through [`crate::world`] until the two match. Each
//! exports its [`crate::runtime::Wiring`] (name, trigger, workers) beside
//! its `reconcile`, so the daemon wires it without knowing why.
//!
//! - [`validate`]: checks Deployment and Config specs written by anyone
//!   (API or GitOps) and reports `Valid`/`Invalid`.
//! - [`stemcell`]: imports uploaded stemcells into the CPI.
//! - [`compile`]: compiles the packages a deployment needs on compile
//!   VMs, once per (package, stemcell, dependencies).
//! - [`deployment`]: plans a deployment's instances and rolls changes out.
//! - [`instance`]: drives each Instance onto a VM: create, disk, apply,
//!   start; resurrection is one of its passes.
//! - [`health`]: the health monitor: heartbeats into each Instance's
//!   observed health.
//! - [`errand`]: runs errands (ErrandRuns) on their instances.
//! - [`supersede`]: ends tasks no other controller will finish.

pub mod compile;
pub mod deployment;
pub mod errand;
pub mod health;
pub mod instance;
pub mod stemcell;
pub mod supersede;
pub mod validate;
