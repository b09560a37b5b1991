//! The reconcile runtime, our own, in the manner of kube-runtime.
//!
//! A [`Controller`] campaigns for its leader key ([`leader`]), and while it
//! leads it mirrors its kind into a [`Cache`] ([`reflector`]), turns
//! changes into keys on a [`WorkQueue`] ([`queue`]), and runs reconciles on
//! a bounded pool of workers ([`controller`]). Every write a reconcile makes
//! through `ctx.store` carries the term's fence.

pub mod controller;
pub mod leader;
pub mod queue;
pub mod reflector;

pub use controller::{Action, Config, Controller, Ctx, Stats};
pub use leader::ElectionConfig;
pub use queue::WorkQueue;
pub use reflector::{Cache, Trigger};
