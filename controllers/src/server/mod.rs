//! What boshd serves and runs: the HTTP API and the wiring of the
//! controllers.
//!
//! - [`api`]: the HTTP API (bearer token): objects, watches, uploads.
//! - [`daemon`]: the controllers, wired to shared reflectors.

pub mod api;
pub mod daemon;
