//! Runtime config addons (placeholder: being written; see the contract).

use super::{Manifest, RuntimeConfig};

/// Adds the jobs of every addon whose include/exclude filters select an
/// instance group to that group, and the runtime configs' releases to the
/// manifest's releases. Errors name the runtime config and path.
pub fn apply_addons(
    _manifest: &mut Manifest,
    _runtime: &[(String, RuntimeConfig)],
) -> Result<(), Vec<String>> {
    todo!()
}
