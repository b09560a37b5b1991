//! What boshd serves and runs: the HTTP API, BOSH DNS and the wiring of
//! the controllers.
//!
//! - [`api`]: the HTTP API (bearer token): objects, watches, uploads.
//! - [`daemon`]: the controllers, wired to shared reflectors.
//! - [`dns`]: BOSH DNS from the Instances in memory, on every replica.

pub mod api;
pub mod daemon;
pub mod dns;
