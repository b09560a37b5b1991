//! Who the director is: `GET /v1/info`, and the `director.json` boshd
//! leaves for `boshctl`.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Answer to `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Info {
    /// Always `boshd`.
    pub name: String,
    /// boshd's version, e.g. `0.1.0`.
    pub version: String,
    /// The API version the routes belong to: `v1`.
    pub api: String,
}

/// `director.json`, which boshd writes into its data dir (0600) once its
/// API listens: where `boshctl` finds the director when neither
/// `--director` nor `--token` is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DirectorFile {
    /// The API's URL, e.g. `http://127.0.0.1:25555`.
    pub url: String,
    /// The file holding the API token (absolute).
    pub token_file: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::round_trip;

    /// Both keep the shape boshd wrote with `json!`.
    #[test]
    fn info_and_director_file_round_trip() {
        round_trip(
            &Info { name: "boshd".into(), version: "0.1.0".into(), api: "v1".into() },
            r#"{"name":"boshd","version":"0.1.0","api":"v1"}"#,
        );
        round_trip(
            &DirectorFile {
                url: "http://127.0.0.1:25555".into(),
                token_file: "/srv/bosh/boshd/api-token".into(),
            },
            r#"{"url":"http://127.0.0.1:25555","token_file":"/srv/bosh/boshd/api-token"}"#,
        );
    }
}
