//! Deploying and deleting: `apply` (with its dry run), deletion with a
//! task, and the names of a deployment's variables.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Object;
use crate::objects::{DeploymentOptions, DeploymentSpec};

/// Body of `POST /v1/deployments/<name>/apply`: deploy a manifest (`boshctl
/// deploy`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyRequest {
    /// The manifest as YAML text, ops files and known variables already
    /// applied; `((placeholders))` left in place are the director's to
    /// generate. Its `name` must be the deployment's.
    pub manifest: String,
    /// Names of the cloud configs to deploy against; absent, the ones the
    /// deployment already uses (or `default` for a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_configs: Option<Vec<String>>,
    /// `--recreate`, `--skip-drain`, `--fix`.
    #[serde(default)]
    pub options: DeploymentOptions,
    /// Validate and answer the difference to the stored manifest
    /// ([`ApplyDiff`]); write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Answer to an apply: the change is accepted and carried out by a task
/// (201 for a new deployment, 200 for a change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Applied {
    /// The task that carries the change out (`boshctl task N --follow`).
    pub task: u64,
    /// The deployment as written.
    pub deployment: Object<DeploymentSpec>,
}

/// Answer to an apply with `dryRun`: what would change; nothing was written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApplyDiff {
    /// The manifest's diff as YAML lines, each prefixed with `+ `, `- ` or
    /// two spaces, three lines of context around each change and `...`
    /// between distant changes. Placeholders are shown, never values.
    pub diff: Vec<String>,
    /// Whether applying would change the deployment (the manifest or the
    /// cloud configs it uses).
    pub changes: bool,
}

/// Query of `DELETE /v1/deployments/<name>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeleteDeploymentQuery {
    /// Delete even when drain, VM or disk deletion fails
    /// (`boshctl delete-deployment --force`).
    #[serde(default)]
    pub force: bool,
}

/// Answer to `DELETE /v1/deployments/<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentDeleted {
    /// The task that deletes it (done already when `deleted`).
    pub task: u64,
    /// The deployment is gone: nothing was left to clean up.
    pub deleted: bool,
    /// The controllers are deleting its VMs, disks and variables; the
    /// deployment goes when they are done (follow the task).
    pub finalizing: bool,
}

/// One variable of a deployment (`GET /v1/deployments/<name>/variables`):
/// what it is, never its value, which does not leave the director.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Variable {
    /// Its name in the manifest.
    pub name: String,
    /// `password`, `certificate`, `rsa`, `ssh`.
    #[serde(rename = "type")]
    pub type_: String,
    /// A stable id of the stored value; changes when it is regenerated.
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ObjectMeta;
    use crate::wire::testing::round_trip;

    /// Each keeps the shape boshd answered with `json!` (or sent, for the CLI's request).
    #[test]
    fn deployment_bodies_round_trip() {
        round_trip(
            &ApplyRequest {
                manifest: "name: d\n".into(),
                cloud_configs: None,
                options: DeploymentOptions { recreate: true, skip_drain: false, fix: false },
                dry_run: false,
            },
            r#"{"manifest":"name: d\n","options":{"recreate":true,"skipDrain":false,"fix":false},"dryRun":false}"#,
        );
        round_trip(
            &ApplyDiff { diff: vec!["+ name: d".into()], changes: true },
            r#"{"diff":["+ name: d"],"changes":true}"#,
        );
        let d = Object::new(ObjectMeta::named("d"), DeploymentSpec::default());
        let obj = serde_json::to_string(&d).unwrap();
        round_trip(
            &Applied { task: 4, deployment: d },
            &format!(r#"{{"task":4,"deployment":{obj}}}"#),
        );
        round_trip(
            &DeploymentDeleted { task: 5, deleted: false, finalizing: true },
            r#"{"task":5,"deleted":false,"finalizing":true}"#,
        );
        round_trip(
            &Variable { name: "pw".into(), type_: "password".into(), id: "a1".into() },
            r#"{"name":"pw","type":"password","id":"a1"}"#,
        );
    }

    /// An apply request from before `cloudConfigs` existed, and one naming them, are accepted; unknown fields are not.
    #[test]
    fn apply_requests_are_strict_about_fields() {
        let r: ApplyRequest = serde_json::from_str(r#"{"manifest":"name: d\n"}"#).unwrap();
        assert_eq!((r.cloud_configs, r.dry_run), (None, false));
        let r: ApplyRequest =
            serde_json::from_str(r#"{"manifest":"","cloudConfigs":["a","b"],"dryRun":true}"#)
                .unwrap();
        assert_eq!(r.cloud_configs, Some(vec!["a".into(), "b".into()]));
        let e = serde_json::from_str::<ApplyRequest>(r#"{"manifest":"","dry_run":true}"#);
        assert!(e.unwrap_err().to_string().contains("dry_run"));
    }
}
