//! Variables (placeholder: being written; see the contract below).

use bosh_api::store::Store;

/// A variable as `boshctl variables` lists it (never its value).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VariableInfo {
    /// Its name in the manifest.
    pub name: String,
    /// `password`, `certificate`, `rsa`, `ssh`.
    #[serde(rename = "type")]
    pub type_: String,
    /// A stable id of the stored value (changes when regenerated).
    pub id: String,
}

/// Errors of variables.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Placeholder.
    #[error("not yet implemented")]
    Todo,
}

/// Generates the deployment's declared variables not yet stored, then
/// returns `manifest` with every `((name))`/`((name.key))` replaced.
pub async fn resolve(
    _store: &Store,
    _deployment: &str,
    _manifest: &serde_json::Value,
) -> Result<serde_json::Value, Error> {
    todo!()
}

/// The deployment's stored variables.
pub async fn list(_store: &Store, _deployment: &str) -> Result<Vec<VariableInfo>, Error> {
    todo!()
}

/// Deletes the deployment's stored variables.
pub async fn delete_all(_store: &Store, _deployment: &str) -> Result<(), Error> {
    todo!()
}
