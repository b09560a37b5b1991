//! Libraries the reconcilers and the server share: logic over values and
//! the store, with no handle on the world (no CPI, agent or bus).
//!
//! - [`render`]: job templates rendered with Ruby's ERB, a batch per
//!   process (the `bosh-render` crate, which `boshctl render` shares).
//! - [`variables`]: generated credentials, stored as secrets, interpolated.
//! - [`ipam`]: IP pools of manual networks, shared by compile VMs and
//!   instances.
//! - [`lookup`]: what a deployment names (cloud config, releases,
//!   stemcells), looked up.
//! - [`resolve`]: a deployment resolved once (manifest with addons, cloud
//!   config, releases, stemcells, runtime configs), for the compilation
//!   and the deployment controllers.
//! - [`cpi_config`]: the CPI config's format, checked with paths.
//! - [`tasks`]: numbered tasks and their event logs.
//! - [`errors`]: an error and its causes as one line.
//! - [`secret_file`]: private, atomic writes of files holding credentials
//!   (`bosh_api::secret_file`, re-exported).

pub mod cpi_config;
pub mod errors;
pub mod ipam;
pub mod lookup;
pub use bosh_render as render;
pub mod resolve;
pub use bosh_api::secret_file;
pub mod tasks;
pub mod variables;
