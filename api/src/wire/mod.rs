//! The HTTP API's wire format: every request and answer body (and query)
//! of boshd's `/v1` routes, as the server builds them and `boshctl` reads
//! them. One set of types for both ends, so a field renamed on one side is
//! a compile error on the other rather than a silent `null`.
//!
//! Stored objects travel as they are stored: an answer that is "an object"
//! is an [`Object<S>`](crate::Object) of its kind, and a listing of them a
//! [`List`]. The types here are the rest: envelopes, requests, and the
//! answers the API composes (instances with their agents' state, VMs,
//! cloud-check reports, task numbers).
//!
//! The JSON these types make is the API's contract: field names and shapes
//! match what boshd answered before the types existed, byte for byte (each
//! module's tests hold a captured example of each answer).
//!
//! # Routes
//!
//! | Route | Request | Answer |
//! |---|---|---|
//! | `GET /v1/info` | — | [`Info`] |
//! | `GET /v1/<plural>[?prefix=P]` | [`ListQuery`] | [`List`]`<Object<S>>` |
//! | `GET /v1/<plural>/<name>` | — | `Object<S>` |
//! | `PUT /v1/{deployments,configs}/<name>` | `Object<S>` | `Object<S>` (201 when created) |
//! | `DELETE /v1/configs/<name>[?resourceVersion=N]` | [`DeleteQuery`] | [`Deleted`] |
//! | `GET /v1/watch/<plural>[?from=REV]` | [`WatchQuery`] | one [`WatchEvent`]`<Object<S>>` per line |
//! | `DELETE /v1/{releases,stemcells}/<name>/<version>` | — | [`Removed`] |
//! | `POST /v1/uploads/releases[?fix=true]` | a tarball, [`UploadQuery`] | [`ReleaseUpload`] |
//! | `POST /v1/uploads/stemcells[?fix=true]` | a tarball, [`UploadQuery`] | [`StemcellUpload`] |
//! | `POST /v1/exports/releases` | [`ExportRequest`] | a tarball |
//! | `POST /v1/task-cancellations/<id>` | [`EmptyRequest`] | [`TaskCancellation`] |
//! | `GET /v1/vms[?deployment=D&vitals=true]` | [`VmQuery`] | `Vec<`[`VmEntry`]`>` |
//! | `POST /v1/vms/<agent-id>/exec` | [`ExecRequest`] | [`ExecResult`] |
//! | `POST /v1/deployments/<name>/apply` | [`ApplyRequest`] | [`Applied`]; with `dryRun`, [`ApplyDiff`] |
//! | `DELETE /v1/deployments/<name>[?force=true]` | [`DeleteDeploymentQuery`] | [`DeploymentDeleted`] |
//! | `GET /v1/deployments/<name>/instances[?ps=true]` | [`InstancesQuery`] | `Vec<`[`InstanceEntry`]`>` |
//! | `POST /v1/deployments/<name>/instances/actions` | [`ActionRequest`] | [`TaskRef`] |
//! | `POST /v1/deployments/<name>/logs` | [`LogsRequest`] | a tarball |
//! | `GET /v1/deployments/<name>/variables` | — | `Vec<`[`Variable`]`>` |
//! | `POST /v1/deployments/<name>/cloud-check` | [`EmptyRequest`] | [`TaskRef`] |
//! | `GET /v1/deployments/<name>/cloud-check` | — | [`CloudCheckReport`] |
//! | `GET /v1/deployments/<name>/errands` | — | `Vec<`[`ErrandEntry`]`>` |
//! | `POST /v1/deployments/<name>/errands/<errand>/runs` | [`RunErrandRequest`] | [`ErrandRunRef`] |
//! | `GET /v1/deployments/<name>/errand-runs/<run>/logs/<sha256>` | — | a `.tgz` of an instance's job logs |
//! | `POST /v1/deployments/<name>/cloud-check/resolutions` | [`ResolveRequest`] | [`ResolutionsRecorded`] |
//! | `POST /v1/deployments/<name>/ssh` | [`SshRequest`] | `Vec<`[`SshEntry`]`>` |
//! | any refusal (4xx, 5xx) | — | [`ErrorBody`] |
//!
//! boshd also writes [`DirectorFile`] (`director.json`), where `boshctl`
//! finds it without flags.
//!
//! # Layout
//!
//! - [`objects`]: listings, watch events, deletions; the summary any
//!   object can be read as.
//! - [`errors`]: the body of every refusal.
//! - [`info`]: `GET /v1/info` and `director.json`.
//! - [`deployments`]: apply, delete, variables.
//! - [`instances`]: instances with their agents' state, actions, logs.
//! - [`vms`]: VMs and `exec`.
//! - [`ssh`]: users for `ssh` and `scp`.
//! - [`cloud_check`]: scans, reports and resolutions.
//! - [`tasks`]: task numbers and cancellation.
//! - [`releases`], [`stemcells`]: uploads and exports.
//!
//! Configs and events have no types of their own: they are objects, read
//! and written through the generic routes.

pub mod cloud_check;
pub mod deployments;
pub mod errands;
pub mod errors;
pub mod info;
pub mod instances;
pub mod objects;
pub mod releases;
pub mod ssh;
pub mod stemcells;
pub mod tasks;
pub mod vms;

pub use crate::agent::ExecResult;
pub use cloud_check::{CloudCheckReport, ResolutionsRecorded, ResolveRequest};
pub use deployments::{
    Applied, ApplyDiff, ApplyRequest, DeleteDeploymentQuery, DeploymentDeleted, Variable,
};
pub use errands::{ErrandEntry, ErrandRunRef, RunErrandRequest};
pub use errors::ErrorBody;
pub use info::{DirectorFile, Info};
pub use instances::{
    ActionRequest, AgentReport, AgentState, InstanceAction, InstanceEntry, InstancesQuery,
    LogsRequest,
};
pub use objects::{
    DeleteQuery, Deleted, List, ListQuery, ObjectSummary, Removed, StatusSummary, WatchEvent,
    WatchQuery,
};
pub use releases::{ExportRequest, ReleaseUpload, UploadQuery, UploadStatus};
pub use ssh::{SshCommand, SshEntry, SshRequest, SshStatus, SshTarget};
pub use stemcells::StemcellUpload;
pub use tasks::{EmptyRequest, TaskCancellation, TaskRef};
pub use vms::{ExecRequest, VmEntry, VmQuery};

#[cfg(test)]
mod testing {
    //! Helpers for the round-trip tests of each wire module.

    use serde::Serialize;
    use serde::de::DeserializeOwned;

    /// Serializes `value` as the server does, checks the bytes are
    /// `expected` (what boshd answered before these types), and that a
    /// client reads them back as the same value.
    pub fn round_trip<T>(value: &T, expected: &str)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let sent = serde_json::to_string(value).unwrap();
        assert_eq!(sent, expected, "the wire format changed");
        let read: T = serde_json::from_str(&sent).unwrap();
        assert_eq!(&read, value);
    }
}
