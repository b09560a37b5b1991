//! Deployment manifest v2, cloud config and runtime config.

/// JSON Schemas of the manifest formats, by file stem.
pub fn schemas() -> Vec<(&'static str, schemars::Schema)> {
    Vec::new()
}
