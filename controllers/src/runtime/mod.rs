//! The reconcile runtime, our own, in the manner of kube-runtime.
//!
//! A [`Controller`] campaigns for its leader key ([`leader`]), and while it
//! leads it reads its kind through a [`Cache`] ([`reflector`]) fed by a
//! watch that every controller of the kind shares ([`shared`]), turns
//! changes that pass its [`Predicate`] ([`predicate`]) — and changes of the
//! kinds it owns or watches ([`secondary`]) — into keys on a
//! [`WorkQueue`] ([`queue`]), and runs reconciles on a bounded pool of
//! workers ([`controller`]). Every write a reconcile makes through
//! `ctx.store` carries the term's fence.
//!
//! # Layout
//!
//! - [`controller`]: the loop, [`Action`], [`Ctx`], [`default_error_policy`].
//! - [`leader`]: leader election on an etcd lease.
//! - [`reflector`]: the cache of one kind, and what changed in it.
//! - [`shared`]: one reflector per kind for all its consumers.
//! - [`predicate`]: which changes wake a controller.
//! - [`secondary`]: `owns` / `watches`, a change of one kind waking owners.
//! - [`queue`]: de-duplicated, delayed keys.
//! - [`finalizer`]: add before work, remove after clean-up.
//! - [`status`]: the one status writer.
//! - [`wiring`]: a reconciler's name, trigger and worker count.

pub mod controller;
pub mod finalizer;
pub mod leader;
pub mod predicate;
pub mod queue;
pub mod reflector;
pub mod secondary;
pub mod shared;
pub mod status;
pub mod wiring;

pub use controller::{Action, Config, Controller, Ctx, Stats, default_error_policy};
pub use finalizer::{Cleanup, finalizer};
pub use leader::ElectionConfig;
pub use predicate::Predicate;
pub use queue::WorkQueue;
pub use reflector::{Cache, Change, Trigger};
pub use shared::{Reflector, Reflectors};
pub use wiring::{Wiring, Workers};
